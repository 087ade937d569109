"""Writes evaluation results as JSON, markdown and PNG plots (matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_runtime.classifier import screening_score
from edge_runtime.spec import ModelSpec

from .train import predict_probs

# Keras (.model) and scikit-learn (.metrics) load inside the functions that use them.


def _fmt(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def metrics_markdown(result: dict, title: str) -> str:
    """A markdown summary of :func:`training.metrics.evaluate_predictions` output."""
    scr = result["screening"]
    low, high = scr["roc_auc_ci95"]
    lines = [f"# {title}", "", f"Images: {result['n']} ({', '.join(f'{k}: {v}' for k, v in result['class_counts'].items())})", "",
             f"Screening ROC AUC ({scr['positive_means']}): **{_fmt(scr['roc_auc'])}** (bootstrap 95% CI {_fmt(low)}-{_fmt(high)})", ""]
    if "macro_auc" in result:
        lines += ["One-vs-rest AUC: " + ", ".join(f"{k} {_fmt(v)}" for k, v in result["one_vs_rest_auc"].items())
                  + f"; macro {_fmt(result['macro_auc'])}", ""]
    lines += ["| decision | threshold | accuracy | sensitivity | specificity | PPV | NPV | F1 | class accuracy |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name in ("at_threshold", "at_0.5"):
        b = scr[name]
        lines.append(f"| {'shipped threshold' if name == 'at_threshold' else 'threshold 0.5'} | {b['threshold']:.4f} | "
                     f"{_fmt(b['accuracy'])} | {_fmt(b['sensitivity'])} | {_fmt(b['specificity'])} | {_fmt(b['ppv'])} | "
                     f"{_fmt(b['npv'])} | {_fmt(b['f1'])} | {_fmt(b['multiclass_accuracy'])} |")
    labels = result["labels"]
    for name in ("at_threshold", "at_0.5"):
        b = scr[name]
        lines += ["", f"Confusion matrix ({'shipped threshold' if name == 'at_threshold' else 'threshold 0.5'}; rows true, columns predicted):", "",
                  "| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for label, row in zip(labels, b["confusion_matrix"]):
            lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    if result.get("by_source"):
        lines += ["", "By source folder (decisions at the shipped threshold):", "",
                  "| source | images | true label | correct | called " + " / ".join(labels) + " |", "|---|---|---|---|---|"]
        for source, row in result["by_source"].items():
            lines.append(f"| {source} | {row['n']} | {row['true_label']} | {_fmt(row['correct'])} | "
                         + " / ".join(str(row["called"][label]) for label in labels) + " |")
    return "\n".join(lines) + "\n"


def plot_confusion(matrix, labels, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 1.6 * len(labels) + 1.5))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels).plot(ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc(curves: dict, path: Path, title: str) -> Path:
    """ROC curves of several models on one plot; ``curves`` maps name -> (positive, score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (positive, score) in curves.items():
        RocCurveDisplay.from_predictions(positive, score, name=name, ax=ax)
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict, out_dir: str | Path, prefix: str, title: str, y_true: np.ndarray,
                 probs: np.ndarray, spec: ModelSpec) -> dict:
    """Write ``<prefix>.json``, ``<prefix>.md``, ``<prefix>_confusion.png`` and ``<prefix>_roc.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / f"{prefix}.json",
        "markdown": out_dir / f"{prefix}.md",
        "confusion": out_dir / f"{prefix}_confusion.png",
        "roc": out_dir / f"{prefix}_roc.png",
    }
    paths["json"].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(metrics_markdown(result, title), encoding="utf-8")
    plot_confusion(result["screening"]["at_threshold"]["confusion_matrix"], list(spec.labels), paths["confusion"],
                   f"{title}\n(threshold {spec.threshold:.3f})")
    positive = (np.asarray(y_true) != spec.negative_index).astype(int)
    if positive.min() != positive.max():
        plot_roc({spec.name: (positive, screening_score(probs, spec.negative_index))}, paths["roc"], title)
    return {k: str(v) for k, v in paths.items()}


def keras_cams(model, planes: np.ndarray, class_indices: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """(N, h, w) CAMs of the given classes from a GAP + dense Keras model (the runtime's formula)."""
    import keras

    from edge_runtime.cam import compute_cam

    from .model import CLASSIFIER_LAYER, FEATURE_LAYER

    features_model = keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output)
    kernel = np.asarray(model.get_layer(CLASSIFIER_LAYER).kernel)
    cams = []
    for start in range(0, len(planes), batch_size):
        x = np.repeat(planes[start:start + batch_size, ..., None], 3, axis=-1)
        feats = np.asarray(features_model(x, training=False))
        cams += [compute_cam(f, kernel, int(k)) for f, k in zip(feats, class_indices[start:start + batch_size])]
    return np.stack(cams) if cams else np.zeros((0, 1, 1), np.float32)


def population_breakdown(dataset, indices: np.ndarray, probs: np.ndarray, spec: ModelSpec, seed: int = 0,
                         n_boot: int = 300) -> dict:
    """Every metric of :func:`evaluate_predictions` for each population alone (children, adults...)."""
    from .metrics import evaluate_predictions

    pops = np.array([dataset.samples[i].population for i in indices])
    out = {}
    for pop in sorted(set(pops.tolist())):
        sel = pops == pop
        out[pop] = evaluate_predictions(dataset.labels[indices][sel], probs[sel], spec, n_boot=n_boot, seed=seed)
    return out


