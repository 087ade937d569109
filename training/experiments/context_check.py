"""Is the adult label readable outside the lungs? python training/experiments/context_check.py RUN_DIR [--probe]

Prints a table and writes the figures to RUN_DIR/context.json, which the model card reads (`python -m
export.model_card`) when RUN_DIR is a shipped model's training folder.

The portable-film confounder (data README): many adult pneumonia films are portable AP films of inpatients, with
lines, electrodes and "PORTABLE" markers, most adult normals outpatient PA films. If so, the label can be read from
what surrounds the lungs. Measured on the held-out adult films that have a lung mask (checkpoint and threshold
sides of RUN_DIR's split), each film edited with its own mask (dilated by 3 px at the model size, filled black):

- the run's model on the original films, on the lungs alone (everything outside the mask black), on the context
  alone (the lungs black; then the whole box around both lungs black, since the first leaves the lungs' outline,
  which projection and disease change), and on swapped films (one film's lungs inside another film's context,
  each adult pneumonia film paired with an adult normal one both ways): the AUC against the lungs' label and
  against the context's label says which of the two the model follows;
- ``--probe``: the same small network trained from scratch on each edit of the adult training-side films alone
  (no augmentation beyond shifts, 25 epochs, class-balanced; epoch picked on the checkpoint side, AUC on the
  threshold side), i.e. how much of the label each region carries for any model trained on these data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_runtime.classifier import screening_score  # noqa: E402
from training.data import load_masks  # noqa: E402
from training.experiments.held_out import SIDES, load  # noqa: E402
from training.train import REPO_ROOT, default_mask_root, predict_probs  # noqa: E402

EDITS = ("original", "lungs only", "context only", "context outside the lung box")


def dilate(masks: np.ndarray, pixels: int = 3) -> np.ndarray:
    import cv2

    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return np.stack([cv2.dilate(m, kernel) for m in masks]).astype(bool)


def edit(planes: np.ndarray, lungs: np.ndarray, which: str) -> np.ndarray:
    out = planes.copy()
    if which == "lungs only":
        out[~lungs] = 0
    elif which == "context only":
        out[lungs] = 0
    elif which == "context outside the lung box":  # the lungs' outline (a label cue of its own?) hidden too
        for image, mask in zip(out, lungs):
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            if len(rows):
                image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = 0
    return out


def swapped(planes: np.ndarray, lungs: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Film a[i]'s lungs (its own mask) inside film b[i]'s context (b's lungs blacked out first)."""
    out = edit(planes[b], lungs[b], "context only")
    out[lungs[a]] = planes[a][lungs[a]]
    return out


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def probe(planes, lungs, labels, train, val, cal, which: str, seed: int = 0, epochs: int = 25) -> tuple[float, int]:
    """Threshold-side AUC of a small network trained on ``which`` edits of the training films; its best epoch."""
    import keras

    from training.model import build_model

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = {k: edit(planes[idx], lungs[idx], which) for k, idx in (("train", train), ("val", val), ("cal", cal))}
    y = labels[train]
    weights = {c: len(y) / (2 * max(1, (y == c).sum())) for c in (0, 1)}
    model = build_model(2, input_size=planes.shape[1:3])
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    best, best_epoch, best_weights = -1.0, 0, None
    h, w = planes.shape[1:3]
    for epoch in range(1, epochs + 1):
        shifted = np.zeros_like(x["train"])
        for i, image in enumerate(x["train"]):  # random shift up to 8% per axis, zero fill
            dy, dx = rng.integers(-h // 12, h // 12 + 1), rng.integers(-w // 12, w // 12 + 1)
            src = image[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            shifted[i, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
        model.fit(np.repeat(shifted[..., None], 3, -1), y, batch_size=32, epochs=1, verbose=0, class_weight=weights)
        score = auc(labels[val], predict_probs(model, x["val"])[:, 1])
        if score > best:
            best, best_epoch, best_weights = score, epoch, model.get_weights()
    model.set_weights(best_weights)
    return auc(labels[cal], predict_probs(model, x["cal"])[:, 1]), best_epoch


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--probe", action="store_true", help="also train the region probes (about 3 min each)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    dataset, runs, spec = load([args.run])
    run = runs[args.run.name]
    masks, has_mask = load_masks(dataset, default_mask_root(REPO_ROOT / spec.training.get("data", "")))
    lungs = dilate(masks)
    neg = spec.labels.index("NORMAL")
    adult = np.array([s.population == "adults" for s in dataset.samples]) & has_mask
    positive = dataset.labels != neg

    held = np.concatenate([run["sides"][side] for side in SIDES])
    held = held[adult[held]]
    y = positive[held].astype(int)
    import keras

    model = keras.models.load_model(args.run / "model.keras", compile=False)
    print(f"{args.run.name}: {len(held)} held-out adult films with a lung mask "
          f"({y.sum()} pneumonia, {(1 - y).sum()} normal)\n")
    print("| input | AUC against the lungs' label | AUC against the context's label |")
    print("|---|---|---|")
    record = {"command": "python training/experiments/context_check.py " + " ".join(argv), "model": args.run.name,
              "films": int(len(held)), "pneumonia": int(y.sum()),
              "normal": int((1 - y).sum()), "seed": args.seed, "edits": {}}
    for which in EDITS:
        score = screening_score(predict_probs(model, edit(dataset.images[held], lungs[held], which)), neg)
        record["edits"][which] = auc(y, score)
        print(f"| {which} | {record['edits'][which]:.4f} | |")
    rng = np.random.default_rng(args.seed)
    pos, negs = held[y == 1], held[y == 0]
    k = min(len(pos), len(negs))
    pos, negs = rng.permutation(pos)[:k], rng.permutation(negs)[:k]
    a = np.concatenate([pos, negs])  # lungs from
    b = np.concatenate([negs, pos])  # context from
    score = screening_score(predict_probs(model, swapped(dataset.images, lungs, a, b)), neg)
    record["swapped"] = {"films": int(2 * k), "auc_lungs_label": auc(positive[a].astype(int), score),
                         "auc_context_label": auc(positive[b].astype(int), score)}
    print(f"| swapped ({2 * k} films) | {record['swapped']['auc_lungs_label']:.3f} | "
          f"{record['swapped']['auc_context_label']:.3f} |")
    (args.run / "context.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    if args.probe:
        train = run["sides"]["train"] if "train" in run["sides"] else None
        if train is None:
            raise SystemExit("the split has no training side")
        train = train[adult[train]]
        val = run["sides"]["val"][adult[run["sides"]["val"]]]
        cal = run["sides"]["calibration"][adult[run["sides"]["calibration"]]]
        print(f"\nProbes: trained on {len(train)} adult training films, epoch picked on {len(val)}, "
              f"AUC on {len(cal)} threshold-side films\n")
        print("| probe trained and scored on | AUC (threshold side) | best epoch |")
        print("|---|---|---|")
        for which in EDITS:
            score, epoch = probe(dataset.images, lungs, positive.astype(int), train, val, cal, which, args.seed)
            print(f"| {which} | {score:.3f} | {epoch} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
