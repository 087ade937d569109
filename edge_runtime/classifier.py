"""The long-lived classifier: model, spec and labels loaded once; ``classify(image) -> Result``."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .cam import compute_cam
from .errors import ModelError, ModelIntegrityError
from .imaging import ImageSource, load_image, prepare_input, read_bytes
from .interpreter import make_interpreter
from .population import apply_population_check, validate_population_check
from .serialize import NEGATIVE_DECISION, POSITIVE_DECISION, result_json
from .spec import ModelSpec, check_binding, find_spec_for_model, sha256_file

logger = logging.getLogger(__name__)


def screening_score(probs: np.ndarray, negative_index: int) -> np.ndarray:
    """Screening score per row: probability that the image is not the negative (NORMAL) class."""
    return 1.0 - np.asarray(probs, dtype=np.float64)[..., negative_index]


def decide(probs: np.ndarray, negative_index: int, threshold: float) -> np.ndarray:
    """The shipped decision rule, per row of (N, C) probabilities: NORMAL when the screening score
    is below ``threshold``, else the likeliest abnormal class (the argmax for two classes at 0.5).

    Training, export and benchmarks call this same function, so every report uses the rule the
    device applies.
    """
    probs = np.asarray(probs, dtype=np.float64)
    masked = probs.copy()
    masked[:, negative_index] = -np.inf
    abnormal = masked.argmax(axis=1)
    return np.where(screening_score(probs, negative_index) >= threshold, abnormal, negative_index)


@dataclasses.dataclass(frozen=True)
class ClassifierOptions:
    """How a :class:`Classifier` loads and runs its model.

    Attributes:
        num_threads: Interpreter threads (1 is best for latency on a Pi running other work).
        heatmap: Compute the heatmap by default in :meth:`Classifier.classify`.
        quality_gate: Refuse images that do not look like chest X-rays (see ``quality``).
        spec_path: Spec sidecar to use; default: the ``*.spec.json`` beside the model listing it.
        verify_sha256: Refuse a model file whose sha256 differs from the spec's, or whose
            embedded spec differs from the sidecar (the binding of model and spec).
        runtime: Force one runtime (``ai_edge_litert``, ``tflite_runtime``, ``tensorflow.lite``).
    """

    num_threads: int = 1
    heatmap: bool = False
    quality_gate: bool = True
    spec_path: str | None = None
    verify_sha256: bool = True
    runtime: str | None = None


@dataclasses.dataclass(frozen=True)
class Result:
    """What one classification produced. ``to_dict()`` gives its JSON form (no arrays)."""

    label: str
    probabilities: dict
    score: float
    threshold: float
    positive: bool
    decision: str
    latency_ms: float
    timings_ms: dict
    image_sha256: str
    model_name: str
    model_sha256: str
    quality: dict = dataclasses.field(default_factory=dict)
    spec_sha256: str = ""
    #: Outcome of the spec's out-of-population check (``expected``, ``other``, ``score``, ``outside``),
    #: ``{}`` when the model has none or its file has no feature map to apply it to.
    population: dict = dataclasses.field(default_factory=dict)
    #: Populations the model was validated on (from its spec).
    validated_populations: tuple = ()
    heatmap: np.ndarray | None = dataclasses.field(default=None, repr=False)
    image: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (:func:`edge_runtime.serialize.result_json`: rounded, no arrays)."""
        return result_json(self)


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Convert real values to a tensor's dtype using the tensor's own scale and zero point."""
    dtype = detail["dtype"]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.issubdtype(dtype, np.floating):
        return values.astype(dtype)
    if scale:
        values = np.round(values.astype(np.float32) / scale + zero_point)
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if scale and not np.issubdtype(values.dtype, np.floating):
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


class Classifier:
    """Runs one exported model on X-ray images.

    Thread-safe: one interpreter per classifier, and calls into it are serialised by a lock, so
    a web server may share one classifier across request threads (requests then queue). For
    parallel throughput create one classifier per worker.

    Args:
        model_path: A ``.tflite`` file exported by ``python -m export``.
        options: :class:`ClassifierOptions`.

    Raises:
        ModelError: missing file, missing or inconsistent spec, unexpected tensors.
        ModelIntegrityError: the file's sha256 differs from the spec's.
        RuntimeUnavailableError: no TFLite runtime installed.
    """

    def __init__(self, model_path: str | Path, options: ClassifierOptions | None = None):
        self.options = options or ClassifierOptions()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"model file not found: {self.model_path}")
        spec_path = Path(self.options.spec_path) if self.options.spec_path else find_spec_for_model(self.model_path)
        self.spec = ModelSpec.load(spec_path)
        self.spec_path = Path(spec_path)
        #: sha256 of the sidecar's bytes, logged with every result (what a checksum list shows).
        self.spec_sha256 = sha256_file(spec_path)
        self.model_sha256 = sha256_file(self.model_path)
        expected = (self.spec.files or {}).get(self.model_path.name)
        if self.options.verify_sha256:
            if not expected:
                raise ModelError(f"spec {spec_path} has no sha256 for {self.model_path.name}")
            if expected != self.model_sha256:
                raise ModelIntegrityError(
                    f"{self.model_path}: sha256 {self.model_sha256[:16]}... does not match the spec's "
                    f"{expected[:16]}... (file changed, truncated or tampered); re-export or re-download it")
            check_binding(self.spec, self.model_path, spec_path)
        self._interpreter, self.runtime = make_interpreter(self.model_path, self.options.num_threads,
                                                           self.options.runtime)
        self._lock = threading.Lock()
        self._input = self._check_input(self._interpreter.get_input_details())
        self._probs_out, self._features_out = self._find_outputs(self._interpreter.get_output_details())
        self._cam_weights = np.asarray(self.spec.cam_weights, dtype=np.float32) if self.spec.cam_weights else None
        if self._features_out is not None and self._cam_weights is None:
            raise ModelError(f"spec {spec_path} has no cam_weights for the model's feature-map output")
        self._population_check = self.spec.population_check or None
        if self._population_check is not None:
            channels = int(self._features_out["shape"][-1]) if self._features_out is not None else None
            validate_population_check(self._population_check, channels)

    # -- set-up checks ---------------------------------------------------------------------
    def _check_input(self, details: list) -> dict:
        if len(details) != 1:
            raise ModelError(f"{self.model_path.name}: expected one input tensor, found {len(details)}")
        detail = details[0]
        expected = [1, self.spec.input_height, self.spec.input_width, self.spec.channels]
        if list(detail["shape"]) != expected:
            raise ModelError(f"{self.model_path.name}: input shape {list(detail['shape'])} differs from the "
                             f"spec's {expected}")
        return detail

    def _find_outputs(self, details: list) -> tuple[dict, dict | None]:
        probs = [d for d in details if len(d["shape"]) == 2 and d["shape"][-1] == len(self.spec.labels)]
        features = [d for d in details if len(d["shape"]) == 4]
        if len(probs) != 1 or len(features) > 1:
            raise ModelError(f"{self.model_path.name}: expected one (1, {len(self.spec.labels)}) probability "
                             f"output and at most one feature map, found {[list(d['shape']) for d in details]}")
        return probs[0], (features[0] if features else None)

    @property
    def has_heatmap(self) -> bool:
        """True when the model file also outputs the feature map (the ``*_cam.tflite`` variant)."""
        return self._features_out is not None

    @property
    def checks_population(self) -> bool:
        """True when every result carries the out-of-population check (spec check + feature map)."""
        return self._population_check is not None and self._features_out is not None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    # -- inference -------------------------------------------------------------------------
    def run(self, prepared: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Invoke the model on one prepared input.

        Args:
            prepared: (H, W, 3) uint8 from :func:`edge_runtime.imaging.prepare_input`.

        Returns:
            (probabilities (C,) float32, dequantized feature map (h, w, c) float32 or None).
        """
        batch = _quantize(np.asarray(prepared)[None].astype(np.float32), self._input)
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], batch)
            self._interpreter.invoke()
            probs = _dequantize(self._interpreter.get_tensor(self._probs_out["index"]), self._probs_out)[0]
            features = None
            if self._features_out is not None:
                features = _dequantize(self._interpreter.get_tensor(self._features_out["index"]),
                                       self._features_out)[0]
        return probs, features

    def decide(self, probs: np.ndarray) -> tuple[int, float, bool]:
        """(label index, screening score, positive) under the spec's threshold rule."""
        neg = self.spec.negative_index
        score = float(screening_score(probs, neg))
        return int(decide(np.asarray(probs)[None], neg, self.spec.threshold)[0]), score, score >= self.spec.threshold

    def classify(self, image: ImageSource, heatmap: bool | None = None) -> Result:
        """Classify one image: decode, check, preprocess, invoke and optionally explain.

        Args:
            image: Path, bytes, stream or decoded array (see :func:`edge_runtime.imaging.load_image`).
            heatmap: Compute the heatmap (default: ``options.heatmap``).

        Raises:
            InvalidImageError: the input cannot be decoded (subclasses say why).
            NotChestXrayError: the quality gate refused it.
            ModelError: a heatmap was asked of a model file without a feature-map output.
        """
        heatmap = self.options.heatmap if heatmap is None else heatmap
        if heatmap and not self.has_heatmap:
            raise ModelError(f"{self.model_path.name} has no feature-map output; use the *_cam.tflite file "
                             "for heatmaps")
        started = time.perf_counter()
        timings = {}
        name = None
        if isinstance(image, np.ndarray):
            rgb = load_image(image)
            digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
        else:
            data, name = read_bytes(image)
            digest = hashlib.sha256(data).hexdigest()
            rgb = load_image(data, name=name)
        timings["decode"] = (time.perf_counter() - started) * 1000.0
        quality: dict = {}
        if self.options.quality_gate:
            from .quality import check_chest_xray  # only with the gate: its FFT tables cost ~10 ms at import

            mark = time.perf_counter()
            quality = check_chest_xray(rgb, name=name)
            timings["quality"] = (time.perf_counter() - mark) * 1000.0
        mark = time.perf_counter()
        prepared = prepare_input(rgb, self.spec)
        timings["preprocess"] = (time.perf_counter() - mark) * 1000.0
        mark = time.perf_counter()
        probs, features = self.run(prepared)
        timings["invoke"] = (time.perf_counter() - mark) * 1000.0
        index, score, positive = self.decide(probs)
        population = {}
        if self._population_check is not None and features is not None:
            population = apply_population_check(self._population_check, features)
        cam = None
        if heatmap:
            mark = time.perf_counter()
            cam = compute_cam(features, self._cam_weights, index)
            timings["cam"] = (time.perf_counter() - mark) * 1000.0
        latency = (time.perf_counter() - started) * 1000.0
        return Result(
            label=self.spec.labels[index],
            probabilities={label: float(p) for label, p in zip(self.spec.labels, probs)},
            score=score,
            threshold=float(self.spec.threshold),
            positive=positive,
            decision=POSITIVE_DECISION if positive else NEGATIVE_DECISION,
            latency_ms=latency,
            timings_ms=timings,
            image_sha256=digest,
            model_name=self.spec.name,
            model_sha256=self.model_sha256,
            spec_sha256=self.spec_sha256,
            quality=quality,
            population=population,
            validated_populations=tuple(self.spec.populations),
            heatmap=cam,
            image=rgb,
        )

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the interpreter (its memory is freed when no result refers to it)."""
        self._interpreter = None

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

