"""Runs the TFLite metadata writer in this interpreter, or in its own environment when it cannot share it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where `.ci/run` and the README create the metadata writer's own environment.
DEFAULT_METADATA_PYTHON = REPO_ROOT / ".venv-metadata" / "bin" / "python"


def _writer_importable(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import export.metadata as m; m.check_writer()"], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    return probe.returncode == 0


def resolve_python(python: str | None) -> str:
    """The interpreter to run the metadata writer with.

    Raises:
        FileNotFoundError: no interpreter with the writer was found, with how to make one.
    """
    if python:
        return python
    if _writer_importable(sys.executable):
        return sys.executable
    if DEFAULT_METADATA_PYTHON.exists():
        return str(DEFAULT_METADATA_PYTHON)
    raise FileNotFoundError(
        "the TFLite metadata writer is not importable here and there is no .venv-metadata: create it with "
        "`python -m venv .venv-metadata && .venv-metadata/bin/pip install -r export/requirements-metadata.txt`, "
        "pass --metadata-python, or --no-metadata for files that will not ship")


def _run(python: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([python, "-m", "export.metadata", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout


def write(model_path: Path, spec_path: Path, labels_path: Path, python: str | None = None) -> Path:
    """Embed metadata into ``model_path`` in place."""
    python = resolve_python(python)
    tmp = model_path.with_suffix(".meta.tflite")
    _run(python, "write", "--model", str(model_path), "--spec", str(spec_path), "--labels", str(labels_path),
         "--out", str(tmp))
    os.replace(tmp, model_path)
    logger.info("embedded TFLite metadata in %s", model_path.name)
    return model_path


def read(model_path: Path, python: str | None = None) -> dict:
    """The metadata of ``model_path`` as read back by the standard reader."""
    return json.loads(_run(resolve_python(python), "read", "--model", str(model_path)))
