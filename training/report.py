"""Writes evaluation results as JSON, markdown and PNG plots (matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_runtime.spec import ModelSpec

from .metrics import positive_score


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
        plot_roc({spec.name: (positive, positive_score(probs, spec.negative_index))}, paths["roc"], title)
    return {k: str(v) for k, v in paths.items()}
