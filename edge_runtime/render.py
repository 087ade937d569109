"""Drawing heatmaps: colour map, overlay on the image, side-by-side panels, PNG/JPEG bytes and heatmap files."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from .errors import StorageError
from .files import write_atomic

PathLike = Union[str, os.PathLike]

#: Weight of the heatmap in an overlay (0: the image only, 1: the heatmap only).
DEFAULT_ALPHA = 0.4
#: Longest side of the saved heatmap panels (each half of the side-by-side PNG): the heatmap
#: comes from a feature map of a few cells a side, so more pixels only cost encoding time.
OVERLAY_MAX_SIDE = 640
#: zlib level of the heatmap PNGs: 1 encodes about 4x faster than the default 6 for ~30% more bytes.
PNG_COMPRESS_LEVEL = 1


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


def overlay_heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
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


def encode_png(image: np.ndarray, compress_level: int = -1) -> bytes:
    """PNG bytes of an RGB (or greyscale) uint8 array.

    Args:
        image: (H, W, 3) RGB or (H, W) greyscale, uint8.
        compress_level: zlib level, 0-9 (-1: zlib's default, 6).
    """
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=False,
                                                            compress_level=compress_level)
    return buffer.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes of an RGB uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def save_overlay(result, path: PathLike, alpha: float = DEFAULT_ALPHA, max_side: int = OVERLAY_MAX_SIDE) -> Path:  # noqa: D417
    """Write the original | heatmap-overlay PNG of a classification.

    Args:
        result: A :class:`~edge_runtime.classifier.Result` computed with ``heatmap=True``.
        path: PNG file to write (its folder is created; written atomically).
        alpha: Heatmap weight in the overlay, 0-1.
        max_side: Each panel is shrunk to at most this many pixels a side.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: the result carries no heatmap or image.
        StorageError: the file cannot be written (disk full, read-only folder).
    """
    if result.heatmap is None or result.image is None:
        raise ValueError("this result has no heatmap: classify with heatmap=True on a *_cam model")
    image = fit_within(result.image, max_side)
    panel = side_by_side(image, overlay_heatmap(image, result.heatmap, alpha=alpha))
    path = Path(path)
    try:
        write_atomic(path, encode_png(panel, compress_level=PNG_COMPRESS_LEVEL))
    except OSError as err:
        raise StorageError(f"cannot write the heatmap {path}: {err.strerror or err}") from err
    return path


def heatmap_name(source_name: str, image_sha256: str, identifiers: bool = False) -> str:
    """``<sha256[:16]>.heatmap.png``: named by content only, because the source's file name may
    carry a patient's name and heatmap paths go into the screening log. With ``identifiers``
    (``--store-identifiers``): ``<input stem>-<sha256[:8]>.heatmap.png``, easier to match by eye."""
    stem = Path(source_name).stem if source_name else ""
    if identifiers and stem:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
        return f"{safe}-{image_sha256[:8]}.heatmap.png"
    return f"{image_sha256[:16]}.heatmap.png"
