"""Export round trip on a tiny model: files load in the edge runtime and agree with Keras; the gate bites."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import needs_tf

pytestmark = [needs_tf, pytest.mark.slow]


def _keras_and_inputs(tiny_trained, synthetic_data):
    import keras

    from edge_runtime.spec import ModelSpec
    from training.data import TASKS, load_dataset

    train_dir, _ = tiny_trained
    spec = ModelSpec.load(train_dir / "spec.json")
    model = keras.saving.load_model(train_dir / "model.keras", compile=False)
    dataset = load_dataset(synthetic_data, TASKS["binary"], spec, cache_dir=train_dir.parent / "cache", progress=False)
    return model, dataset, spec


def test_files_named_by_precision_and_size_with_spec(tiny_model_dir):
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    for expected in ("cxr_binary_64_fp16.tflite", "cxr_binary_64_int8.tflite", "cxr_binary_64_fp16_cam.tflite",
                     "cxr_binary_64_int8_cam.tflite", "cxr_binary_64_labels.txt", "cxr_binary_64.spec.json",
                     "cxr_binary_64_parity.json", "cxr_binary_64_parity.md"):
        assert expected in names
    spec = json.loads((tiny_model_dir / "cxr_binary_64.spec.json").read_text())
    from edge_runtime.spec import sha256_file

    for filename, digest in spec["files"].items():
        assert sha256_file(tiny_model_dir / filename) == digest
    assert (tiny_model_dir / "cxr_binary_64_labels.txt").read_text().split() == ["NORMAL", "PNEUMONIA"]
    assert len(spec["cam_weights"]) == spec["feature_map_shape"][2]


def test_exported_spec_carries_the_task_fields_at_the_current_version(tiny_model_dir, tiny_trained):
    from edge_runtime.spec import SPEC_VERSION

    spec = json.loads((tiny_model_dir / "cxr_binary_64.spec.json").read_text())
    trained = json.loads((tiny_trained[0] / "spec.json").read_text())
    assert spec["spec_version"] == SPEC_VERSION
    assert spec["title"] and spec["description"]
    for key in ("title", "description", "populations"):
        assert spec[key] == trained[key], key


def test_quantization_parameters_read_from_tensors(tiny_model_dir):
    from edge_runtime.interpreter import make_interpreter

    interpreter, _ = make_interpreter(tiny_model_dir / "cxr_binary_64_int8.tflite")
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8
    from export.convert import FLOAT_HEAD

    # Raw pixels either way: full integer quantizes the input with scale 1 and zero point 0; a float head
    # (the default) leaves the uint8 input unquantized and casts it to float inside the graph.
    assert detail["quantization"] == ((0.0, 0) if FLOAT_HEAD else (1.0, 0))
    fp16, _ = make_interpreter(tiny_model_dir / "cxr_binary_64_fp16.tflite")
    assert fp16.get_input_details()[0]["dtype"] == np.uint8  # raw pixels for every precision


def test_tflite_outputs_agree_with_keras(tiny_model_dir, tiny_trained, synthetic_data):
    from export.parity import run_tflite
    from training.train import predict_probs

    model, dataset, _ = _keras_and_inputs(tiny_trained, synthetic_data)
    keras_probs = predict_probs(model, dataset.images)
    fp16, _ = run_tflite(tiny_model_dir / "cxr_binary_64_fp16.tflite", dataset.rgb())
    int8, feats = run_tflite(tiny_model_dir / "cxr_binary_64_int8_cam.tflite", dataset.rgb())
    # Tolerances for a barely trained tiny model, whose logits are large and steep: float16
    # weights move probabilities by a few hundredths at most, int8 activations by a few tenths.
    assert np.abs(fp16 - keras_probs).max() < 0.05
    assert np.abs(int8 - keras_probs).max() < 0.25
    assert np.mean(fp16.argmax(1) == keras_probs.argmax(1)) >= 0.95
    assert feats.shape[1:] == (4, 4, 64)  # 64 px / 16, width 0.5 of 128 filters


def test_the_gate_holds_the_top1_label_and_the_screening_rates():
    from export.parity import GATES, compare, gate
    from edge_runtime.spec import ModelSpec

    good = {"top1_agreement": 0.999, "sensitivity_delta": 0.004, "specificity_delta": -0.006, "auc_delta": 0.001}
    assert gate("int8", good) == []
    moved = gate("int8", {**good, "specificity_delta": -0.02})
    assert len(moved) == 1 and "specificity at the threshold moved -0.0200" in moved[0]
    assert len(gate("fp16", good)) == 2  # fp16 holds the rates closer
    worst = gate("int8", {"top1_agreement": 0.98, "sensitivity_delta": 0.05, "specificity_delta": 0.0,
                          "auc_delta": -0.01})
    assert len(worst) == 3 and GATES["int8"][0] == 0.995
    # compare() measures the rates from the decisions at the spec's threshold.
    spec = ModelSpec(name="m", task="binary", labels=("NORMAL", "PNEUMONIA"), threshold=0.5)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    keras_p = np.array([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.7, 0.3], [0.2, 0.8], [0.3, 0.7], [0.45, 0.55],
                        [0.1, 0.9]])
    tflite_p = keras_p.copy()
    tflite_p[2] = [0.45, 0.55]  # a normal film crosses the threshold
    stats = compare(keras_p, tflite_p, y, spec)
    assert stats["decision_agreement"] == 7 / 8 and stats["sensitivity_delta"] == 0.0
    assert stats["specificity_delta"] == -0.25


def test_parity_gate_fails_on_blank_calibration(tiny_trained, synthetic_data, tmp_path):
    from export.__main__ import build_parser, export_model
    from export.convert import ExportError

    train_dir, _ = tiny_trained
    args = build_parser().parse_args(["--model", str(train_dir / "model.keras"), "--data", str(synthetic_data),
                                      "--out", str(tmp_path), "--calibration-size", "60", "--no-metadata",
                                      "--calibration", "blank", "--cache-dir", str(train_dir.parent / "cache")])
    with pytest.raises(ExportError, match="parity gate failed, nothing shipped"):
        export_model(args)
    assert not list(tmp_path.glob("*.tflite"))  # nothing shipped
    report = json.loads((tmp_path / "cxr_binary_64_parity.json").read_text())
    assert report["passed"] is False
    assert any("int8" in f for f in report["failures"])


def test_the_quantization_debugger_names_layers_and_measures_them(tiny_trained):
    import keras

    from export.convert import quantization_debug

    model = keras.saving.load_model(tiny_trained[0] / "model.keras", compile=False)
    images = np.random.default_rng(0).integers(0, 256, (12, 64, 64, 3)).astype(np.uint8)
    rows = quantization_debug(model, images, top=4)
    assert len(rows) == 4 and all(np.isfinite(r["rmse/scale"]) and r["rmse/scale"] > 0 for r in rows)
    assert [r["rmse/scale"] for r in rows] == sorted((r["rmse/scale"] for r in rows), reverse=True)
    assert all("/" not in r["tensor"] and ";" not in r["tensor"] for r in rows)


def test_too_few_calibration_images_is_an_error(tiny_trained, tmp_path):
    from export.convert import ExportError, export_int8
    import keras

    model = keras.saving.load_model(tiny_trained[0] / "model.keras", compile=False)
    with pytest.raises(ExportError, match="at least 50"):
        export_int8(model, np.zeros((10, 64, 64, 3), np.uint8), tmp_path / "x.tflite")


def test_the_classifier_bias_correction_cancels_a_mean_feature_error():
    from export.convert import classifier_bias_correction

    rng = np.random.default_rng(0)
    float_maps = rng.random((40, 4, 4, 8))
    offset = rng.normal(0, 0.05, 8)  # a per-channel offset, as int8 rounding leaves in depthwise layers
    int8_maps = float_maps + offset + rng.normal(0, 0.01, float_maps.shape)
    kernel, bias = rng.normal(0, 1, (8, 3)), np.array([0.1, -0.2, 0.3])
    c = classifier_bias_correction(int8_maps, float_maps, kernel, bias)
    logits_float = float_maps.mean(axis=(1, 2)) @ kernel + bias
    before = int8_maps.mean(axis=(1, 2)) @ kernel + bias - logits_float
    after = int8_maps.mean(axis=(1, 2)) @ kernel + c["bias"] - logits_float
    assert np.abs(before.mean(axis=0)).max() > 0.02  # the offset moves the logits ...
    assert np.abs(after.mean(axis=0)).max() < 1e-9  # ... and the corrected bias takes it out again
    assert np.isclose(sum(c["logit_shift"]), 0.0) and c["images"] == 40
    assert np.allclose(c["logit_error_std"], (before - before.mean(axis=1, keepdims=True)).std(axis=0))
    assert 0.02 < c["pooled_error_mean_abs"] < 0.08 and 0.001 < c["pooled_error_std"] < 0.005  # 0.01 per cell, over 16 cells


def test_the_int8_files_take_the_corrected_bias_and_the_report_says_so(tiny_trained, tiny_model_dir, tmp_path):
    import keras

    from export.convert import export_int8, run_unbound, with_feature_output
    from training.model import CLASSIFIER_LAYER

    model = keras.saving.load_model(tiny_trained[0] / "model.keras", compile=False)
    images = np.random.default_rng(1).integers(0, 256, (60, 64, 64, 3)).astype(np.uint8)
    kernel, bias = model.get_layer(CLASSIFIER_LAYER).get_weights()
    pooled = np.asarray(with_feature_output(model).predict(images, verbose=0)[1]).mean(axis=(1, 2))
    margin = float(np.median((pooled @ kernel + bias) @ np.array([-1.0, 1.0])))  # PNEUMONIA minus NORMAL logit
    plain = export_int8(with_feature_output(model), images, tmp_path / "plain.tflite")
    moved = export_int8(with_feature_output(model), images, tmp_path / "moved.tflite",
                        classifier_bias=bias + np.array([0.0, -margin]))
    # The override reaches the file: PNEUMONIA's logit lowered by the median margin takes the median film to
    # about 0.5 (from wherever the tiny model put it); the trunk is the same.
    (probs_plain, maps_plain), (probs_moved, maps_moved) = run_unbound(plain, images[:8]), run_unbound(moved, images[:8])
    assert np.array_equal(maps_plain, maps_moved)
    change = probs_moved[:, 1] - probs_plain[:, 1]
    assert np.sign(-margin) * change.mean() > 0.1 and np.all(np.sign(-margin) * change >= -0.01)
    # python -m export corrects by default and records what it measured, in the report and the card's sentence.
    report = json.loads((tiny_model_dir / "cxr_binary_64_parity.json").read_text())
    correction = report["int8_bias_correction"]
    assert correction["images"] == report["calibration_images"] and len(correction["logit_shift"]) == 2
    assert "int8 classifier bias corrected" in (tiny_model_dir / "cxr_binary_64_parity.md").read_text()


def test_a_float_head_int8_file_runs_its_first_ops_in_float_keeps_raw_pixels_and_agrees_better(tiny_trained,
                                                                                              tmp_path):
    import keras

    from edge_runtime.interpreter import make_interpreter
    from export.convert import ExportError, export_int8, run_unbound, with_feature_output

    model = keras.saving.load_model(tiny_trained[0] / "model.keras", compile=False)
    images = np.random.default_rng(2).integers(0, 256, (60, 64, 64, 3)).astype(np.uint8)
    keras_maps = np.asarray(with_feature_output(model).predict(images, verbose=0)[1])
    full = export_int8(with_feature_output(model), images, tmp_path / "full.tflite")
    head = export_int8(with_feature_output(model), images, tmp_path / "head.tflite", float_head=3)

    def conv_output_types(path):
        interpreter, _ = make_interpreter(str(path))
        tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
        return [np.dtype(tensors[op["outputs"][0]]["dtype"]) for op in interpreter._get_ops_details()
                if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]

    kinds = conv_output_types(head)
    assert kinds[:3] == [np.dtype(np.float32)] * 3 and set(kinds[3:]) == {np.dtype(np.int8)}  # stem, block 0 float
    assert set(conv_output_types(full)) == {np.dtype(np.int8)}
    interpreter, _ = make_interpreter(str(head))
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8 and detail["quantization"] == (0.0, 0)  # raw pixels, cast inside the graph
    # Less int8 in the path, less error: the feature maps sit closer to Keras's.
    err_full = np.abs(run_unbound(full, images)[1] - keras_maps).mean()
    err_head = np.abs(run_unbound(head, images)[1] - keras_maps).mean()
    assert err_head < err_full
    with pytest.raises(ExportError, match="every one"):
        export_int8(model, images, tmp_path / "all.tflite", float_head=999)
