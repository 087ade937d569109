"""Keras -> float16 / full-int8 TFLite, one function per artifact, each returning its path."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from edge_runtime.errors import CxrError

logger = logging.getLogger(__name__)

#: Calibration set size bounds: fewer is an error, fewer than the second a warning.
MIN_CALIBRATION = 50
RECOMMENDED_CALIBRATION = 300

#: Quantizable ops at the start of the network that the int8 files leave in float32 by default: none (full
#: integer). ``--float-head 3`` helps the covid models and not the others (training/EXPERIMENTS.md, "int8 with a
#: float head"), so it is a per-model choice, recorded in the parity report and the model card.
FLOAT_HEAD = 0


class ExportError(CxrError):
    """Conversion or its checks failed; the message says what to change."""

    code = "export_error"


def feature_layer_output(model):
    from training.model import FEATURE_LAYER

    try:
        return model.get_layer(FEATURE_LAYER).output
    except ValueError as err:
        raise ExportError(f"model {model.name!r} has no layer named {FEATURE_LAYER!r}; it was not built by "
                          "training.model.build_model") from err


def with_feature_output(model):
    """A model sharing ``model``'s layers that outputs (probabilities, last feature map)."""
    import keras

    return keras.Model(model.inputs, [model.outputs[0], feature_layer_output(model)], name=model.name + "_cam")


def centered_dense(layer, bias: np.ndarray | None = None):
    """A copy of a softmax Dense layer with each row of its kernel (and its bias) minus its mean.

    Softmax is unchanged by adding one number to every logit, so the probabilities are exactly the
    same; but the logits are now centred on zero. In an int8 file the dense output's step is its
    calibrated range / 255: measured on the binary model, raw logits spanned 2.4 .. 39.5 (a large
    offset common to both classes), a step of 0.15 that moved near-ties' probabilities by up to 0.07
    and flipped 1.4% of held-out decisions. The CAM weights in the spec stay the original kernel.

    Args:
        bias: A bias to use instead of the layer's (the int8 files' corrected one, see
            :func:`int8_bias_correction`).
    """
    import keras

    kernel, own_bias = layer.get_weights()
    bias = own_bias if bias is None else np.asarray(bias, dtype=own_bias.dtype)
    copy = keras.layers.Dense(layer.units, activation=layer.activation, name=layer.name)
    copy.build((None, kernel.shape[0]))
    copy.set_weights([kernel - kernel.mean(axis=1, keepdims=True), bias - bias.mean()])
    return copy


def with_float_input(model, center_logits: bool = False, input_dtype: str = "float32",
                     classifier_bias: np.ndarray | None = None):
    """A copy of a linear ``model`` whose input is float32 0..255 instead of uint8.

    Full-integer conversion needs a float input to calibrate; the converter then makes the
    input uint8 with scale 1 and zero point 0 when calibration pixels span 0..255.

    Args:
        center_logits: Replace the softmax classifier by :func:`centered_dense` (same
            probabilities, logits that int8 and float16 represent finely).
        input_dtype: The copy's input dtype (``uint8`` keeps the input and only centres the logits).
        classifier_bias: With ``center_logits``, the classifier's bias to use instead of its own.
    """
    import keras

    from training.model import CLASSIFIER_LAYER

    inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=input_dtype, name="image")
    tensors = {id(model.inputs[0]): inputs}
    outputs = {}
    for layer in model.layers[1:]:
        node_inputs = layer._inbound_nodes[0].input_tensors
        if len(node_inputs) != 1:
            raise ExportError(f"layer {layer.name} has {len(node_inputs)} inputs; only linear models are supported")
        call = centered_dense(layer, classifier_bias) if center_logits and layer.name == CLASSIFIER_LAYER else layer
        result = call(tensors[id(node_inputs[0])])
        tensors[id(layer.output)] = result
        outputs[layer.name] = result
    wanted = [outputs[t._keras_history[0].name] for t in model.outputs]
    return keras.Model(inputs, wanted if len(wanted) > 1 else wanted[0],
                       name=model.name + ("_float_input" if input_dtype == "float32" else "_centered"))


