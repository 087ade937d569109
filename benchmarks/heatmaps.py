"""Heatmap parity: the edge runtime's CAM against Keras Grad-CAM on the same images."""

from __future__ import annotations

import math

import numpy as np

from .report import save_small_png

#: Share of cells forming the "hot region" compared by IoU.
TOP_FRACTION = 0.2


def top_region(cam: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ``fraction`` hottest cells (ties broken by position, so the count is exact)."""
    flat = np.asarray(cam, dtype=np.float64).ravel()
    k = max(1, int(math.ceil(fraction * flat.size)))
    order = np.argsort(-flat, kind="stable")[:k]
    mask = np.zeros(flat.size, dtype=bool)
    mask[order] = True
    return mask.reshape(np.shape(cam))


def compare_maps(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Pearson r, top-region IoU and hottest-cell agreement of (N, h, w) map stacks.

    Pearson r is undefined when either map is constant (e.g. an all-zero CAM); such images are
    counted and left out of the r statistics, but not out of IoU or hottest-cell agreement.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"map stacks differ in shape: {reference.shape} vs {candidate.shape}")
    rs, ious, hottest = [], [], []
    for ref, cand in zip(reference, candidate):
        a, b = ref.ravel(), cand.ravel()
        if a.std() > 0 and b.std() > 0:
            rs.append(float(np.corrcoef(a, b)[0, 1]))
        ma, mb = top_region(ref), top_region(cand)
        ious.append(float((ma & mb).sum() / (ma | mb).sum()))
        hottest.append(bool(np.argmax(a) == np.argmax(b)))
    n = len(reference)
    rs_arr = np.asarray(rs)
    return {
        "images": int(n),
        "pearson_r_mean": float(rs_arr.mean()) if rs else float("nan"),
        "pearson_r_median": float(np.median(rs_arr)) if rs else float("nan"),
        "pearson_r_p05": float(np.percentile(rs_arr, 5)) if rs else float("nan"),
        "pearson_r_min": float(rs_arr.min()) if rs else float("nan"),
        "pearson_r_undefined_images": int(n - len(rs)),
        "top20_iou_mean": float(np.mean(ious)) if ious else float("nan"),
        "hottest_cell_agreement": float(np.mean(hottest)) if hottest else float("nan"),
    }


def plot_examples(rows: list[dict], path, title: str) -> None:
    """Side-by-side figure: each row an image with its Keras Grad-CAM and edge CAM overlays.

    Args:
        rows: Dicts with ``image`` (H, W, 3) uint8, ``caption`` and ``maps`` (column title -> (h, w) map).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_runtime.render import overlay_heatmap

    columns = ["image"] + list(rows[0]["maps"])
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.1 * len(columns), 2.25 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        axes[r][0].imshow(row["image"])
        axes[r][0].set_title(row["caption"], fontsize=7)
        for c, (name, cam) in enumerate(row["maps"].items(), start=1):
            axes[r][c].imshow(overlay_heatmap(row["image"], cam, alpha=0.45))
            axes[r][c].set_title(name, fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()

    save_small_png(fig, path)
