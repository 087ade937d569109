"""The input/output specification that travels with every model, from training to the device."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping

from .errors import ModelError, ModelIntegrityError

#: Bump when a field changes meaning; the runtime refuses specs newer than it understands.
#: 2: adds ``title``, ``description``, ``populations`` and ``population_check`` (a runtime that
#: ignored ``population_check`` would stay silent on a film from outside the validated population).
SPEC_VERSION = 2

#: Input side of every shipped model, and of training's default recipe: a spec without a size gets it.
DEFAULT_INPUT_SIZE = 160

#: Suffix of the JSON sidecar written next to the model files.
SPEC_SUFFIX = ".spec.json"
#: Name of the spec copy embedded in every exported ``.tflite`` (a zip appended to the flatbuffer,
#: as TFLite metadata's associated files are): it binds the model to its sidecar.
EMBEDDED_SPEC_NAME = "model_spec.json"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to feed a model and read its output, in one frozen record.

    Attributes:
        name: Model family name, e.g. ``cxr_binary_160``; file names start with it.
        task: ``binary``, ``etiology`` or ``covid``.
        labels: Class names in output order.
        input_height: Model input height in pixels.
        input_width: Model input width in pixels.
        channels: Number of input channels (3: the luminance replicated as R, G, B).
        color_order: Channel order of the input tensor.
        color_mode: How a decoded image becomes model channels. ``luminance``: converted to
            8-bit grey (ITU-R 601-2 luma) and replicated into the three channels.
        resize_mode: ``stretch``: resized to the input size without keeping the aspect ratio,
            as the training images were.
        interpolation: Resampling filter (Pillow name; antialiased when shrinking).
        input_dtype: Dtype of the input tensor; pixels are fed as 0..255 integers.
        pixel_range: Range of the fed pixels; scaling to [0, 1] happens inside the graph.
        negative_label: The label meaning "no finding" (screening negative).
        threshold: Screening threshold on the positive score (1 - P(negative_label)), chosen
            on validation for high sensitivity.
        threshold_rule: Human-readable description of how ``threshold`` was chosen.
        spec_version: Format version of this record.
        feature_map_shape: (h, w, c) of the last feature map used for the heatmap.
        cam_weights: (c, num_classes) kernel of the dense softmax layer: CAM_k = sum_c F_c W_ck.
        cam_bias: (num_classes,) bias of that layer (kept for completeness; CAM ignores it).
        training: Provenance (data path, seed, command, commit, date).
        files: File name -> sha256 of each exported artifact.
        title: Short human title of the task (e.g. "Pneumonia screening, children and adults").
        description: What the model tells apart and from which data (one sentence or two).
        populations: Populations the model was trained and validated on (``children``, ``adults``).
        population_check: Optional check that a film belongs to the validated population: a
            logistic regression on the model's global-average-pooled feature map, with keys
            ``expected`` (population), ``other`` (the population it flags), ``mean``, ``scale``,
            ``weights`` (one per feature channel), ``bias``, ``threshold`` (on the probability of
            ``other``) and ``validation`` (its measured accuracy). See :mod:`edge_runtime.population`.
    """

    name: str
    task: str
    labels: tuple[str, ...]
    input_height: int = DEFAULT_INPUT_SIZE
    input_width: int = DEFAULT_INPUT_SIZE
    channels: int = 3
    color_order: str = "RGB"
    color_mode: str = "luminance"
    resize_mode: str = "stretch"
    interpolation: str = "bilinear"
    input_dtype: str = "uint8"
    pixel_range: tuple[int, int] = (0, 255)
    negative_label: str = "NORMAL"
    threshold: float = 0.5
    threshold_rule: str = "argmax (no threshold chosen yet)"
    spec_version: int = SPEC_VERSION
    feature_map_shape: tuple[int, int, int] | None = None
    cam_weights: tuple[tuple[float, ...], ...] | None = None
    cam_bias: tuple[float, ...] | None = None
    training: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    title: str = ""
    description: str = ""
    populations: tuple[str, ...] = ()
    population_check: Mapping[str, Any] | None = None

    def __post_init__(self):
        if len(self.labels) < 2:
            raise ModelError(f"spec {self.name!r}: needs at least two labels, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ModelError(f"spec {self.name!r}: duplicate labels {list(self.labels)}")
        if self.negative_label not in self.labels:
            raise ModelError(
                f"spec {self.name!r}: negative_label {self.negative_label!r} is not one of {list(self.labels)}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise ModelError(f"spec {self.name!r}: threshold must be in (0, 1), got {self.threshold}")
        if self.channels != 3 or self.color_order != "RGB":
            raise ModelError(f"spec {self.name!r}: only 3-channel RGB input is supported")
        if self.color_mode != "luminance" or self.resize_mode != "stretch":
            raise ModelError(
                f"spec {self.name!r}: unsupported color_mode/resize_mode {self.color_mode}/{self.resize_mode}"
            )
        if self.spec_version > SPEC_VERSION:
            raise ModelError(
                f"spec {self.name!r} has version {self.spec_version}; this runtime reads up to "
                f"{SPEC_VERSION}: upgrade cxr-edge"
            )

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return (self.input_height, self.input_width)

    @property
    def negative_index(self) -> int:
        return self.labels.index(self.negative_label)

    @property
    def positive_labels(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if label != self.negative_label)

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["labels"] = list(self.labels)
        data["pixel_range"] = list(self.pixel_range)
        data["feature_map_shape"] = list(self.feature_map_shape) if self.feature_map_shape else None
        data["cam_weights"] = [list(row) for row in self.cam_weights] if self.cam_weights else None
        data["cam_bias"] = list(self.cam_bias) if self.cam_bias else None
        data["training"] = dict(self.training)
        data["files"] = dict(self.files)
        data["populations"] = list(self.populations)
        data["population_check"] = dict(self.population_check) if self.population_check else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        if not isinstance(data, Mapping):
            raise ModelError(f"model spec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("name", "task", "labels") if k not in data]
        if missing:
            raise ModelError(f"model spec is missing {missing}")
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["labels"] = tuple(kwargs["labels"])
        if "pixel_range" in kwargs:
            kwargs["pixel_range"] = tuple(kwargs["pixel_range"])
        if kwargs.get("feature_map_shape"):
            kwargs["feature_map_shape"] = tuple(kwargs["feature_map_shape"])
        if kwargs.get("cam_weights"):
            kwargs["cam_weights"] = tuple(tuple(float(v) for v in row) for row in kwargs["cam_weights"])
        if kwargs.get("cam_bias"):
            kwargs["cam_bias"] = tuple(float(v) for v in kwargs["cam_bias"])
        if "populations" in kwargs:
            value = kwargs["populations"] or ()
            if isinstance(value, Mapping):
                value = value.get("validated") or value.get("description") or ()
            kwargs["populations"] = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ModelError(f"model spec has invalid fields: {err}") from err

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelSpec":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise ModelError(f"model spec not found: {path}") from err
        except (OSError, ValueError) as err:
            raise ModelError(f"model spec {path} is not valid JSON: {err}") from err
        return cls.from_dict(data)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_spec_for_model(model_path: str | Path) -> Path:
    """Find the spec sidecar that lists ``model_path`` in its ``files``.

    Raises:
        ModelError: when no spec in the model's folder lists the file.
    """
    model_path = Path(model_path)
    candidates = sorted(model_path.parent.glob("*" + SPEC_SUFFIX))
    for candidate in candidates:
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and model_path.name in (data.get("files") or {}):
            return candidate
    raise ModelError(
        f"no model spec lists {model_path.name!r} in {model_path.parent} (looked at "
        f"{[c.name for c in candidates] or 'no *' + SPEC_SUFFIX + ' files'}); the runtime refuses a "
        "model without its spec: export it with `python -m export` or pass spec_path"
    )


def embedded_spec_dict(spec: ModelSpec) -> dict:
    """What a model file embeds of its spec: every field but ``files`` (a file cannot hold its own
    sha256; the sidecar's ``files`` binds the other way, sidecar -> file)."""
    data = spec.to_dict()
    data.pop("files", None)
    return data


def read_embedded_spec(model_path: str | Path) -> dict | None:
    """The spec embedded in a ``.tflite`` file (``model_spec.json`` in the zip appended to it), or
    ``None`` when the file carries none (exported before models were bound to their spec).

    Raises:
        ModelError: the embedded copy exists but is not valid JSON.
    """
    try:
        with zipfile.ZipFile(model_path) as archive:
            if EMBEDDED_SPEC_NAME not in archive.namelist():
                return None
            raw = archive.read(EMBEDDED_SPEC_NAME)
    except (zipfile.BadZipFile, OSError, EOFError):
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{model_path}: the embedded {EMBEDDED_SPEC_NAME} is not valid JSON: {err}") from err
    return data


def check_binding(spec: ModelSpec, model_path: str | Path, spec_path: str | Path | None = None) -> None:
    """Refuse a model whose embedded spec differs from its sidecar ``spec``.

    With the sidecar's sha256 of the model file, this makes any edit to either file fail: an edited
    model no longer matches the sidecar's sha256, an edited sidecar (labels reversed, a threshold
    moved) no longer matches the copy inside the model.

    Raises:
        ModelIntegrityError: no embedded spec, or one that differs (the fields are named).
    """
    model_path = Path(model_path)
    where = spec_path or f"the spec of {model_path.name}"
    embedded = read_embedded_spec(model_path)
    if embedded is None:
        raise ModelIntegrityError(
            f"{model_path}: carries no embedded {EMBEDDED_SPEC_NAME}, so nothing shows that {where} belongs to "
            "it (exported before cxr-edge bound models to their spec): re-export it with `python -m export`, or "
            "bind existing files with `python -m export.binding --assets <folder>`")
    try:
        embedded_dict = embedded_spec_dict(ModelSpec.from_dict(embedded))
    except ModelError as err:
        raise ModelIntegrityError(f"{model_path}: its embedded spec is invalid: {err}") from err
    sidecar = embedded_spec_dict(spec)
    differing = sorted(k for k in set(sidecar) | set(embedded_dict) if sidecar.get(k) != embedded_dict.get(k))
    if differing:
        raise ModelIntegrityError(
            f"{where} differs from the spec embedded in {model_path.name} in {differing}: the sidecar was edited "
            "or belongs to another model; refusing to run (re-download both files, or re-export)")