def _representative(calibration: np.ndarray):
    """Calibration generator whose input range is exactly 0..255.

    The first image gets one black and one white corner pixel, so the converter sets the
    uint8 input to scale 1 and zero point 0 and raw pixels are the model's input (what
    Android code and the Task Library feed). Two pixels in hundreds of images leave the
    activation ranges as they were.
    """
    def generate() -> Iterable[list]:
        for index, image in enumerate(calibration):
            image = image.astype(np.float32)
            if index == 0:
                image = image.copy()
                image[0, 0, :] = 0.0
                image[-1, -1, :] = 255.0
            yield [image[None]]

    return generate


def uint8_representative(images: np.ndarray):
    """Calibration generator of raw uint8 images, for a model whose input stays uint8 (cast inside the graph)."""
    return lambda: ([np.asarray(image, np.uint8)[None]] for image in images)


def _converter(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model)


def export_fp16(model, out_path: str | Path) -> Path:
    """Float16 weights, float32 compute; the uint8 input is kept (cast inside the graph)."""
    import tensorflow as tf

    # Centred logits: float16 has 11 significant bits, so raw logits near 40 (measured) lose about
    # 0.03 each, enough to flip near-ties; the centred ones have the same softmax and stay small.
    converter = _converter(with_float_input(model, center_logits=True, input_dtype=model.inputs[0].dtype))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    out_path = Path(out_path)
    out_path.write_bytes(converter.convert())
    return out_path


def export_float32(model, out_path: str | Path) -> Path:
    """Plain float32 conversion (for benchmarks and as a debugging reference)."""
    out_path = Path(out_path)
    out_path.write_bytes(_converter(model).convert())
    return out_path


def export_int8(model, calibration: np.ndarray, out_path: str | Path,
                classifier_bias: np.ndarray | None = None, float_head: int = 0) -> Path:
    """Integer quantization: uint8 input, int8 ops (all, or all but the first ``float_head``), float32 outputs.

    Outputs stay float32 (a final dequantize): an int8 softmax has 1/256 resolution either
    way, and float outputs save Android code a dequantization step.

    Args:
        model: Keras model with uint8 input (a float-input twin is made for calibration).
        calibration: (N, H, W, 3) uint8 images drawn through the evaluation preprocessing.
        out_path: Destination file.
        classifier_bias: The classifier's bias in this file instead of the model's (the
            ``bias`` of :func:`int8_bias_correction`); the kernel, and so the CAM, is unchanged.
        float_head: Leave the first this many quantizable ops (the stem, then the first block's
            depthwise and pointwise layers, ...) in float32: see :func:`export_int8_float_head`.
            0 is full-integer.

    Raises:
        ExportError: too few calibration images, or an input other than raw 0..255 uint8 pixels (full
            integer: scale 1, zero point 0) that Android code feeding raw pixels relies on.
    """
    import tensorflow as tf

    calibration = np.asarray(calibration)
    if len(calibration) < MIN_CALIBRATION:
        raise ExportError(f"int8 calibration needs at least {MIN_CALIBRATION} images, got {len(calibration)}")
    if len(calibration) < RECOMMENDED_CALIBRATION:
        logger.warning("only %d calibration images; %d or more are recommended", len(calibration),
                       RECOMMENDED_CALIBRATION)
    out_path = Path(out_path)
    if float_head:
        out_path.write_bytes(export_int8_float_head(model, calibration, float_head, classifier_bias))
        check_uint8_identity_input(out_path, quantized=False)
        return out_path

    converter = _converter(with_float_input(model, center_logits=True, classifier_bias=classifier_bias))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    out_path.write_bytes(converter.convert())
    check_uint8_identity_input(out_path)
    return out_path


