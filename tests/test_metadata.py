"""TFLite metadata for the Android assets: written, read back by standard readers, accepted by classifiers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.errors import ModelError
from export import metadata as md

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")

LABELS = ["NORMAL", "PNEUMONIA"]
SIZE = 32
SPEC = {
    "name": "cxr_tiny_32",
    "task": "binary",
    "labels": LABELS,
    "input_height": SIZE,
    "input_width": SIZE,
    "threshold": 0.3,
    "training": {"commit": "0123456789abcdef"},
    "files": {"cxr_tiny_32_int8.tflite": "0" * 64},
}
WRITE_KW = dict(author="test author", license="test licence", description="tiny test model", version="9.8.7")
# Float16 weights run in float32 in both runtimes; uint8 scores may differ by one quantization step
# (1/256) between the Task Library's bundled TFLite and ai_edge_litert.
FLOAT_ATOL = 1e-5
UINT8_ATOL = 1 / 256 + 1e-6


def _metadata_python() -> str:
    try:
        return md.resolve_metadata_python()
    except md.MetadataToolsUnavailableError:
        pytest.skip(
            "no TFLite metadata interpreter: run `python -m export.metadata setup-venv` (creates "
            f".venv-metadata from export/requirements-metadata.txt) or set ${md.PYTHON_ENV_VAR}"
        )


@pytest.fixture(scope="module")
def metadata_python():
    return _metadata_python()


@pytest.fixture(scope="module")
def assets(tmp_path_factory, metadata_python):
    """A tiny uint8-input Keras classifier as fp16 and full-int8 .tflite, plus metadata copies."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("metadata") / "android assets"  # a path with a space
    folder.mkdir()

    image_in = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(image_in)
    features = keras.layers.Conv2D(4, 3, activation="relu")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    probs = keras.layers.Dense(2, activation="softmax", name="probabilities")(pooled)
    model = keras.Model(image_in, probs)
    # The int8 twin takes float 0..255 so that the converter gives its uint8 input a scale of 1
    # (a uint8 Keras input would leave a float CAST at the start of the integer graph).
    float_in = keras.Input((SIZE, SIZE, 3), name="image")
    y = float_in
    for layer in model.layers[1:]:
        y = layer(y)
    float_model = keras.Model(float_in, y)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.integers(0, 256, (1, SIZE, SIZE, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    raw = {"fp16": converter.convert()}
    converter = tf.lite.TFLiteConverter.from_keras_model(float_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    raw["int8"] = converter.convert()
    # A two-output model (probabilities + feature map), like the edge runtime's *_cam variant.
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(image_in, [probs, features]))
    raw["cam"] = converter.convert()

    paths = {}
    for precision, content in raw.items():
        paths[precision] = folder / f"cxr_tiny_32_{precision}.tflite"
        paths[precision].write_bytes(content)
    spec_path = folder / "cxr_tiny_32.spec.json"
    spec_path.write_text(json.dumps(SPEC), encoding="utf-8")
    labels_path = folder / "cxr_tiny_32_labels.txt"
    labels_path.write_text("\n".join(LABELS) + "\n", encoding="utf-8")

    written = {}
    for precision in ("fp16", "int8"):
        written[precision] = md.write_metadata_external(
            paths[precision],
            folder / f"cxr_tiny_32_{precision}_meta.tflite",
            spec_path,
            labels_path,
            python=metadata_python,
            **WRITE_KW,
        )
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    image_path = folder / "image.npy"
    np.save(image_path, image)
    return {
        "raw": paths,
        "meta": written,
        "spec": spec_path,
        "labels": labels_path,
        "image": image,
        "image_path": image_path,
        "folder": folder,
    }


def _run(path, image):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
    interpreter.invoke()
    raw = interpreter.get_tensor(out["index"])[0]
    scale, zero_point = out["quantization"]
    scores = (raw.astype(np.float32) - zero_point) * scale if scale else raw.astype(np.float32)
    return raw, scores


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_metadata_reads_back_with_the_standard_reader(assets, metadata_python, precision):
    result = md.read_metadata_external(assets["meta"][precision], python=metadata_python)
    assert "MetadataDisplayer" in result["reader"]
    meta = result["metadata"]
    assert meta["name"] == "cxr_tiny_32"
    assert meta["version"] == "9.8.7"
    assert meta["author"] == "test author"
    assert meta["license"] == "test licence"
    assert meta["description"] == "tiny test model"
    assert meta["min_parser_version"]

    (image_md,) = meta["subgraph_metadata"][0]["input_tensor_metadata"]
    assert image_md["content"]["content_properties_type"] == "ImageProperties"
    assert image_md["content"]["content_properties"]["color_space"] == "RGB"
    (norm,) = image_md["process_units"]
    assert norm["options_type"] == "NormalizationOptions"
    assert norm["options"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}

    (output_md,) = meta["subgraph_metadata"][0]["output_tensor_metadata"]
    assert output_md["associated_files"] == [
        {
            "name": "cxr_tiny_32_labels.txt",
            "description": output_md["associated_files"][0]["description"],
            "type": "TENSOR_AXIS_LABELS",
        }
    ]
    assert [f["name"] for f in meta["associated_files"]] == [md.EMBEDDED_SPEC_NAME]
    assert meta["associated_files"][0]["type"] == "DESCRIPTIONS"

    assert set(result["associated_files"]) == {"cxr_tiny_32_labels.txt", md.EMBEDDED_SPEC_NAME}
    assert result["labels"] == LABELS
    assert result["labels_file"] == "cxr_tiny_32_labels.txt"
    embedded = result["spec"]
    assert embedded["name"] == "cxr_tiny_32" and embedded["labels"] == LABELS
    assert embedded["threshold"] == 0.3 and embedded["input_height"] == SIZE
    assert "files" not in embedded  # a file cannot hold its own sha256: hashes stay in the sidecar


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_metadata_leaves_the_interpreter_output_unchanged(assets, precision):
    before, _ = _run(assets["raw"][precision], assets["image"])
    after, _ = _run(assets["meta"][precision], assets["image"])
    np.testing.assert_array_equal(before, after)
    assert assets["meta"][precision].stat().st_size > assets["raw"][precision].stat().st_size


@pytest.mark.slow
def test_task_library_and_mediapipe_classifiers_accept_the_files(assets, metadata_python):
    models = [assets["meta"]["fp16"], assets["meta"]["int8"]]
    report = md.run_cli(
        ["verify", "--model", *map(str, models), "--image", str(assets["image_path"])], python=metadata_python
    )["models"]
    ran = []
    for path, precision in zip(models, ["fp16", "int8"], strict=True):
        _, expected = _run(path, assets["image"])
        checks = report[str(path)]
        for library in ("task_library", "mediapipe"):
            if "skipped" in checks[library]:
                continue
            ran.append(library)
            assert checks[library]["labels"] == LABELS, library
            scores = [checks[library]["scores"][label] for label in LABELS]
            atol = UINT8_ATOL if precision == "int8" else FLOAT_ATOL
            np.testing.assert_allclose(scores, expected, atol=atol, err_msg=f"{library} {precision}")
        if "skipped" not in checks["android_codegen"]:
            assert checks["android_codegen"]["reads_labels"] and checks["android_codegen"]["normalizes"]
    assert ran, f"neither the Task Library nor MediaPipe is installed for {metadata_python}"


def test_writer_refuses_inconsistent_inputs(assets, metadata_python, tmp_path):
    wrong_labels = tmp_path / "labels.txt"
    wrong_labels.write_text("NORMAL\nCOVID19\n", encoding="utf-8")
    cases = [
        ("labels file lists", assets["raw"]["fp16"], wrong_labels),
        ("already has TFLite metadata", assets["meta"]["fp16"], assets["labels"]),
        ("single-input, single-output", assets["raw"]["cam"], assets["labels"]),
        ("not a TFLite flatbuffer", assets["spec"], assets["labels"]),
    ]
    # One interpreter for all cases (each CLI call would pay the library import again).
    code = (
        "import json, sys\n"
        "from edge_runtime.errors import ModelError\n"
        "from export.metadata import write_metadata\n"
        "spec = json.load(open(sys.argv[1]))\n"
        "out = []\n"
        "for model, labels in zip(sys.argv[3::2], sys.argv[4::2]):\n"
        "    try:\n"
        "        kw = dict(author='a', license='l', description='d', version='v')\n"
        "        write_metadata(model, sys.argv[2], spec, labels, **kw)\n"
        "        out.append('written')\n"
        "    except ModelError as err:\n"
        "        out.append(str(err))\n"
        "print(json.dumps(out))\n"
    )
    refused = tmp_path / "refused.tflite"
    args = [str(p) for _, model, labels in cases for p in (model, labels)]
    env = dict(os.environ, PYTHONPATH=str(md.REPO_ROOT))
    proc = subprocess.run(
        [metadata_python, "-c", code, str(assets["spec"]), str(refused), *args],
        cwd=md.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    messages = json.loads(proc.stdout)
    for (expected, _, _), message in zip(cases, messages, strict=True):
        assert expected in message
    assert not refused.exists()
    with pytest.raises(ModelError, match="does not have metadata"):
        md.read_metadata_external(assets["raw"]["int8"], python=metadata_python)


def test_module_imports_no_tensorflow():
    code = (
        "import sys, export.metadata\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, PYTHONPATH=str(md.REPO_ROOT))
    subprocess.run([sys.executable, "-c", code], cwd=md.REPO_ROOT, env=env, check=True, timeout=60)
