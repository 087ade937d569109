"""Out-of-population check: does a film look like the population the model was validated on?

A model's spec may carry ``population_check`` (fitted by ``python -m training population-check``):
a logistic regression on the global-average-pooled feature map. The runtime applies it to the
feature map the ``*_cam.tflite`` file outputs, so the check costs a dot product and needs no
second model. The check is a guard against misuse (an adult's film on a children-only model),
not an age estimate.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .errors import ModelError

_KEYS = ("expected", "other", "mean", "scale", "weights", "bias", "threshold")


def validate_population_check(check: Mapping[str, Any], channels: int | None = None) -> None:
    """Refuse a malformed check (missing keys, lengths that differ from the feature channels)."""
    missing = [k for k in _KEYS if k not in check]
    if missing:
        raise ModelError(f"population_check is missing {missing}")
    lengths = {len(check["mean"]), len(check["scale"]), len(check["weights"])}
    if len(lengths) != 1 or (channels is not None and lengths != {channels}):
        raise ModelError(f"population_check vectors have lengths {sorted(lengths)}; the feature map has "
                         f"{channels} channels")
    if not 0.0 < float(check["threshold"]) < 1.0:
        raise ModelError(f"population_check threshold must be in (0, 1), got {check['threshold']}")


def apply_population_check(check: Mapping[str, Any], features: np.ndarray) -> dict[str, Any]:
    """Apply ``check`` to a (h, w, c) feature map or an already pooled (c,) vector.

    Returns:
        ``{"expected", "other", "score", "outside"}``: ``score`` is the probability that the film
        belongs to ``other``; ``outside`` is ``score >= threshold``.
    """
    features = np.asarray(features, dtype=np.float64)
    pooled = features.mean(axis=(0, 1)) if features.ndim == 3 else features.reshape(-1)
    z = (pooled - np.asarray(check["mean"], np.float64)) / np.asarray(check["scale"], np.float64)
    logit = float(z @ np.asarray(check["weights"], np.float64) + float(check["bias"]))
    score = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
    return {"expected": str(check["expected"]), "other": str(check["other"]), "score": score,
            "outside": bool(score >= float(check["threshold"]))}


def population_dict(population: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The JSON form of a check's outcome (score rounded to 4 places), or None without a check.

    The CLI, the API, the log and ``Result.to_dict`` all use this one form.
    """
    if not population or "outside" not in population:
        return None
    return {"expected": str(population["expected"]), "other": str(population["other"]),
            "score": round(float(population["score"]), 4), "outside": bool(population["outside"])}
