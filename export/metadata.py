"""Embed TFLite metadata (labels, normalisation, ModelSpec) in the Android assets and read it back."""

# Why this module runs in its own interpreter
# -------------------------------------------
# The standard metadata writers are tflite-support 0.4.4 (`tflite_support.metadata_writers`, the
# reference implementation of the schema that the TFLite Task Library and Android Studio's ML
# Model Binding read) and MediaPipe's port of it (`mediapipe.tasks.python.metadata`). Neither
# installs next to TensorFlow 2.21: tflite-support's generated protobuf code needs protobuf < 4
# (TensorFlow 2.21 brings protobuf 7), and MediaPipe 0.10.21, the last MediaPipe wheel whose
# writer imports, needs numpy < 2 and protobuf < 5; from 0.10.30 on (checked 0.10.30-0.10.35 and
# 1.2.2) the wheels ship the writer without its compiled `_pywrap_metadata_version` module, so it
# cannot be imported at all (their ImageClassifier works: we use 1.2.2 to check our files).
# So this module imports nothing from TensorFlow and is run with a separate interpreter
# (`.venv-metadata/bin/python`, pinned by export/requirements-metadata.txt) when the current one
# cannot load a writer: `python -m export` calls `write_metadata_external`, which picks the
# interpreter (see `resolve_metadata_python`) and runs `python -m export.metadata write ...`.
#
# Normalisation choice: pixel scaling to [0, 1] is inside the Keras graph, so the model is fed
# 0..255 RGB values. The Task Library (image_tensor_specs.cc) and MediaPipe require
# NormalizationOptions for float32 input tensors and ignore them for uint8 ones; both our float16
# and int8 assets take a uint8 input, and a float32-input variant would need exactly
# (x - 0) / 1. So we always write the identity mean=[0, 0, 0], std=[1, 1, 1]: correct for either
# input type, and the ML Model Binding / TFLite Support codegen turns it into a NormalizeOp that
# the Support Library treats as a no-op on uint8 buffers.

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib
import importlib.metadata
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from edge_runtime.errors import (
    CxrError,
    InvalidImageError,
    ModelError,
    RuntimeUnavailableError,
)
from edge_runtime.spec import EMBEDDED_SPEC_NAME as _RUNTIME_EMBEDDED_SPEC_NAME
from edge_runtime.spec import ModelSpec

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS_FILE = Path(__file__).with_name("requirements-metadata.txt")
#: Where `setup-venv` creates, and `resolve_metadata_python` looks for, the metadata interpreter.
DEFAULT_VENV = REPO_ROOT / ".venv-metadata"
#: Environment variable naming the metadata interpreter (overrides the default venv).
PYTHON_ENV_VAR = "CXR_METADATA_PYTHON"

#: Name of the embedded ModelSpec JSON (a model-level associated file of type DESCRIPTIONS).
EMBEDDED_SPEC_NAME = _RUNTIME_EMBEDDED_SPEC_NAME
INPUT_TENSOR_NAME = "image"
OUTPUT_TENSOR_NAME = "probability"
#: Identity normalisation: 0..255 pixels go in, the graph scales them (see the module comment).
NORM_MEAN = (0.0, 0.0, 0.0)
NORM_STD = (1.0, 1.0, 1.0)

DEFAULT_AUTHOR = "cxr-edge contributors"
DEFAULT_LICENSE = (
    "Research use only; not a medical device. Trained on data under CC BY 4.0 "
    "(Kermany et al. 2018, doi:10.17632/rscbjbr9sj.2) and the COVID-19 Radiography Database "
    "terms; credit the sources."
)

_TFLITE_IDENTIFIER = b"TFL3"
_METADATA_BUFFER_NAME = b"TFLITE_METADATA"


class MetadataToolsUnavailableError(RuntimeUnavailableError):
    """No interpreter with a TFLite metadata writer (tflite-support or MediaPipe) was found."""

    code = "metadata_tools_unavailable"


@dataclasses.dataclass(frozen=True)
class _Backend:
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
_backend_cache: list[_Backend] = []


def load_backend() -> _Backend:
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
        backend = _Backend(f"{dist} {importlib.metadata.version(dist)}", *modules)
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


