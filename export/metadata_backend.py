"""The TFLite metadata library (tflite-support or MediaPipe) of this interpreter, and the flatbuffer reads both need."""

# Why the metadata code runs in its own interpreter
# -------------------------------------------------
# The standard metadata writers are tflite-support 0.4.4 (`tflite_support.metadata_writers`, the
# reference implementation of the schema that the TFLite Task Library and Android Studio's ML
# Model Binding read) and MediaPipe's port of it (`mediapipe.tasks.python.metadata`). Neither
# installs next to TensorFlow 2.21: tflite-support's generated protobuf code needs protobuf < 4
# (TensorFlow 2.21 brings protobuf 7), and MediaPipe 0.10.21, the last MediaPipe wheel whose
# writer imports, needs numpy < 2 and protobuf < 5; from 0.10.30 on (checked 0.10.30-0.10.35 and
# 1.2.2) the wheels ship the writer without its compiled `_pywrap_metadata_version` module, so it
# cannot be imported at all (their ImageClassifier works: we use 1.2.2 to check our files).
# So the metadata modules (this one, metadata_write, metadata_read, metadata_verify) import nothing
# from TensorFlow and run with a separate interpreter (`.venv-metadata/bin/python`, pinned by
# export/requirements-metadata.txt) when the current one cannot load a writer: `python -m export`
# calls `metadata_bridge.write_metadata_external`, which picks the interpreter
# (`resolve_metadata_python`) and runs `python -m export.metadata write ...`.

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import io
import logging
import sys
import zipfile
from pathlib import Path
from types import ModuleType

from edge_runtime.errors import ModelError, RuntimeUnavailableError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS_FILE = Path(__file__).with_name("requirements-metadata.txt")
#: Where `setup-venv` creates, and `resolve_metadata_python` looks for, the metadata interpreter.
DEFAULT_VENV = REPO_ROOT / ".venv-metadata"
#: Environment variable naming the metadata interpreter (overrides the default venv).
PYTHON_ENV_VAR = "CXR_METADATA_PYTHON"

_TFLITE_IDENTIFIER = b"TFL3"
_METADATA_BUFFER_NAME = b"TFLITE_METADATA"


class MetadataToolsUnavailableError(RuntimeUnavailableError):
    """No interpreter with a TFLite metadata writer (tflite-support or MediaPipe) was found."""

    code = "metadata_tools_unavailable"


@dataclasses.dataclass(frozen=True)
class Backend:
    """The modules of one metadata library (tflite-support and MediaPipe share one API)."""

    name: str
    metadata: ModuleType  # MetadataPopulator, MetadataDisplayer
    schema: ModuleType  # metadata_schema_py_generated
    model_schema: ModuleType  # schema_py_generated (the .tflite flatbuffer)
    info: ModuleType  # metadata_writers.metadata_info


_BACKEND_MODULES = (
    (
        "tflite-support",
        "tensorflow_lite_support.metadata.python.metadata",
        "tensorflow_lite_support.metadata.metadata_schema_py_generated",
        "tensorflow_lite_support.metadata.schema_py_generated",
        "tensorflow_lite_support.metadata.python.metadata_writers.metadata_info",
    ),
    (
        "mediapipe",
        "mediapipe.tasks.python.metadata.metadata",
        "mediapipe.tasks.metadata.metadata_schema_py_generated",
        "mediapipe.tasks.metadata.schema_py_generated",
        "mediapipe.tasks.python.metadata.metadata_writers.metadata_info",
    ),
)
_backend_cache: list[Backend] = []


def load_backend() -> Backend:
    """Import the first working metadata library: tflite-support, then MediaPipe (<= 0.10.21).

    Returns:
        The loaded backend (cached).

    Raises:
        MetadataToolsUnavailableError: neither library imports in this interpreter.
    """
    if _backend_cache:
        return _backend_cache[0]
    failures = []
    for dist, *module_names in _BACKEND_MODULES:
        try:
            modules = [importlib.import_module(name) for name in module_names]
        except Exception as err:  # noqa: BLE001 - broken installs fail with ImportError, TypeError
            # (protobuf "Descriptors cannot be created directly"), AttributeError ...: all mean
            # "this library is unusable here", and the message below lists each reason.
            failures.append(f"{dist}: {type(err).__name__}: {err}")
            continue
        backend = Backend(f"{dist} {importlib.metadata.version(dist)}", *modules)
        _backend_cache.append(backend)
        logger.debug("metadata backend: %s", backend.name)
        return backend
    hint = ""
    if any("libusb" in failure for failure in failures):
        hint = " tflite-support's native modules need the system library: apt-get install libusb-1.0-0."
    raise MetadataToolsUnavailableError(
        f"no TFLite metadata writer imports in {sys.executable} ({'; '.join(failures)}).{hint} "
        f"Create the metadata venv with `python -m export.metadata setup-venv` (installs "
        f"{REQUIREMENTS_FILE.relative_to(REPO_ROOT)} into {DEFAULT_VENV.name}/) and use "
        f"{DEFAULT_VENV.name}/bin/python, or pass --metadata-python."
    )


def backend_loaded() -> bool:
    """Whether :func:`load_backend` already succeeded in this interpreter."""
    return bool(_backend_cache)


def read_model_buffer(tflite_path: Path) -> bytearray:
    """The bytes of a .tflite file.

    Raises:
        ModelError: unreadable, or not a TFLite flatbuffer.
    """
    try:
        buffer = bytearray(tflite_path.read_bytes())
    except FileNotFoundError as err:
        raise ModelError(f"model file not found: {tflite_path}") from err
    except OSError as err:
        raise ModelError(f"cannot read model file {tflite_path}: {err}") from err
    if len(buffer) < 8 or bytes(buffer[4:8]) != _TFLITE_IDENTIFIER:
        raise ModelError(f"{tflite_path} is not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)")
    return buffer


def has_metadata(backend: Backend, buffer: bytearray) -> bool:
    """Whether the model already carries TFLite metadata or packed associated files."""
    model = backend.model_schema.Model.GetRootAsModel(buffer, 0)
    names = {model.Metadata(i).Name() for i in range(model.MetadataLength())}
    return _METADATA_BUFFER_NAME in names or zipfile.is_zipfile(io.BytesIO(bytes(buffer)))


def tensor_summary(backend: Backend, buffer: bytearray) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of subgraph 0 as dicts with name, shape and type name.

    Raises:
        ModelError: the model has more than one subgraph.
    """
    model = backend.model_schema.Model.GetRootAsModel(buffer, 0)
    if model.SubgraphsLength() != 1:
        raise ModelError(f"expected a model with one subgraph, got {model.SubgraphsLength()}")
    graph = model.Subgraphs(0)
    type_names = {v: k for k, v in vars(backend.model_schema.TensorType).items() if not k.startswith("_")}

    def describe(index: int) -> dict:
        tensor = graph.Tensors(index)
        return {
            "name": tensor.Name().decode("utf-8"),
            "shape": [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [],
            "type": type_names.get(tensor.Type(), str(tensor.Type())),
        }

    inputs = [describe(graph.Inputs(i)) for i in range(graph.InputsLength())]
    outputs = [describe(graph.Outputs(i)) for i in range(graph.OutputsLength())]
    return inputs, outputs
