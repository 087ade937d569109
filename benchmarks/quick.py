"""``--quick`` set-up: a tiny model trained for seconds on synthetic X-rays and exported like the shipped ones."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Input size of the tiny model.
QUICK_SIZE = 32


def synthetic_xray(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """A grey chest-like image; class 1 carries a bright opacity in one lung field."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    dx, dy = rng.uniform(-0.05, 0.05, 2)
    body = rng.uniform(50, 90) + 40 * np.exp(-((xx - 0.5 - dx) ** 2) / rng.uniform(0.06, 0.12))
    lung_w, lung_h = rng.uniform(0.09, 0.14), rng.uniform(0.2, 0.3)
    lungs = (np.exp(-(((xx - 0.3 - dx) / lung_w) ** 2 + ((yy - 0.5 - dy) / lung_h) ** 2))
             + np.exp(-(((xx - 0.7 - dx) / lung_w) ** 2 + ((yy - 0.5 - dy) / lung_h) ** 2)))
    image = body - rng.uniform(35, 55) * lungs + rng.normal(0, 8, (size, size))
    if label == 1:
        image += 90 * np.exp(-(((xx - 0.3 - dx) / 0.09) ** 2 + ((yy - 0.55 - dy) / 0.12) ** 2))
    # A small black and a small white patch (a film edge and a burnt-in marker) at random places:
    # the pixel range then spans 0..255 even after resizing, which the int8 export needs for its
    # identity input quantization, without making the images near-duplicates of each other.
    patch = max(3, size // 10)
    for value in (0, 255):
        y, x = rng.integers(0, size - patch, 2)
        image[y:y + patch, x:x + patch] = value
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_folder(root: Path, per_class: int = 40, size: int = 64, seed: int = 0) -> Path:
    """Kermany-layout folder (NORMAL/IM-..., PNEUMONIA/personN_bacteria|virus_M) of synthetic JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for folder in ("NORMAL", "PNEUMONIA"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        patient = i % 10
        Image.fromarray(synthetic_xray(rng, 0, size)).convert("RGB").save(
            root / "NORMAL" / f"IM-{patient:04d}-{i:04d}.jpeg", quality=95)
        kind = "bacteria" if i % 2 == 0 else "virus"
        Image.fromarray(synthetic_xray(rng, 1, size)).convert("RGB").save(
            root / "PNEUMONIA" / f"person{patient}_{kind}_{i}.jpeg", quality=95)
    return root


def write_jpeg(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A synthetic chest-like JPEG of the given size (stand-in for a scanner image when the data is absent)."""
    from PIL import Image

    plane = synthetic_xray(np.random.default_rng(seed), 1, max(width, height))
    Image.fromarray(plane).resize((width, height), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def build_quick_assets(workdir: Path) -> tuple[Path, Path]:
    """Train the tiny binary model and export it into ``workdir/android_assets`` (shipped layout).

    Returns:
        (assets folder, synthetic data folder).
    """
    from export.__main__ import build_parser, export_model
    from export.convert import ExportError
    from training.train import TrainConfig, train

    data = write_synthetic_folder(workdir / "synthetic data" / "train")
    assets = workdir / "android_assets"
    train_dir = assets / "training" / f"cxr_binary_{QUICK_SIZE}"
    cache = workdir / "cache"
    config = TrainConfig(task="binary", data=str(data), out=str(train_dir), input_size=QUICK_SIZE, width=0.5,
                         epochs=3, batch_size=16, learning_rate=5e-3, patience=10, val_fraction=0.25, seed=0,
                         augment=False, epoch_size=0, cache_dir=str(cache), threads=2)
    train(config)
    args = build_parser().parse_args(["--model", str(train_dir / "model.keras"), "--data", str(data),
                                      "--out", str(assets), "--calibration-size", "60", "--no-metadata",
                                      "--cache-dir", str(cache), "--force"])
    try:
        export_model(args)
    except ExportError as err:
        # A 3-epoch toy model may fail the parity gate; --force wrote the files, which is all a
        # smoke run needs. The real gate is the export's own business.
        logger.info("tiny model export gate: %s", str(err).splitlines()[0])
    return assets, data
