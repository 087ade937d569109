"""Acquisition-shift check: perturbations exact at severity 0, deterministic, shape-keeping; the CLI's reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_SIZE, needs_tf, synthetic_xray
from edge_runtime.errors import InvalidImageError
from edge_runtime.imaging import preprocess
from edge_runtime.spec import ModelSpec
from training.data import DataError
from training.shift import (
    PERTURBATIONS,
    Item,
    image_rng,
    load_grey,
    operating_point_drift,
    perturb,
    read_split_side,
    run_shift,
    split_items,
    stratified_subset,
)

FAMILIES = sorted(PERTURBATIONS)


@pytest.fixture(scope="module")
def grey():
    """A synthetic radiograph at a non-square size, so that aspect and border code sees both axes."""
    rng = np.random.default_rng(3)
    image = synthetic_xray(rng, 1, size=120)
    return np.ascontiguousarray(np.vstack([image, image[:40]]))  # 160 x 120


@pytest.mark.parametrize("family", FAMILIES)
def test_severity_zero_is_the_identity(grey, family):
    out = perturb(grey, family, 0, 3, image_rng(0, family, 0, "a.png"))
    assert out.dtype == np.uint8 and np.array_equal(out, grey)
    assert out is not grey


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("severity", [1, 2, 3])
def test_positive_severity_changes_the_image_and_keeps_shape_and_dtype(grey, family, severity):
    before = grey.copy()
    out = perturb(grey, family, severity, 3, image_rng(0, family, severity, "a.png"))
    assert out.shape == grey.shape and out.dtype == np.uint8 and out.ndim == 2
    assert not np.array_equal(out, grey)
    assert np.array_equal(grey, before)  # the input is left alone


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_under_a_seed(grey, family):
    first = perturb(grey, family, 2, 3, image_rng(7, family, 2, "x/y.jpeg"))
    again = perturb(grey, family, 2, 3, image_rng(7, family, 2, "x/y.jpeg"))
    assert np.array_equal(first, again)


def test_seed_and_file_change_the_draw(grey):
    a = perturb(grey, "noise", 3, 3, image_rng(0, "noise", 3, "a.png"))
    assert not np.array_equal(a, perturb(grey, "noise", 3, 3, image_rng(1, "noise", 3, "a.png")))
    assert not np.array_equal(a, perturb(grey, "noise", 3, 3, image_rng(0, "noise", 3, "b.png")))


@pytest.mark.parametrize("family", FAMILIES)
def test_strongest_setting_does_not_depend_on_the_number_of_steps(grey, family):
    three = perturb(grey, family, 3, 3, image_rng(0, family, 9, "a.png"))
    five = perturb(grey, family, 5, 5, image_rng(0, family, 9, "a.png"))
    assert np.array_equal(three, five)


def test_severity_grows_the_change(grey):
    for family in ("blur", "noise", "resolution", "sharpen", "gamma_light", "gamma_dark", "border_black"):
        diffs = [np.abs(perturb(grey, family, s, 3, image_rng(0, family, 0, "a")).astype(int) - grey).mean()
                 for s in (1, 2, 3)]
        assert diffs[0] < diffs[1] < diffs[2], (family, diffs)


def test_bad_arguments_are_named():
    image = np.zeros((64, 64), np.uint8)
    with pytest.raises(InvalidImageError, match=r"\(H, W\) uint8"):
        perturb(np.zeros((64, 64, 3), np.uint8), "blur", 1)
    with pytest.raises(InvalidImageError):
        perturb(image.astype(np.float32), "blur", 1)
    with pytest.raises(ValueError, match="choose from"):
        perturb(image, "vignette", 1)
    with pytest.raises(ValueError, match="severity"):
        perturb(image, "blur", 4, 3)


def test_stratified_subset_keeps_every_stratum_share():
    items = ([Item(f"/d/A/{i}", f"A/{i}", 0) for i in range(60)] + [Item(f"/d/B/{i}", f"B/{i}", 1) for i in range(30)]
             + [Item(f"/d/C/{i}", f"C/{i}", 1) for i in range(10)])
    subset = stratified_subset(items, 20, seed=0)
    assert len(subset) == 20
    assert [sum(it.source == s for it in subset) for s in "ABC"] == [12, 6, 2]
    assert subset == stratified_subset(items, 20, seed=0)
    assert subset != stratified_subset(items, 20, seed=1)
    assert subset == sorted(subset, key=items.index)  # the split's order is kept
    assert stratified_subset(items, None) == items and stratified_subset(items, 500) == items


def test_split_side_tolerates_extra_keys_and_names_missing_sides(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"task": "binary", "seed": 0, "labels": ["NORMAL", "PNEUMONIA"], "train": ["a"],
                                "val": ["b", "c"], "calibration": ["d"], "notes": {"k": 1}}))
    assert read_split_side(path) == ["b", "c"]
    assert read_split_side(path, "calibration") == ["d"]
    with pytest.raises(DataError, match=r"no list 'test'.*\['calibration', 'train', 'val'\]"):
        read_split_side(path, "test")


def test_split_items_labels_through_the_task_and_refuses_foreign_files(tmp_path, synthetic_data):
    spec = ModelSpec(name="t", task="binary", labels=("NORMAL", "PNEUMONIA"), input_height=32, input_width=32)
    normal = sorted(p.name for p in (synthetic_data / "NORMAL").iterdir())[:2]
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"val": [f"NORMAL/{normal[0]}", "PNEUMONIA/person1_virus_1.jpeg"], "train": []}))
    items = split_items(path, synthetic_data, spec)
    assert [(it.source, it.label) for it in items] == [("NORMAL", 0), ("PNEUMONIA", 1)]
    path.write_text(json.dumps({"val": ["NORMAL/not-there.jpeg"]}))
    with pytest.raises(DataError, match="not-there"):
        split_items(path, synthetic_data, spec)


def test_run_shift_feeds_the_projects_preprocessing_and_measures_per_source(synthetic_data):
    """TensorFlow-free: a predictor that records what it is fed and scores the opacity region."""
    spec = ModelSpec(name="t", task="binary", labels=("NORMAL", "PNEUMONIA"), input_height=TINY_SIZE,
                     input_width=TINY_SIZE, threshold=0.5)
    items = [Item(str(p), f"{p.parent.name}/{p.name}", int(p.parent.name == "PNEUMONIA"))
             for folder in ("NORMAL", "PNEUMONIA") for p in sorted((synthetic_data / folder).iterdir())[:6]]
    fed = []

    def predict(planes):
        fed.append(planes.copy())
        # The synthetic opacity sits at x ~0.3, y ~0.55: brighter there than in the other lung = abnormal.
        left = planes[:, 28:42, 12:26].mean(axis=(1, 2))
        right = planes[:, 28:42, 38:52].mean(axis=(1, 2))
        p1 = 1.0 / (1.0 + np.exp(-(left - right) / 8.0))
        return np.stack([1 - p1, p1], axis=1)

    result = run_shift(predict, spec, items, families=["blur", "markers"], severities=2, n_boot=10,
                       batch_size=5, progress=False)
    # The first batch of condition "none" is the files through preprocess itself, untouched.
    expected = np.stack([preprocess(it.path, spec)[:, :, 0] for it in items[:5]])
    assert np.array_equal(fed[0], expected)
    assert np.array_equal(load_grey(items[0].path), preprocess(items[0].path, ModelSpec(
        name="t", task="binary", labels=("NORMAL", "PNEUMONIA"), input_height=64, input_width=64))[:, :, 0])
    assert len(fed) == 3 * (1 + 2 * 2)  # 3 batches x (original + 2 families x 2 severities)
    assert result["n"] == 12 and result["sources"] == {"NORMAL": 6, "PNEUMONIA": 6}
    rows = result["families"]["blur"]["results"]
    assert [r["severity"] for r in rows] == [0, 1, 2]
    assert rows[0]["overall"]["roc_auc"] == pytest.approx(1.0)
    assert rows[0]["overall"]["flip_rate"] == 0.0
    assert rows[0] == {**result["families"]["markers"]["results"][0]}  # one shared baseline
    normal = rows[0]["by_source"]["NORMAL"]
    scores = predict(np.stack([preprocess(it.path, spec)[:, :, 0] for it in items]))[:, 1]
    assert normal["positives"] == 0 and normal["roc_auc"] is None
    assert normal["specificity"] == pytest.approx(np.mean(scores[:6] < 0.5))
    assert rows[0]["by_source"]["PNEUMONIA"]["sensitivity"] == pytest.approx(np.mean(scores[6:] >= 0.5))
    assert rows[0]["overall"]["specificity"] == normal["specificity"]


@needs_tf
def test_cli_writes_the_three_reports(tmp_path, synthetic_data, capsys):
    """End to end with a tiny (untrained) Keras model and a split written by training's own save_split."""
    from training.data import TASKS, load_dataset, save_split, split_indices
    from training.model import build_model
    from training.shift import main

    run = tmp_path / "tiny model"
    run.mkdir()
    spec = ModelSpec(name="cxr_binary_64", task="binary", labels=("NORMAL", "PNEUMONIA"), input_height=TINY_SIZE,
                     input_width=TINY_SIZE, threshold=0.5)
    spec.save(run / "spec.json")
    build_model(2, (TINY_SIZE, TINY_SIZE), width=0.25).save(run / "model.keras")
    dataset = load_dataset(synthetic_data, TASKS["binary"], spec, cache_dir=tmp_path / "cache", progress=False)
    train, val = split_indices(dataset, 0.25, seed=0)
    split = save_split(run / "split.json", dataset, train, val, seed=0)
    payload = json.loads(split.read_text())
    payload["calibration"] = payload["train"][:4] + payload["train"][-4:]  # a key a later split.json may carry
    split.write_text(json.dumps(payload))
    out = tmp_path / "shift report"
    # --threads 0: leave TensorFlow's threads alone, since other tests in this process may have set them.
    argv = ["--model", str(run / "model.keras"), "--split", str(split), "--data", str(synthetic_data),
            "--out", str(out), "--severities", "2", "--max-images", "12", "--threads", "0", "--no-progress",
            "--bootstrap", "10"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "## Specificity at the threshold (pooled)" in printed and "| crop_aspect |" in printed
    assert "## Operating-point drift" in printed
    for name in ("shift.json", "shift.md", "shift.png", "shift_examples.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    result = json.loads((out / "shift.json").read_text())
    assert result["n"] == 12 and result["side"] == "val" and set(result["families"]) == set(PERTURBATIONS)
    assert all(len(block["results"]) == 3 for block in result["families"].values())
    assert set(result["sources"]) == {"NORMAL", "PNEUMONIA"}
    assert main(argv + ["--side", "calibration", "--json", "--families", "jpeg,border_white"]) == 0
    printed = json.loads(capsys.readouterr().out.split("\nreports:")[0])
    assert printed["n"] == 8 and list(printed["families"]) == ["jpeg", "border_white"]
    normals = [p for p in payload["train"] if p.startswith("NORMAL/")][:5]
    split.write_text(json.dumps({**payload, "normals": normals}))
    assert main(argv + ["--side", "normals", "--families", "blur"]) == 0  # one class: specificity only
    one_class = json.loads((out / "shift.json").read_text())["families"]["blur"]["results"][1]["overall"]
    assert one_class["roc_auc"] is None and one_class["sensitivity"] is None and one_class["specificity"] is not None
    assert main(argv + ["--side", "test"]) == 2
    assert main(argv + ["--families", "vignette"]) == 2


def test_operating_point_drift_sums_both_changes_at_the_strongest_severity():
    def row(severity, sens, spec):
        return {"severity": severity, "overall": {"sensitivity": sens, "specificity": spec}}

    result = {"severities": 2, "families": {
        "gamma_light": {"results": [row(0, 0.9, 0.8), row(1, 0.95, 0.7), row(2, 1.0, 0.5)]},
        "blur": {"results": [row(0, 0.9, 0.8), row(1, 0.9, 0.8), row(2, 0.85, 0.9)]},
        "one_class": {"results": [row(0, None, 0.8), row(1, None, 0.7), row(2, None, 0.6)]},  # no sensitivity
    }}
    drift = operating_point_drift(result)
    assert drift["severity"] == 2 and set(drift["families"]) == {"gamma_light", "blur"}
    assert drift["families"]["gamma_light"] == pytest.approx(0.1 + 0.3)
    assert drift["families"]["blur"] == pytest.approx(0.05 + 0.1)
    assert drift["mean"] == pytest.approx((0.4 + 0.15) / 2) and drift["worst"] == "gamma_light"
    assert operating_point_drift(result, severity=1)["families"]["gamma_light"] == pytest.approx(0.05 + 0.1)
    assert operating_point_drift({"severities": 1, "families": {}})["mean"] is None


def test_help_is_there(capsys):
    from training.shift import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--max-images" in capsys.readouterr().out


def test_populations_are_reported_when_the_class_map_names_several(synthetic_data):
    from training.shift import shift_markdown

    spec = ModelSpec(name="t", task="binary", labels=("NORMAL", "PNEUMONIA"), input_height=32, input_width=32)
    items = [Item(str(p), f"{p.parent.name}/{p.name}", int(p.parent.name == "PNEUMONIA"),
                  "children" if i % 2 else "adults")
             for folder in ("NORMAL", "PNEUMONIA")
             for i, p in enumerate(sorted((synthetic_data / folder).iterdir())[:4])]
    probs = np.tile([[0.6, 0.4]], (len(items), 1))
    result = run_shift(lambda planes: probs[:len(planes)], spec, items, families=["jpeg"], severities=1, n_boot=0,
                       progress=False)
    assert result["populations"] == {"adults": 4, "children": 4}
    row = result["families"]["jpeg"]["results"][1]
    assert row["by_population"]["adults"]["n"] == 4 and set(row["by_source"]) == {"NORMAL", "PNEUMONIA"}
    text = shift_markdown(result, "t")
    assert "## By population" in text and "### adults (4 images: 2 abnormal, 2 normal): ROC AUC" in text
