"""python -m training shift: screening metrics of a model on its validation side re-rendered as other scanners would.

Each original file is decoded (before the project's preprocessing), altered the way another X-ray system,
film digitiser or PACS would alter it (contrast/gamma, windowing, blur, sharpening, noise, resolution loss,
JPEG re-compression, borders, off-centre crop and aspect, burned-in markers), then passed through the one
preprocessing function (:func:`edge_runtime.imaging.preprocess`) and the model. Severity 0 is the original
file, the highest severity the strongest setting of each family; every image draws its own seeded variant
(direction, sides, corners), so the same seed gives the same images. Reported per family and severity,
pooled and per source folder: screening ROC AUC, and sensitivity/specificity under the shipped decision rule.

This is a proxy for acquisition shift, not a substitute for films from other hospitals: it tells which
image properties the model leans on, not how it does on another population.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shlex
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge_runtime.classifier import decide, screening_score
from edge_runtime.errors import CxrError, InvalidImageError
from edge_runtime.imaging import load_image, preprocess, to_luminance
from edge_runtime.spec import ModelSpec

from .data import DataError, list_samples
from .evaluate import task_for_folder

logger = logging.getLogger(__name__)

#: Spatial settings are given for a 224-pixel short side (the shared data sets) and scaled to the image.
REFERENCE_SIDE = 224
#: Default number of severities above 0.
DEFAULT_SEVERITIES = 3
#: A metric that falls by at least this much below severity 0 is printed in bold in the markdown.
NOTABLE_DROP = 0.05


# ----------------------------------------------------------------------------------------------------------
# Perturbations: pure functions of (uint8 grey image, strength t in (0, 1], generator) -> uint8 grey image.
# t = severity / max_severity, so the strongest setting is the same whatever the number of steps.
# ----------------------------------------------------------------------------------------------------------

def _cv2():
    import cv2  # optional heavy import, used only here

    return cv2


def _scale(image: np.ndarray) -> float:
    return min(image.shape) / REFERENCE_SIDE


def _to_u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _gamma(direction: int) -> Callable[[np.ndarray, float, np.random.Generator], np.ndarray]:
    # Another detector's tone curve: gamma 2**(direction * t) (> 1 darkens mid-tones, < 1 lightens them),
    # and a flatter film (contrast about the mean reduced by up to 35%). The two directions are separate
    # families because a model can fail in one and not the other.
    def apply(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
        curved = 255.0 * (image / 255.0) ** (2.0 ** (direction * t))
        mean = curved.mean()
        return _to_u8(mean + (1.0 - 0.35 * t) * (curved - mean))

    return apply


def _window(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    # A narrower display window: black level raised and white level lowered by up to 50 grey levels
    # (half to all of it, drawn per image); what falls outside is clipped.
    low = 50.0 * t * rng.uniform(0.5, 1.0)
    high = 255.0 - 50.0 * t * rng.uniform(0.5, 1.0)
    return _to_u8((image.astype(np.float64) - low) * (255.0 / (high - low)))


def _blur(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    sigma = 2.5 * t * _scale(image)
    return _cv2().GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=4)  # BORDER_REFLECT_101


def _sharpen(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    # Unsharp masking, as CR/DR systems apply for edge enhancement: x + amount * (x - blur(x)).
    sigma = 2.0 * _scale(image)
    blurred = _cv2().GaussianBlur(image.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=4)
    return _to_u8(image + 2.0 * t * (image - blurred))


def _noise(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    # Additive Gaussian noise of sd 15 * t grey levels at the reference resolution; on a larger image it is
    # drawn on a reference-size grid and upsampled, so the model (which sees a downscaled image) gets the same.
    h, w = image.shape
    s = max(_scale(image), 1.0)
    field = rng.normal(0.0, 15.0 * t, (max(1, round(h / s)), max(1, round(w / s)))).astype(np.float32)
    if field.shape != image.shape:
        field = _cv2().resize(field, (w, h), interpolation=_cv2().INTER_LINEAR)
    return _to_u8(image + field)


def _downsample_side(t: float) -> int:
    return round(REFERENCE_SIDE / (1.0 + 3.0 * t))


def _resolution(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    # Digitised at a lower resolution: short side down to 224 / (1 + 3t) pixels (56 at t = 1), then back up.
    cv2 = _cv2()
    h, w = image.shape
    factor = min(h, w) / _downsample_side(t)
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg_quality(t: float) -> int:
    return round(75 - 65 * t)


def _jpeg(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    cv2 = _cv2()
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _jpeg_quality(t)])
    if not ok:
        raise InvalidImageError(f"OpenCV could not JPEG-encode a {image.shape} image")
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def _border(colour: int) -> Callable[[np.ndarray, float, np.random.Generator], np.ndarray]:
    # A digitiser's scan bed or a film frame: a margin of ``colour`` of up to 15% of the size per side, on all
    # four sides or on one or two (drawn per image), the whole then stretched back to the original size.
    def apply(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
        cv2 = _cv2()
        h, w = image.shape
        if rng.random() < 0.5:
            sides = np.ones(4, bool)
        else:
            sides = np.zeros(4, bool)
            sides[rng.choice(4, size=int(rng.integers(1, 3)), replace=False)] = True
        margin = np.where(sides, np.maximum(1, np.rint(0.15 * t * np.array([h, h, w, w]))), 0).astype(int)
        framed = cv2.copyMakeBorder(image, *margin.tolist(), borderType=cv2.BORDER_CONSTANT, value=colour)
        return cv2.resize(framed, (w, h), interpolation=cv2.INTER_AREA)

    return apply


def _crop_aspect(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    # Tighter or off-centre collimation on a detector of another aspect: a window keeping 1 - 0.3t of one
    # axis and 1 - 0.1t of the other (aspect changed by up to 1.43x), placed at random, stretched back.
    cv2 = _cv2()
    h, w = image.shape
    keep = np.array([1.0 - 0.3 * t, 1.0 - 0.1 * t])
    if rng.random() < 0.5:
        keep = keep[::-1]
    ch, cw = max(1, round(h * keep[0])), max(1, round(w * keep[1]))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return cv2.resize(image[top:top + ch, left:left + cw], (w, h), interpolation=cv2.INTER_LINEAR)


_WORDS = ("PORTABLE", "AP", "SUPINE", "ERECT", "AP PORTABLE")


def _marker_count(t: float) -> int:
    return max(1, math.ceil(3 * t - 1e-9))  # 1, 2, 3 items at t = 1/3, 2/3, 1


def _markers(image: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    # Burned-in annotations near the corners: a side letter (L or R), then a word (PORTABLE, AP ...), then a
    # white label rectangle with dark text (an ID tag); ceil(3t) of them, larger as t grows.
    cv2 = _cv2()
    out = image.copy()
    h, w = out.shape
    side = min(h, w)
    corners = rng.permutation(4)  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    count = _marker_count(t)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for item in range(count):
        corner = int(corners[item])
        white = int(rng.integers(225, 256))
        pad = int(round(side * rng.uniform(0.03, 0.06)))
        if item == 2:
            rect_w, rect_h = int(side * (0.22 + 0.1 * t)), int(side * (0.08 + 0.04 * t))
        else:
            text = str(rng.choice(("L", "R"))) if item == 0 else str(rng.choice(_WORDS))
            height = side * ((0.07 + 0.05 * t) if item == 0 else (0.04 + 0.025 * t))
            font_scale = height / 22.0  # Hershey simplex capitals are ~22 px tall at scale 1
            thickness = max(1, round(height / 8))
            (text_w, text_h), _ = cv2.getTextSize(text, font, font_scale, thickness)
            rect_w, rect_h = text_w + thickness, text_h + thickness  # strokes reach past the nominal box
        x = pad if corner in (0, 2) else w - pad - rect_w
        y = pad if corner in (0, 1) else h - pad - rect_h
        x, y = int(np.clip(x, 0, max(0, w - rect_w))), int(np.clip(y, 0, max(0, h - rect_h)))
        if item == 2:
            cv2.rectangle(out, (x, y), (x + rect_w, y + rect_h), white, thickness=-1)
            label = f"ID {int(rng.integers(0, 10**6)):06d}"
            label_thickness = max(1, round(rect_h / 16))
            (label_w, label_h), _ = cv2.getTextSize(label, font, 1.0, label_thickness)
            label_scale = min(0.85 * rect_w / label_w, 0.55 * rect_h / label_h)
            cv2.putText(out, label, (x + int(rect_w * 0.075), y + int(rect_h * 0.75)), font, label_scale, 40,
                        label_thickness, cv2.LINE_AA)
        else:
            cv2.putText(out, text, (x + thickness // 2, y + text_h + thickness // 2), font, font_scale, white,
                        thickness, cv2.LINE_AA)
    return out


@dataclasses.dataclass(frozen=True)
class Perturbation:
    """One family of acquisition changes.

    Attributes:
        name: Short key used in flags and reports.
        description: What it simulates.
        apply: ``apply(grey uint8 (H, W), strength in (0, 1], generator) -> grey uint8 (H, W)``.
        setting: Human-readable parameters at a strength.
        kind: Families of one kind (two directions of one change) share a colour in the plot.
    """

    name: str
    description: str
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    setting: Callable[[float], str]
    kind: str = ""


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("gamma_light", "tone curve of another detector: mid-tones lighter (gamma < 1), flatter film",
                 _gamma(-1), lambda t: f"gamma {2 ** -t:.2f}, contrast x{1 - 0.35 * t:.2f}", "gamma"),
    Perturbation("gamma_dark", "tone curve of another detector: mid-tones darker (gamma > 1), flatter film",
                 _gamma(+1), lambda t: f"gamma {2 ** t:.2f}, contrast x{1 - 0.35 * t:.2f}", "gamma"),
    Perturbation("window", "narrower display window: black and white levels clipped",
                 _window, lambda t: f"levels <= {25 * t:.0f}-{50 * t:.0f} black, "
                                    f">= {255 - 25 * t:.0f}-{255 - 50 * t:.0f} white"),
    Perturbation("blur", "Gaussian blur (detector or film-scanner unsharpness)",
                 _blur, lambda t: f"sigma {2.5 * t:.2f} px"),
    Perturbation("sharpen", "unsharp-mask edge enhancement of CR/DR post-processing",
                 _sharpen, lambda t: f"amount {2.0 * t:.2f}, radius 2 px"),
    Perturbation("noise", "Gaussian quantum/electronic noise (low dose, portable units)",
                 _noise, lambda t: f"sd {15 * t:.1f} grey levels"),
    Perturbation("resolution", "resolution loss: down-sampled, then up-sampled",
                 _resolution, lambda t: f"short side {_downsample_side(t)} px"),
    Perturbation("jpeg", "JPEG re-compression at low quality (PACS export, messaging apps)",
                 _jpeg, lambda t: f"quality {_jpeg_quality(t)}"),
    Perturbation("border_black", "black margin from a digitiser or film frame (1, 2 or 4 sides), image shrunk",
                 _border(0), lambda t: f"margin {15 * t:.0f}% per side", "border"),
    Perturbation("border_white", "white margin from a digitiser's scan bed (1, 2 or 4 sides), image shrunk",
                 _border(255), lambda t: f"margin {15 * t:.0f}% per side", "border"),
    Perturbation("crop_aspect", "off-centre crop on a detector of another aspect, stretched back",
                 _crop_aspect, lambda t: f"keeps {100 - 30 * t:.0f}% x {100 - 10 * t:.0f}%, "
                                         f"aspect x{(1 - 0.1 * t) / (1 - 0.3 * t):.2f}"),
    Perturbation("markers", "burned-in L/R letter, PORTABLE/AP word, white ID label near the corners",
                 _markers, lambda t: ("L/R letter", "letter + word", "letter + word + label")[_marker_count(t) - 1]
                 + f", size x{1 + t:.2f}"),
)}


def _family(name: str) -> Perturbation:
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise ValueError(f"unknown perturbation family {name!r}; choose from {sorted(PERTURBATIONS)}") from None


def image_rng(seed: int, family: str, severity: int, key: str) -> np.random.Generator:
    """The generator for one image under one family and severity: independent of order, batching and subsets."""
    return np.random.default_rng([seed, zlib.crc32(family.encode()), severity, zlib.crc32(key.encode())])


def perturb(image: np.ndarray, family: str, severity: int, max_severity: int = DEFAULT_SEVERITIES,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Re-render a grey image as ``family`` at ``severity`` (0: unchanged) of ``max_severity``.

    Args:
        image: (H, W) uint8 grey image at its original resolution.
        family: A key of :data:`PERTURBATIONS`.
        severity: 0 .. ``max_severity``.
        max_severity: The strongest severity (its setting does not depend on this number).
        rng: Random draws of the per-image variant (default: a generator seeded with 0).

    Returns:
        (H, W) uint8 array; a copy of ``image`` at severity 0.

    Raises:
        InvalidImageError: ``image`` is not a 2-D uint8 array.
        ValueError: unknown family or severity out of range.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.dtype != np.uint8:
        raise InvalidImageError(f"perturb expects an (H, W) uint8 grey array, got "
                                f"{getattr(image, 'shape', type(image).__name__)} {getattr(image, 'dtype', '')}")
    pert = _family(family)
    if max_severity < 1 or not 0 <= severity <= max_severity:
        raise ValueError(f"severity must be in 0..{max_severity} (max_severity >= 1), got {severity}")
    if severity == 0:
        return image.copy()
    rng = rng if rng is not None else np.random.default_rng(0)
    out = pert.apply(image, severity / max_severity, rng)
    if out.shape != image.shape or out.dtype != np.uint8:  # a bug in a family, not a user error
        raise RuntimeError(f"perturbation {family!r} returned {out.shape} {out.dtype} for {image.shape} uint8")
    return out


# ----------------------------------------------------------------------------------------------------------
# Data: the chosen side of a split, stratified subsample
# ----------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Item:
    """One labelled file: absolute path, path relative to the data root (the split's key), label index."""

    path: str
    relpath: str
    label: int
    population: str = ""  # e.g. children / adults, when the task's class map says so

    @property
    def source(self) -> str:
        """The folder the file sits in, relative to the data root (e.g. ``NORMAL`` or ``adult_cxr/NORMAL``)."""
        return self.relpath.rsplit("/", 1)[0] if "/" in self.relpath else "."


def read_split_side(split_path: str | Path, side: str = "val") -> list[str]:
    """The relative paths listed under ``side`` in a split.json; other keys are ignored.

    Raises:
        DataError: unreadable file, or no list named ``side`` in it.
    """
    split_path = Path(split_path)
    try:
        payload = json.loads(split_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read split {split_path}: {err}") from err
    # Every list of strings except the class names is a side (train, val, calibration, ...).
    lists = sorted(k for k, v in payload.items() if k != "labels" and isinstance(v, list)
                   and all(isinstance(p, str) for p in v)) if isinstance(payload, dict) else []
    if side not in lists:
        raise DataError(f"split {split_path} has no list {side!r}; its file lists are {lists}")
    return list(payload[side])


def split_items(split_path: str | Path, data_root: str | Path, spec: ModelSpec, side: str = "val") -> list[Item]:
    """The files of one side of a split, labelled through the model's class map (as evaluation reads them).

    Raises:
        DataError: the split's labels differ from the model's, or it names files the data root lacks.
    """

    data_root = Path(data_root)
    payload_labels = json.loads(Path(split_path).read_text(encoding="utf-8")).get("labels")
    if payload_labels is not None and list(payload_labels) != list(spec.labels):
        raise DataError(f"split {split_path} is for labels {payload_labels}, the model has {list(spec.labels)}")
    relpaths = read_split_side(split_path, side)
    task = task_for_folder(spec, data_root)
    if list(task.labels) != list(spec.labels):
        raise DataError(f"task {task.name!r} reads labels {list(task.labels)}, the model has {list(spec.labels)}")
    index = {s.relpath: s for s in list_samples(data_root, task)}
    missing = [p for p in relpaths if p not in index]
    if missing:
        raise DataError(f"split {split_path} ({side}) names {len(missing)} files that {data_root} does not hold for "
                        f"task {task.name!r}, e.g. {missing[:3]}: pass the data root the split was made on")
    return [Item(index[p].path, p, index[p].label, getattr(index[p], "population", "") or "") for p in relpaths]


def stratified_subset(items: Sequence[Item], max_images: int | None, seed: int = 0) -> list[Item]:
    """At most ``max_images`` items keeping the share of every (source, label) stratum, seeded; order kept."""
    if max_images is None or max_images >= len(items):
        return list(items)
    strata: dict[tuple[str, int], list[int]] = {}
    for i, item in enumerate(items):
        strata.setdefault((item.source, item.label), []).append(i)
    keys = sorted(strata)
    quotas = np.array([len(strata[k]) * max_images / len(items) for k in keys])
    take = np.floor(quotas).astype(int)
    # Largest remainders get the seats left; every stratum keeps at least one image when there is room.
    for j in np.argsort(-(quotas - take), kind="stable")[: max_images - take.sum()]:
        take[j] += 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for key, n in zip(keys, take):
        members = strata[key]
        chosen += [members[j] for j in rng.permutation(len(members))[:n]]
    return [items[i] for i in sorted(chosen)]


def load_grey(path: str) -> np.ndarray:
    """Decode a file as the runtime does (bit depth, EXIF, DICOM, large JPEGs at reduced scale) to 8-bit grey."""
    return to_luminance(load_image(path))


# ----------------------------------------------------------------------------------------------------------
# Measurement
# ----------------------------------------------------------------------------------------------------------

def _nan_to_none(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def _condition_metrics(y_true: np.ndarray, probs: np.ndarray, base_probs: np.ndarray, breakdowns: dict,
                       spec: ModelSpec, threshold: float, n_boot: int, seed: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from .metrics import binary_metrics, evaluate_predictions

    neg = spec.negative_index
    full = evaluate_predictions(y_true, probs, spec, threshold=threshold, n_boot=n_boot, seed=seed)
    block = full["screening"]["at_threshold"]
    predicted = decide(probs, neg, threshold)
    base_predicted = decide(base_probs, neg, threshold)
    score, base_score = screening_score(probs, neg), screening_score(base_probs, neg)
    overall = {key: block[key] for key in ("sensitivity", "specificity", "ppv", "npv", "accuracy",
                                           "multiclass_accuracy", "tp", "fp", "tn", "fn")}
    overall.update(roc_auc=full["screening"]["roc_auc"], roc_auc_ci95=full["screening"]["roc_auc_ci95"],
                   flip_rate=float(np.mean(predicted != base_predicted)),
                   mean_score_change=float(np.mean(score - base_score)))
    positive = (y_true != neg).astype(int)
    result = {"overall": overall}
    for breakdown, groups in breakdowns.items():
        block = result[breakdown] = {}
        for group in sorted(set(groups.tolist())):
            mask = groups == group
            pos, called = positive[mask], (predicted[mask] != neg).astype(int)
            m = binary_metrics(pos, called)
            both = pos.min() != pos.max()
            block[group] = {
                "n": int(mask.sum()), "positives": int(pos.sum()), "negatives": int((1 - pos).sum()),
                "roc_auc": float(roc_auc_score(pos, score[mask])) if both else float("nan"),
                "sensitivity": m["sensitivity"], "specificity": m["specificity"],
                "called_positive": float(called.mean()),
                "flip_rate": float(np.mean(predicted[mask] != base_predicted[mask])),
                "mean_score_change": float(np.mean(score[mask] - base_score[mask])),
            }
    return result


def run_shift(predict: Callable[[np.ndarray], np.ndarray], spec: ModelSpec, items: Sequence[Item],
              families: Sequence[str] = tuple(PERTURBATIONS), severities: int = DEFAULT_SEVERITIES, seed: int = 0,
              threshold: float | None = None, n_boot: int = 200, batch_size: int = 64,
              progress: bool = True) -> dict:
    """Predict every item under every family and severity and measure the screening metrics.

    Args:
        predict: ``predict(planes (N, H, W) uint8) -> (N, C) probabilities`` at the spec's input size.
        spec: The model's spec (labels, negative class, threshold, input size).
        items: Labelled files to re-render.
        families: Keys of :data:`PERTURBATIONS`.
        severities: The strongest severity (>= 1); severity 0 (the original file) is measured once.
        seed: Seeds every per-image variant.
        threshold: Overrides ``spec.threshold``.
        n_boot: Bootstrap resamples of the pooled AUC interval (0: none).
        batch_size: Images decoded and predicted together.
        progress: Show a tqdm bar.

    Returns:
        A JSON-ready dict (NaN as None): per family, per severity, pooled and per-source metrics.

    Raises:
        DataError: no item could be decoded.
        ValueError: unknown family or severity < 1.
    """
    from tqdm import tqdm

    families = list(families)
    for name in families:
        _family(name)
    if severities < 1:
        raise ValueError(f"severities must be >= 1, got {severities}")
    threshold = spec.threshold if threshold is None else float(threshold)
    conditions = [("none", 0)] + [(f, s) for f in families for s in range(1, severities + 1)]
    n, n_classes = len(items), len(spec.labels)
    probs = {c: np.zeros((n, n_classes), np.float64) for c in conditions}
    ok = np.zeros(n, bool)
    skipped: list[tuple[str, str]] = []
    bar = tqdm(total=n * len(conditions), desc="shift", unit="img", disable=not progress)
    for start in range(0, n, batch_size):
        chunk, originals = [], []
        for i in range(start, min(start + batch_size, n)):
            try:
                originals.append(load_grey(items[i].path))
                chunk.append(i)
            except CxrError as err:
                logger.warning("skipping unreadable %s: %s", items[i].relpath, err)
                skipped.append((items[i].relpath, str(err)))
        for family, severity in conditions:
            if chunk:
                planes = np.stack([
                    preprocess(image if severity == 0 else
                               perturb(image, family, severity, severities,
                                       image_rng(seed, family, severity, items[i].relpath)), spec)[:, :, 0]
                    for i, image in zip(chunk, originals)])
                probs[(family, severity)][chunk] = predict(planes)
            bar.update(min(start + batch_size, n) - start)
        ok[chunk] = True
    bar.close()
    kept = [item for item, good in zip(items, ok) if good]
    y_true = np.array([item.label for item in kept], dtype=np.int64)
    if not kept:
        raise DataError(f"none of the {n} images could be decoded")
    # A one-class side (e.g. normals of another population) is allowed: it gives specificity or sensitivity only.
    sources = np.array([item.source for item in kept])
    breakdowns = {"by_source": sources}
    populations = np.array([item.population or "unknown" for item in kept])
    if len(set(populations.tolist()) - {"unknown"}) > 1:  # reported only when the class map names several
        breakdowns["by_population"] = populations
    base = probs[("none", 0)][ok]
    baseline = _condition_metrics(y_true, base, base, breakdowns, spec, threshold, n_boot, seed)
    result_families = {}
    for family in families:
        pert = PERTURBATIONS[family]
        rows = [{"severity": 0, "setting": "original", **baseline}]
        for severity in range(1, severities + 1):
            rows.append({"severity": severity, "setting": pert.setting(severity / severities),
                         **_condition_metrics(y_true, probs[(family, severity)][ok], base, breakdowns, spec,
                                              threshold, n_boot, seed)})
        result_families[family] = {"description": pert.description, "results": rows}
    return _nan_to_none({
        "model": spec.name, "task": spec.task, "labels": list(spec.labels), "negative_label": spec.negative_label,
        "threshold": threshold, "n": len(kept),
        "class_counts": {label: int((y_true == i).sum()) for i, label in enumerate(spec.labels)},
        "sources": {s: int((sources == s).sum()) for s in sorted(set(sources.tolist()))},
        "populations": ({p: int((populations == p).sum()) for p in sorted(set(populations.tolist()))}
                        if "by_population" in breakdowns else None),
        "seed": seed, "severities": severities, "bootstrap": n_boot,
        "families": result_families, "skipped_files": [list(s) for s in skipped],
    })


def operating_point_drift(result: dict, severity: int | None = None) -> dict:
    """How far the shift moves the shipped operating point (EXPERIMENTS.md rule 5).

    Per family, at ``severity`` (default: the strongest), |sensitivity - its severity-0 value| + |specificity -
    its severity-0 value| at the run's threshold; ``mean`` over the families that have both figures, and the
    ``worst`` family (None when no family has both). The AUC
    can hold while this grows: the ranking survives, the threshold no longer means what the card says.
    """
    severity = result["severities"] if severity is None else severity
    per_family = {}
    for family, block in result["families"].items():
        rows = {row["severity"]: row["overall"] for row in block["results"]}
        base, shifted = rows[0], rows[severity]
        parts = [abs(shifted[k] - base[k]) for k in ("sensitivity", "specificity")
                 if shifted.get(k) is not None and base.get(k) is not None]
        if len(parts) == 2:
            per_family[family] = sum(parts)
    mean = sum(per_family.values()) / len(per_family) if per_family else None
    worst = max(per_family, key=per_family.get) if per_family else None
    return {"severity": severity, "mean": mean, "worst": worst, "families": per_family}


# ----------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------

def _cell(value, reference=None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    if reference is not None and value <= reference - NOTABLE_DROP:
        return f"**{text}**"
    return text


def _metric_table(result: dict, getter: Callable[[dict], float | None], higher_is_better: bool = True) -> list[str]:
    n_sev = result["severities"]
    lines = ["| family | " + " | ".join(str(s) for s in range(n_sev + 1)) + " |",
             "|---|" + "---:|" * (n_sev + 1)]
    for family, block in result["families"].items():
        values = [getter(row) for row in block["results"]]
        ref = values[0] if higher_is_better else None
        lines.append(f"| {family} | " + " | ".join(_cell(v, ref) for v in values) + " |")
    return lines


def shift_markdown(result: dict, title: str) -> str:
    """Markdown tables of :func:`run_shift` output: each metric against severity, pooled and per source."""
    counts = ", ".join(f"{k} {v}" for k, v in result["class_counts"].items())
    sources = ", ".join(f"{k} {v}" for k, v in result["sources"].items())
    lines = [f"# {title}", "",
             f"{result['n']} images ({counts}); sources: {sources}. Decision threshold "
             f"{result['threshold']:.4f} on the screening score 1 - P({result['negative_label']}); seed "
             f"{result['seed']}. Severity 0 is the original file, {result['severities']} the strongest setting; "
             f"each image draws its own variant (direction, sides, corners). **Bold**: at least "
             f"{NOTABLE_DROP:.2f} below severity 0.", ""]
    if result.get("max_images"):
        lines += [f"Stratified (source x label) subsample of at most {result['max_images']} images.", ""]
    sections = (
        ("Screening ROC AUC (pooled)", lambda r: r["overall"]["roc_auc"], True),
        ("Sensitivity at the threshold (pooled)", lambda r: r["overall"]["sensitivity"], True),
        ("Specificity at the threshold (pooled)", lambda r: r["overall"]["specificity"], True),
        ("Decisions changed from severity 0 (share of images)", lambda r: r["overall"]["flip_rate"], False),
    )
    for heading, getter, better in sections:
        lines += [f"## {heading}", ""] + _metric_table(result, getter, better) + [""]
    drift = operating_point_drift(result)
    if drift["mean"] is not None:
        worst = drift["worst"]
        lines += ["## Operating-point drift", "",
                  f"|sensitivity change| + |specificity change| at severity {drift['severity']}, at the threshold: "
                  f"mean over families **{drift['mean']:.3f}**, worst {worst} {drift['families'][worst]:.3f} "
                  "(0 = the threshold means the same on the shifted films).", ""]
    first = next(iter(result["families"].values()))["results"][0]
    for breakdown, heading in (("by_population", "By population"), ("by_source", "By source folder")):
        if breakdown not in first:
            continue
        lines += [f"## {heading}", ""]
        for group, base in first[breakdown].items():
            metrics = []
            if base["positives"] and base["negatives"]:
                metrics.append(("roc_auc", "ROC AUC"))
            if base["positives"]:
                metrics.append(("sensitivity", "sensitivity"))
            if base["negatives"]:
                metrics.append(("specificity", "specificity"))
            for key, name in metrics:
                lines += [f"### {group} ({base['n']} images: {base['positives']} abnormal, {base['negatives']} "
                          f"normal): {name}", ""]
                lines += _metric_table(result, lambda r, b=breakdown, g=group, k=key: r[b][g][k]) + [""]
    n_sev = result["severities"]
    lines += ["## Settings", "", "| family | simulates | " + " | ".join(str(s) for s in range(1, n_sev + 1)) + " |",
              "|---|---|" + "---|" * n_sev]
    for family, block in result["families"].items():
        lines.append(f"| {family} | {block['description']} | "
                     + " | ".join(row["setting"] for row in block["results"][1:]) + " |")
    if result["skipped_files"]:
        lines += ["", f"{len(result['skipped_files'])} unreadable files were skipped: "
                  + ", ".join(p for p, _ in result["skipped_files"][:10])]
    return "\n".join(lines) + "\n"


def plot_shift(result: dict, path: str | Path, title: str) -> Path:
    """Metric against severity per family: pooled AUC, sensitivity and specificity, then per population
    (sensitivity and specificity) and per source folder (its one metric, or AUC when it holds both classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(result["families"])
    severities = np.arange(result["severities"] + 1)
    colours = plt.get_cmap("tab10")
    kinds: dict[str, list[str]] = {}
    for family in families:
        pert = PERTURBATIONS.get(family)
        kinds.setdefault((pert.kind if pert else "") or family, []).append(family)
    look = {}  # family -> (colour, line style, marker): the variants of one kind share a colour
    for k, (kind, members) in enumerate(kinds.items()):
        for v, family in enumerate(members):
            look[family] = (colours(k % 10), ("-", "--", ":")[v % 3], "osD^v<>px*h"[k % 11])
    first = result["families"][families[0]]["results"][0]
    panels = [("pooled screening ROC AUC", lambda r: r["overall"]["roc_auc"]),
              ("pooled sensitivity at threshold", lambda r: r["overall"]["sensitivity"]),
              ("pooled specificity at threshold", lambda r: r["overall"]["specificity"])]
    for group, base in first.get("by_population", {}).items():
        for key in ("sensitivity", "specificity"):
            if base["positives" if key == "sensitivity" else "negatives"]:
                panels.append((f"{group}: {key}", lambda r, g=group, k=key: r["by_population"][g][k]))
    for source, base in first["by_source"].items():
        key = ("roc_auc" if base["positives"] and base["negatives"]
               else "sensitivity" if base["positives"] else "specificity")
        panels.append((f"{source}: {key.replace('roc_auc', 'ROC AUC')}",
                       lambda r, s=source, k=key: r["by_source"][s][k]))
    n_cols = 4
    n_rows = math.ceil((len(panels) + 1) / n_cols)  # + 1: a free panel for the legend
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.6 * n_rows + 0.5), squeeze=False)
    flat = axes.ravel()
    for ax, (name, getter) in zip(flat, panels):
        for family in families:
            values = [getter(row) for row in result["families"][family]["results"]]
            colour, style, marker = look[family]
            ax.plot(severities, [np.nan if v is None else v for v in values], color=colour, linestyle=style,
                    marker=marker, markersize=4, linewidth=1.4, label=family)
        ax.set_title(name, fontsize=10)
        ax.set_xticks(severities)
        ax.set_xlabel("severity (0 = original file)")
        ax.set_ylim(top=1.01)
        ax.grid(alpha=0.3)
        if "AUC" in name:
            ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    for ax in flat[len(panels):]:
        ax.axis("off")
    flat[-1].legend(*flat[0].get_legend_handles_labels(), loc="center", fontsize=9, title="family",
                    ncol=1 if len(families) <= 12 else 2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

def plot_examples(image: np.ndarray, spec: ModelSpec, families: Sequence[str], severities: int, seed: int, key: str,
                  path: str | Path) -> Path:
    """A grid of the model's input (after preprocessing) for one image: families in rows, severities in columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(families), severities + 1, figsize=(1.6 * (severities + 1) + 1.2, 1.6 * len(families)),
                             squeeze=False)
    for r, family in enumerate(families):
        for s in range(severities + 1):
            plane = preprocess(perturb(image, family, s, severities, image_rng(seed, family, s, key)), spec)[:, :, 0]
            ax = axes[r, s]
            ax.imshow(plane, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"severity {s}", fontsize=8)
            if s == 0:
                ax.set_ylabel(family, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_shift_report(result: dict, out: str | Path, name: str, title: str) -> dict:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "markdown": out / f"{name}.md", "plot": out / f"{name}.png"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    paths["markdown"].write_text(shift_markdown(result, title), encoding="utf-8")
    plot_shift(result, paths["plot"], title)
    return {k: str(v) for k, v in paths.items()}


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------

def set_threads(threads: int) -> None:
    """Limit TensorFlow and OpenCV to ``threads`` (0: leave their defaults)."""
    if not threads:
        return
    import tensorflow as tf

    _cv2().setNumThreads(threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        # TensorFlow was already initialised in this process (e.g. called from Python): keep its setting.
        logger.warning("TensorFlow already initialised with %d intra-op threads; --threads %d not applied",
                       tf.config.threading.get_intra_op_parallelism_threads(), threads)


def keras_predictor(model, batch_size: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(planes)`` through one traced graph of the Keras model (about twice as fast as eager calls)."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def predict(planes: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(planes), batch_size):
            x = np.repeat(planes[start:start + batch_size, ..., None], 3, axis=-1)
            out.append(np.asarray(call(x)))
        return np.concatenate(out).astype(np.float64)

    return predict


def build_parser() -> argparse.ArgumentParser:
    families = ", ".join(PERTURBATIONS)
    p = argparse.ArgumentParser(
        prog="python -m training shift",
        description="Acquisition-shift check: re-render the validation side of a split the way other scanners, "
                    "film digitisers and PACS exports would (decoded original file -> perturbation -> the project's "
                    "preprocess -> model) and report screening ROC AUC, sensitivity and specificity at the "
                    "model's threshold against severity, pooled and per source folder. Writes <name>.json, "
                    "<name>.md, <name>.png and <name>_examples.png into --out and prints the markdown.",
        epilog=f"families: {families}. Example: python -m training shift --model "
               "android_assets/training/cxr_binary_160/model.keras --split "
               "android_assets/training/cxr_binary_160/split.json --data ../shared/data/chest_xray/train "
               "--out reports/shift --max-images 1000")
    p.add_argument("--model", type=Path, required=True, help="model.keras with its spec.json beside it")
    p.add_argument("--split", type=Path, required=True, help="split.json written by training (relative paths)")
    p.add_argument("--data", type=Path, required=True,
                   help="data root the split's paths are relative to, e.g. ../shared/data/chest_xray/train")
    p.add_argument("--out", type=Path, required=True, help="folder for the report files")
    p.add_argument("--side", default="val", help="which list of the split to use (default: val)")
    p.add_argument("--severities", type=int, default=DEFAULT_SEVERITIES,
                   help="severity steps above 0; the strongest setting is the same for any number (default: 3)")
    p.add_argument("--families", default=",".join(PERTURBATIONS),
                   help="comma-separated perturbation families (default: all)")
    p.add_argument("--max-images", type=int, default=None,
                   help="stratified (source x label) subsample of at most this many images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seeds the subsample and every per-image variant")
    p.add_argument("--threshold", type=float, default=None, help="override the spec's screening threshold")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the pooled AUC interval")
    p.add_argument("--batch-size", type=int, default=64, help="images decoded and predicted together")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow and OpenCV threads (0: their defaults)")
    p.add_argument("--name", default="shift", help="report file prefix (default: shift)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the JSON result instead of the markdown")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in PERTURBATIONS]
    if unknown or not families:
        logger.error("unknown families %s; choose from %s", unknown, list(PERTURBATIONS))
        return 2
    if args.severities < 1 or (args.max_images is not None and args.max_images < 2) or args.batch_size < 1:
        logger.error("--severities and --batch-size must be >= 1 and --max-images >= 2")
        return 2
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        logger.error("--threshold must be in (0, 1), got %s", args.threshold)
        return 2
    started = time.time()
    try:
        spec = ModelSpec.load(args.model.parent / "spec.json")
        items = split_items(args.split, args.data, spec, args.side)
    except CxrError as err:
        logger.error("%s", err)
        return 2
    chosen = stratified_subset(items, args.max_images, args.seed)
    logger.info("%d of %d %s images of %s", len(chosen), len(items), args.side, args.split)
    set_threads(args.threads)
    import keras

    try:
        model = keras.saving.load_model(args.model, compile=False)
    except (OSError, ValueError) as err:
        logger.error("cannot load model %s: %s", args.model, err)
        return 2
    try:
        result = run_shift(keras_predictor(model, args.batch_size), spec, chosen, families, args.severities,
                           args.seed, args.threshold, args.bootstrap, args.batch_size, args.progress)
    except CxrError as err:
        logger.error("%s", err)
        return 2
    result.update(model_path=str(args.model), split=str(args.split), side=args.side, data=str(args.data),
                  max_images=args.max_images, images_in_side=len(items),
                  command="python -m training shift " + shlex.join(argv), seconds=round(time.time() - started, 1))
    title = f"Acquisition-shift check: {spec.name} on the {args.side} side of {args.split}"
    paths = write_shift_report(result, args.out, args.name, title)
    example = next((item for item in chosen if item.label == spec.negative_index), chosen[0])
    try:
        paths["examples"] = str(plot_examples(load_grey(example.path), spec, families, args.severities, args.seed,
                                              example.relpath, Path(args.out) / f"{args.name}_examples.png"))
    except CxrError as err:
        logger.warning("no example grid: %s", err)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(Path(paths["markdown"]).read_text(encoding="utf-8"))
        print(f"reports: {', '.join(paths.values())} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
