"""Shared fixtures: synthetic folder-per-class X-rays, a tiny trained model and its TFLite exports."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ASSETS = REPO_ROOT / "android_assets"
TINY_SIZE = 64

HAS_TF = importlib.util.find_spec("tensorflow") is not None
# The repository tools (training/, export/, benchmarks/) are not part of the installed runtime. In an
# environment that has only the runtime (the TensorFlow-free checks in .ci/run) their tests are not collected.
HAS_REPO_TOOLS = importlib.util.find_spec("training") is not None and importlib.util.find_spec("benchmarks") is not None
collect_ignore_glob = [] if HAS_REPO_TOOLS else [
    "test_training_*.py", "test_shift.py", "test_export.py", "test_benchmarks.py", "test_metadata.py", "test_web_load.py"]
needs_tf = pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow (training/export environment)")
needs_shared_data = pytest.mark.skipif(not (SHARED_DATA / "chest_xray" / "train").is_dir(),
                                       reason=f"real data not found at {SHARED_DATA}")


def synthetic_xray(rng: np.random.Generator, label: int, size: int = 64) -> np.ndarray:
    """A grey 'chest' with two lung fields; class 1 has a bright opacity in the right lung field
    (image left), the region Grad-CAM should light. Geometry and exposure vary per image, so
    that no two images are near-duplicates."""
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
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_folder(root: Path, per_class: int = 50, seed: int = 0, size: int = 64,
                           patients_per_class: int = 10) -> Path:
    """Kermany-style folder: NORMAL/IM-xxxx-yyyy.jpeg and PNEUMONIA/personN_bacteria|virus_M.jpeg."""
    rng = np.random.default_rng(seed)
    (root / "NORMAL").mkdir(parents=True, exist_ok=True)
    (root / "PNEUMONIA").mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        patient = i % patients_per_class
        Image.fromarray(synthetic_xray(rng, 0, size)).convert("RGB").save(
            root / "NORMAL" / f"IM-{patient:04d}-{i:04d}.jpeg", quality=95)
        kind = "bacteria" if i % 2 == 0 else "virus"
        Image.fromarray(synthetic_xray(rng, 1, size)).convert("RGB").save(
            root / "PNEUMONIA" / f"person{patient}_{kind}_{i}.jpeg", quality=95)
    return root


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small synthetic Kermany-layout folder, in a path with a space in it."""
    return write_synthetic_folder(tmp_path_factory.mktemp("synthetic data") / "train")


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, synthetic_data):
    """A tiny model trained a few epochs on the synthetic folder: its training output folder."""
    if not HAS_TF:
        pytest.skip("needs TensorFlow")
    from training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny model") / "run"
    config = TrainConfig(task="binary", data=str(synthetic_data), out=str(out), input_size=TINY_SIZE, width=0.5,
                         epochs=10, batch_size=8, learning_rate=5e-3, patience=10, bn_momentum=0.8, val_fraction=0.25, seed=0,
                         augment=False, epoch_size=0, cache_dir=str(out.parent / "cache"), threads=2)
    summary = train(config)
    return out, summary


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_trained, synthetic_data) -> Path:
    """Folder holding the tiny model's exported files (fp16, int8, and their _cam variants) and spec.

    Exported with ``python -m export`` itself, without Android metadata; the parity gate is not
    applied (a 3-epoch model on 20 validation images says nothing about quantization).
    """
    train_dir, _ = tiny_trained
    out = tmp_path_factory.mktemp("tiny assets")
    from export.__main__ import build_parser, export_model
    from export.convert import ExportError

    args = build_parser().parse_args(["--model", str(train_dir / "model.keras"), "--data", str(synthetic_data),
                                      "--out", str(out), "--calibration-size", "60", "--no-metadata",
                                      "--cache-dir", str(train_dir.parent / "cache"), "--force"])
    try:
        export_model(args)
    except ExportError:
        pass  # --force wrote the files; the gate itself is tested in test_export.py
    return out
