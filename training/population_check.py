"""python -m training population-check: does a film look like the population a model was validated on?

The etiology model was trained on children only (no adult etiology labels exist here), so its
answer means nothing for an adult's film. This fits a logistic regression on the model's own
global-average-pooled feature map (the embedding the classifier reads), children vs adults, and
stores it in the training run's ``spec.json`` as ``population_check``; the runtime
(:mod:`edge_runtime.population`) applies it to the feature map of the ``*_cam.tflite`` file and
flags films that look like the other population.

Which films are used where (nothing graded on what fitted it):
- fit: children from the model's own training side; adults from half of the adult groups
  (``adult_cxr`` and ``covid19/NORMAL_ADULT``, near-duplicates kept together);
- validation: children from the model's checkpoint and threshold sides (never trained on by either
  the network or the check), the other half of the adult groups, and every ``covid19/COVID19`` film
  (a source the check never saw);
- shift: the children's validation films re-rendered by :func:`training.shift.perturb` at half
  severity (at the model's input size), to show how often a rescanned child's film gets flagged.

What it cannot show: "looks like an adult's film" is learned from these sources; an adult film
from a hospital unlike any here, or a teenager's, may fall on either side.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from edge_runtime.population import apply_population_check
from edge_runtime.spec import ModelSpec

from .data import COVID19, Source, Task, load_dataset, split_halves
from .shift import PERTURBATIONS, image_rng, perturb

logger = logging.getLogger(__name__)

#: Sources of each population (below the data root) and the extra unseen adult source.
CHILD_SOURCES = ("chest_xray/train/NORMAL", "chest_xray/train/PNEUMONIA")
ADULT_SOURCES = ("adult_cxr/NORMAL", "adult_cxr/PNEUMONIA", "covid19/NORMAL_ADULT")
UNSEEN_ADULT_SOURCES = (COVID19,)
SHIFT_FAMILIES = tuple(PERTURBATIONS)


def population_task() -> Task:
    """Children (label 0) vs adults (label 1), every film this repository has."""
    return Task(
        "population",
        {"children": tuple(Source(s, population="children") for s in CHILD_SOURCES),
         "adults": tuple(Source(s, population="adults") for s in ADULT_SOURCES + UNSEEN_ADULT_SOURCES)},
        ".",
        "children (Kermany) vs adults (adult_cxr, RSNA normals, COVID-19 Radiography Database)",
    )


def split_prefix(spec: ModelSpec, data_root: Path) -> str:
    """What to put before a split's paths to make them relative to ``data_root`` (``chest_xray/train/`` for a
    model trained on the Kermany folder, nothing for one trained on the data root)."""
    from .train import REPO_ROOT

    trained_on = (REPO_ROOT / spec.training.get("data", "")).resolve()
    try:
        relative = trained_on.relative_to(Path(data_root).resolve()).as_posix()
    except ValueError:
        return ""
    return "" if relative in ("", ".") else relative + "/"


def feature_extractor(model):
    """A Keras model from the classifier's input to its global-average-pooled features."""
    import keras

    return keras.Model(model.inputs, model.get_layer("gap").output)


def embed(extractor, planes: np.ndarray, batch_size: int = 128) -> np.ndarray:
    out = []
    for start in range(0, len(planes), batch_size):
        x = np.repeat(planes[start:start + batch_size, ..., None], 3, axis=-1)
        out.append(np.asarray(extractor(x, training=False), dtype=np.float64))
    return np.concatenate(out) if out else np.zeros((0, 0))


