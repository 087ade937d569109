"""Classifier on an exported model (the tiny test model, or the shipped one without TensorFlow)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import ASSETS
from edge_runtime import Classifier, ClassifierOptions, Result
from edge_runtime.classifier import _dequantize, _quantize
from edge_runtime.errors import ModelError, ModelIntegrityError, NotChestXrayError
from edge_runtime.spec import ModelSpec
from edge_runtime.render import save_overlay
from runtime_models import FULLRES, binary_models, needs_fullres, xray_like  # noqa: F401 - fixture

NO_GATE = ClassifierOptions(quality_gate=False)


@pytest.fixture(scope="module")
def images(binary_models):
    """Eight chest-shaped synthetic images at twice the model's input size."""
    spec = ModelSpec.load(binary_models["spec"])
    return [xray_like(max(64, 2 * spec.input_height), seed) for seed in range(8)]


@pytest.fixture(scope="module")
def clf(binary_models):
    with Classifier(binary_models["int8_cam"], NO_GATE) as classifier:
        yield classifier


def test_loads_and_classifies(clf, images, binary_models):
    assert clf.runtime in ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
    assert clf.has_heatmap and clf.labels == clf.spec.labels
    assert clf.model_sha256 == hashlib.sha256(binary_models["int8_cam"].read_bytes()).hexdigest()
    result = clf.classify(images[0])
    assert isinstance(result, Result)
    assert set(result.probabilities) == set(clf.spec.labels)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=0.02)
    assert result.score == pytest.approx(1 - result.probabilities[clf.spec.negative_label])
    assert result.positive == (result.score >= result.threshold)
    assert (result.label == clf.spec.negative_label) == (not result.positive)
    assert result.decision.startswith("screening positive" if result.positive else "screening negative")
    assert result.latency_ms > 0 and {"decode", "preprocess", "invoke"} <= set(result.timings_ms)
    assert result.heatmap is None and result.image.shape == images[0].shape
    json.dumps(result.to_dict())


def test_same_result_from_path_bytes_stream_and_array(clf, images, tmp_path):
    path = tmp_path / "an image.png"
    Image.fromarray(images[1]).save(path)
    data = path.read_bytes()
    by_path, by_bytes, by_stream = clf.classify(path), clf.classify(data), clf.classify(io.BytesIO(data))
    by_array = clf.classify(images[1])
    assert by_path.image_sha256 == by_bytes.image_sha256 == hashlib.sha256(data).hexdigest()
    for other in (by_bytes, by_stream, by_array):
        assert other.probabilities == by_path.probabilities


