"""The out-of-population check: its arithmetic, its validation, and the classifier, log, CLI and API carrying it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ASSETS, SHARED_DATA
from edge_runtime.errors import ModelError
from edge_runtime.i18n import population_notice
from edge_runtime.population import apply_population_check, population_dict, validate_population_check

ETIOLOGY_CAM = ASSETS / "cxr_etiology_160_int8_cam.tflite"
ADULT_FILMS = SHARED_DATA / "covid19" / "COVID19"  # adults from a source the check was never fitted on
CHILD_FILMS = SHARED_DATA / "fullres_sample" / "NORMAL"


def _check(channels: int = 4, bias: float = 0.0, weights=None) -> dict:
    return {"expected": "children", "other": "adults", "mean": [0.0] * channels, "scale": [1.0] * channels,
            "weights": list(weights if weights is not None else [1.0] + [0.0] * (channels - 1)), "bias": bias,
            "threshold": 0.5}


def test_the_check_pools_the_feature_map_and_applies_the_logistic_regression():
    check = _check(weights=[2.0, -1.0, 0.0, 0.5], bias=-0.25)
    features = np.zeros((3, 3, 4))
    features[..., 0], features[..., 1], features[..., 3] = 1.0, 0.5, 2.0
    expected_logit = 2.0 * 1.0 - 1.0 * 0.5 + 0.5 * 2.0 - 0.25
    outcome = apply_population_check(check, features)
    assert outcome["score"] == pytest.approx(1.0 / (1.0 + np.exp(-expected_logit)))
    assert outcome["outside"] is True
    assert apply_population_check(check, features.mean(axis=(0, 1)))["score"] == pytest.approx(outcome["score"])
    assert apply_population_check(_check(bias=-5.0), features)["outside"] is False
    assert apply_population_check(_check(bias=-1000.0), features)["score"] == 0.0  # no overflow


def test_a_malformed_check_is_refused():
    with pytest.raises(ModelError, match="missing"):
        validate_population_check({"expected": "children"})
    with pytest.raises(ModelError, match="lengths"):
        validate_population_check({**_check(), "weights": [1.0, 2.0]})
    with pytest.raises(ModelError, match="channels"):
        validate_population_check(_check(channels=4), channels=128)
    with pytest.raises(ModelError, match="threshold"):
        validate_population_check({**_check(), "threshold": 1.5})
    validate_population_check(_check(channels=128), channels=128)


def test_one_json_form_and_a_notice_in_words():
    outcome = {"expected": "children", "other": "adults", "score": 0.987654, "outside": True}
    assert population_dict(outcome) == {"expected": "children", "other": "adults", "score": 0.9877, "outside": True}
    assert population_dict({}) is None and population_dict(None) is None
    assert "adults" in population_notice("en", outcome) and "children only" in population_notice("en", outcome)
    assert "adultes" in population_notice("fr", outcome)
    inside = population_notice("en", {**outcome, "outside": False, "score": 0.01})
    assert "validated on" in inside and "does not apply" not in inside
    assert population_notice("en", None) is None


def _etiology_with_check(tmp_path, check: dict):
    """The shipped etiology int8 CAM file with a spec carrying ``check`` (sha256 binding not verified)."""
    from edge_runtime.classifier import Classifier, ClassifierOptions

    spec = json.loads((ASSETS / "cxr_etiology_160.spec.json").read_text(encoding="utf-8"))
    spec["population_check"] = check
    path = tmp_path / "with_check.spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return Classifier(ETIOLOGY_CAM, ClassifierOptions(spec_path=str(path), verify_sha256=False, quality_gate=False))


needs_etiology = pytest.mark.skipif(not ETIOLOGY_CAM.is_file(), reason="shipped etiology model not found")


@needs_etiology
def test_the_classifier_applies_the_spec_check_to_the_cam_file_feature_map(tmp_path):
    channels = 128
    flag_all = _etiology_with_check(tmp_path, _check(channels, bias=50.0, weights=[0.0] * channels))
    image = np.full((200, 180, 3), 90, np.uint8)
    result = flag_all.classify(image)
    assert result.population["outside"] is True and result.to_dict()["population_check"]["outside"] is True
    never = _etiology_with_check(tmp_path, _check(channels, bias=-50.0, weights=[0.0] * channels))
    assert never.classify(image).population["outside"] is False
    with pytest.raises(ModelError, match="channels"):
        _etiology_with_check(tmp_path, _check(4))


def test_a_model_without_a_check_gives_no_outcome():
    from runtime_models import make_result

    assert make_result().to_dict()["population_check"] is None


@needs_etiology
@pytest.mark.skipif(not ADULT_FILMS.is_dir() or not CHILD_FILMS.is_dir(), reason="real films not found")
def test_the_shipped_etiology_check_flags_adult_films_and_passes_children():
    """The shipped children-only model: adults' films get the notice, children's films do not (real data)."""
    from edge_runtime.classifier import Classifier, ClassifierOptions

    classifier = Classifier(ETIOLOGY_CAM, ClassifierOptions(quality_gate=False))
    if not classifier.checks_population:
        pytest.skip("the shipped etiology spec carries no population_check yet")
    adults = sorted(ADULT_FILMS.glob("*"))[::180][:20]  # spread over the folder
    children = sorted(CHILD_FILMS.glob("*"))
    flagged_adults = np.mean([classifier.classify(p).population["outside"] for p in adults])
    flagged_children = np.mean([classifier.classify(p).population["outside"] for p in children])
    assert flagged_adults >= 0.8, flagged_adults
    assert flagged_children <= 0.2, flagged_children


@needs_etiology
@pytest.mark.skipif(not ADULT_FILMS.is_dir(), reason="real films not found")
def test_the_cli_json_row_carries_the_check_and_the_validated_populations(tmp_path, capsys):
    from edge_runtime.cli import main

    adult = sorted(ADULT_FILMS.glob("*"))[0]
    code = main(["classify", "--no-log", "--json", "--model", "etiology", str(adult)])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and row["validated_populations"] == ["children"]
    assert set(row["population_check"]) == {"expected", "other", "score", "outside"}
    if row["population_check"]["outside"]:
        assert "children only" in row["population_notice"]