def export_int8_float_head(model, calibration: np.ndarray, ops: int,
                           classifier_bias: np.ndarray | None = None) -> bytes:
    """An int8 file whose first ``ops`` quantizable ops run in float32; the file's bytes.

    Where int8 loses most: the int8 error that reaches the classifier enters at the first layers (the
    160 x 160 input and the 80 x 80 maps of few channels, where one int8 step is a large share of each
    activation): leaving the stem and the first block in float halves the covid models' calibration-side
    logit error and lifted their held-out top-1 agreement with Keras over the gate; on the binary and
    etiology models it moved nothing one can tell from noise, or lowered it (training/EXPERIMENTS.md, "int8
    with a float head"). Those layers hold under 1% of the weights, so the file stays the same size; the rest
    of the network stays int8. The input stays raw
    uint8 pixels (cast to float inside the graph), the outputs float32. Made with TFLite's quantization
    debugger, whose deny list keeps named ops out of quantization.
    """
    import tensorflow as tf

    converter = _converter(with_float_input(model, center_logits=True, input_dtype="uint8",
                                            classifier_bias=classifier_bias))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = uint8_representative(calibration)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                         debug_dataset=uint8_representative(calibration[:2]))
    debugger.run()
    quantized = [row["tensor_name"] for row in _layer_statistics(debugger)]  # one per quantized op, in graph order
    if ops >= len(quantized):
        raise ExportError(f"float_head={ops} would leave every one of the {len(quantized)} quantized ops in float")
    logger.info("int8 with its first %d ops in float: %s", ops, ", ".join(_layer_name(t) for t in quantized[:ops]))
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=quantized[:ops])
    return debugger.get_nondebug_quantized_model()