def _read_model(tflite_path: Path) -> bytearray:
    try:
        buffer = bytearray(tflite_path.read_bytes())
    except FileNotFoundError as err:
        raise ModelError(f"model file not found: {tflite_path}") from err
    except OSError as err:
        raise ModelError(f"cannot read model file {tflite_path}: {err}") from err
    if len(buffer) < 8 or bytes(buffer[4:8]) != _TFLITE_IDENTIFIER:
        raise ModelError(f"{tflite_path} is not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)")
    return buffer


def _has_metadata(backend: _Backend, buffer: bytearray) -> bool:
    model = backend.model_schema.Model.GetRootAsModel(buffer, 0)
    names = {model.Metadata(i).Name() for i in range(model.MetadataLength())}
    return _METADATA_BUFFER_NAME in names or zipfile.is_zipfile(io.BytesIO(bytes(buffer)))


def _tensor_summary(backend: _Backend, buffer: bytearray) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of subgraph 0 as dicts with name, shape and type name."""
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


def _read_labels(labels_path: Path) -> list[str]:
    try:
        text = labels_path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ModelError(f"labels file not found: {labels_path}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"cannot read labels file {labels_path} as UTF-8 text: {err}") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def _check_model_matches(spec: ModelSpec, labels: list[str], inputs: list[dict], outputs: list[dict]) -> None:
    """Refuse a model the Task Library / MediaPipe classifier would reject or misread."""
    if labels != list(spec.labels):
        raise ModelError(f"labels file lists {labels}, but spec {spec.name!r} has labels {list(spec.labels)}")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"metadata is written for the single-input, single-output Android asset; this model has "
            f"{len(inputs)} input(s) and {len(outputs)} output(s) (the *_cam variant with the feature "
            "map output is for the edge runtime and carries no TFLite metadata)"
        )
    expected_shape = [1, spec.input_height, spec.input_width, 3]
    if inputs[0]["shape"] != expected_shape or inputs[0]["type"] not in ("UINT8", "FLOAT32"):
        raise ModelError(
            f"input tensor {inputs[0]['name']!r} is {inputs[0]['type']} {inputs[0]['shape']}; expected "
            f"UINT8 (or FLOAT32) {expected_shape} from spec {spec.name!r}"
        )
    expected_out = [1, len(labels)]
    if outputs[0]["shape"] != expected_out or outputs[0]["type"] not in ("UINT8", "FLOAT32"):
        raise ModelError(
            f"output tensor {outputs[0]['name']!r} is {outputs[0]['type']} {outputs[0]['shape']}; the "
            f"image classifiers need FLOAT32 or UINT8 {expected_out} (one score per label; convert "
            "int8 models with inference_output_type=tf.uint8 or tf.float32)"
        )


def _embedded_spec_json(spec: ModelSpec) -> str:
    # A file cannot carry its own sha256, so the hashes stay in the sidecar spec only; the
    # runtime checks this copy against the sidecar (edge_runtime.spec.check_binding).
    from .binding import embedded_spec_json

    return embedded_spec_json(spec)


def write_metadata(
    tflite_path: str | Path,
    out_path: str | Path,
    spec: Mapping[str, Any],
    labels_path: str | Path,
    *,
    author: str,
    license: str,  # noqa: A002 - the metadata schema's own field name
    description: str,
    version: str,
) -> Path:
    """Write a copy of a classifier .tflite with TFLite metadata for Android.

    Embeds the model name (``spec["name"]``), description, version, author and licence; the
    input's image properties (RGB) and identity NormalizationOptions (mean 0, std 1: pixel
    scaling is inside the graph); the output's tensor metadata with the labels file attached as
    a TENSOR_AXIS_LABELS associated file; and the ModelSpec JSON (without ``files``: a file
    cannot hold its own hash) as the model-level associated file ``model_spec.json``. The result
    is read back with the library's MetadataDisplayer before this returns.

    Args:
        tflite_path: Converted model without metadata (single input, single output).
        out_path: Where to write the model with metadata; may equal ``tflite_path``.
        spec: The ModelSpec as a dict (``ModelSpec.to_dict()`` or the sidecar JSON).
        labels_path: Labels file, one label per line, in output order.
        author: Metadata author.
        license: Metadata licence text.
        description: Human-readable model description.
        version: Model version string.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ModelError: unreadable or inconsistent model, spec or labels, or a model that already
            has metadata.
        MetadataToolsUnavailableError: no metadata library imports in this interpreter.
    """
    tflite_path, out_path, labels_path = Path(tflite_path), Path(out_path), Path(labels_path)
    model_spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
    backend = load_backend()
    buffer = _read_model(tflite_path)
    if _has_metadata(backend, buffer):
        raise ModelError(
            f"{tflite_path} already has TFLite metadata or associated files; write metadata into "
            "the freshly converted file (re-populating would duplicate the packed files)"
        )
    labels = _read_labels(labels_path)
    inputs, outputs = _tensor_summary(backend, buffer)
    _check_model_matches(model_spec, labels, inputs, outputs)
    if labels_path.name == EMBEDDED_SPEC_NAME:
        raise ModelError(f"the labels file may not be called {EMBEDDED_SPEC_NAME!r}: that name holds the spec")

    schema, info = backend.schema, backend.info
    tensor_type = {"UINT8": backend.model_schema.TensorType.UINT8, "FLOAT32": backend.model_schema.TensorType.FLOAT32}
    in_type, out_type = inputs[0]["type"], outputs[0]["type"]
    h, w = model_spec.input_height, model_spec.input_width
    input_md = info.InputImageTensorMd(
        name=INPUT_TENSOR_NAME,
        description=(
            f"Chest X-ray as a {h}x{w} RGB image, {in_type.lower()} pixel values 0-255 (greyscale "
            f"replicated into R, G and B; stretched to {h}x{w} with {model_spec.interpolation} "
            "interpolation). Scaling to [0, 1] happens inside the model, so the normalisation is "
            "the identity (mean 0, std 1)."
        ),
        norm_mean=list(NORM_MEAN),
        norm_std=list(NORM_STD),
        color_space_type=schema.ColorSpaceType.RGB,
        tensor_type=tensor_type[in_type],
    ).create_metadata()
    quantized = " (quantized: dequantize with the tensor's scale and zero point)" if out_type == "UINT8" else ""
    output_md = info.ClassificationTensorMd(
        name=OUTPUT_TENSOR_NAME,
        description=(
            f"Softmax probabilities{quantized} in label order {list(model_spec.labels)}. Screening "
            f"decision: positive when 1 - P({model_spec.negative_label}) >= {model_spec.threshold:.4g} "
            f"(not argmax; see {EMBEDDED_SPEC_NAME})."
        ),
        label_files=[info.LabelFileMd(file_path=str(labels_path))],
        tensor_type=tensor_type[out_type],
    ).create_metadata()

    model_md = info.GeneralMd(
        name=model_spec.name, version=version, description=description, author=author, licenses=license
    ).create_metadata()
    with tempfile.TemporaryDirectory(prefix="cxr-metadata-") as tmp:
        spec_file = Path(tmp) / EMBEDDED_SPEC_NAME
        spec_file.write_text(_embedded_spec_json(model_spec), encoding="utf-8")
        model_md.associatedFiles = [
            info.AssociatedFileMd(
                file_path=str(spec_file),
                description=(
                    "ModelSpec (edge_runtime.spec) as JSON: input size, colour handling, labels, "
                    "threshold, provenance. The sidecar *.spec.json also lists file hashes."
                ),
                file_type=schema.AssociatedFileType.DESCRIPTIONS,
            ).create_metadata()
        ]
        subgraph = schema.SubGraphMetadataT()
        subgraph.inputTensorMetadata = [input_md]
        subgraph.outputTensorMetadata = [output_md]
        model_md.subgraphMetadata = [subgraph]
        import flatbuffers  # noqa: PLC0415 - a dependency of both metadata libraries

        builder = flatbuffers.Builder(0)
        builder.Finish(model_md.Pack(builder), backend.metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)

        populator = backend.metadata.MetadataPopulator.with_model_buffer(buffer)
        populator.load_metadata_buffer(builder.Output())
        populator.load_associated_files([str(labels_path), str(spec_file)])
        try:
            populator.populate()
        except ValueError as err:
            raise ModelError(f"the metadata writer rejected {tflite_path}: {err}") from err
        populated = populator.get_model_buffer()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(populated)
        _verify_written(Path(tmp_name), model_spec, labels_path.name)
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("wrote %s with metadata (%s, %d bytes)", out_path, backend.name, len(populated))
    return out_path


def _verify_written(path: Path, spec: ModelSpec, labels_name: str) -> None:
    """Read a freshly written file back and refuse it unless labels and spec round-trip."""
    result = read_metadata(path)
    if result["labels"] != list(spec.labels) or result["labels_file"] != labels_name:
        raise ModelError(f"metadata read back from {path} has labels {result['labels']}, expected {list(spec.labels)}")
    if result["spec"] != json.loads(_embedded_spec_json(spec)):
        raise ModelError(f"the spec read back from {path} differs from the one written")


def _decode_associated(content: bytes) -> Any:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(content).decode("ascii")}


def read_metadata(tflite_path: str | Path) -> dict:
    """Read a model's TFLite metadata with the standard MetadataDisplayer.

    Args:
        tflite_path: A .tflite file with metadata.

    Returns:
        JSON-ready dict: ``model``, ``reader`` (library and version), ``metadata`` (the
        displayer's JSON, snake_case keys as in the schema), ``associated_files`` (name -> text,
        or ``{"base64": ...}`` for binary content), ``labels`` and ``labels_file`` (the output's
        TENSOR_AXIS_LABELS file, or None) and ``spec`` (the embedded ModelSpec dict, or None).

    Raises:
        ModelError: missing file, not a TFLite model, or no metadata.
        MetadataToolsUnavailableError: no metadata library imports in this interpreter.
    """
    tflite_path = Path(tflite_path)
    backend = load_backend()
    buffer = _read_model(tflite_path)
    try:
        displayer = backend.metadata.MetadataDisplayer.with_model_buffer(bytes(buffer))
        metadata = json.loads(displayer.get_metadata_json())
        names = displayer.get_packed_associated_file_list()
        files = {name: _decode_associated(displayer.get_associated_file_buffer(name)) for name in names}
    except ValueError as err:
        raise ModelError(f"cannot read TFLite metadata from {tflite_path}: {err}") from err

    labels_file = None
    for output in metadata.get("subgraph_metadata", [{}])[0].get("output_tensor_metadata", []):
        for entry in output.get("associated_files", []):
            if entry.get("type") == "TENSOR_AXIS_LABELS":
                labels_file = entry["name"]
                break
        if labels_file:
            break
    labels = None
    if labels_file and isinstance(files.get(labels_file), str):
        labels = [line.strip() for line in files[labels_file].splitlines() if line.strip()]
    spec = None
    if isinstance(files.get(EMBEDDED_SPEC_NAME), str):
        try:
            spec = json.loads(files[EMBEDDED_SPEC_NAME])
        except ValueError as err:
            raise ModelError(f"{EMBEDDED_SPEC_NAME} embedded in {tflite_path} is not valid JSON: {err}") from err
    return {
        "model": str(tflite_path),
        "reader": f"{backend.name} MetadataDisplayer",
        "metadata": metadata,
        "associated_files": files,
        "labels_file": labels_file,
        "labels": labels,
        "spec": spec,
    }


def check_classifiers(tflite_path: str | Path, image: Any = None) -> dict:
    """Run the model through the Task Library and MediaPipe image classifiers, where installed.

    This is the acceptance test Android cares about: both libraries build an ImageClassifier
    only from a file whose metadata they accept, and name the categories from the embedded
    labels. Also runs the TFLite Support Android wrapper generator (the command-line sibling of
    Android Studio's ML Model Binding) when present.

    Args:
        tflite_path: A .tflite file with metadata.
        image: (H, W, 3) uint8 RGB array at the model's input size; a mid-grey image if None.

    Returns:
        ``{"task_library": ..., "mediapipe": ..., "android_codegen": ...}``; each value is either
        ``{"labels": [...], "scores": {label: score}}`` (codegen: ``{"files": [...]}``) or
        ``{"skipped": reason}`` when that library is not installed.

    Raises:
        ModelError: a library that is installed rejects the file.
        InvalidImageError: ``image`` is not uint8 at the model's input size.
    """
    import numpy as np  # noqa: PLC0415 - only this check needs numpy

    tflite_path = Path(tflite_path)
    summary = read_metadata(tflite_path)
    spec = summary["spec"] or {}
    height, width = int(spec.get("input_height", 0)), int(spec.get("input_width", 0))
    if image is None:
        image = np.full((height, width, 3), 128, dtype=np.uint8)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.shape != (height, width, 3):
        raise InvalidImageError(
            f"check image must be uint8 ({height}, {width}, 3) for {tflite_path.name}, got {image.dtype} {image.shape}"
        )
    image = np.ascontiguousarray(image)
    results: dict[str, Any] = {}

    try:
        from tflite_support.task import core, processor, vision  # noqa: PLC0415
    except ImportError as err:
        results["task_library"] = {"skipped": f"tflite_support.task not importable: {err}"}
    else:
        try:
            options = vision.ImageClassifierOptions(
                base_options=core.BaseOptions(file_name=str(tflite_path), num_threads=1),
                classification_options=processor.ClassificationOptions(max_results=-1),
            )
            classifier = vision.ImageClassifier.create_from_options(options)
            categories = classifier.classify(vision.TensorImage.create_from_array(image)).classifications[0].categories
        except (RuntimeError, ValueError) as err:
            raise ModelError(f"the Task Library ImageClassifier rejected {tflite_path}: {err}") from err
        results["task_library"] = _categories(categories)

    try:
        import mediapipe as mp  # noqa: PLC0415
        from mediapipe.tasks.python import vision as mp_vision  # noqa: PLC0415
        from mediapipe.tasks.python.core.base_options import BaseOptions  # noqa: PLC0415
    except ImportError as err:
        results["mediapipe"] = {"skipped": f"mediapipe not importable: {err}"}
    else:
        try:
            options = mp_vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(tflite_path)))
            with mp_vision.ImageClassifier.create_from_options(options) as classifier:
                result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            categories = result.classifications[0].categories
        except (RuntimeError, ValueError) as err:
            raise ModelError(f"the MediaPipe ImageClassifier rejected {tflite_path}: {err}") from err
        results["mediapipe"] = {**_categories(categories), "version": importlib.metadata.version("mediapipe")}

    try:
        from tensorflow_lite_support.codegen.python import _pywrap_codegen  # noqa: PLC0415
    except ImportError as err:
        results["android_codegen"] = {"skipped": f"tflite-support codegen not importable: {err}"}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            generator = _pywrap_codegen.AndroidJavaGenerator(tmp)
            generated = generator.generate(
                bytes(tflite_path.read_bytes()), "org.cxr.edge", "CxrModel", tflite_path.name
            )
            error = generator.get_error_message().strip()
            if not generated.files or error:
                raise ModelError(f"the TFLite Support Android code generator rejected {tflite_path}: {error}")
            java = next((f.content for f in generated.files if f.path.endswith("CxrModel.java")), "")
            results["android_codegen"] = {
                "files": sorted(os.path.relpath(f.path, tmp) for f in generated.files),
                "reads_labels": "getProbabilityLabels" in java,
                "normalizes": "NormalizeOp" in java,
            }
    return results


def _categories(categories: Sequence[Any]) -> dict:
    ordered = sorted(categories, key=lambda c: c.index)
    return {"labels": [c.category_name for c in ordered], "scores": {c.category_name: float(c.score) for c in ordered}}


# --- running the writer from another interpreter (the TensorFlow venv) --------------------------


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
    description = description or _default_description(spec)
    version = version or _default_version(spec)
    if Path(interpreter) == Path(sys.executable) and _backend_cache:
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
    if Path(interpreter) == Path(sys.executable) and _backend_cache:
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


# --- command line ----------------------------------------------------------------------------------


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


def _default_description(spec: ModelSpec) -> str:
    return (
        f"Chest X-ray screening ({spec.task}): {', '.join(spec.labels)}. Input: {spec.input_height}x"
        f"{spec.input_width} RGB 0-255. Research use only; not a medical device."
    )


def _default_version(spec: ModelSpec) -> str:
    commit = str(spec.training.get("commit") or "")[:12]
    return f"spec{spec.spec_version}" + (f"+{commit}" if commit else "")


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
                description=args.description or _default_description(spec),
                version=args.version or _default_version(spec),
            )
            result: dict[str, Any] = {"out": str(out), "writer": load_backend().name, "size": out.stat().st_size}
            text = f"{out} ({result['size']} bytes, {result['writer']})"
        elif args.command == "read":
            result = read_metadata(args.model)
            text = json.dumps(result, indent=2)
        elif args.command == "verify":
            image = None
            if args.image is not None:
                import numpy as np  # noqa: PLC0415

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