def test_quantization_comes_from_the_tensors(clf):
    detail = clf._input
    assert np.dtype(detail["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.float32))
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        assert scale > 0
        pixels = np.array([[0.0, 1.0, 128.0, 255.0]], np.float32)
        expected = np.clip(np.round(pixels / scale + zero_point), np.iinfo(detail["dtype"]).min,
                           np.iinfo(detail["dtype"]).max)
        assert np.array_equal(_quantize(pixels, detail), expected.astype(detail["dtype"]))


@pytest.mark.parametrize("dtype, scale, zero_point", [(np.uint8, 1.0, 0), (np.int8, 1.0, -128), (np.int8, 0.5, 3),
                                                      (np.uint8, 2.0, 10)])
def test_quantize_round_trip_uses_scale_and_zero_point(dtype, scale, zero_point):
    detail = {"dtype": dtype, "quantization": (scale, zero_point)}
    values = np.array([0.0, 10.0, 100.0, 200.0], np.float32)
    quantized = _quantize(values, detail)
    assert quantized.dtype == dtype
    info = np.iinfo(dtype)
    expected = np.clip(np.round(values / scale + zero_point), info.min, info.max)
    assert np.array_equal(quantized, expected.astype(dtype))
    restored = _dequantize(quantized, detail)
    inside = (expected > info.min) & (expected < info.max)
    np.testing.assert_allclose(restored[inside], values[inside], atol=scale / 2 + 1e-6)
    floats = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert _quantize(values, floats).dtype == np.float32 and np.array_equal(_dequantize(values, floats), values)


def test_precisions_and_variants_agree(binary_models, images):
    outputs = {}
    for key in ("int8_cam", "int8", "fp16_cam", "fp16"):
        with Classifier(binary_models[key], NO_GATE) as classifier:
            assert classifier.has_heatmap == key.endswith("_cam")
            outputs[key] = np.array([[classifier.classify(im).probabilities[label] for label in classifier.labels]
                                     for im in images[:4]])
    # The _cam variant only adds an output: same probabilities as the plain file of its precision.
    np.testing.assert_allclose(outputs["int8_cam"], outputs["int8"], atol=1e-6)
    np.testing.assert_allclose(outputs["fp16_cam"], outputs["fp16"], atol=1e-5)
    assert np.abs(outputs["int8"] - outputs["fp16"]).max() < 0.25


def test_heatmap_shape_range_and_overlay(clf, images, tmp_path):
    result = clf.classify(images[2], heatmap=True)
    h, w, _ = clf.spec.feature_map_shape
    assert result.heatmap.shape == (h, w) and result.heatmap.dtype == np.float32
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0
    assert result.heatmap.max() in (0.0, pytest.approx(1.0))
    path = save_overlay(result, tmp_path / "out" / "overlay.png", alpha=0.5)
    height, width = images[2].shape[:2]
    assert Image.open(path).size == (2 * width + 8, height)


def test_all_zero_feature_map_gives_a_zero_heatmap(binary_models, images, monkeypatch):
    with Classifier(binary_models["int8_cam"], NO_GATE) as classifier:
        probs = np.zeros(len(classifier.labels), np.float32)
        probs[classifier.spec.negative_index] = 1.0
        features = np.zeros(classifier.spec.feature_map_shape, np.float32)
        monkeypatch.setattr(classifier, "run", lambda prepared: (probs, features))
        result = classifier.classify(images[0], heatmap=True)
    assert result.heatmap.shape == features.shape[:2]
    assert np.isfinite(result.heatmap).all() and not result.heatmap.any()


def test_heatmap_needs_the_cam_variant(binary_models, images):
    with Classifier(binary_models["int8"], NO_GATE) as plain:
        assert not plain.has_heatmap
        with pytest.raises(ModelError, match="_cam"):
            plain.classify(images[0], heatmap=True)


def test_refuses_a_model_without_its_spec(binary_models, tmp_path):
    lonely = tmp_path / binary_models["int8_cam"].name
    shutil.copy(binary_models["int8_cam"], lonely)
    with pytest.raises(ModelError, match="no model spec lists"):
        Classifier(lonely, NO_GATE)
    with Classifier(lonely, ClassifierOptions(quality_gate=False, spec_path=str(binary_models["spec"]))) as clf:
        assert clf.spec.name == ModelSpec.load(binary_models["spec"]).name


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_refuses_a_tampered_or_truncated_model(binary_models, tmp_path, damage):
    model = tmp_path / binary_models["int8_cam"].name
    shutil.copy(binary_models["int8_cam"], model)
    shutil.copy(binary_models["spec"], tmp_path / binary_models["spec"].name)
    data = bytearray(model.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) // 2:]
    model.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match"):
        Classifier(model, NO_GATE)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Classifier(tmp_path / "nothing.tflite")


def test_quality_gate_refuses_non_xrays(binary_models, tmp_path):
    with Classifier(binary_models["int8_cam"]) as gated:
        path = tmp_path / "tiny.png"
        Image.fromarray(xray_like(64)).save(path)
        with pytest.raises(NotChestXrayError) as info:
            gated.classify(path)
        assert info.value.reason == "too_small" and str(path) in str(info.value)
        with pytest.raises(NotChestXrayError, match="colour"):
            rng = np.random.default_rng(0)
            gated.classify(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))


def test_thread_safety(clf, images):
    serial = [clf.classify(im).probabilities for im in images]
    results: dict = {}
    errors = []

    def worker(k):
        try:
            order = list(range(len(images)))[k:] + list(range(len(images)))[:k]
            for _ in range(3):
                for i in order:
                    results.setdefault(i, []).append(clf.classify(images[i], heatmap=True).probabilities)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, probabilities in results.items():
        assert len(probabilities) == 12
        assert all(p == serial[i] for p in probabilities)


@pytest.mark.realdata
@needs_fullres
def test_shipped_model_on_real_scans():
    model = ASSETS / "cxr_binary_160_int8_cam.tflite"
    if not model.is_file():
        pytest.skip("shipped model not exported yet")
    files = sorted(FULLRES.rglob("*.jpeg"))[::6]
    with Classifier(model) as shipped:
        for path in files:
            result = shipped.classify(path, heatmap=True)
            assert result.quality["width"] >= 512 and result.heatmap.max() <= 1.0


# -- issue 10: the spec is bound to the model --------------------------------------------------

def _copy_pair(binary_models, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / binary_models["int8_cam"].name
    shutil.copy(binary_models["int8_cam"], model)
    spec = folder / binary_models["spec"].name
    shutil.copy(binary_models["spec"], spec)
    return model, spec


@pytest.mark.parametrize("edit", ["labels reversed", "threshold", "negative label", "cam weights"])
def test_any_edit_to_the_spec_sidecar_is_refused(binary_models, tmp_path, edit):
    import json

    model, spec_path = _copy_pair(binary_models, tmp_path / "edited")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if edit == "labels reversed":  # the attack: a pneumonia film reported as NORMAL
        spec["labels"] = spec["labels"][::-1]
    elif edit == "threshold":
        spec["threshold"] = 0.99
    elif edit == "negative label":
        spec["negative_label"] = spec["labels"][1]
    else:
        spec["cam_weights"][0][0] += 0.5
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    with pytest.raises(ModelIntegrityError, match="differs from the spec embedded"):
        Classifier(model, NO_GATE)


def test_a_model_without_an_embedded_spec_is_refused_and_can_be_bound(binary_models, tmp_path):
    from edge_runtime.spec import read_embedded_spec, sha256_file

    model, spec_path = _copy_pair(binary_models, tmp_path / "old export")
    data = model.read_bytes()
    model.write_bytes(data[: data.rfind(b"PK\x03\x04")])  # as exported before the binding
    assert read_embedded_spec(model) is None
    spec = ModelSpec.load(spec_path)
    spec.replace(files={**spec.files, model.name: sha256_file(model)}).save(spec_path)
    with pytest.raises(ModelIntegrityError, match="no embedded model_spec.json"):
        Classifier(model, NO_GATE)
    binding = pytest.importorskip("export.binding", reason="export/ is a repository tool")
    assert binding.bind_folder(model.parent)[spec_path.name] == [model.name]
    with Classifier(model, NO_GATE) as clf:
        assert clf.spec_sha256 == sha256_file(spec_path)


def test_the_spec_hash_goes_with_every_result_into_the_log(binary_models, tmp_path):
    import hashlib

    from edge_runtime.log import ScreeningLog

    expected = hashlib.sha256(binary_models["spec"].read_bytes()).hexdigest()
    image = tmp_path / "x.png"
    Image.fromarray(xray_like(128)).save(image)
    with Classifier(binary_models["int8_cam"], NO_GATE) as clf, ScreeningLog(tmp_path / "l.db") as log:
        result = clf.classify(image)
        assert result.spec_sha256 == expected and result.to_dict()["spec_sha256"] == expected
        assert log.get(log.record(result))["spec_sha256"] == expected


def test_every_shipped_model_is_bound_and_listed_in_the_checksum_list():
    import hashlib

    from conftest import ASSETS
    from edge_runtime.spec import check_binding

    sums = dict(reversed(line.split("  ", 1)) for line in (ASSETS / "SHA256SUMS").read_text().splitlines())
    for spec_path in sorted(ASSETS.glob("*.spec.json")):
        spec = ModelSpec.load(spec_path)
        assert sums[spec_path.name] == hashlib.sha256(spec_path.read_bytes()).hexdigest()
        for name, digest in spec.files.items():
            assert sums[name] == digest == hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()
            if name.endswith(".tflite"):
                check_binding(spec, ASSETS / name, spec_path)