def localization_breakdown(model, dataset, indices: np.ndarray, probs: np.ndarray, spec: ModelSpec,
                           masks: np.ndarray, has_mask: np.ndarray) -> dict:
    """Lung localisation of the shown label's heatmap, per (called label, population), masked images only."""
    from edge_runtime.classifier import decide

    from .metrics import lung_localization_by_group

    keep = np.nonzero(has_mask[indices])[0]
    if not len(keep):
        return {}
    idx = indices[keep]
    called = decide(probs[keep], spec.negative_index, spec.threshold)
    cams = keras_cams(model, dataset.images[idx], called)
    pops = np.array([dataset.samples[i].population for i in idx])
    groups = lung_localization_by_group(cams, masks[idx], called, pops, spec.labels)
    return {f"called {label}, {pop}": stats for (label, pop), stats in groups.items()}


def breakdown_markdown(populations: dict, localization: dict, unseen: dict) -> str:
    lines = []
    if populations:
        lines += ["", "## By population (each alone; decisions at the shipped threshold)", "",
                  "| population | images | screening AUC (95% CI) | sensitivity | specificity | PPV | NPV | accuracy |",
                  "|---|---|---|---|---|---|---|---|"]
        for pop, r in populations.items():
            s, b = r["screening"], r["screening"]["at_threshold"]
            low, high = s["roc_auc_ci95"]
            lines.append(f"| {pop} | {r['n']} | {_fmt(s['roc_auc'])} ({_fmt(low)}-{_fmt(high)}) | "
                         f"{_fmt(b['sensitivity'])} | {_fmt(b['specificity'])} | {_fmt(b['ppv'])} | "
                         f"{_fmt(b['npv'])} | {_fmt(b['accuracy'])} |")
    if localization:
        lines += ["", "## Does the heatmap point at the lungs? (images with a lung mask)", "",
                  "| shown label, population | images | heat inside the lungs (mean) | hottest cell inside | "
                  "lung share of the image |", "|---|---|---|---|---|"]
        for key, r in localization.items():
            lines.append(f"| {key} | {r['images']} | {_fmt(r['mass_inside_mean'])} | {_fmt(r['hottest_inside'])} | "
                         f"{_fmt(r['lung_area_mean'])} |")
    if unseen:
        lines += ["", "## Films from sources never trained on", ""]
        for name, r in unseen.items():
            lines.append(f"- {name}: {r['n']} images, called " + ", ".join(
                f"{label} {count} ({count / max(r['n'], 1):.1%})" for label, count in r["called"].items()))
    return "\n".join(lines) + "\n"


def write_validation_reports(model, dataset, spec: ModelSpec, out_dir: Path, sides: dict, masks: np.ndarray,
                             has_mask: np.ndarray, seed: int = 0, unseen: dict | None = None) -> dict:
    """Reports of each held-out side: pooled metrics, by source, by population, lung localisation.

    Args:
        sides: name -> indices (``validation`` picked the checkpoint, ``calibration`` the threshold);
            a None side is skipped.
        unseen: name -> (N, H, W) planes of films from sources the model never saw, reported as
            what the model called them.
    """
    from .metrics import by_source, evaluate_predictions

    results = {}
    unseen_calls = {}
    for name, planes in (unseen or {}).items():
        from edge_runtime.classifier import decide

        called = decide(predict_probs(model, planes), spec.negative_index, spec.threshold)
        unseen_calls[name] = {"n": int(len(planes)),
                              "called": {label: int((called == i).sum()) for i, label in enumerate(spec.labels)}}
    notes = {
        "validation": "picked the checkpoint (its AUC is slightly optimistic); the threshold was not chosen here",
        "calibration": "picked the threshold (its sensitivity at the threshold is optimistic); not used for the checkpoint",
    }
    for name, indices in sides.items():
        if indices is None or not len(indices):
            continue
        y_true = dataset.labels[indices]
        probs = predict_probs(model, dataset.images[indices])
        result = evaluate_predictions(y_true, probs, spec, seed=seed)
        result["split"] = f"{name}: grouped (patient + duplicate) split of the training data; {notes.get(name, '')}"
        result["by_source"] = by_source([dataset.samples[i].source for i in indices], y_true, probs, spec)
        result["by_population"] = population_breakdown(dataset, indices, probs, spec, seed=seed)
        result["lung_localization"] = localization_breakdown(model, dataset, indices, probs, spec, masks, has_mask)
        result["unseen_sources"] = unseen_calls
        title = f"{spec.name}: {name} side (grouped split of the training data)"
        paths = write_report(result, out_dir, name, title, y_true, probs, spec)
        md = Path(paths["markdown"])
        md.write_text(md.read_text(encoding="utf-8") + f"\nSide: {result['split']}.\n"
                      + breakdown_markdown(result["by_population"], result["lung_localization"], unseen_calls),
                      encoding="utf-8")
        results[name] = result
    return results
