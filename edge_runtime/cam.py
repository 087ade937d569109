"""Class activation maps without gradients: the map of a class, its normalisation and upsampling (drawing: ``render``)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def compute_cam(features: np.ndarray, weights: np.ndarray, class_index: int) -> np.ndarray:
    """CAM of one class: ReLU(sum_c F[..., c] * W[c, k]), normalised to [0, 1].

    For a model ending in global average pooling and one dense layer this equals Grad-CAM
    exactly (the gradient of the logit with respect to each feature map is the constant
    W[c, k] / (h * w)).

    Args:
        features: (h, w, c) float feature map (dequantized for integer models).
        weights: (c, num_classes) dense kernel.
        class_index: Class to explain.

    Returns:
        (h, w) float32 in [0, 1]; all zeros when no location supports the class.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 4:
        features = features[0]
    weights = np.asarray(weights, dtype=np.float32)
    if features.ndim != 3 or weights.ndim != 2 or features.shape[-1] != weights.shape[0]:
        raise ValueError(f"feature map {features.shape} does not match dense weights {weights.shape}")
    cam = np.maximum(features @ weights[:, class_index], 0.0)
    return normalize_map(cam)


def normalize_map(cam: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1]; an all-zero (or constant zero) map stays zero."""
    cam = np.asarray(cam, dtype=np.float32)
    peak = float(cam.max()) if cam.size else 0.0
    if not np.isfinite(peak) or peak <= 1e-12:
        return np.zeros_like(cam, dtype=np.float32)
    return np.clip(cam / peak, 0.0, 1.0).astype(np.float32)


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a [0, 1] map to ``size`` = (height, width)."""
    height, width = size
    image = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F")
    return np.clip(np.asarray(image.resize((width, height), Image.Resampling.BILINEAR)), 0.0, 1.0)
