"""Finding the shipped model files: by short name (``binary``, ``covid-fp16``) or by path."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Union

from .errors import ModelError
from .spec import SPEC_SUFFIX, ModelSpec

PathLike = Union[str, os.PathLike]

#: Environment variable naming the models folder.
MODELS_ENV = "CXR_MODELS"
#: Precision used when a short name gives none, and preferred by the web server when a spec lists several.
DEFAULT_PRECISION = "int8"
#: The model the command line uses when none is named.
DEFAULT_MODEL = "binary"

#: Titles of the shipped tasks, for log rows whose model is not loaded and for specs older than version 2
#: (a spec's own ``title``, written by training from ``training.data.TASKS``, comes first).
TASK_TITLES = {
    "binary": "Pneumonia screening (normal / pneumonia)",
    "etiology": "Pneumonia type (normal / bacterial / viral)",
    "covid": "COVID-19 (normal / pneumonia / COVID-19)",
}
_PACKAGE_DIR = Path(__file__).resolve().parent
_FILE_PATTERN = re.compile(r"_(?P<precision>int8|uint8|fp16|fp32|float16|float32|dynamic)(?P<cam>_cam)?\.tflite$")
_NAME_PATTERN = re.compile(r"^(?P<task>[a-z0-9]+)(?:[-_](?P<precision>int8|uint8|fp16|fp32|float16|float32|dynamic))?"
                           r"(?P<plain>[-_]plain)?$")


def candidate_dirs() -> list[Path]:
    """Where models are looked for, in order: ``$CXR_MODELS``, the installed package data
    (``edge_runtime/assets``), the repository's ``android_assets/`` next to the package."""
    dirs = []
    if os.environ.get(MODELS_ENV):
        dirs.append(Path(os.environ[MODELS_ENV]).expanduser())
    dirs.append(_PACKAGE_DIR / "assets")
    dirs.append(_PACKAGE_DIR.parent / "android_assets")
    return dirs


