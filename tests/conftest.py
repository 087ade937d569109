"""Shared fixtures: synthetic folder-per-class X-rays, a tiny trained model and its TFLite exports."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

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


def terminal_sigint() -> None:
    """``preexec_fn`` for a child the test stops with Ctrl+C: SIGINT handled as from a terminal. A shell's
    background job (``pytest ... &``) ignores SIGINT and its children inherit that, so without this the child
    never sees the Ctrl+C the test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _load_synthetic():
    """``benchmarks/synthetic.py``, loaded by its path: the runtime-only environments cannot import the
    repository tools (and must not, or their tests would be collected), but the file is in the checkout."""
    spec = importlib.util.spec_from_file_location("cxr_synthetic", REPO_ROOT / "benchmarks" / "synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_synthetic = _load_synthetic()
#: The one synthetic X-ray generator, shared with the benchmarks' quick mode.
synthetic_xray, write_synthetic_folder = _synthetic.synthetic_xray, _synthetic.write_synthetic_folder


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
