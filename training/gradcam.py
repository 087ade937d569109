"""Grad-CAM with gradients for the Keras model: the reference the edge runtime's CAM is measured against."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from edge_runtime.cam import normalize_map
from edge_runtime.spec import ModelSpec

from .model import CLASSIFIER_LAYER, FEATURE_LAYER

logger = logging.getLogger(__name__)


def make_gradcam_model(model):
    """A new model mapping the input to the last feature map (the original is not modified)."""
    import keras

    return keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).output, name=model.name + "_features")


def gradcam_heatmaps(model, images: np.ndarray, class_indices: np.ndarray, feature_model=None) -> np.ndarray:
    """Grad-CAM of each image for its class, differentiating the class logit.

    The logit (pre-softmax score) is recomputed from the feature map and the dense layer's
    weights, so no layer's activation has to be switched off in place. For this architecture
    (GAP + one dense layer) the result equals CAM; the gradient path is kept general so that
    the reference does not assume what it is meant to check.

    Args:
        model: Keras model built by :func:`training.model.build_model`.
        images: (N, H, W, 3) uint8 inputs.
        class_indices: (N,) class to explain per image.
        feature_model: Optional cached result of :func:`make_gradcam_model`.

    Returns:
        (N, h, w) float32 maps in [0, 1] (all-zero maps stay zero).
    """
    import tensorflow as tf

    feature_model = feature_model or make_gradcam_model(model)
    kernel, bias = model.get_layer(CLASSIFIER_LAYER).get_weights()
    kernel = tf.constant(kernel, tf.float32)
    bias = tf.constant(bias, tf.float32)
    out = []
    for start in range(0, len(images), 64):
        batch = tf.constant(images[start:start + 64])
        classes = tf.constant(np.asarray(class_indices[start:start + 64], dtype=np.int32))
        with tf.GradientTape() as tape:
            features = feature_model(batch, training=False)
            tape.watch(features)
            logits = tf.reduce_mean(features, axis=(1, 2)) @ kernel + bias
            score = tf.reduce_sum(tf.gather(logits, classes, batch_dims=1))
        grads = tape.gradient(score, features)  # each image's score depends only on its own features
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
        out.extend(normalize_map(cam) for cam in cams)
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 1, 1), np.float32)


def main(argv=None) -> int:
    """python -m training gradcam --model M --out DIR IMAGE...: Keras Grad-CAM overlays as PNG."""
    parser = argparse.ArgumentParser(prog="python -m training gradcam",
                                     description="Write Keras Grad-CAM overlays (original | overlay) for images.")
    parser.add_argument("images", nargs="+", type=Path, help="image files (any format the runtime reads)")
    parser.add_argument("--model", type=Path, required=True, help="model.keras with spec.json beside it")
    parser.add_argument("--out", type=Path, required=True, help="output folder for PNG files")
    parser.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity 0..1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import keras

    from edge_runtime.render import encode_png, fit_within, overlay_heatmap, side_by_side
    from edge_runtime.errors import CxrError
    from edge_runtime.imaging import load_image, prepare_input

    spec = ModelSpec.load(args.model.parent / "spec.json")
    model = keras.saving.load_model(args.model, compile=False)
    feature_model = make_gradcam_model(model)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in args.images:
        try:
            rgb = load_image(path)
        except CxrError as err:
            logger.error("%s", err)
            failed += 1
            continue
        x = prepare_input(rgb, spec)[None]
        probs = np.asarray(model(x, training=False))[0]
        cls = int(probs.argmax())
        cam = gradcam_heatmaps(model, x, np.array([cls]), feature_model)[0]
        shown = fit_within(rgb, 512)
        (args.out / f"{path.stem}_gradcam.png").write_bytes(
            encode_png(side_by_side(shown, overlay_heatmap(shown, cam, args.alpha))))
        print(f"{path}: {spec.labels[cls]} {probs[cls]:.3f} -> {args.out / (path.stem + '_gradcam.png')}")
    return 1 if failed else 0
