"""Would a threshold per population help? python training/experiments/threshold_by_population.py RUN_DIR ...

For each binary run (model.keras, spec.json and split.json in RUN_DIR), prints each population's sensitivity and
specificity on the checkpoint side at the pooled threshold (the shipped rule: sensitivity >= 0.95 on the whole
calibration side) and at the population's own threshold (the same rule on that population's calibration films).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_runtime.classifier import screening_score  # noqa: E402
from training.experiments.held_out import load, populations  # noqa: E402
from training.metrics import choose_threshold  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    dataset, runs, spec = load([Path(a) for a in argv])
    neg = spec.labels.index("NORMAL")
    print("| run | population | pooled threshold | sens. | spec. | own threshold | sens. | spec. |")
    print("|---|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        sides, probs = run["sides"], run["probs"]
        pops = {side: populations(dataset, sides[side]) for side in probs}
        labels = {side: dataset.labels[sides[side]] for side in probs}
        pooled = choose_threshold(labels["calibration"], probs["calibration"], neg)
        for pop in sorted(set(pops["val"].tolist())):
            cal, val = pops["calibration"] == pop, pops["val"] == pop
            own = choose_threshold(labels["calibration"][cal], probs["calibration"][cal], neg)
            positive = labels["val"][val] != neg
            cells = []
            for threshold in (pooled, own):
                called = screening_score(probs["val"][val], neg) >= threshold
                cells.append(f"{threshold:.3f} | {called[positive].mean():.3f} | {(~called[~positive]).mean():.3f}")
            print(f"| {name} | {pop} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
