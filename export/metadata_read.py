"""Reading TFLite metadata and its associated files back with the standard MetadataDisplayer."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from edge_runtime.errors import ModelError
from edge_runtime.spec import EMBEDDED_SPEC_NAME

from .metadata_backend import load_backend, read_model_buffer


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
    buffer = read_model_buffer(tflite_path)
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
