"""A compact CNN for chest X-rays, trained from scratch: GAP + one dense softmax for exact CAM."""

from __future__ import annotations

import keras
from keras import layers

from .data import INPUT_SIZE

#: Name of the last feature map; CAM and Grad-CAM read it.
FEATURE_LAYER = "features"
#: Name of the dense softmax layer whose weights turn the feature map into a CAM.
CLASSIFIER_LAYER = "classifier"

#: The int8 step of a ReLU6 output in the exported file at most (TFLite calibrates [0, 6] onto 256 levels).
ACTIVATION_STEP = 6.0 / 255.0


@keras.saving.register_keras_serializable(package="cxr_edge")
class FakeQuant(layers.Layer):
    """Rounds activations to the int8 export's step in the forward pass; the gradient passes straight
    through. Weightless, so a model built with it shares its weights with the plain one layer for layer.
    Used only for quantization-aware fine-tuning (``python -m training train --qat-epochs``)."""

    def __init__(self, step: float = ACTIVATION_STEP, **kwargs):
        super().__init__(**kwargs)
        self.step = float(step)

    def call(self, x):
        quantized = keras.ops.round(x / self.step) * self.step
        return x + keras.ops.stop_gradient(quantized - x)

    def get_config(self):
        return {**super().get_config(), "step": self.step}


#: (filters, stride) of the depthwise-separable blocks after the stem, for width 1.0.
BLOCKS = ((32, 1), (48, 2), (48, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1))

#: (filters, stride) of each block ``extra_blocks`` appends: more depth where the map is smallest (the last
#: stage, input / 16), so the heatmap keeps its grid and the cost stays small.
EXTRA_BLOCK = (256, 1)


def _scaled(filters: int, width: float) -> int:
    return max(8, int(round(filters * width / 8)) * 8)


def build_model(
    num_classes: int,
    input_size: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE),
    width: float = 1.0,
    dropout: float = 0.3,
    weight_decay: float = 1e-4,
    bn_momentum: float = 0.99,
    fake_quant: bool = False,
    extra_blocks: int = 0,
) -> keras.Model:
    """Build the classifier.

    The input is 3-channel uint8 (0..255); scaling to [0, 1] is the first layer, so an
    exported file needs no outside normalisation. Depthwise-separable blocks (as in
    MobileNet) keep it small and fast on a Pi; ReLU6 keeps activations in a range that
    quantizes well. The last block is the feature map named :data:`FEATURE_LAYER`, followed by
    global average pooling and a single dense softmax (:data:`CLASSIFIER_LAYER`), so CAM from
    the feature map and the dense weights equals Grad-CAM exactly.

    Args:
        num_classes: Number of output classes.
        input_size: (height, width) of the input.
        width: Multiplier on every block's filter count.
        dropout: Dropout rate before the classifier.
        weight_decay: L2 penalty on convolution and dense kernels.
        bn_momentum: Batch-normalisation moving-average momentum (lower for very short runs).
        fake_quant: Round every ReLU6 output to the int8 step (:class:`FakeQuant`), for quantization-aware
            fine-tuning; the layer names and weights are those of the plain model.
        extra_blocks: Blocks of :data:`EXTRA_BLOCK` appended after :data:`BLOCKS`, at the same grid.
    """
    reg = keras.regularizers.L2(weight_decay) if weight_decay else None
    inputs = keras.Input(shape=(*input_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = layers.Conv2D(_scaled(16, width), 3, strides=2, padding="same", use_bias=False,
                      kernel_regularizer=reg, name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    x = FakeQuant(name="stem_relu_fq")(x) if fake_quant else x
    blocks = BLOCKS + (EXTRA_BLOCK,) * extra_blocks
    last = len(blocks) - 1
    for index, (filters, stride) in enumerate(blocks):
        prefix = f"block{index}"
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                   name=f"{prefix}_dw")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{prefix}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}_dw_relu")(x)
        x = FakeQuant(name=f"{prefix}_dw_relu_fq")(x) if fake_quant else x
        x = layers.Conv2D(_scaled(filters, width), 1, use_bias=False, kernel_regularizer=reg,
                          name=f"{prefix}_pw")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{prefix}_pw_bn")(x)
        x = layers.ReLU(6.0, name=FEATURE_LAYER if index == last else f"{prefix}_pw_relu")(x)
        x = FakeQuant(name=f"{prefix}_pw_relu_fq")(x) if fake_quant else x
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_regularizer=reg,
                           name=CLASSIFIER_LAYER)(x)
    return keras.Model(inputs, outputs, name="cxr_net")


def copy_weights(source: keras.Model, target: keras.Model) -> keras.Model:
    """Copy weights layer by layer, by name (between a plain and a fake-quant model); returns ``target``."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return target