def find_models_dir() -> Path:
    """The folder holding the shipped models (see :func:`candidate_dirs`).

    ``$CXR_MODELS`` wins when set (an error if it is not a folder); otherwise the first
    candidate holding a ``*.spec.json`` file.

    Raises:
        ModelError: no candidate holds a model spec.
    """
    env = os.environ.get(MODELS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise ModelError(f"${MODELS_ENV} is {env!r}, which is not a folder")
        return path
    dirs = candidate_dirs()
    for folder in dirs:
        if folder.is_dir() and any(folder.glob("*" + SPEC_SUFFIX)):
            return folder
    raise ModelError("no models found; looked in " + ", ".join(str(d) for d in dirs)
                     + f". Export them with `python -m export`, or set ${MODELS_ENV} to a folder of "
                       "*.tflite files with their *.spec.json")


def file_info(path: PathLike) -> tuple[str | None, bool]:
    """(precision, heatmap) of a model file from its name: ``cxr_binary_160_fp16_cam.tflite`` -> ``("fp16", True)``;
    precision ``None`` when the name carries none."""
    path = Path(path)
    match = _FILE_PATTERN.search(path.name)
    if not match:
        return None, path.stem.endswith("_cam")
    precision = {"float16": "fp16", "float32": "fp32"}.get(match["precision"], match["precision"])
    return precision, bool(match["cam"])


def list_models(models_dir: PathLike | None = None) -> list[dict]:
    """Every model file listed by a spec in the models folder, and present there.

    Args:
        models_dir: Folder to look in (default: :func:`find_models_dir`).

    Returns:
        One dict per file, sorted by task, size, precision: ``name`` (the spec's name),
        ``file``, ``task``, ``labels``, ``input_size``, ``precision``, ``heatmap`` (the
        ``*_cam`` variant with the feature-map output), ``path``, ``spec_path``, ``size``
        (bytes), ``sha256`` (as the spec records it), ``mtime``.
    """
    folder = Path(models_dir) if models_dir is not None else find_models_dir()
    models = []
    for spec_path in sorted(folder.glob("*" + SPEC_SUFFIX)):
        try:
            spec = ModelSpec.load(spec_path)
        except ModelError:
            continue  # an unreadable spec is reported when someone asks for that model
        for filename, sha256 in sorted((spec.files or {}).items()):
            path = folder / filename
            if not filename.endswith(".tflite") or not path.is_file():
                continue
            precision, cam = file_info(path)
            stat = path.stat()
            models.append({
                "name": spec.name, "file": filename, "task": spec.task, "labels": list(spec.labels),
                "input_size": [spec.input_height, spec.input_width], "precision": precision, "heatmap": cam,
                "path": str(path), "spec_path": str(spec_path), "size": stat.st_size, "sha256": sha256,
                "mtime": stat.st_mtime,
            })
    models.sort(key=lambda m: (m["task"], m["input_size"], m["precision"] or "", m["heatmap"], m["file"]))
    return models


def short_name(model: dict) -> str:
    """The name :func:`resolve_model` knows a listed model file by (``binary``, ``covid-fp16-plain``)."""
    name = model["task"]
    if model["precision"] != DEFAULT_PRECISION:
        name += f"-{model['precision']}"
    return name if model["heatmap"] else name + "-plain"


def _describe(models: list[dict]) -> str:
    return ", ".join(sorted({short_name(m) for m in models})) or "none"


def resolve_model(name_or_path: PathLike | None = None, models_dir: PathLike | None = None) -> Path:
    """Turn a model name or path into the ``.tflite`` file to load.

    Names: ``binary``, ``etiology``, ``covid`` (the int8 file with the heatmap output),
    optionally with a precision (``binary-fp16``, ``covid-int8``) and ``-plain`` for the file
    without the heatmap output; or a file name inside the models folder. When several sizes of
    one task are shipped, the most recently exported file wins.

    Args:
        name_or_path: Name, file name or path (default: :data:`DEFAULT_MODEL`).
        models_dir: Folder to look in (default: :func:`find_models_dir`).

    Returns:
        Path of an existing ``.tflite`` file.

    Raises:
        ModelError: unknown name or missing file; the message lists the available models.
    """
    name = str(name_or_path if name_or_path is not None else DEFAULT_MODEL)
    as_path = Path(name).expanduser()
    looks_like_path = os.sep in name or "/" in name or name.endswith(".tflite")
    if as_path.is_file():
        return as_path
    if looks_like_path and (as_path.is_absolute() or as_path.parent != Path(".")):
        raise ModelError(f"model file not found: {as_path}")
    folder = Path(models_dir) if models_dir is not None else find_models_dir()
    models = list_models(folder)
    if name.endswith(".tflite"):
        if (folder / name).is_file():
            return folder / name
        raise ModelError(f"model file {name!r} not found in {folder}; available: {_describe(models)}")
    match = _NAME_PATTERN.match(name.lower())
    if match:
        precision = {"float16": "fp16", "float32": "fp32"}.get(match["precision"] or "", match["precision"])
        precision = precision or DEFAULT_PRECISION
        want_cam = not match["plain"]
        fits = [m for m in models if (m["task"] == match["task"] or m["name"] == name)
                and m["precision"] == precision and m["heatmap"] == want_cam]
        if fits:
            return Path(max(fits, key=lambda m: (m["mtime"], m["file"]))["path"])
    by_spec = [m for m in models if m["name"] == name and m["heatmap"] and m["precision"] == DEFAULT_PRECISION]
    if by_spec:
        return Path(by_spec[0]["path"])
    raise ModelError(f"unknown model {name!r} in {folder}; available: {_describe(models)} "
                     "(or give the path of a .tflite file)")



def model_title(model_name: str, task: str | None = None) -> str:
    """The title of a model for people (``Pneumonia screening (...)``), from its task, or from a
    ``cxr_<task>_<size>`` model name; the name itself when the task is unknown."""
    if task is None:
        match = re.match(r"^cxr_([a-z0-9]+)_", str(model_name))
        task = match.group(1) if match else None
    return TASK_TITLES.get(task or "", str(model_name))
