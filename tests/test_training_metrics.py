"""Metrics against hand-computed values, threshold choice and the decision rule."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.classifier import decide
from edge_runtime.spec import ModelSpec
from training.metrics import binary_metrics, choose_threshold, evaluate_predictions


def test_binary_metrics_match_hand_computation():
    # 4 positives, 6 negatives: TP=3, FN=1, TN=4, FP=2.
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    predicted = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    m = binary_metrics(positive, predicted)
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (3, 1, 4, 2)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["ppv"] == pytest.approx(3 / 5)
    assert m["npv"] == pytest.approx(4 / 5)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))


def test_decision_rule_uses_threshold_on_abnormal_score():
    probs = np.array([[0.7, 0.2, 0.1],   # score 0.3
                      [0.4, 0.1, 0.5],   # score 0.6
                      [0.55, 0.4, 0.05]])  # score 0.45
    assert decide(probs, 0, 0.5).tolist() == [0, 2, 0]
    assert decide(probs, 0, 0.25).tolist() == [1, 2, 1]


def test_threshold_reaches_the_sensitivity_target():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p1 = np.clip(0.5 * y + rng.normal(0.25, 0.2, 500), 0, 1)
    probs = np.stack([1 - p1, p1], axis=1)
    t = choose_threshold(y, probs, 0, 0.95)
    sensitivity = np.mean(p1[y == 1] >= t)
    assert sensitivity >= 0.95
    # The largest such threshold: any higher one loses sensitivity.
    assert np.mean(p1[y == 1] >= t + 1e-3) < 0.95 or t >= 1 - 1e-3


def test_evaluate_predictions_reports_both_thresholds_and_ci():
    spec = ModelSpec(name="t", task="binary", labels=("NORMAL", "PNEUMONIA"), threshold=0.3)
    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.35, 0.6, 0.4, 0.8, 0.9])
    result = evaluate_predictions(y, np.stack([1 - p1, p1], 1), spec, n_boot=200)
    scr = result["screening"]
    assert scr["roc_auc"] == pytest.approx(8 / 9)  # 8 of 9 positive/negative pairs ordered
    low, high = scr["roc_auc_ci95"]
    assert 0 <= low <= high <= 1
    assert scr["at_threshold"]["confusion_matrix"] == [[1, 2], [0, 3]]
    assert scr["at_0.5"]["confusion_matrix"] == [[2, 1], [1, 2]]


def test_by_source_splits_a_mixed_class():
    from training.metrics import by_source

    spec = ModelSpec(name="t", task="covid", labels=("COVID19", "NORMAL", "PNEUMONIA"), threshold=0.5)
    y = np.array([1, 1, 1, 0])
    probs = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.05, 0.9, 0.05], [0.9, 0.05, 0.05]])
    sources = ["adult", "adult", "child", "covid"]
    out = by_source(sources, y, probs, spec)
    assert out["adult"] == {"n": 2, "true_label": "NORMAL", "correct": 0.5,
                            "called": {"COVID19": 1, "NORMAL": 1, "PNEUMONIA": 0}}
    assert out["child"]["correct"] == 1.0 and out["covid"]["called"]["COVID19"] == 1


def test_by_source_gives_a_folder_with_several_labels_one_row_each():
    """Kermany's PNEUMONIA folder holds bacterial and viral films in the etiology task."""
    from training.metrics import by_source

    spec = ModelSpec(name="t", task="etiology", labels=("NORMAL", "BACTERIAL", "VIRAL"), threshold=0.5)
    y = np.array([0, 1, 1, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.1, 0.6, 0.3]])
    out = by_source(["NORMAL", "PNEUMONIA", "PNEUMONIA", "PNEUMONIA"], y, probs, spec)
    assert set(out) == {"NORMAL", "PNEUMONIA (BACTERIAL)", "PNEUMONIA (VIRAL)"}
    assert out["PNEUMONIA (BACTERIAL)"] == {"n": 2, "true_label": "BACTERIAL", "correct": 0.5,
                                            "called": {"NORMAL": 0, "BACTERIAL": 1, "VIRAL": 1}}
    assert out["PNEUMONIA (VIRAL)"]["correct"] == 0.0 and out["PNEUMONIA (VIRAL)"]["called"]["BACTERIAL"] == 1
