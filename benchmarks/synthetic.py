"""Synthetic chest-like X-rays and Kermany-layout folders of them, for the tests and the benchmarks' quick mode.

numpy and Pillow only, and no package-relative import: ``tests/conftest.py`` loads this file by its
path, so the runtime-only test environments (no repository tools importable) use it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_xray(rng: np.random.Generator, label: int, size: int = 64, full_range: bool = False) -> np.ndarray:
    """A grey 'chest' with two lung fields; class 1 has a bright opacity in the right lung field
    (image left), the region Grad-CAM should light. Geometry and exposure vary per image, so
    that no two images are near-duplicates.

    Args:
        rng: Source of the variation.
        label: 0 (normal) or 1 (opacity).
        size: Side in pixels.
        full_range: Add a small black and a small white patch (a film edge and a burnt-in marker)
            at random places, so that the pixels span 0..255 even after resizing, as the int8
            export's identity input quantization needs.

    Returns:
        (size, size) uint8 plane.
    """
    yy, xx = np.mgrid[0:size, 0:size] / size
    dx, dy = rng.uniform(-0.05, 0.05, 2)
    spread = rng.uniform(0.06, 0.12)
    body = rng.uniform(50, 90) + 40 * np.exp(-((xx - 0.5 - dx) ** 2) / spread)
    lung_w, lung_h = rng.uniform(0.09, 0.14), rng.uniform(0.2, 0.3)
    lungs = (np.exp(-(((xx - 0.3 - dx) / lung_w) ** 2 + ((yy - 0.5 - dy) / lung_h) ** 2))
             + np.exp(-(((xx - 0.7 - dx) / lung_w) ** 2 + ((yy - 0.5 - dy) / lung_h) ** 2)))
    image = body - rng.uniform(35, 55) * lungs + rng.normal(0, 8, (size, size))
    if label == 1:
        image += 120 * np.exp(-(((xx - 0.3 - dx) / 0.12) ** 2 + ((yy - 0.55 - dy) / 0.15) ** 2))
    if full_range:
        patch = max(3, size // 10)
        for value in (0, 255):
            y, x = rng.integers(0, size - patch, 2)
            image[y:y + patch, x:x + patch] = value
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_folder(root: Path, per_class: int = 50, seed: int = 0, size: int = 64,
                           patients_per_class: int = 10, full_range: bool = False) -> Path:
    """Kermany-style folder: NORMAL/IM-xxxx-yyyy.jpeg and PNEUMONIA/personN_bacteria|virus_M.jpeg."""
    rng = np.random.default_rng(seed)
    (root / "NORMAL").mkdir(parents=True, exist_ok=True)
    (root / "PNEUMONIA").mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        patient = i % patients_per_class
        Image.fromarray(synthetic_xray(rng, 0, size, full_range)).convert("RGB").save(
            root / "NORMAL" / f"IM-{patient:04d}-{i:04d}.jpeg", quality=95)
        kind = "bacteria" if i % 2 == 0 else "virus"
        Image.fromarray(synthetic_xray(rng, 1, size, full_range)).convert("RGB").save(
            root / "PNEUMONIA" / f"person{patient}_{kind}_{i}.jpeg", quality=95)
    return root


def write_jpeg(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A synthetic chest-like JPEG of the given size (stand-in for a scanner image when the data is absent)."""
    plane = synthetic_xray(np.random.default_rng(seed), 1, max(width, height), full_range=True)
    Image.fromarray(plane).resize((width, height), Image.Resampling.BILINEAR).save(path, quality=90)
    return path
