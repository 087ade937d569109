"""Writing TFLite metadata (labels, normalisation, ModelSpec) into an Android asset; runs where a writer imports."""

# Normalisation choice: pixel scaling to [0, 1] is inside the Keras graph, so the model is fed
# 0..255 RGB values. The Task Library (image_tensor_specs.cc) and MediaPipe require
# NormalizationOptions for float32 input tensors and ignore them for uint8 ones; both our float16
# and int8 assets take a uint8 input, and a float32-input variant would need exactly
# (x - 0) / 1. So we always write the identity mean=[0, 0, 0], std=[1, 1, 1]: correct for either
# input type, and the ML Model Binding / TFLite Support codegen turns it into a NormalizeOp that
# the Support Library treats as a no-op on uint8 buffers.

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_runtime.errors import ModelError
from edge_runtime.serialize import threshold_rule
from edge_runtime.spec import EMBEDDED_SPEC_NAME, ModelSpec

from .binding import embedded_spec_json
from .metadata_backend import Backend, has_metadata, load_backend, read_model_buffer, tensor_summary
from .metadata_read import read_metadata

logger = logging.getLogger(__name__)

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


def default_description(spec: ModelSpec) -> str:
    """The metadata's model description when none is given."""
    return (
        f"Chest X-ray screening ({spec.task}): {', '.join(spec.labels)}. Input: {spec.input_height}x"
        f"{spec.input_width} RGB 0-255. Research use only; not a medical device."
    )


def default_version(spec: ModelSpec) -> str:
    """The metadata's model version when none is given: spec version + training commit."""
    commit = str(spec.training.get("commit") or "")[:12]
    return f"spec{spec.spec_version}" + (f"+{commit}" if commit else "")


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


def _check_inputs(backend: Backend, buffer: bytearray, tflite_path: Path, spec: ModelSpec,
                  labels_path: Path) -> tuple[list[dict], list[dict]]:
    """The model's (inputs, outputs), after refusing a file that has metadata or does not fit ``spec``."""
    if has_metadata(backend, buffer):
        raise ModelError(
            f"{tflite_path} already has TFLite metadata or associated files; write metadata into "
            "the freshly converted file (re-populating would duplicate the packed files)"
        )
    labels = _read_labels(labels_path)
    inputs, outputs = tensor_summary(backend, buffer)
    _check_model_matches(spec, labels, inputs, outputs)
    if labels_path.name == EMBEDDED_SPEC_NAME:
        raise ModelError(f"the labels file may not be called {EMBEDDED_SPEC_NAME!r}: that name holds the spec")
    return inputs, outputs


def _tensor_metadata(backend: Backend, spec: ModelSpec, in_type: str, out_type: str, labels_path: Path):
    """(input, output) tensor metadata: RGB image with identity normalisation; probabilities with the labels."""
    schema, info = backend.schema, backend.info
    tensor_type = {"UINT8": backend.model_schema.TensorType.UINT8, "FLOAT32": backend.model_schema.TensorType.FLOAT32}
    h, w = spec.input_height, spec.input_width
    input_md = info.InputImageTensorMd(
        name=INPUT_TENSOR_NAME,
        description=(
            f"Chest X-ray as a {h}x{w} RGB image, {in_type.lower()} pixel values 0-255 (greyscale "
            f"replicated into R, G and B; stretched to {h}x{w} with {spec.interpolation} "
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
            f"Softmax probabilities{quantized} in label order {list(spec.labels)}. Screening decision "
            f"(not argmax; see {EMBEDDED_SPEC_NAME}): {threshold_rule(spec.negative_label, spec.threshold)}."
        ),
        label_files=[info.LabelFileMd(file_path=str(labels_path))],
        tensor_type=tensor_type[out_type],
    ).create_metadata()
    return input_md, output_md


def _populate(backend: Backend, buffer: bytearray, model_md, tensors: tuple, labels_path: Path, spec: ModelSpec,
              tflite_path: Path) -> bytes:
    """The model buffer with ``model_md``, the tensor metadata, the labels and ``model_spec.json`` packed in."""
    schema, info = backend.schema, backend.info
    with tempfile.TemporaryDirectory(prefix="cxr-metadata-") as tmp:
        spec_file = Path(tmp) / EMBEDDED_SPEC_NAME
        # A file cannot carry its own sha256, so the hashes stay in the sidecar spec only; the
        # runtime checks this copy against the sidecar (edge_runtime.spec.check_binding).
        spec_file.write_text(embedded_spec_json(spec), encoding="utf-8")
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
        subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [tensors[0]], [tensors[1]]
        model_md.subgraphMetadata = [subgraph]
        import flatbuffers  # noqa: PLC0415 - a dependency of both metadata libraries, not of this interpreter

        builder = flatbuffers.Builder(0)
        builder.Finish(model_md.Pack(builder), backend.metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)

        populator = backend.metadata.MetadataPopulator.with_model_buffer(buffer)
        populator.load_metadata_buffer(builder.Output())
        populator.load_associated_files([str(labels_path), str(spec_file)])
        try:
            populator.populate()
        except ValueError as err:
            raise ModelError(f"the metadata writer rejected {tflite_path}: {err}") from err
        return populator.get_model_buffer()


def _verify_written(path: Path, spec: ModelSpec, labels_name: str) -> None:
    """Read a freshly written file back and refuse it unless labels and spec round-trip."""
    result = read_metadata(path)
    if result["labels"] != list(spec.labels) or result["labels_file"] != labels_name:
        raise ModelError(f"metadata read back from {path} has labels {result['labels']}, expected {list(spec.labels)}")
    if result["spec"] != json.loads(embedded_spec_json(spec)):
        raise ModelError(f"the spec read back from {path} differs from the one written")


def _replace_verified(out_path: Path, populated: bytes, spec: ModelSpec, labels_name: str) -> None:
    """Write ``populated`` beside ``out_path``, read it back, then move it into place (or delete it)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(populated)
        _verify_written(Path(tmp_name), spec, labels_name)
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


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
    buffer = read_model_buffer(tflite_path)
    inputs, outputs = _check_inputs(backend, buffer, tflite_path, model_spec, labels_path)
    tensors = _tensor_metadata(backend, model_spec, inputs[0]["type"], outputs[0]["type"], labels_path)
    model_md = backend.info.GeneralMd(
        name=model_spec.name, version=version, description=description, author=author, licenses=license
    ).create_metadata()
    populated = _populate(backend, buffer, model_md, tensors, labels_path, model_spec, tflite_path)
    _replace_verified(out_path, populated, model_spec, labels_path.name)
    logger.info("wrote %s with metadata (%s, %d bytes)", out_path, backend.name, len(populated))
    return out_path