def run_unbound(path: str | Path, images: np.ndarray, num_threads: int = 2) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, dequantized feature maps or None) of a .tflite file over (N, H, W, 3) uint8 images.

    For files still being made (no spec bound to them yet); shipped files go through the edge runtime's
    ``Classifier`` (``export.parity.run_tflite``), which checks their spec.
    """
    from edge_runtime.classifier import _dequantize
    from edge_runtime.interpreter import make_interpreter

    interpreter, _ = make_interpreter(str(path), num_threads)
    index = interpreter.get_input_details()[0]["index"]
    details = interpreter.get_output_details()
    probs_out = next(d for d in details if len(d["shape"]) == 2)
    maps_out = next((d for d in details if len(d["shape"]) == 4), None)
    probs, maps = [], []
    for image in images:
        interpreter.set_tensor(index, np.asarray(image, np.uint8)[None])
        interpreter.invoke()
        probs.append(_dequantize(interpreter.get_tensor(probs_out["index"]), probs_out)[0])
        if maps_out is not None:
            maps.append(_dequantize(interpreter.get_tensor(maps_out["index"]), maps_out)[0])
    return np.stack(probs), (np.stack(maps) if maps else None)


def classifier_bias_correction(int8_maps: np.ndarray, float_maps: np.ndarray, kernel: np.ndarray,
                               bias: np.ndarray) -> dict:
    """The classifier bias that cancels the mean int8 error of the pooled features.

    The classifier is linear over the globally average-pooled feature map, so a mean error ``delta``
    of the pooled features becomes a mean logit error ``delta @ kernel``, the same for every image;
    subtracting it from the bias removes it (empirical bias correction, Nagel et al. 2019, applied at
    the classifier). The random part of the error stays.

    Returns:
        ``bias`` (the corrected bias), ``logit_shift`` (centred: what the correction adds to each
        class's logit), ``logit_error_std`` (per class, centred: the random part it leaves),
        ``pooled_error_mean_abs`` and ``pooled_error_std`` (means over channels), and ``images``.
    """
    error = np.asarray(int8_maps, np.float64).mean(axis=(1, 2)) - np.asarray(float_maps, np.float64).mean(axis=(1, 2))
    delta = error.mean(axis=0)
    shift = -(delta @ np.asarray(kernel, np.float64))
    logit_error = error @ np.asarray(kernel, np.float64)
    logit_error -= logit_error.mean(axis=1, keepdims=True)  # softmax sees only differences between classes
    return {"bias": np.asarray(bias, np.float64) + shift, "logit_shift": (shift - shift.mean()).tolist(),
            "logit_error_std": logit_error.std(axis=0).tolist(),
            "pooled_error_mean_abs": float(np.abs(delta).mean()), "pooled_error_std": float(error.std(axis=0).mean()),
            "images": int(len(error))}


def int8_bias_correction(model, calibration: np.ndarray, workdir: str | Path, float_head: int = 0) -> dict:
    """Measure the int8 trunk's mean error on the calibration images and return the corrected classifier bias.

    Converts the model with its feature-map output to int8 as :func:`export_int8` does (into
    ``workdir``), runs ``calibration`` through it and through Keras, and hands both feature maps to
    :func:`classifier_bias_correction`. What it changes on the shipped models' held-out films is in
    ``training/EXPERIMENTS.md`` ("int8 bias correction"; ``training/experiments/int8_bias_check.py``).
    """
    from training.model import CLASSIFIER_LAYER

    cam_model = with_feature_output(model)
    path = export_int8(cam_model, calibration, Path(workdir) / "bias-correction_int8_cam.tflite",
                       float_head=float_head)
    int8_maps = run_unbound(path, calibration)[1]
    path.unlink()
    float_maps = np.concatenate([np.asarray(cam_model.predict(calibration[i:i + 64], verbose=0)[1])
                                 for i in range(0, len(calibration), 64)])
    kernel, bias = model.get_layer(CLASSIFIER_LAYER).get_weights()
    return classifier_bias_correction(int8_maps, float_maps, kernel, bias)


def check_uint8_identity_input(path: str | Path, quantized: bool = True) -> None:
    """Raise ExportError unless the model's input is raw uint8 pixels: quantized with scale 1 and zero point 0
    (full integer), or, with ``quantized=False``, not quantized at all (a graph that casts it to float, as the
    float-head int8 files)."""
    from edge_runtime.interpreter import make_interpreter

    interpreter, _ = make_interpreter(str(path))
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    raw = (abs(scale - 1.0) <= 1e-6 if quantized else scale == 0.0) and zero_point == 0
    if detail["dtype"] != np.uint8 or not raw:
        wanted = "scale 1, zero point 0" if quantized else "no quantization (cast to float inside the graph)"
        raise ExportError(
            f"{path}: input is {detail['dtype'].__name__} with scale {scale} and zero point {zero_point}; "
            f"raw 0..255 pixels need uint8 with {wanted}. The calibration images must span 0..255")


def _layer_name(tensor_name: str) -> str:
    """``cxr_net_float_input_1/block3_pw_relu_1/Relu6;...`` -> ``block3_pw_relu``: the Keras layer of a fused tensor."""
    first = tensor_name.split(";")[0].split("/")
    name = first[1] if len(first) > 1 else first[0]
    return name[:-2] if name.endswith("_1") else name


def quantization_debug(model, calibration: np.ndarray, top: int = 5) -> list[dict]:
    """Per-layer int8 error from TFLite's quantization debugger, worst first.

    Returns:
        Dicts with the tensor name, op, RMSE divided by the quantization scale, and mean error.
    """
    import tensorflow as tf

    converter = _converter(with_float_input(model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                         debug_dataset=_representative(calibration))
    debugger.run()
    rows = []
    for stats in _layer_statistics(debugger):
        scale = float(stats.get("scale") or "nan")
        rmse = float(np.sqrt(float(stats["mean_squared_error"])))
        rows.append({"tensor": _layer_name(stats["tensor_name"]), "op": stats.get("op_name", ""),
                     "rmse/scale": rmse / scale if scale > 0 else float("nan"),
                     "mean_error": float(stats.get("mean_error") or "nan")})
    rows.sort(key=lambda r: -np.nan_to_num(r["rmse/scale"], nan=-1.0))
    return rows[:top]


def _layer_statistics(debugger) -> list[dict]:
    """A run quantization debugger's per-tensor rows, in graph order (the CSV dump carries each tensor's scale;
    ``layer_statistics`` does not)."""
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    return list(csv.DictReader(dump))
