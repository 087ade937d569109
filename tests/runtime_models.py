"""Model and result helpers shared by the edge-runtime tests (TensorFlow optional)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import ASSETS, HAS_TF, SHARED_DATA
from edge_runtime.classifier import Result

FULLRES = SHARED_DATA / "fullres_sample"
needs_fullres = pytest.mark.skipif(not FULLRES.is_dir(), reason=f"real data not found at {FULLRES}")


def _binary_files(folder: Path) -> dict | None:
    found = {}
    for key, pattern in (("int8_cam", "cxr_binary_*_int8_cam.tflite"), ("fp16_cam", "cxr_binary_*_fp16_cam.tflite"),
                         ("int8", "cxr_binary_*_int8.tflite"), ("fp16", "cxr_binary_*_fp16.tflite")):
        matches = sorted(folder.glob(pattern))
        if not matches:
            return None
        found[key] = matches[0]
    specs = sorted(folder.glob("cxr_binary_*.spec.json"))
    if not specs:
        return None
    found["spec"] = specs[0]
    found["dir"] = folder
    return found


@pytest.fixture(scope="session")
def binary_models(request) -> dict:
    """Paths of a binary model's four files and spec: the tiny test model when TensorFlow is
    installed (built by the ``tiny_model_dir`` fixture), else the shipped ``android_assets/``
    model; skipped when neither is available. ``CXR_TEST_MODELS=shipped`` forces the shipped
    one, ``CXR_TEST_MODELS=<folder>`` a folder of exported files."""
    choice = os.environ.get("CXR_TEST_MODELS", "")
    if choice and choice != "shipped":
        files = _binary_files(Path(choice))
        if files is None:
            pytest.fail(f"CXR_TEST_MODELS={choice}: no cxr_binary_*_{{int8,fp16}}{{,_cam}}.tflite with a spec there")
        return files
    if HAS_TF and choice != "shipped":
        files = _binary_files(request.getfixturevalue("tiny_model_dir"))
        if files:
            return files
    files = _binary_files(ASSETS) if ASSETS.is_dir() else None
    if files is None:
        pytest.skip("no model: needs TensorFlow (tiny test model) or the shipped android_assets/cxr_binary_* files")
    return files


def make_result(image_sha256: str = "ab" * 32, label: str = "PNEUMONIA", score: float = 0.9, **changes) -> Result:
    """A Result as the classifier returns it, without running a model."""
    fields = dict(label=label, probabilities={"NORMAL": 1.0 - score, "PNEUMONIA": score}, score=score, threshold=0.5,
                  positive=score >= 0.5, decision="screening positive: refer to a clinician" if score >= 0.5
                  else "screening negative", latency_ms=12.5, timings_ms={"invoke": 3.0}, image_sha256=image_sha256,
                  model_name="cxr_binary_test", model_sha256="cd" * 32)
    fields.update(changes)
    return Result(**fields)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def xray_like(size: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth, greyscale, chest-shaped RGB image (not a real X-ray; passes no clinical test)."""
    from conftest import synthetic_xray

    rng = np.random.default_rng(seed)
    grey = synthetic_xray(rng, seed % 2, size)
    return np.repeat(grey[:, :, None], 3, axis=2)
