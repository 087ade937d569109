"""Published designs this package replaces, untrained, as speed and size peers; conversions cached on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from edge_runtime.spec import ModelSpec

logger = logging.getLogger(__name__)

#: Bump when a builder changes, so cached conversions of the old architecture are not reused.
BUILDER_VERSION = 1
#: int8 calibration of the peers: they are untrained, so real X-rays would not make their
#: activation ranges any more meaningful; seeded uniform noise keeps the cache key data-free.
CALIBRATION_IMAGES = 64
CALIBRATION_KIND = f"{CALIBRATION_IMAGES} seeded uniform-random 0..255 images (peers are untrained)"


@dataclasses.dataclass(frozen=True)
class Peer:
    """One peer architecture."""

    name: str
    title: str
    input_size: int
    source: str  # what published design it stands for
    reference_only: bool = False  # a Pi-projection reference, not a design we replace


PEERS: dict[str, Peer] = {
    "vgg16_224": Peer(
        "vgg16_224", "VGG16 base + Flatten + Dense(128) + Dense(2)", 224,
        "transfer-learning design (VGG16 base with a dense head), reported at 88.6% test accuracy"),
    "cbp3_224": Peer(
        "cbp3_224", "3 x (Conv3x3-BN-MaxPool) 32/64/128 + Dense(128) + Dense(2)", 224,
        "three Conv-BN-Pool blocks + Dense(128) at 224x224 (~11M parameters)"),
    "cnn2_150": Peer(
        "cnn2_150", "2 x (Conv3x3-MaxPool) 32/64 + Dense(128) + Dense(2)", 150,
        "two-conv CNN + Dense(128) at 150x150"),
}

#: Reference network for the Raspberry Pi projection (see :mod:`benchmarks.projection`).
REFERENCE = Peer("mobilenet_v2_224", "MobileNet v2 1.0, 224x224, 1000 classes, float32", 224,
                 "XNNPACK's published Raspberry Pi 4 benchmark model", reference_only=True)

#: The peer used by ``--quick`` (the smallest).
SMALLEST = "cnn2_150"


def build_peer(name: str):
    """Build a peer Keras model with random weights (seeded; nothing is downloaded).

    Every peer takes uint8 0..255 pixels and scales them inside the graph, like our model, so
    that all candidates are timed on the same input path.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    if name == REFERENCE.name:
        return keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
    peer = PEERS[name]
    size = peer.input_size
    inputs = keras.Input(shape=(size, size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    if name == "vgg16_224":
        base = keras.applications.VGG16(weights=None, include_top=False, input_tensor=x)
        x = base.output
    elif name == "cbp3_224":
        for index, filters in enumerate((32, 64, 128)):
            x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{index}")(x)
            x = layers.BatchNormalization(name=f"bn{index}")(x)
            x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    elif name == "cnn2_150":
        for index, filters in enumerate((32, 64)):
            x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{index}")(x)
            x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    else:
        raise KeyError(f"unknown peer {name!r}; choose one of {sorted(PEERS)}")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense128")(x)
    outputs = layers.Dense(2, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def _spec_for(peer: Peer) -> ModelSpec:
    if peer.reference_only:
        labels = tuple(f"class{i}" for i in range(1000))
        return ModelSpec(name=peer.name, task="reference", labels=labels, negative_label="class0",
                         input_height=peer.input_size, input_width=peer.input_size, input_dtype="float32")
    return ModelSpec(name=peer.name, task="binary", labels=("NORMAL", "PNEUMONIA"),
                     input_height=peer.input_size, input_width=peer.input_size)


def cache_key(peer: Peer) -> str:
    """Key of a peer's cached files: architecture, builder version, converter version, calibration."""
    import tensorflow as tf

    payload = json.dumps({"peer": dataclasses.asdict(peer), "builder": BUILDER_VERSION,
                          "tensorflow": tf.__version__, "calibration": CALIBRATION_KIND}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def prepare_peer(name: str, cache_dir: Path, int8: bool = True) -> dict:
    """Build a peer and convert it to float32 (and int8) TFLite, or reuse the cached files.

    Returns:
        Dict with ``keras``, ``tflite_f32``, ``tflite_int8`` (paths or None), ``spec`` path,
        ``params``, ``input_size``, the conversion seconds and whether the cache was used.
    """
    from export.convert import export_float32, export_int8

    peer = REFERENCE if name == REFERENCE.name else PEERS[name]
    folder = Path(cache_dir) / "peers" / f"{peer.name}-{cache_key(peer)}"
    info_path = folder / "info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if all(Path(info[k]).exists() for k in ("keras", "tflite_f32", "spec")) and (
                not int8 or (info.get("tflite_int8") and Path(info["tflite_int8"]).exists())):
            info["cached"] = True
            return info
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = build_peer(name)
    model.save(folder / "model.keras")
    spec_path = _spec_for(peer).save(folder / "spec.json")
    export_float32(model, folder / "float32.tflite")
    f32_seconds = time.perf_counter() - started
    int8_path, int8_seconds = None, 0.0
    if int8 and not peer.reference_only:
        mark = time.perf_counter()
        rng = np.random.default_rng(0)
        calibration = rng.integers(0, 256, (CALIBRATION_IMAGES, peer.input_size, peer.input_size, 3), dtype=np.uint8)
        # Pixel extremes present, so the converter picks the identity input quantization.
        calibration[0] = 0
        calibration[1] = 255
        int8_path = str(export_int8(model, calibration, folder / "int8.tflite"))
        int8_seconds = time.perf_counter() - mark
    info = {
        "name": peer.name, "title": peer.title, "source": peer.source, "input_size": peer.input_size,
        "params": int(model.count_params()), "keras": str(folder / "model.keras"),
        "tflite_f32": str(folder / "float32.tflite"), "tflite_int8": int8_path, "spec": str(spec_path),
        "calibration": CALIBRATION_KIND if int8_path else None,
        "build_and_f32_seconds": round(f32_seconds, 1), "int8_conversion_seconds": round(int8_seconds, 1),
        "reference_only": peer.reference_only,
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    info["cached"] = False
    return info


def prepare_ours_float32(keras_path: Path, cache_dir: Path) -> Path:
    """Float32 TFLite of our Keras model (not shipped; a speed reference), cached by the model's sha256."""
    from edge_runtime.spec import sha256_file
    from export.convert import export_float32

    digest = sha256_file(keras_path)[:16]
    out = Path(cache_dir) / "ours" / f"{keras_path.parent.name}-{digest}" / "float32.tflite"
    if out.exists():
        return out
    import keras

    out.parent.mkdir(parents=True, exist_ok=True)
    model = keras.saving.load_model(keras_path, compile=False)
    export_float32(model, out)
    return out
