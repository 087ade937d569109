"""Could one network serve two tasks? python training/experiments/one_network.py BINARY_RUN OTHER_RUN [--bootstrap 1000]

Issue 9 allows one network for two tasks "if that measures better than two". The covid model's screening score
(1 - P(NORMAL)) answers the binary question too, and its training saw what the binary model's did plus the COVID-19
films. The two runs were split separately, so each model's held-out side holds films the other trained on; this
script scores both models only on the films that **both** splits hold out (checkpoint or threshold side in each;
near-duplicates stay on one side within each split), within the binary task's sources (no COVID-19 film), and
prints per population and source: films, screening ROC AUC with a paired bootstrap of the difference, and each
model's sensitivity / specificity at its own shipped threshold. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_runtime.classifier import decide, screening_score  # noqa: E402
from edge_runtime.spec import ModelSpec  # noqa: E402
from training.data import TASKS, load_dataset  # noqa: E402
from training.experiments.held_out import SIDES  # noqa: E402
from training.metrics import binary_metrics  # noqa: E402
from training.train import REPO_ROOT, predict_probs  # noqa: E402


def held_out_paths(run: Path) -> set[str]:
    payload = json.loads((run / "split.json").read_text(encoding="utf-8"))
    return {p for side in SIDES for p in payload.get(side, ())}


def auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def paired_bootstrap(y, a, b, rounds: int, seed: int = 0) -> tuple[float, float]:
    """95% interval of AUC(b) - AUC(a) over films drawn with replacement."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            diffs.append(auc(y[i], b[i]) - auc(y[i], a[i]))
    return (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))) if diffs else (np.nan, np.nan)


def at_threshold(y, probs, spec: ModelSpec) -> str:
    """Sensitivity / specificity of the shipped decision rule (``edge_runtime.classifier.decide``)."""
    m = binary_metrics(y, decide(probs, spec.negative_index, spec.threshold) != spec.negative_index)
    return " / ".join("-" if v != v else f"{v:.3f}" for v in (m["sensitivity"], m["specificity"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("binary_run", type=Path)
    p.add_argument("other_run", type=Path)
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args(argv)
    import keras

    spec_a, spec_b = (ModelSpec.load(run / "spec.json") for run in (args.binary_run, args.other_run))
    dataset = load_dataset(REPO_ROOT / spec_a.training.get("data", ""), TASKS[spec_a.task], spec_a, progress=False)
    both = held_out_paths(args.binary_run) & held_out_paths(args.other_run)
    idx = np.array([i for i, s in enumerate(dataset.samples) if s.relpath in both], dtype=np.int64)
    y = (dataset.labels[idx] != spec_a.negative_index).astype(int)
    probs = [predict_probs(keras.models.load_model(run / "model.keras", compile=False), dataset.images[idx])
             for run in (args.binary_run, args.other_run)]
    a, b = (screening_score(p, spec.negative_index) for p, spec in zip(probs, (spec_a, spec_b)))
    pops = np.array([dataset.samples[i].population for i in idx])
    folders = np.array([str(Path(dataset.samples[i].relpath).parent) for i in idx])
    print(f"{len(idx)} films held out by both splits ({args.binary_run.name}: {spec_a.task}, threshold "
          f"{spec_a.threshold:.3f}; {args.other_run.name}: {spec_b.task}, threshold {spec_b.threshold:.3f})\n")
    print(f"| films | n (pneumonia) | AUC {args.binary_run.name} | AUC {args.other_run.name} | difference, 95% "
          f"paired bootstrap | sens. / spec. {args.binary_run.name} | sens. / spec. {args.other_run.name} |")
    print("|---|---|---|---|---|---|---|")
    groups = [("all", np.ones(len(idx), bool))] + [(pop, pops == pop) for pop in sorted(set(pops))] \
        + [(folder, folders == folder) for folder in sorted(set(folders))]
    for name, m in groups:
        if 0 < y[m].sum() < m.sum():
            lo, hi = paired_bootstrap(y[m], a[m], b[m], args.bootstrap) if args.bootstrap else (np.nan, np.nan)
            ranking = (f"{auc(y[m], a[m]):.3f} | {auc(y[m], b[m]):.3f} | "
                       f"{auc(y[m], b[m]) - auc(y[m], a[m]):+.3f} ({lo:+.3f} to {hi:+.3f})")
        else:  # one class only: no AUC
            ranking = "- | - | -"
        print(f"| {name} | {m.sum()} ({y[m].sum()}) | {ranking} | "
              f"{at_threshold(y[m], probs[0][m], spec_a)} | {at_threshold(y[m], probs[1][m], spec_b)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
