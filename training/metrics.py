"""Screening metrics for NORMAL-vs-abnormal decisions and multi-class reports (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

# The screening score (1 - P(negative)) and the decision rule are the runtime's: one rule everywhere.
from edge_runtime.classifier import decide, screening_score
from edge_runtime.spec import ModelSpec


def choose_threshold(y_true: np.ndarray, probs: np.ndarray, negative_index: int,
                     min_sensitivity: float = 0.95) -> float:
    """Largest threshold whose sensitivity (abnormal detected as abnormal) is >= ``min_sensitivity``.

    The largest such threshold gives the best specificity at that sensitivity.
    """
    positive = (np.asarray(y_true) != negative_index).astype(int)
    score = screening_score(probs, negative_index)
    if positive.min() == positive.max():
        raise ValueError("choose_threshold needs both normal and abnormal examples")
    fpr, tpr, thresholds = skm.roc_curve(positive, score, drop_intermediate=False)
    ok = np.nonzero(tpr >= min_sensitivity)[0]
    threshold = float(thresholds[ok[0]])
    # roc_curve's first threshold is +inf; keep the threshold inside (0, 1) for the spec.
    return float(np.clip(threshold, 1e-4, 1 - 1e-4))


def bootstrap_auc(positive: np.ndarray, score: np.ndarray, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the ROC AUC, resampling images."""
    rng = np.random.default_rng(seed)
    n = len(positive)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if positive[idx].min() == positive[idx].max():
            continue
        values.append(skm.roc_auc_score(positive[idx], score[idx]))
    if not values:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def binary_metrics(positive: np.ndarray, predicted_positive: np.ndarray) -> dict:
    """Sensitivity, specificity, PPV, NPV, F1 and accuracy of a positive/negative decision."""
    tn, fp, fn, tp = skm.confusion_matrix(positive, predicted_positive, labels=[0, 1]).ravel()
    sensitivity = _safe_div(tp, tp + fn)
    ppv = _safe_div(tp, tp + fp)
    return {
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "accuracy": _safe_div(tp + tn, tp + tn + fp + fn),
        "sensitivity": sensitivity,
        "specificity": _safe_div(tn, tn + fp),
        "ppv": ppv,
        "npv": _safe_div(tn, tn + fn),
        "f1": _safe_div(2 * ppv * sensitivity, ppv + sensitivity) if ppv == ppv and sensitivity == sensitivity else float("nan"),
    }