def fit_check(features: np.ndarray, is_other: np.ndarray, c: float = 1.0, threshold: float = 0.5) -> dict:
    """Standardised, class-balanced logistic regression; the dict the spec stores."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit((features - mean) / scale, is_other.astype(int))
    return {
        "method": "logistic regression on the global-average-pooled feature map (children vs adults)",
        "expected": "children",
        "other": "adults",
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "weights": [round(float(v), 6) for v in model.coef_[0]],
        "bias": round(float(model.intercept_[0]), 6),
        "threshold": float(threshold),
    }


def flag_rate(check: dict, features: np.ndarray) -> float:
    """Share of rows the check flags as the other population."""
    if not len(features):
        return float("nan")
    return float(np.mean([apply_population_check(check, row)["outside"] for row in features]))


def run(model_path: Path, data_root: Path, cache_dir: Path | None = None, seed: int = 0,
        shift: bool = True) -> tuple[dict, dict]:
    """Fit and validate the check for the Keras model at ``model_path``; (check, report)."""
    import keras

    train_dir = model_path.parent
    spec = ModelSpec.load(train_dir / "spec.json")
    dataset = load_dataset(data_root, population_task(), spec, cache_dir=cache_dir, progress=False)
    relpaths = np.array([s.relpath for s in dataset.samples])
    sources = np.array([s.source for s in dataset.samples])
    is_adult = dataset.labels == 1

    # Children: the sides of the model's own split, whose paths are relative to the folder it was trained on.
    split = json.loads((train_dir / "split.json").read_text(encoding="utf-8"))
    prefix = split_prefix(spec, data_root)
    child_train = {prefix + p for p in split["train"]}
    child_held = {prefix + p for p in split.get("val", []) + split.get("calibration", [])}
    fit_child = np.flatnonzero(~is_adult & np.isin(relpaths, list(child_train)))
    val_child = np.flatnonzero(~is_adult & np.isin(relpaths, list(child_held)))
    # Adults: halves of the duplicate-aware groups of the seen adult sources.
    seen_adult = np.flatnonzero(is_adult & ~np.isin(sources, UNSEEN_ADULT_SOURCES))
    fit_adult, val_adult = split_halves(dataset, seen_adult, seed=seed)
    unseen_adult = np.flatnonzero(np.isin(sources, UNSEEN_ADULT_SOURCES))
    overlap = set(dataset.groups[fit_adult]) & set(dataset.groups[np.concatenate([val_adult, unseen_adult])])
    if overlap:  # a duplicate in both fit and validation would flatter the check
        keep = ~np.isin(dataset.groups[val_adult], list(overlap))
        val_adult = val_adult[keep]
        unseen_adult = unseen_adult[~np.isin(dataset.groups[unseen_adult], list(overlap))]

    model = keras.models.load_model(model_path, compile=False)
    extractor = feature_extractor(model)
    feats = embed(extractor, dataset.images)
    fit_idx = np.concatenate([fit_child, fit_adult])
    check = fit_check(feats[fit_idx], is_adult[fit_idx])

    def rates(indices):
        return {"n": int(len(indices)), "flagged_as_adult": round(flag_rate(check, feats[indices]), 4)}

    held_out = np.concatenate([val_child, val_adult, unseen_adult])
    by_source = {source: rates(held_out[sources[held_out] == source]) for source in sorted(set(sources[held_out]))}
    children = rates(val_child)
    adults = rates(val_adult)
    covid = rates(unseen_adult)
    report = {
        "model": model_path.as_posix(),
        "seed": seed,
        "fit": {"children": int(len(fit_child)), "adults": int(len(fit_adult))},
        "validation": {
            "children_flagged": children["flagged_as_adult"],
            "adults_caught": adults["flagged_as_adult"],
            "unseen_adult_source_caught": covid["flagged_as_adult"],
            "balanced_accuracy": round(0.5 * (1.0 - children["flagged_as_adult"] + adults["flagged_as_adult"]), 4),
            "n_children": children["n"], "n_adults": adults["n"], "n_unseen_adults": covid["n"],
        },
        "by_source": by_source,
    }
    if shift:
        planes = dataset.images[val_child]
        keys = relpaths[val_child]
        severity, max_severity = 2, 4
        rows = {}
        for family in SHIFT_FAMILIES:
            shifted = np.stack([perturb(p, family, severity, max_severity, image_rng(seed, family, severity, k))
                                for p, k in zip(planes, keys)])
            rows[family] = round(flag_rate(check, embed(extractor, shifted)), 4)
        report["shift_children_flagged"] = {"severity": f"{severity}/{max_severity}", **rows}
    check = {**check, "validation": report["validation"]}
    return check, report


def write_markdown(report: dict, path: Path) -> Path:
    v = report["validation"]
    lines = [
        "# Out-of-population check: children vs adults",
        "",
        "A logistic regression on the model's global-average-pooled feature map, fitted on the model's training",
        f"children ({report['fit']['children']}) and half of the adult groups ({report['fit']['adults']}); "
        "graded on films neither the network nor the check was fitted on.",
        "",
        "| held-out films | n | flagged as adult |",
        "|---|---|---|",
        f"| children (checkpoint + threshold sides) | {v['n_children']} | {v['children_flagged']:.1%} |",
        f"| adults, other half of the groups | {v['n_adults']} | {v['adults_caught']:.1%} |",
        f"| adults, COVID-19 films (a source the check never saw) | {v['n_unseen_adults']} | "
        f"{v['unseen_adult_source_caught']:.1%} |",
        "",
        f"Balanced accuracy (children vs adults of the seen sources): {v['balanced_accuracy']:.3f}.",
        "",
        "| source | n | flagged as adult |",
        "|---|---|---|",
        *[f"| `{s}` | {r['n']} | {r['flagged_as_adult']:.1%} |" for s, r in report["by_source"].items()],
    ]
    if "shift_children_flagged" in report:
        rows = dict(report["shift_children_flagged"])
        severity = rows.pop("severity")
        lines += ["", f"Children's held-out films re-rendered (severity {severity}, at the input size): share flagged",
                  "", "| re-rendering | flagged as adult |", "|---|---|",
                  *[f"| {k} | {val:.1%} |" for k, val in rows.items()]]
    lines += ["", "What it cannot show: \"looks like an adult's film\" is learned from these sources only; an adult "
              "film from a hospital unlike any here, or an older child's or a teenager's, may fall on either side. "
              "The notice is a guard against misuse, not an age estimate."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training population-check",
        description="Fit the children-vs-adults check on a trained model's feature embedding, report its accuracy on "
                    "held-out films, and store it in the run's spec.json (export then embeds it).")
    parser.add_argument("--model", type=Path, required=True, help="model.keras with spec.json and split.json beside it")
    parser.add_argument("--data", type=Path, default=None, help="data root (default: the one the spec records)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-shift", action="store_true", help="skip the re-rendered children's check")
    parser.add_argument("--dry-run", action="store_true", help="report only; leave spec.json unchanged")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .train import REPO_ROOT

    spec_path = args.model.parent / "spec.json"
    spec = ModelSpec.load(spec_path)
    data_root = args.data
    if data_root is None:  # the spec records the task's folder; the check needs the data root
        recorded = REPO_ROOT / spec.training.get("data", "")
        data_root = recorded.parent.parent if recorded.name == "train" else recorded
    check, report = run(args.model, data_root, cache_dir=args.cache_dir, seed=args.seed, shift=not args.no_shift)
    out = args.model.parent
    (out / "population_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out / "population_check.md")
    print((out / "population_check.md").read_text(encoding="utf-8"))
    if not args.dry_run:
        spec.replace(population_check=check).save(spec_path)
        logger.info("population_check stored in %s", spec_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
