"""A screening result as JSON: one set of fields, one rounding policy, one sentence for the threshold rule.

The CLI's rows, the web API's results and history, the screening log and ``Result.to_dict`` all
take their fields from :func:`record_json` (what the log keeps) or :func:`result_json` (that plus
what only a fresh result carries), so that a score reads the same everywhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from .population import population_dict

#: Decimals kept of probabilities and the screening score (int8 models step by 1/256; float32 holds ~7 digits).
PROBABILITY_DIGITS = 6
#: Decimals kept of latencies and timings, in milliseconds (microseconds).
MILLISECOND_DIGITS = 3
#: Decimals of a threshold stated in words (the rule sentence, model cards, the .tflite metadata).
THRESHOLD_DIGITS = 4

#: The decision, in the words the log and every output use.
POSITIVE_DECISION = "screening positive: refer to a clinician"
NEGATIVE_DECISION = "screening negative"

#: Fields of a screening result that the log keeps and every output shows, in output order.
RECORD_FIELDS = ("label", "probabilities", "score", "threshold", "positive", "decision", "latency_ms", "image_sha256",
                 "model_name", "model_sha256", "spec_sha256", "population_check")


def threshold_rule(negative_label: str, threshold: float | None = None) -> str:
    """The decision rule in one sentence (the English catalog's ``result.rule`` says the same).

    Args:
        negative_label: The model's "no finding" label.
        threshold: The model's threshold, stated when given.
    """
    value = "" if threshold is None else f" ({float(threshold):.{THRESHOLD_DIGITS}f})"
    return (f"score = 1 - P({negative_label}); at or above the threshold{value} means screening positive: "
            "refer to a clinician")


def is_positive(decision: Any) -> bool:
    """Whether a recorded decision is screening positive (also for rows written by older versions)."""
    return str(decision).startswith("screening positive")


def _get(source: Any, name: str, default: Any = None) -> Any:
    if isinstance(source, Mapping):
        return source.get(name, default)
    return getattr(source, name, default)


def round_probabilities(values: Mapping[str, Any] | None) -> dict[str, float]:
    """Label -> probability, rounded to :data:`PROBABILITY_DIGITS`."""
    return {str(k): round(float(v), PROBABILITY_DIGITS) for k, v in dict(values or {}).items()}


def round_ms(values: Mapping[str, Any] | None) -> dict[str, float]:
    """Step -> milliseconds, rounded to :data:`MILLISECOND_DIGITS`."""
    return {str(k): round(float(v), MILLISECOND_DIGITS) for k, v in dict(values or {}).items()}


def record_json(source: Any) -> dict[str, Any]:
    """The :data:`RECORD_FIELDS` of a result, JSON-ready and rounded.

    Args:
        source: A :class:`~edge_runtime.classifier.Result`, a screening-log row, or a mapping with the
            same fields. Without ``positive`` it is read from ``decision``; the out-of-population check's
            outcome is read from ``population`` (a Result's attribute, the log's column).

    Returns:
        ``label``, ``probabilities``, ``score``, ``threshold``, ``positive``, ``decision``, ``latency_ms``
        (None when not measured), ``image_sha256``, ``model_name``, ``model_sha256``, ``spec_sha256``
        (None when unknown) and ``population_check`` (None without a check).
    """
    decision = str(_get(source, "decision"))
    positive = _get(source, "positive")
    latency = _get(source, "latency_ms")
    return {
        "label": str(_get(source, "label")),
        "probabilities": round_probabilities(_get(source, "probabilities")),
        "score": round(float(_get(source, "score")), PROBABILITY_DIGITS),
        "threshold": float(_get(source, "threshold")),
        "positive": is_positive(decision) if positive is None else bool(positive),
        "decision": decision,
        "latency_ms": None if latency is None else round(float(latency), MILLISECOND_DIGITS),
        "image_sha256": str(_get(source, "image_sha256")),
        "model_name": str(_get(source, "model_name")),
        "model_sha256": str(_get(source, "model_sha256")),
        "spec_sha256": _get(source, "spec_sha256") or None,
        "population_check": population_dict(_get(source, "population")),
    }


def result_json(result: Any) -> dict[str, Any]:
    """:func:`record_json` plus what only a fresh result carries: ``timings_ms``, ``quality`` (the
    quality gate's measurements) and ``validated_populations``."""
    return {
        **record_json(result),
        "timings_ms": round_ms(_get(result, "timings_ms")),
        "quality": dict(_get(result, "quality") or {}),
        "validated_populations": list(_get(result, "validated_populations") or ()),
    }
