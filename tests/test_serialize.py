"""One JSON form of a result: the CLI, the log, ``Result.to_dict`` and the API read the same rounded fields."""

from __future__ import annotations

import json

import pytest

from edge_runtime import cli
from edge_runtime.i18n import catalog
from edge_runtime.log import ScreeningLog
from edge_runtime.serialize import RECORD_FIELDS, record_json, result_json, threshold_rule
from runtime_models import make_result

POPULATION = {"expected": "children", "other": "adults", "score": 0.123456789, "outside": False}


def odd_result():
    """A result whose numbers need rounding."""
    return make_result(probabilities={"NORMAL": 0.1234567891, "PNEUMONIA": 0.8765432109}, score=0.8765432109,
                       latency_ms=12.3456789, timings_ms={"invoke": 3.14159265}, spec_sha256="ef" * 32,
                       population=POPULATION)


def test_record_rounds_once_for_everyone():
    record = record_json(odd_result())
    assert tuple(record) == RECORD_FIELDS
    assert record["probabilities"] == {"NORMAL": 0.123457, "PNEUMONIA": 0.876543}
    assert record["score"] == 0.876543 and record["latency_ms"] == 12.346 and record["positive"] is True
    assert record["population_check"] == {"expected": "children", "other": "adults", "score": 0.1235, "outside": False}
    full = result_json(odd_result())
    assert {k: full[k] for k in RECORD_FIELDS} == record and full["timings_ms"] == {"invoke": 3.142}
    assert odd_result().to_dict() == full
    json.dumps(full)


def test_the_log_keeps_what_the_outputs_show(tmp_path):
    result = odd_result()
    with ScreeningLog(tmp_path / "log.db") as log:
        row = log.get(log.record(result, source="web"))
    assert record_json(row) == record_json(result)  # positive is read back from the decision


def test_the_cli_row_is_the_record_plus_where_it_came_from():
    result = odd_result()
    row = cli._row(result, "film.png", None, 7)
    assert {k: row[k] for k in RECORD_FIELDS} == record_json(result)
    assert row["path"] == "film.png" and row["status"] == "classified" and row["log_id"] == 7


@pytest.mark.parametrize("language", ["en"])
def test_one_sentence_for_the_threshold_rule(language):
    assert catalog(language)["result.rule"] == "Rule: " + threshold_rule("{negative}") + "."
    assert threshold_rule("NORMAL", 0.26973) == ("score = 1 - P(NORMAL); at or above the threshold (0.2697) means "
                                              "screening positive: refer to a clinician")
    assert cli.score_meaning("NORMAL").startswith(threshold_rule("NORMAL"))
