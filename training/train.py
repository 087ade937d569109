"""Train a compact chest X-ray classifier from scratch: python -m training train --task binary ..."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.spec import ModelSpec

from .data import TASKS, DataError, check_no_leak, load_dataset, load_split, save_split, split_indices

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@dataclasses.dataclass
class TrainConfig:
    """Every knob of a training run; saved as ``config.json`` beside the outputs."""

    task: str = "binary"
    data: str = ""
    out: str = ""
    input_size: int = 160
    width: float = 1.0
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.3
    bn_momentum: float = 0.99
    label_smoothing: float = 0.05
    patience: int = 7
    val_fraction: float = 0.2
    seed: int = 0
    min_sensitivity: float = 0.95
    augment: bool = True
    class_weighting: bool = True
    weights: str | None = None
    split: str | None = None
    cache_dir: str | None = None
    threads: int = 0
    command: str = "(called from Python, not the command line)"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def model_name(task: str, input_size: int) -> str:
    return f"cxr_{task}_{input_size}"


def make_augmenter(seed: int):
    """X-ray augmentation: small rotations, shifts, zoom, brightness and contrast.

    No horizontal flip: the heart sits on the left and a flipped chest is anatomically wrong
    (dextrocardia is rare), so a flip would teach the model images it never sees.
    """
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomRotation(7.0 / 360.0, fill_mode="constant", fill_value=0.0, seed=seed),
        layers.RandomTranslation(0.06, 0.06, fill_mode="constant", fill_value=0.0, seed=seed + 1),
        layers.RandomZoom((-0.1, 0.1), fill_mode="constant", fill_value=0.0, seed=seed + 2),
        layers.RandomBrightness(0.1, value_range=(0.0, 255.0), seed=seed + 3),
        layers.RandomContrast(0.2, value_range=(0.0, 255.0), seed=seed + 4),
    ], name="augment")


def make_dataset(planes: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int, seed: int,
                 augmenter=None, shuffle: bool = True):
    """tf.data pipeline over cached planes: replicate to 3 channels, augment, back to uint8."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((planes, labels))
    if shuffle:
        ds = ds.shuffle(len(planes), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def to_inputs(x, y):
        x = tf.repeat(x[..., None], 3, axis=-1)
        if augmenter is not None:
            x = augmenter(tf.cast(x, tf.float32), training=True)
            # Round back to uint8: the model sees exactly what a device would feed it.
            x = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
        return x, tf.one_hot(y, num_classes)

    return ds.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict_probs(model, planes: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Keras probabilities for (N, H, W) planes."""
    out = []
    for start in range(0, len(planes), batch_size):
        x = np.repeat(planes[start:start + batch_size, ..., None], 3, axis=-1)
        out.append(np.asarray(model(x, training=False)))
    return np.concatenate(out).astype(np.float64)


def plot_history(history: dict, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, history["loss"], label="train")
    axes[0].plot(epochs, history["val_loss"], label="validation")
    axes[0].set_title("loss")
    axes[1].plot(epochs, history["accuracy"], label="train")
    axes[1].plot(epochs, history["val_accuracy"], label="validation")
    axes[1].set_title("accuracy (argmax)")
    axes[2].plot(epochs, history["val_auc"], label="validation screening AUC")
    axes[2].set_title("validation AUC (checkpoint metric)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(config: TrainConfig) -> dict:
    """Run one training; returns a summary dict. Writes model.keras, spec, split, report, curves."""
    import keras
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score
    from sklearn.utils.class_weight import compute_class_weight

    from .metrics import choose_threshold, evaluate_predictions, positive_score
    from .model import FEATURE_LAYER, build_model
    from .report import write_report

    if config.task not in TASKS:
        raise DataError(f"unknown task {config.task!r}; choose one of {sorted(TASKS)}")
    task = TASKS[config.task]
    if config.threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
    keras.utils.set_random_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    name = model_name(task.name, config.input_size)
    spec = ModelSpec(name=name, task=task.name, labels=task.labels,
                     input_height=config.input_size, input_width=config.input_size)

    started = time.time()
    dataset = load_dataset(config.data, task, spec, cache_dir=config.cache_dir)
    if config.split and Path(config.split).exists():
        train_idx, val_idx = load_split(config.split, dataset)
        logger.info("reusing split %s", config.split)
    else:
        train_idx, val_idx = split_indices(dataset, config.val_fraction, config.seed)
    check_no_leak(dataset, train_idx, val_idx)
    save_split(out / "split.json", dataset, train_idx, val_idx, config.seed)
    labels = dataset.labels
    logger.info("train %d images %s, validation %d images %s (grouped by patient and duplicate)",
                len(train_idx), np.bincount(labels[train_idx], minlength=len(task.labels)).tolist(),
                len(val_idx), np.bincount(labels[val_idx], minlength=len(task.labels)).tolist())

    model = build_model(len(task.labels), spec.input_size, config.width, config.dropout, config.weight_decay,
                        config.bn_momentum)
    if config.weights:
        model.load_weights(config.weights)
        logger.info("initialised from local weights %s", config.weights)
    steps = int(np.ceil(len(train_idx) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * 0.1, decay_steps=steps * config.epochs,
        warmup_target=config.learning_rate, warmup_steps=steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=["accuracy"])

    class_weight = None
    if config.class_weighting:
        weights = compute_class_weight("balanced", classes=np.arange(len(task.labels)), y=labels[train_idx])
        class_weight = {i: float(w) for i, w in enumerate(weights)}
        logger.info("class weights %s", class_weight)

    train_ds = make_dataset(dataset.images[train_idx], labels[train_idx], len(task.labels), config.batch_size,
                            config.seed, make_augmenter(config.seed) if config.augment else None)
    val_ds = make_dataset(dataset.images[val_idx], labels[val_idx], len(task.labels), 128, config.seed,
                          shuffle=False)
    val_planes, val_labels = dataset.images[val_idx], labels[val_idx]
    neg = spec.negative_index
    val_positive = (val_labels != neg).astype(int)

    class ValidationAUC(keras.callbacks.Callback):
        """Screening AUC on validation each epoch; keeps the best weights (checkpoint metric)."""

        def __init__(self):
            super().__init__()
            self.best, self.best_epoch, self.best_weights, self.wait = -1.0, -1, None, 0

        def on_epoch_end(self, epoch, logs=None):
            probs = predict_probs(self.model, val_planes)
            auc = float(roc_auc_score(val_positive, positive_score(probs, neg)))
            if len(task.labels) > 2:
                auc = 0.5 * auc + 0.5 * float(roc_auc_score(val_labels, probs, multi_class="ovr"))
            logs["val_auc"] = auc
            if auc > self.best + 1e-4:
                self.best, self.best_epoch, self.wait = auc, epoch, 0
                self.best_weights = self.model.get_weights()
            else:
                self.wait += 1
                if self.wait >= config.patience:
                    logger.info("early stop: no validation AUC gain for %d epochs", config.patience)
                    self.model.stop_training = True
            logger.info("epoch %d val_auc %.4f (best %.4f at epoch %d)", epoch + 1, auc, self.best,
                        self.best_epoch + 1)

    auc_cb = ValidationAUC()
    fit_started = time.time()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, class_weight=class_weight,
                        callbacks=[auc_cb], verbose=1 if sys.stderr.isatty() else 2)
    fit_seconds = time.time() - fit_started
    model.set_weights(auc_cb.best_weights)

    probs = predict_probs(model, val_planes)
    threshold = choose_threshold(val_labels, probs, neg, config.min_sensitivity)
    feature_shape = tuple(int(d) for d in model.get_layer(FEATURE_LAYER).output.shape[1:])
    spec = spec.replace(
        threshold=threshold,
        threshold_rule=(f"largest threshold on the screening score (1 - P({spec.negative_label})) with validation "
                        f"sensitivity >= {config.min_sensitivity:.2f}"),
        feature_map_shape=feature_shape,
        training={
            "command": config.command,
            "data": config.data,
            "seed": config.seed,
            "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "train_images": int(len(train_idx)),
            "val_images": int(len(val_idx)),
            "best_epoch": auc_cb.best_epoch + 1,
            "epochs_run": len(history.history["loss"]),
            "fit_seconds": round(fit_seconds, 1),
            "machine": f"{platform.machine()} {os.cpu_count()} CPU, Python {platform.python_version()}, "
                       f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
        },
    )
    model.save(out / "model.keras")
    spec.save(out / "spec.json")
    result = evaluate_predictions(val_labels, probs, spec, seed=config.seed)
    result["split"] = "validation: grouped (patient + duplicate), stratified split of the training data"
    write_report(result, out, "validation", f"{name}: validation (grouped split of training data)",
                 val_labels, probs, spec)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    (out / "history.json").write_text(json.dumps(hist, indent=1) + "\n", encoding="utf-8")
    plot_history(hist, out / "curves.png", f"{name} training curves")
    summary = {
        "name": name, "out": str(out), "threshold": threshold, "val_auc": result["screening"]["roc_auc"],
        "best_epoch": auc_cb.best_epoch + 1, "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.time() - started, 1), "skipped_files": len(dataset.skipped),
    }
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")
    return summary


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m training train",
                                description="Train a chest X-ray classifier from scratch on a folder-per-class data set.")
    p.add_argument("--task", choices=sorted(TASKS), default=d.task,
                   help="binary: NORMAL/PNEUMONIA; etiology: NORMAL/BACTERIAL/VIRAL; covid: COVID19/NORMAL/PNEUMONIA")
    p.add_argument("--data", type=Path, default=None,
                   help="data root (default: ../shared/data/chest_xray/train, or ../shared/data for covid)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: android_assets/training/cxr_<task>_<size>)")
    p.add_argument("--input-size", type=int, default=d.input_size, help="square input size in pixels")
    p.add_argument("--width", type=float, default=d.width, help="filter-count multiplier")
    p.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="peak learning rate (cosine schedule)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 penalty on kernels")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--bn-momentum", type=float, default=d.bn_momentum,
                   help="batch-norm moving-average momentum (lower it for very short runs)")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without validation AUC gain before stopping")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--min-sensitivity", type=float, default=d.min_sensitivity,
                   help="validation sensitivity the screening threshold must reach")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--no-class-weighting", dest="class_weighting", action="store_false")
    p.add_argument("--weights", type=Path, default=None, help="local .weights.h5 file to start from")
    p.add_argument("--split", type=Path, default=None, help="reuse a saved split.json")
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-image cache (default ~/.cache/cxr-edge)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    task = TASKS[args.task]
    data = args.data or (DEFAULT_SHARED_DATA / task.default_data)
    out = args.out or (REPO_ROOT / "android_assets" / "training" / model_name(args.task, args.input_size))
    values = {k: v for k, v in vars(args).items()}
    values.update(data=str(data), out=str(out))
    for key in ("weights", "split", "cache_dir"):
        values[key] = str(values[key]) if values[key] else None
    values["command"] = "python -m training train " + shlex.join(argv)
    config = TrainConfig(**values)
    try:
        summary = train(config)
    except DataError as err:
        logger.error("%s", err)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
