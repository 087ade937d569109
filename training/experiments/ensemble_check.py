"""How much would averaging several runs' softmax buy? python training/experiments/ensemble_check.py RUN_DIR ...

Each RUN_DIR holds a model.keras trained on the same split (its split.json); prints, for each run alone and for
the mean of their probabilities, the primary metric (mean of the children's and adults' screening AUC on the
checkpoint side) and, at the threshold chosen on the calibration side (sensitivity >= 0.95), the adults'
specificity and sensitivity on the checkpoint side. Used for the distillation question of training/EXPERIMENTS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_runtime.classifier import screening_score  # noqa: E402
from training.experiments.held_out import SIDES, load, populations  # noqa: E402
from training.metrics import choose_threshold  # noqa: E402
from training.train import checkpoint_metric  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    dataset, runs, spec = load([Path(a) for a in argv])
    sides = next(iter(runs.values()))["sides"]
    if any(not np.array_equal(r["sides"][side], sides[side]) for r in runs.values() for side in SIDES):
        raise SystemExit("the runs were not trained on the same split: their probabilities cannot be averaged")
    probs = {name: r["probs"] for name, r in runs.items()}
    probs["mean of all"] = {side: np.mean([p[side] for p in probs.values()], axis=0) for side in SIDES}
    neg = spec.labels.index("NORMAL")
    adults = populations(dataset, sides["val"]) == "adults"
    positive = dataset.labels[sides["val"]] != neg
    print("| model | primary | children AUC | adults AUC | threshold | adults spec. | adults sens. |")
    print("|---|---|---|---|---|---|---|")
    for name, p in probs.items():
        primary, aucs = checkpoint_metric(dataset, sides["val"], p["val"], neg, len(spec.labels))
        threshold = choose_threshold(dataset.labels[sides["calibration"]], p["calibration"], neg)
        called = screening_score(p["val"], neg) >= threshold
        spec_ = float(np.mean(~called[adults & ~positive]))
        sens = float(np.mean(called[adults & positive]))
        print(f"| {name} | {primary:.4f} | {aucs['children']:.4f} | {aucs['adults']:.4f} | {threshold:.3f} | "
              f"{spec_:.3f} | {sens:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
