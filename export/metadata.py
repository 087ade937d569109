"""python -m export.metadata {write,read,verify,setup-venv,check}: TFLite metadata of the Android assets.

The command line, and the one import for callers of the metadata code, which lives in
``metadata_backend`` (the writer library of this interpreter), ``metadata_write``,
``metadata_read``, ``metadata_verify`` (Task Library / MediaPipe acceptance) and
``metadata_bridge`` (running all of it from another interpreter, and that interpreter's venv).
``python -m export`` reaches it through ``metadata_bridge.write_metadata_external``, which runs
``python -m export.metadata write ...`` in ``.venv-metadata`` when this interpreter has no writer.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import CxrError, InvalidImageError
from edge_runtime.spec import EMBEDDED_SPEC_NAME, ModelSpec

from .metadata_backend import (
    DEFAULT_VENV,
    PYTHON_ENV_VAR,
    REPO_ROOT,
    REQUIREMENTS_FILE,
    MetadataToolsUnavailableError,
    load_backend,
)
from .metadata_bridge import read_metadata_external, resolve_metadata_python, run_cli, setup_venv, write_metadata_external
from .metadata_read import read_metadata
from .metadata_verify import check_classifiers
from .metadata_write import (
    DEFAULT_AUTHOR,
    DEFAULT_LICENSE,
    default_description,
    default_version,
    write_metadata,
)

__all__ = [
    "DEFAULT_AUTHOR", "DEFAULT_LICENSE", "DEFAULT_VENV", "EMBEDDED_SPEC_NAME", "PYTHON_ENV_VAR",
    "REPO_ROOT", "REQUIREMENTS_FILE", "MetadataToolsUnavailableError", "check_classifiers", "load_backend", "main",
    "read_metadata", "read_metadata_external", "resolve_metadata_python", "run_cli", "setup_venv", "write_metadata",
    "write_metadata_external",
]

logger = logging.getLogger(__name__)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.metadata",
        description=(
            "Embed TFLite metadata (labels, RGB 0-255 input, identity normalisation, the ModelSpec "
            "JSON) in an Android classifier asset, read it back, or check that the Task Library and "
            "MediaPipe image classifiers accept it. Needs tflite-support (or MediaPipe <= 0.10.21), "
            "which cannot share TensorFlow's venv: run `setup-venv` once, then use "
            ".venv-metadata/bin/python."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    write = sub.add_parser("write", help="write a copy of a .tflite with metadata")
    write.add_argument("--model", type=Path, required=True, help="converted .tflite without metadata")
    write.add_argument("--spec", type=Path, required=True, help="ModelSpec JSON (*.spec.json)")
    write.add_argument("--labels", type=Path, required=True, help="labels file, one label per line in output order")
    write.add_argument("--out", type=Path, required=True, help="output .tflite (may equal --model)")
    write.add_argument("--author", default=DEFAULT_AUTHOR, help="metadata author (default: %(default)s)")
    write.add_argument("--license", default=DEFAULT_LICENSE, help="metadata licence text")
    write.add_argument("--description", default=None, help="model description (default: from the spec)")
    write.add_argument("--version", default=None, help="model version (default: spec version + training commit)")

    read = sub.add_parser("read", help="print a model's metadata and associated files as JSON")
    read.add_argument("--model", type=Path, required=True, help=".tflite with metadata")

    verify = sub.add_parser("verify", help="run the Task Library / MediaPipe image classifiers on the files")
    verify.add_argument("--model", type=Path, nargs="+", required=True, help=".tflite file(s) with metadata")
    verify.add_argument("--image", type=Path, default=None, help="(H, W, 3) uint8 .npy image (default: mid-grey)")

    setup = sub.add_parser("setup-venv", help="create the metadata venv from export/requirements-metadata.txt")
    setup.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="venv directory (default: %(default)s)")
    setup.add_argument("--python", default=None, help="base interpreter, CPython 3.8-3.11 (default: this one)")

    sub.add_parser("check", help="say which metadata library this interpreter loads")

    for sub_parser in (write, read, verify, setup, sub.choices["check"]):
        sub_parser.add_argument("--json", action="store_true", help="print a JSON result on stdout")
        sub_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0 ok, 1 error)."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "write":
            spec = ModelSpec.load(args.spec)
            out = write_metadata(
                args.model,
                args.out,
                spec.to_dict(),
                args.labels,
                author=args.author,
                license=args.license,
                description=args.description or default_description(spec),
                version=args.version or default_version(spec),
            )
            result: dict[str, Any] = {"out": str(out), "writer": load_backend().name, "size": out.stat().st_size}
            text = f"{out} ({result['size']} bytes, {result['writer']})"
        elif args.command == "read":
            result = read_metadata(args.model)
            text = json.dumps(result, indent=2)
        elif args.command == "verify":
            image = None
            if args.image is not None:
                try:
                    image = np.load(args.image)
                except (OSError, ValueError) as err:
                    raise InvalidImageError(f"cannot load {args.image} as a .npy array: {err}") from err
            # One process for several files: MediaPipe's import alone takes a couple of seconds.
            result = {"models": {str(model): check_classifiers(model, image) for model in args.model}}
            text = json.dumps(result, indent=2)
        elif args.command == "setup-venv":
            python = setup_venv(args.venv, args.python)
            result = {"python": str(python)}
            text = f"metadata venv ready: {python}"
        else:
            result = {"python": sys.executable, "backend": load_backend().name}
            text = f"{sys.executable}: {result['backend']}"
    except CxrError as err:
        logger.error("%s", err)
        return 1
    print(json.dumps(result) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