def evaluate_predictions(y_true: np.ndarray, probs: np.ndarray, spec: ModelSpec,
                         threshold: float | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Every metric the reports show, at the spec's threshold and at 0.5.

    Args:
        y_true: (N,) class indices in ``spec.labels`` order.
        probs: (N, C) probabilities.
        spec: Gives labels, the negative class and the shipped threshold.
        threshold: Overrides ``spec.threshold``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(spec.labels)
    neg = spec.negative_index
    threshold = spec.threshold if threshold is None else float(threshold)
    positive = (y_true != neg).astype(int)
    score = screening_score(probs, neg)
    both = positive.min() != positive.max()
    auc = float(skm.roc_auc_score(positive, score)) if both else float("nan")
    low, high = bootstrap_auc(positive, score, n_boot=n_boot, seed=seed) if both else (float("nan"),) * 2
    result = {
        "n": int(len(y_true)),
        "labels": labels,
        "class_counts": {labels[i]: int((y_true == i).sum()) for i in range(len(labels))},
        "screening": {
            "positive_means": f"not {spec.negative_label} (score = 1 - P({spec.negative_label}))",
            "roc_auc": auc,
            "roc_auc_ci95": [low, high],
        },
    }
    for name, thr in (("at_threshold", threshold), ("at_0.5", 0.5)):
        predicted = decide(probs, neg, thr)
        block = {"threshold": thr}
        block.update(binary_metrics(positive, (predicted != neg).astype(int)))
        block["multiclass_accuracy"] = float(np.mean(predicted == y_true))
        block["confusion_matrix"] = skm.confusion_matrix(y_true, predicted, labels=range(len(labels))).tolist()
        block["classification_report"] = skm.classification_report(
            y_true, predicted, labels=range(len(labels)), target_names=labels, output_dict=True, zero_division=0)
        result["screening"][name] = block
    if len(labels) > 2:
        per_class = {}
        for i, label in enumerate(labels):
            one = (y_true == i).astype(int)
            per_class[label] = float(skm.roc_auc_score(one, probs[:, i])) if one.min() != one.max() else float("nan")
        result["one_vs_rest_auc"] = per_class
        result["macro_auc"] = float(np.nanmean(list(per_class.values())))
    return result


def by_source(sources: list, y_true: np.ndarray, probs: np.ndarray, spec: ModelSpec,
              threshold: float | None = None) -> dict:
    """Per source folder: image count, share of correct decisions and what the model called them.

    Shows, for instance, how a mixed class fares on each of its origins (adult vs paediatric
    normals in the covid task). A folder that holds several true labels (Kermany's PNEUMONIA
    folder in the etiology task: bacterial and viral) gets one row per label, keyed
    ``"PNEUMONIA (VIRAL)"``, so that no row states a true label some of its films do not have.
    """
    threshold = spec.threshold if threshold is None else threshold
    predicted = decide(probs, spec.negative_index, threshold)
    y_true = np.asarray(y_true)
    sources = np.asarray(sources, dtype=object)
    out = {}
    for source in sorted(set(sources)):
        in_source = sources == source
        held = sorted(set(y_true[in_source].tolist()))
        for label in held:
            mask = in_source & (y_true == label)
            calls = [spec.labels[i] for i in predicted[mask]]
            key = source if len(held) == 1 else f"{source} ({spec.labels[label]})"
            out[key] = {
                "n": int(mask.sum()),
                "true_label": spec.labels[label],
                "correct": float(np.mean(predicted[mask] == label)),
                "called": {name: calls.count(name) for name in spec.labels},
            }
    return out


def lung_localization(cams: np.ndarray, masks: np.ndarray) -> dict:
    """Whether heatmaps point at the lungs: per-image share of heat inside the mask, hottest cell inside.

    Args:
        cams: (N, h, w) heatmaps in [0, 1] at feature-map resolution (an all-zero map has no heat).
        masks: (N, H, W) lung masks (non-zero = lung) at the image size, H and W multiples of h and w
            or not (cells are compared by the lung share of their area).

    Returns:
        ``images``, ``mass_inside_mean`` (mean over images with heat), ``hottest_inside`` (share of
        images whose hottest cell is at least half lung), ``no_heat`` (images with an all-zero map).
    """
    from edge_runtime.cam import upsample

    mass, hottest, no_heat = [], [], 0
    for cam, mask in zip(np.asarray(cams, np.float32), np.asarray(masks)):
        lung = (mask > 0).astype(np.float32)
        if cam.max() <= 0:
            no_heat += 1
            continue
        up = upsample(cam, lung.shape)
        mass.append(float((up * lung).sum() / max(up.sum(), 1e-12)))
        h, w = cam.shape
        r, c = np.unravel_index(int(np.argmax(cam)), cam.shape)
        rows = slice(int(r * lung.shape[0] / h), max(int(r * lung.shape[0] / h) + 1, int((r + 1) * lung.shape[0] / h)))
        cols = slice(int(c * lung.shape[1] / w), max(int(c * lung.shape[1] / w) + 1, int((c + 1) * lung.shape[1] / w)))
        hottest.append(bool(lung[rows, cols].mean() >= 0.5))
    return {
        "images": int(len(cams)),
        "mass_inside_mean": float(np.mean(mass)) if mass else float("nan"),
        "hottest_inside": float(np.mean(hottest)) if hottest else float("nan"),
        "lung_area_mean": float(np.mean([(m > 0).mean() for m in masks])) if len(masks) else float("nan"),
        "no_heat": int(no_heat),
    }


def lung_localization_by_group(cams: np.ndarray, masks: np.ndarray, called: np.ndarray, populations: np.ndarray,
                               labels) -> dict:
    """:func:`lung_localization` of each (shown label, population) pair that has films.

    Args:
        cams: (N, h, w) heatmaps of the shown label.
        masks: (N, H, W) lung masks of the same films.
        called: (N,) shown label index of each film.
        populations: (N,) population of each film.
        labels: Label names in index order.

    Returns:
        ``{(label, population): lung_localization(...)}`` in label, then population order.
    """
    populations = np.asarray(populations)
    out = {}
    for label_index, label in enumerate(labels):
        for pop in sorted(set(populations.tolist())):
            sel = (np.asarray(called) == label_index) & (populations == pop)
            if sel.any():
                out[(label, pop)] = lung_localization(cams[sel], masks[sel])
    return out
