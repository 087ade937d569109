"""Class activation maps without gradients, and their overlay on the image (numpy + Pillow)."""

from __future__ import annotations

import io

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


def _jet_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    red = np.clip(1.5 - np.abs(4.0 * x - 3.0), 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * x - 2.0), 0.0, 1.0)
    blue = np.clip(1.5 - np.abs(4.0 * x - 1.0), 0.0, 1.0)
    return np.round(np.stack([red, green, blue], axis=1) * 255.0).astype(np.uint8)


#: 256-entry jet-like colormap (blue = low, red = high), (256, 3) uint8.
JET = _jet_lut()


_JET_PALETTE = JET.tobytes()


def colorize(cam: np.ndarray) -> np.ndarray:
    """Map a [0, 1] map to RGB uint8 with :data:`JET`."""
    indices = np.clip(np.round(np.asarray(cam) * 255.0), 0, 255).astype(np.uint8)
    return JET[indices]


def overlay_heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend the colour-mapped CAM over the image.

    Args:
        image: (H, W, 3) uint8 RGB.
        cam: (h, w) map in [0, 1], upsampled to (H, W) here.
        alpha: Weight of the heatmap, 0 (image only) to 1 (heatmap only).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    # All in 8 bits and in Pillow's C code: upsample the quantised map, colour it through a JET
    # palette, blend. Within 6 colour levels (1.5 map levels) of the float32 colorize(upsample()) + numpy blend, and
    # ~10x faster on a 600-pixel panel (python -m benchmarks.opencv_vs_pillow: this makes OpenCV's
    # applyColorMap + addWeighted unnecessary).
    levels = np.clip(np.round(np.asarray(cam, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    heat = Image.fromarray(levels, "L").resize((width, height), Image.Resampling.BILINEAR)
    heat.putpalette(_JET_PALETTE)
    blended = Image.blend(Image.fromarray(np.ascontiguousarray(image), "RGB"), heat.convert("RGB"), alpha)
    return np.asarray(blended)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two RGB images next to each other on a black strip (heights matched)."""
    height = max(left.shape[0], right.shape[0])
    canvas = np.zeros((height, left.shape[1] + gap + right.shape[1], 3), dtype=np.uint8)
    canvas[:left.shape[0], :left.shape[1]] = left
    canvas[:right.shape[0], left.shape[1] + gap:] = right
    return canvas


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink an RGB image so that its longer side is at most ``max_side`` (never enlarges)."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB (or greyscale) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
