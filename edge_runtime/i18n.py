"""Translated wording of results and pages: one JSON catalog per language in ``locales/`` (English is the reference).

Add a language by copying ``locales/en.json`` to ``locales/<code>.json`` and translating its values;
a key missing from a catalog falls back to English, so a partial translation still works. The CLI
stays English; the web page and its reports use :func:`translator` for the request's language.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping

#: The reference language; every key exists in its catalog.
DEFAULT_LANGUAGE = "en"

_LOCALES = Path(__file__).resolve().parent / "locales"

#: Validated population per task, used when a model's spec has no ``populations`` field
#: (catalog keys, so that the text is translated; see :func:`population_text`).
_POPULATION_KEYS = {
    "binary": "population.binary",
    "etiology": "population.kermany",
    "covid": "population.covid",
}


#: Population codes a spec's ``populations`` may hold (see :func:`population_group`).
POPULATION_CODES = frozenset({"children", "adults"})


@functools.lru_cache(maxsize=None)
def catalog(language: str) -> Mapping[str, str]:
    """The catalog of ``language`` (an empty one for an unknown language)."""
    path = _LOCALES / f"{language}.json"
    if not path.is_file() or not language.isalpha():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def languages() -> list[str]:
    """Codes of the languages with a catalog, English first."""
    codes = sorted(p.stem for p in _LOCALES.glob("*.json") if p.stem.isalpha())
    return sorted(codes, key=lambda code: (code != DEFAULT_LANGUAGE, code))


def translate(language: str, key: str, **values: Any) -> str:
    """The text of ``key`` in ``language`` (English when untranslated), formatted with ``values``.

    An unknown key returns the key itself, so a missing string shows up instead of failing.
    """
    text = catalog(language).get(key) or catalog(DEFAULT_LANGUAGE).get(key) or key
    return text.format(**values) if values else text


def translator(language: str) -> Callable[..., str]:
    """``t(key, **values)`` bound to one language."""
    return functools.partial(translate, language)


def label_name(language: str, label: str) -> str:
    """A model label (``PNEUMONIA``, ``COVID-19``) as words in ``language``."""
    key = f"label.{label.upper()}"
    text = translate(language, key)
    return label if text == key else text


def task_title(language: str, task: str, fallback: str) -> str:
    """What a model of ``task`` answers, in ``language`` (``fallback`` for a task without a title)."""
    key = f"task.{task}"
    text = translate(language, key)
    return fallback if text == key else text


def plain_result(language: str, label: str, positive: bool) -> str:
    """The result in plain words: "Signs of pneumonia: refer to a clinician" / "No sign of pneumonia found".

    Args:
        language: Catalog language.
        label: The label shown (the likeliest abnormal class when positive).
        positive: The screening decision.
    """
    if positive:
        key = f"finding.{label.upper()}"
        finding = translate(language, key)
        if finding == key:
            finding = translate(language, "finding.other", label=label)
        return translate(language, "plain.positive", finding=finding)
    return translate(language, "plain.negative")


def _population_words(value: Any) -> str:
    """A spec's ``populations`` value as words; "" for none or for bare population codes."""
    if isinstance(value, Mapping):
        value = value.get("validated") or value.get("description")
    if isinstance(value, (list, tuple)):
        parts = [str(v.get("description", v)) if isinstance(v, Mapping) else str(v) for v in value]
        # Bare population codes (``children``, ``adults``, as training writes them) say less than the
        # task's catalog sentence (which hospitals, which ages): that sentence is used for them.
        if parts and all(p.strip() in POPULATION_CODES for p in parts):
            return ""
        value = "; ".join(p for p in parts if p.strip())
    return value.strip() if isinstance(value, str) else ""


def population_text(spec: Any, spec_path: str | Path | None = None, language: str = DEFAULT_LANGUAGE) -> str:
    """Which population the model was validated on, for the page and the report.

    Read from the spec's ``populations`` field when it holds words (a string, a list of strings, or a
    mapping with a ``validated`` entry), else from the spec file, else the task's sentence from the
    catalog (also for bare codes such as ``["adults", "children"]``).
    """
    words = _population_words(getattr(spec, "populations", None))
    if not words and spec_path is not None:
        try:
            words = _population_words(json.loads(Path(spec_path).read_text(encoding="utf-8")).get("populations"))
        except (OSError, ValueError, AttributeError):
            words = ""
    if words:
        return words
    task = str(getattr(spec, "task", ""))
    codes = [str(c) for c in (getattr(spec, "populations", None) or ()) if str(c) in POPULATION_CODES]
    if task not in _POPULATION_KEYS and codes:  # a task without a catalog sentence: its codes, translated
        return "; ".join(population_group(language, code) for code in codes)
    return translate(language, _POPULATION_KEYS.get(task, "population.unknown"))


def population_group(language: str, group: str) -> str:
    """A population tag of a spec (``children``, ``adults``) as words in ``language``."""
    key = f"population.group.{group}"
    text = translate(language, key)
    return group if text == key else text


def population_notice(language: str, population: Mapping[str, Any] | None) -> str | None:
    """The out-of-population check's outcome in words: a warning when the film looks like another
    population's, a confirmation otherwise, None when the model has no check."""
    if not population or "outside" not in population:
        return None
    key = "population.outside" if population["outside"] else "population.inside"
    return translate(language, key, expected=population_group(language, str(population["expected"])),
                     other=population_group(language, str(population["other"])),
                     score=f"{float(population['score']):.2f}")
