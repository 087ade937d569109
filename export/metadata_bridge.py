"""Running the metadata writer from any interpreter: choosing the one that has it, the subprocess, its venv."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.errors import ModelError
from edge_runtime.spec import ModelSpec

from .metadata_backend import (
    DEFAULT_VENV,
    PYTHON_ENV_VAR,
    REPO_ROOT,
    REQUIREMENTS_FILE,
    MetadataToolsUnavailableError,
    backend_loaded,
    load_backend,
)
from .metadata_read import read_metadata
from .metadata_write import DEFAULT_AUTHOR, DEFAULT_LICENSE, default_description, default_version, write_metadata

logger = logging.getLogger(__name__)


def resolve_metadata_python(python: str | Path | None = None) -> str:
    """Choose the interpreter that runs the metadata writer.

    Order: ``python`` if given; ``$CXR_METADATA_PYTHON``; the current interpreter if a writer
    imports in it; ``.venv-metadata/bin/python`` in the repository if it exists.

    Args:
        python: Explicit interpreter path (``--metadata-python``).

    Returns:
        Path of the interpreter, as a string.

    Raises:
        MetadataToolsUnavailableError: nothing suitable was found.
    """
    explicit = python or os.environ.get(PYTHON_ENV_VAR)
    if explicit:
        if not Path(explicit).exists():
            raise MetadataToolsUnavailableError(f"metadata interpreter {explicit} does not exist")
        return str(explicit)
    try:
        load_backend()
        return sys.executable
    except MetadataToolsUnavailableError as err:
        reason = str(err)
    candidate = DEFAULT_VENV / "bin" / "python"
    if candidate.exists():
        return str(candidate)
    raise MetadataToolsUnavailableError(f"{reason} (also looked for {candidate} and ${PYTHON_ENV_VAR})")


def run_cli(args: Sequence[str], *, python: str | Path | None = None, timeout: float = 300) -> dict:
    """Run ``python -m export.metadata ARGS --json`` with the metadata interpreter.

    Args:
        args: Sub-command and its flags, e.g. ``["read", "--model", "m.tflite"]``.
        python: Interpreter (see `resolve_metadata_python`).
        timeout: Seconds before giving up.

    Returns:
        The command's JSON output.

    Raises:
        ModelError: the command failed (its error message is included).
        MetadataToolsUnavailableError: no metadata interpreter was found.
    """
    interpreter = resolve_metadata_python(python)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    command = [interpreter, "-m", "export.metadata", *args, "--json"]
    logger.debug("running %s", command)
    try:
        proc = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise MetadataToolsUnavailableError(f"cannot run the metadata writer with {interpreter}: {err}") from err
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        raise ModelError(f"`{' '.join(map(str, args[:1]))}` with {interpreter} failed: {message}")
    try:
        return json.loads(proc.stdout)
    except ValueError as err:
        raise ModelError(f"the metadata writer printed no JSON: {proc.stdout[-500:]!r}") from err


def write_metadata_external(
    tflite_path: str | Path,
    out_path: str | Path,
    spec_path: str | Path,
    labels_path: str | Path,
    *,
    author: str = DEFAULT_AUTHOR,
    license: str = DEFAULT_LICENSE,  # noqa: A002
    description: str | None = None,
    version: str | None = None,
    python: str | Path | None = None,
) -> Path:
    """`write_metadata` from any interpreter: in-process if a writer imports, else a subprocess.

    Args:
        tflite_path: Converted model without metadata.
        out_path: Destination (may equal ``tflite_path``).
        spec_path: The ModelSpec JSON file.
        labels_path: Labels file, one per line.
        author: Metadata author.
        license: Metadata licence text.
        description: Model description (default: from the spec).
        version: Model version (default: spec version + training commit).
        python: Interpreter to use (``--metadata-python``); see `resolve_metadata_python`.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ModelError: the writer refused the inputs.
        MetadataToolsUnavailableError: no metadata interpreter was found.
    """
    interpreter = resolve_metadata_python(python)
    spec = ModelSpec.load(spec_path)
    description = description or default_description(spec)
    version = version or default_version(spec)
    if Path(interpreter) == Path(sys.executable) and backend_loaded():
        return write_metadata(tflite_path, out_path, spec.to_dict(), labels_path, author=author, license=license,
                              description=description, version=version)
    run_cli(
        ["write", "--model", str(Path(tflite_path).resolve()), "--spec", str(Path(spec_path).resolve()),
         "--labels", str(Path(labels_path).resolve()), "--out", str(Path(out_path).resolve()),
         "--author", author, "--license", license, "--description", description, "--version", version],
        python=interpreter,
    )
    return Path(out_path)


def read_metadata_external(tflite_path: str | Path, *, python: str | Path | None = None) -> dict:
    """`read_metadata` from any interpreter (in-process or through the metadata venv).

    Args:
        tflite_path: A .tflite file with metadata.
        python: Interpreter to use; see `resolve_metadata_python`.

    Returns:
        The dict `read_metadata` returns.

    Raises:
        ModelError: no metadata or unreadable file.
        MetadataToolsUnavailableError: no metadata interpreter was found.
    """
    interpreter = resolve_metadata_python(python)
    if Path(interpreter) == Path(sys.executable) and backend_loaded():
        return read_metadata(tflite_path)
    return run_cli(["read", "--model", str(Path(tflite_path).resolve())], python=interpreter)


def setup_venv(venv: str | Path = DEFAULT_VENV, python: str | Path | None = None) -> Path:
    """Create the metadata venv and install export/requirements-metadata.txt into it.

    Args:
        venv: Directory of the venv to create (or update).
        python: Base interpreter; tflite-support 0.4.4 has wheels for CPython 3.8-3.11 only.

    Returns:
        Path of the venv's python.

    Raises:
        MetadataToolsUnavailableError: venv creation or pip failed.
    """
    venv, base = Path(venv), str(python or sys.executable)
    commands = [
        [base, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS_FILE)],
    ]
    for command in commands:
        logger.info("running %s", " ".join(command))
        try:
            subprocess.run(command, check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            raise MetadataToolsUnavailableError(
                f"`{' '.join(command)}` failed ({err}); tflite-support 0.4.4 needs CPython 3.8-3.11: "
                "pass --python python3.11"
            ) from err
    return venv / "bin" / "python"
