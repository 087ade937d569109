"""Training learns a separable synthetic task; Grad-CAM has the right shape, range and focus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import needs_tf, synthetic_xray

pytestmark = needs_tf


def test_two_class_training_learns_and_writes_its_outputs(tiny_trained):
    out, summary = tiny_trained
    for name in ("model.keras", "spec.json", "split.json", "config.json", "history.json", "curves.png",
                 "validation.json", "validation.md", "validation_confusion.png", "validation_roc.png"):
        assert (out / name).is_file(), name
    assert summary["val_auc"] >= 0.9, summary
    spec = json.loads((out / "spec.json").read_text())
    assert 0 < spec["threshold"] < 1 and spec["training"]["seed"] == 0
    assert spec["training"]["command"].startswith("(called from Python")  # not the test runner's argv
    # The task's own fields travel in the spec; the populations are those the run saw (the synthetic
    # folder-per-class root mixes none it can name), as in the training record.
    from edge_runtime.spec import SPEC_VERSION
    from training.data import TASKS

    assert spec["spec_version"] == SPEC_VERSION
    assert (spec["title"], spec["description"]) == (TASKS["binary"].title, TASKS["binary"].description)
    assert spec["populations"] == spec["training"]["populations"]
    report = json.loads((out / "validation.json").read_text())
    assert report["screening"]["at_threshold"]["sensitivity"] >= 0.95


def test_model_is_small_and_ends_in_gap_dense():
    from training.model import CLASSIFIER_LAYER, FEATURE_LAYER, build_model

    model = build_model(3, (160, 160))
    assert model.count_params() < 1_000_000
    assert model.get_layer(FEATURE_LAYER).output.shape[1:3] == (10, 10)
    assert model.get_layer(CLASSIFIER_LAYER).get_weights()[0].shape[1] == 3
    assert model.inputs[0].dtype == "uint8"


def test_extra_blocks_add_depth_at_the_last_grid_and_reach_the_cli():
    from training.model import EXTRA_BLOCK, FEATURE_LAYER, build_model
    from training.train import build_parser

    plain, deep = build_model(2, (160, 160)), build_model(2, (160, 160), extra_blocks=2)
    assert deep.get_layer(FEATURE_LAYER).output.shape[1:] == (10, 10, EXTRA_BLOCK[0])  # same heatmap grid
    assert plain.get_layer(FEATURE_LAYER).output.shape[1:] == (10, 10, 128)
    assert len(deep.layers) == len(plain.layers) + 2 * 6  # dw, bn, relu, pw, bn, relu per block
    assert deep.count_params() > 2 * plain.count_params()
    assert build_parser().parse_args(["--extra-blocks", "2"]).extra_blocks == 2
    assert build_parser().parse_args([]).extra_blocks == 0  # the shipped recipe is unchanged


def test_fake_quant_rounds_forward_and_passes_the_gradient_straight_through():
    import tensorflow as tf

    from training.model import ACTIVATION_STEP, FakeQuant

    x = tf.Variable(np.linspace(0.0, 6.0, 1001, dtype=np.float32))
    with tf.GradientTape() as tape:
        y = FakeQuant()(x)
        loss = tf.reduce_sum(y * 3.0)
    levels = y.numpy() / ACTIVATION_STEP
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert 0 < np.abs(y.numpy() - x.numpy()).max() <= ACTIVATION_STEP / 2 + 1e-6
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), 3.0)


def test_a_fake_quant_model_shares_the_plain_models_weights():
    from training.model import FakeQuant, build_model, copy_weights

    plain = build_model(2, (64, 64), width=0.5)
    fq = copy_weights(plain, build_model(2, (64, 64), width=0.5, fake_quant=True))
    assert sum(isinstance(layer, FakeQuant) for layer in fq.layers) == 17  # every ReLU6 of the stem and 8 blocks
    assert not any(isinstance(layer, FakeQuant) for layer in plain.layers)
    assert [w.shape for w in fq.get_weights()] == [w.shape for w in plain.get_weights()]
    x = np.stack([synthetic_xray(np.random.default_rng(i), i % 2, 64) for i in range(4)])[..., None].repeat(3, -1)
    a, b = plain.predict(x, verbose=0), fq.predict(x, verbose=0)
    assert np.abs(a - b).max() < 0.2  # the same network, up to the rounding


def test_quantization_aware_fine_tuning_of_an_earlier_model(tiny_trained, synthetic_data, tmp_path):
    import keras

    from training.model import FakeQuant
    from training.train import TrainConfig, train

    source, _ = tiny_trained
    out = tmp_path / "qat"
    config = TrainConfig(task="binary", data=str(synthetic_data), out=str(out), input_size=64, width=0.5, epochs=0,
                         qat_epochs=2, batch_size=8, patience=10, bn_momentum=0.8, seed=0, augment=False, epoch_size=0,
                         weights=str(source / "model.keras"), split=str(source / "split.json"),
                         cache_dir=str(source.parent / "cache"), threads=2)
    summary = train(config)
    saved = keras.saving.load_model(out / "model.keras", compile=False)
    assert not any(isinstance(layer, FakeQuant) for layer in saved.layers)  # what export converts is plain
    before = keras.saving.load_model(source / "model.keras", compile=False)
    assert any(not np.array_equal(a, b) for a, b in zip(saved.get_weights(), before.get_weights()))
    spec = json.loads((out / "spec.json").read_text())
    assert spec["training"]["qat_epochs"] == 2 and 1 <= spec["training"]["qat_best_epoch"] <= 2
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 2
    assert summary["val_auc"] >= 0.9


def test_default_input_size_is_the_shipped_models_one():
    from training.data import INPUT_SIZE
    from training.model import build_model
    from training.train import TrainConfig

    assert INPUT_SIZE == TrainConfig().input_size == 160
    assert tuple(build_model(2).inputs[0].shape[1:3]) == (INPUT_SIZE, INPUT_SIZE)


def test_gradcam_range_shape_and_focus(tiny_trained):
    import keras

    from training.gradcam import gradcam_heatmaps

    model = keras.saving.load_model(tiny_trained[0] / "model.keras", compile=False)
    rng = np.random.default_rng(5)
    images = np.stack([np.repeat(synthetic_xray(rng, 1)[..., None], 3, -1) for _ in range(16)])
    cams = gradcam_heatmaps(model, images, np.ones(16, dtype=int))
    assert cams.shape == (16, 4, 4)
    assert cams.min() >= 0 and cams.max() <= 1
    # The opacity (centre x 0.3, y 0.55 of the image) lies in the left half: the PNEUMONIA map
    # should put more weight there than in the right half.
    assert cams[:, :, :2].sum() > cams[:, :, 2:].sum()


def test_all_zero_map_stays_zero():
    from edge_runtime.cam import normalize_map

    assert not normalize_map(np.zeros((4, 4))).any()
    assert normalize_map(np.array([[0.0, 2.0]])).tolist() == [[0.0, 1.0]]


def test_evaluate_command_writes_reports_on_a_labelled_folder(tiny_trained, synthetic_data, tmp_path, capsys):
    from training.evaluate import main

    code = main(["--model", str(tiny_trained[0] / "model.keras"), "--data", str(synthetic_data), "--out",
                 str(tmp_path / "report out"), "--bootstrap", "50", "--cache-dir", str(tiny_trained[0].parent / "cache")])
    assert code == 0
    report = json.loads((tmp_path / "report out" / "evaluation.json").read_text())
    assert report["n"] == 100 and report["class_counts"] == {"NORMAL": 50, "PNEUMONIA": 50}
    for key in ("sensitivity", "specificity", "ppv", "npv", "f1"):
        assert 0 <= report["screening"]["at_threshold"][key] <= 1
    assert (tmp_path / "report out" / "evaluation_confusion.png").stat().st_size > 1000
    assert "Screening ROC AUC" in capsys.readouterr().out


def test_evaluate_names_a_missing_class_folder(tiny_trained, tmp_path):
    from training.evaluate import main

    (tmp_path / "NORMAL").mkdir()
    assert main(["--model", str(tiny_trained[0] / "model.keras"), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2


def test_cli_help_is_reachable():
    from training.__main__ import main

    assert main(["--help"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        from training.train import main as train_main

        train_main(["--help"])
    assert exit_info.value.code == 0


def test_evaluate_on_the_validation_side_of_a_split(tiny_trained, synthetic_data, tmp_path):
    from training.evaluate import main

    split = json.loads((tiny_trained[0] / "split.json").read_text())
    assert main(["--model", str(tiny_trained[0] / "model.keras"), "--data", str(synthetic_data), "--out",
                 str(tmp_path), "--split", str(tiny_trained[0] / "split.json"), "--bootstrap", "20",
                 "--cache-dir", str(tiny_trained[0].parent / "cache")]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["n"] == len(split["val"])
    assert set(report["by_source"]) == {"NORMAL", "PNEUMONIA"}
