"""Would a threshold per population help? python training/experiments/threshold_by_population.py RUN_DIR ...

For each binary run (model.keras, spec.json and split.json in RUN_DIR), prints each population's sensitivity and
specificity on the checkpoint side at the pooled threshold (the shipped rule: sensitivity >= 0.95 on the whole
calibration side) and at the population's own threshold (the same rule on that population's calibration films).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge_runtime.classifier import screening_score  # noqa: E402
from edge_runtime.spec import ModelSpec  # noqa: E402
from training.data import TASKS, load_dataset, load_split_sides  # noqa: E402
from training.metrics import choose_threshold  # noqa: E402
from training.train import predict_probs  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    import keras

    print("| run | population | pooled threshold | sens. | spec. | own threshold | sens. | spec. |")
    print("|---|---|---|---|---|---|---|---|")
    for run in map(Path, argv):
        spec = ModelSpec.load(run / "spec.json")
        data = Path(json.loads((run / "config.json").read_text())["data"])
        dataset = load_dataset(data if data.is_absolute() else REPO / data, TASKS[spec.task], spec, progress=False)
        sides = load_split_sides(run / "split.json", dataset)
        neg = spec.labels.index("NORMAL")
        model = keras.models.load_model(run / "model.keras", compile=False)
        probs = {s: predict_probs(model, dataset.images[sides[s]]) for s in ("val", "calibration")}
        pops = {s: np.array([dataset.samples[i].population for i in sides[s]]) for s in probs}
        labels = {s: dataset.labels[sides[s]] for s in probs}
        pooled = choose_threshold(labels["calibration"], probs["calibration"], neg)
        for pop in sorted(set(pops["val"].tolist())):
            cal, val = pops["calibration"] == pop, pops["val"] == pop
            own = choose_threshold(labels["calibration"][cal], probs["calibration"][cal], neg)
            positive = labels["val"][val] != neg
            cells = []
            for threshold in (pooled, own):
                called = screening_score(probs["val"][val], neg) >= threshold
                cells.append(f"{threshold:.3f} | {called[positive].mean():.3f} | {(~called[~positive]).mean():.3f}")
            print(f"| {run.name} | {pop} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
