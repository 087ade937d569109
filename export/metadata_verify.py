"""Acceptance of an Android asset by the Task Library and MediaPipe image classifiers and the Android code generator."""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InvalidImageError, ModelError

from .metadata_read import read_metadata


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
