"""Small images kept beside the screening log: thumbnails, previews and heatmaps, named by content hash."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import write_atomic
from ..render import encode_jpeg, encode_png, fit_within

#: Longest side of the history thumbnail, in pixels.
THUMB_SIDE = 128
#: Longest side of the preview shown on the page and printed on the report, in pixels.
PREVIEW_SIDE = 512

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def images_dir_for(log_path: str | os.PathLike) -> Path:
    """The folder beside ``log_path`` holding its images: ``<folder>/<log stem>-images``."""
    log_path = Path(log_path)
    return log_path.parent / f"{log_path.stem}-images"


class ImageStore:
    """Content-addressed image files for the history page and the downloadable report.

    Layout under ``root`` (two-character fan-out keeps folders small)::

        ab/<image sha256>.thumb.jpg                       128 px thumbnail of the input
        ab/<image sha256>.preview.jpg                     512 px preview of the input
        ab/<image sha256>.<model sha256[:16]>.cam.png     heatmap at feature-map size, 8-bit grey

    Names come only from hex digests, never from the client, so no path can escape ``root``.
    The same image uploaded twice shares its files.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _base(self, image_sha256: str) -> Path:
        if not _SHA256.match(image_sha256 or ""):
            raise ValueError("image_sha256 must be 64 lowercase hex digits")
        return self.root / image_sha256[:2] / image_sha256

    def _named(self, image_sha256: str, suffix: str) -> Path:
        base = self._base(image_sha256)
        return base.parent / f"{base.name}.{suffix}"

    def thumbnail_path(self, image_sha256: str) -> Path:
        return self._named(image_sha256, "thumb.jpg")

    def preview_path(self, image_sha256: str) -> Path:
        return self._named(image_sha256, "preview.jpg")

    def heatmap_path(self, image_sha256: str, model_sha256: str) -> Path:
        if not _SHA256.match(model_sha256 or ""):
            raise ValueError("model_sha256 must be 64 lowercase hex digits")
        return self._named(image_sha256, f"{model_sha256[:16]}.cam.png")

    def save(self, image_sha256: str, rgb: np.ndarray, model_sha256: str,
             heatmap: np.ndarray | None = None) -> Path | None:
        """Keep the thumbnail and preview of an input, and its heatmap if any.

        Returns:
            The heatmap file's path (``None`` without a heatmap).
        """
        preview = fit_within(rgb, PREVIEW_SIDE)
        for path, side, quality in ((self.preview_path(image_sha256), PREVIEW_SIDE, 88),
                                    (self.thumbnail_path(image_sha256), THUMB_SIDE, 80)):
            if not path.exists():
                write_atomic(path, encode_jpeg(fit_within(preview, side), quality))
        if heatmap is None:
            return None
        path = self.heatmap_path(image_sha256, model_sha256)
        grey = np.clip(np.round(np.asarray(heatmap, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        write_atomic(path, encode_png(grey))
        return path

    def load_preview(self, image_sha256: str) -> np.ndarray | None:
        """The stored preview as RGB uint8, or ``None`` when missing."""
        path = self.preview_path(image_sha256)
        if not path.is_file():
            return None
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    def load_heatmap(self, image_sha256: str, model_sha256: str) -> np.ndarray | None:
        """The stored heatmap as float32 in [0, 1], or ``None`` when missing."""
        path = self.heatmap_path(image_sha256, model_sha256)
        if not path.is_file():
            return None
        with Image.open(path) as image:
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
