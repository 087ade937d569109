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

from edge_runtime.classifier import screening_score
from edge_runtime.spec import ModelSpec

from .augment import PRESETS, augment_batch, augment_config, mixup, swap_context
from .data import (INPUT_SIZE, TASKS, DataError, Source, Task, check_no_leak, load_dataset, load_masks,
                   load_split_sides, save_split, split_halves, split_indices)

# TensorFlow/Keras (through .model), scikit-learn (.metrics) and matplotlib (.report) load inside the
# functions that need them, so that --help and the helpers export and the benchmarks use stay light.

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@dataclasses.dataclass
class TrainConfig:
    """Every knob of a training run; saved as ``config.json`` beside the outputs."""

    task: str = "binary"
    data: str = ""
    out: str = ""
    input_size: int = INPUT_SIZE
    width: float = 1.0
    extra_blocks: int = 0  # blocks of training.model.EXTRA_BLOCK after the default ones (depth at the last grid)
    epochs: int = 24
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.3
    bn_momentum: float = 0.99
    label_smoothing: float = 0.05
    patience: int = 8
    val_fraction: float = 0.2
    seed: int = 0
    min_sensitivity: float = 0.95
    augment: bool = True
    crop_augment: float | None = None  # share of images also cropped and stretched back (None: the preset's)
    context_swap: float = 0.0  # share of masked adult films whose lungs go in another adult film's surroundings
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha) blend of each film with another of its batch (0: off)
    teacher: str | None = None  # a model.keras of the same task whose outputs join the targets (distillation)
    distill: float = 0.5  # with a teacher: its share of each target distribution (the label keeps the rest)
    augment_preset: str = "default"  # training.augment.PRESETS
    balance: str = "population"  # population: equal share per (class, population); class; none
    class_weighting: bool = True  # only with balance="none"
    epoch_size: int = 6000  # images drawn per epoch (0: the size of the training side)
    masks: str | None = None  # lung-mask root (default: <data>/lung_masks when present; "none": off)
    cam_penalty: float = 0.5  # weight of the heatmap-outside-the-lungs penalty (images with a mask)
    ema: float = 0.998  # exponential moving average of the weights, evaluated and shipped (0: off)
    qat_epochs: int = 0  # quantization-aware fine-tuning epochs after the main fit (int8 rounding simulated)
    qat_learning_rate: float = 2e-4  # peak learning rate of that fine-tuning
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


def portable_path(path: str | os.PathLike | None) -> str | None:
    """``path`` relative to the repository (e.g. ``../shared/data``), so records name no machine."""
    if not path:
        return None
    try:
        return os.path.relpath(Path(path).resolve(), REPO_ROOT)
    except ValueError:  # another drive on Windows
        return str(path)


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
    axes[0].plot(epochs, history["loss"], label="train (augmented)")
    axes[0].plot(epochs, history["val_loss"], label="validation")
    if "cam_outside" in history:
        axes[0].plot(epochs, history["cam_outside"], label="heatmap outside lungs (train)")
    axes[0].set_title("loss")
    axes[1].plot(epochs, history["accuracy"], label="train (augmented)")
    axes[1].plot(epochs, history["val_accuracy"], label="validation")
    axes[1].set_title("accuracy (argmax)")
    axes[2].plot(epochs, history["val_auc"], label="checkpoint metric")
    for key in sorted(k for k in history if k.startswith("val_auc_")):
        axes[2].plot(epochs, history[key], label=key[8:], alpha=0.7)
    axes[2].set_title("validation screening AUC")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def default_mask_root(data: str | os.PathLike) -> Path | None:
    """Where the lung masks of ``data`` live: ``<root>/lung_masks/<data below root>`` for the data folder
    or any of its parents (the shared data layout: ``lung_masks/chest_xray/train/NORMAL/<name>.png``)."""
    data = Path(data).resolve()
    for root in (data, *data.parents):
        candidate = root / "lung_masks" / data.relative_to(root)
        if candidate.is_dir():
            return candidate
    return None


def sampling_weights(dataset, indices: np.ndarray, balance: str) -> np.ndarray | None:
    """Per-sample draw probabilities over ``indices``.

    ``population``: every (class, population) pair gets an equal share of each epoch (children's
    and adults' normals and pneumonias alike), images within a pair uniformly; ``class``: equal
    share per class; ``none``: None (a plain shuffle).
    """
    if balance == "none":
        return None
    if balance not in ("population", "class"):
        raise DataError(f"balance must be population, class or none, got {balance!r}")
    keys = [(dataset.samples[i].label, dataset.samples[i].population if balance == "population" else "")
            for i in indices]
    counts: dict = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    weights = np.array([1.0 / counts[key] for key in keys])
    return weights / weights.sum()


def screening_auc_by_population(dataset, indices: np.ndarray, probs: np.ndarray, neg: int) -> dict:
    """Screening ROC AUC of each population (and ``all``) that has both classes."""
    from sklearn.metrics import roc_auc_score

    positive = (dataset.labels[indices] != neg).astype(int)
    score = screening_score(probs, neg)
    pops = np.array([dataset.samples[i].population for i in indices])
    out = {}
    for pop in sorted(set(pops.tolist())) + ["all"]:
        sel = np.ones(len(indices), bool) if pop == "all" else pops == pop
        if positive[sel].min() != positive[sel].max():
            out[pop] = float(roc_auc_score(positive[sel], score[sel]))
    return out


def checkpoint_metric(dataset, indices: np.ndarray, probs: np.ndarray, neg: int, num_labels: int) -> tuple[float, dict]:
    """Mean screening AUC over populations (each population counts alike); multi-class tasks average
    it with the macro one-vs-rest AUC."""
    from sklearn.metrics import roc_auc_score

    aucs = screening_auc_by_population(dataset, indices, probs, neg)
    per_pop = [v for k, v in aucs.items() if k != "all"]
    metric = float(np.mean(per_pop)) if per_pop else aucs["all"]
    if num_labels > 2:
        metric = 0.5 * metric + 0.5 * float(roc_auc_score(dataset.labels[indices], probs, multi_class="ovr"))
    return metric, aucs


class _Trainer:
    """The training loop: balanced sampling, shift augmentation, the lung-heatmap penalty, EMA weights."""

    def __init__(self, model, config: TrainConfig, dataset, masks: np.ndarray, has_mask: np.ndarray,
                 num_classes: int, class_weight: np.ndarray | None):
        import keras
        import tensorflow as tf

        from .model import CLASSIFIER_LAYER, FEATURE_LAYER

        self.model, self.config = model, config
        self.num_classes = num_classes
        self.images, self.masks = dataset.images, masks
        self.has_mask = has_mask.astype(np.float32)
        self.labels = dataset.labels.astype(np.int32)
        self.class_weight = tf.constant(class_weight if class_weight is not None else np.ones(num_classes),
                                        tf.float32)
        self.rng = np.random.default_rng(config.seed + 7)
        self.train_model = keras.Model(model.inputs, [model.output, model.get_layer(FEATURE_LAYER).output])
        self.kernel = model.get_layer(CLASSIFIER_LAYER).kernel
        self.ema = [tf.Variable(w, trainable=False) for w in model.weights] if config.ema else None
        self.step_count = tf.Variable(0.0, trainable=False)
        self.augment = augment_batch if config.augment else None
        self.augment_config = augment_config(config.augment_preset, config.crop_augment)
        self.donors = None  # set by make_trainer when config.context_swap: the masked adult training films
        self.teacher = None  # set by make_trainer when config.teacher: a frozen model of the same task
        self.loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing,
                                                            reduction=None)
        self.optimizer = None
        self._step = tf.function(self._train_step, reduce_retracing=True)

    def compile(self, steps_total: int, steps_warmup: int) -> None:
        import keras

        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=self.config.learning_rate * 0.1, decay_steps=max(1, steps_total),
            warmup_target=self.config.learning_rate, warmup_steps=steps_warmup, alpha=0.02)
        self.optimizer = keras.optimizers.Adam(schedule)

    def _batch(self, idx: np.ndarray):
        x, m = self.images[idx], self.masks[idx]
        if self.donors is not None:
            x = self._swap_context(idx, x)
        if self.augment is not None:
            x, m = self.augment(x, m, self.rng, self.augment_config)
        m, y, has = m.astype(np.float32), np.eye(self.num_classes, dtype=np.float32)[self.labels[idx]], self.has_mask[idx]
        if self.config.mixup:
            x, m, y, has = mixup(x, m, y, has, self.rng, self.config.mixup)
        return x, m, y, has

    def _swap_context(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``config.context_swap`` of the batch's donor-pool films: their lungs in a random donor's surroundings."""
        chosen = [k for k, i in enumerate(idx) if self.is_donor[i] and self.rng.random() < self.config.context_swap]
        if not chosen:
            return x
        donors = np.array([self.rng.choice(self.donors) for _ in chosen])  # one draw each, as the A7 runs drew
        x = x.copy()
        x[chosen] = swap_context(x[chosen], self.masks[idx[chosen]], self.images[donors], self.masks[donors], self.rng)
        return x

    def targets(self, x, y):
        """The cross-entropy's targets for RGB inputs ``x`` and label distributions ``y``: ``y`` itself, or with a
        teacher ``(1 - distill) * y + distill * teacher(x)`` on the same augmented films (soft targets that carry
        what the teacher learnt of near-ties, e.g. bacterial against viral; Hinton et al. 2015, at temperature 1)."""
        if self.teacher is None:
            return y
        w = self.config.distill
        return (1.0 - w) * y + w * self.teacher(x, training=False)

    def _train_step(self, x, m, y, has):
        """One step on planes ``x``, lung masks ``m``, target distributions ``y`` (one-hot unless mixed)."""
        import tensorflow as tf

        x = tf.repeat(x[..., None], 3, axis=-1)
        sample_weight = tf.reduce_sum(y * self.class_weight[None, :], axis=-1)
        target = self.targets(x, y)
        with tf.GradientTape() as tape:
            probs, feats = self.train_model(x, training=True)
            ce = tf.reduce_sum(self.loss_fn(target, probs) * sample_weight) / tf.reduce_sum(sample_weight)
            # Where the true class's evidence sits: a spatial softmax of its CAM (scale-free, so the
            # penalty cannot be met by shrinking the map), against the lung share of each cell.
            cam = tf.einsum("bhwc,ck->bhwk", feats, self.kernel)
            cam = tf.reduce_sum(cam * y[:, None, None, :], axis=-1)
            flat = tf.reshape(cam, [tf.shape(cam)[0], -1])
            tau = tf.stop_gradient(tf.math.reduce_std(flat, axis=1, keepdims=True)) + 1e-3
            attention = tf.nn.softmax(flat / tau, axis=1)
            lung = tf.image.resize(m[..., None], tf.shape(cam)[1:3], method="area")
            lung = tf.reshape(lung, tf.shape(flat))
            outside = tf.reduce_sum(attention * (1.0 - lung), axis=1)
            cam_outside = tf.reduce_sum(outside * has) / tf.maximum(tf.reduce_sum(has), 1.0)
            reg = tf.add_n(self.model.losses) if self.model.losses else 0.0
            loss = ce + self.config.cam_penalty * cam_outside + reg
        variables = self.model.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        if self.ema is not None:
            self.step_count.assign_add(1.0)
            decay = tf.minimum(self.config.ema, (1.0 + self.step_count) / (10.0 + self.step_count))
            for e, w in zip(self.ema, self.model.weights):
                e.assign(decay * e + (1.0 - decay) * w)
        correct = tf.reduce_mean(tf.cast(tf.argmax(probs, -1) == tf.argmax(y, -1), tf.float32))
        return ce, cam_outside, correct

    def run_epoch(self, order: np.ndarray) -> dict:
        """One pass over ``order`` in full batches (one traced shape); batches are augmented in a
        thread ahead of the training step."""
        import queue
        import threading

        bs = self.config.batch_size
        starts = list(range(0, len(order) - bs + 1, bs))
        batches: queue.Queue = queue.Queue(maxsize=6)

        def produce():
            for start in starts:
                batches.put(self._batch(order[start:start + bs]))

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        sums = np.zeros(3)
        for _ in starts:
            ce, outside, acc = self._step(*batches.get())
            sums += [float(ce), float(outside), float(acc)]
        producer.join()
        n = max(1, len(starts))
        return {"loss": sums[0] / n, "cam_outside": sums[1] / n, "accuracy": sums[2] / n}

    def swap_in_ema(self) -> list | None:
        """Load the averaged weights into the model; returns the raw ones to restore."""
        if self.ema is None:
            return None
        raw = self.model.get_weights()
        self.model.set_weights([e.numpy() for e in self.ema])
        return raw


def unseen_planes(config: TrainConfig, task: Task, spec: ModelSpec) -> dict:
    """Decoded planes of the task's never-trained-on folders (``Task.unseen_sources``) under the data root."""
    out = {}
    for folder in task.unseen_sources:
        if (Path(config.data) / folder).is_dir():
            probe = Task(task.name, {label: (Source(folder),) for label in task.labels[:1]}, ".")
            probe_set = load_dataset(config.data, probe, spec, cache_dir=config.cache_dir, progress=False)
            out[f"{folder} (never trained on)"] = probe_set.images
    return out


def make_split(config: TrainConfig, dataset) -> dict:
    """The three sides (``train``, ``val`` picks the checkpoint, ``calibration`` the threshold): reused from
    ``config.split`` or drawn grouped and stratified; checked for leaks and saved as ``split.json``."""
    if config.split and Path(config.split).exists():
        sides = load_split_sides(config.split, dataset)
        train_idx, val_idx = sides["train"], sides["val"]
        cal_idx = sides.get("calibration")
        logger.info("reusing split %s", config.split)
    else:
        train_idx, held = split_indices(dataset, config.val_fraction, config.seed)
        val_idx, cal_idx = split_halves(dataset, held, config.seed)
    check_no_leak(dataset, train_idx, val_idx)
    if cal_idx is not None:
        check_no_leak(dataset, train_idx, cal_idx)
        check_no_leak(dataset, val_idx, cal_idx)
    save_split(Path(config.out) / "split.json", dataset, train_idx, val_idx, config.seed, calibration=cal_idx)
    threshold_idx = cal_idx if cal_idx is not None and len(cal_idx) else val_idx
    labels = dataset.labels
    counts = lambda idx: np.bincount(labels[idx], minlength=len(dataset.task.labels)).tolist()  # noqa: E731
    logger.info("train %d images %s, checkpoint side %d %s, threshold side %d %s (grouped by patient and "
                "duplicate)", len(train_idx), counts(train_idx), len(val_idx), counts(val_idx),
                len(threshold_idx), counts(threshold_idx))
    return {"train": train_idx, "val": val_idx, "calibration": cal_idx}


def training_masks(config: TrainConfig, dataset, train_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lung masks of the samples (``config.masks``, by default ``<data>/lung_masks``; ``none``: off)."""
    mask_root = None if (config.masks or "").lower() == "none" else (config.masks or default_mask_root(config.data))
    masks, has_mask = load_masks(dataset, mask_root)
    logger.info("lung masks for %d training images (%s)", int(has_mask[train_idx].sum()),
                mask_root if has_mask.any() else "none found")
    if config.cam_penalty and not has_mask[train_idx].any():
        logger.info("no lung masks: the heatmap penalty is off")
    return masks, has_mask


def load_local_weights(model, path: str | os.PathLike) -> None:
    """Weights from a local ``.weights.h5`` file or a ``model.keras`` of this architecture (copied by layer name,
    so a plain model's weights fill a fake-quant model and back)."""
    import keras

    from .model import copy_weights

    if str(path).endswith(".keras"):
        copy_weights(keras.saving.load_model(path, compile=False), model)
    else:
        model.load_weights(path)


def load_teacher(path: str | os.PathLike, num_classes: int, input_hw: tuple[int, int]):
    """A frozen model.keras whose softmax output has ``num_classes`` entries for (height, width) ``input_hw``.

    Raises:
        DataError: the file is missing, or its input or output does not match the task.
    """
    import keras

    if not Path(path).is_file():
        raise DataError(f"teacher model not found: {path}")
    teacher = keras.models.load_model(path, compile=False)
    if tuple(teacher.output.shape[1:]) != (num_classes,) or tuple(teacher.input.shape[1:3]) != tuple(input_hw):
        raise DataError(f"teacher {path} takes {tuple(teacher.input.shape[1:])} and gives "
                        f"{tuple(teacher.output.shape[1:])}; this run needs ({input_hw[0]}, {input_hw[1]}, 3) -> "
                        f"({num_classes},)")
    teacher.trainable = False
    return teacher


def check_teacher_split(teacher: str | os.PathLike, dataset, sides: dict) -> None:
    """Refuse a teacher that was trained on any film this run holds out (its soft targets would carry those films'
    labels into the student and make the held-out figures optimistic). The teacher's training side is read from the
    ``split.json`` beside it; without one, a warning says the check could not be made.

    Raises:
        DataError: the teacher's training side holds films of this run's checkpoint or threshold side.
    """
    path = Path(teacher).parent / "split.json"
    if not path.is_file():
        logger.warning("no split.json beside the teacher %s: cannot check that it never trained on this run's "
                       "held-out films", teacher)
        return
    taught = set(json.loads(path.read_text(encoding="utf-8")).get("train", ()))
    held = {dataset.samples[i].relpath for side in ("val", "calibration") for i in sides.get(side, ())}
    leaked = sorted(taught & held)
    if leaked:
        raise DataError(f"the teacher {teacher} was trained on {len(leaked)} of this run's held-out films (e.g. "
                        f"{leaked[:2]}): train the student on the teacher's split (--split {path})")


def make_trainer(config: TrainConfig, dataset, spec: ModelSpec, masks: np.ndarray, has_mask: np.ndarray,
                 train_idx: np.ndarray, fake_quant: bool = False) -> "_Trainer":
    """The model (from local weights when given) inside its training loop, compiled for the whole run."""
    from sklearn.utils.class_weight import compute_class_weight

    from .model import build_model

    num_classes = len(spec.labels)
    model = build_model(num_classes, spec.input_size, config.width, config.dropout, config.weight_decay,
                        config.bn_momentum, fake_quant=fake_quant, extra_blocks=config.extra_blocks)
    if config.weights:
        load_local_weights(model, config.weights)
        logger.info("initialised from local weights %s", config.weights)
    class_weight = None
    if config.balance == "none" and config.class_weighting:
        class_weight = compute_class_weight("balanced", classes=np.arange(num_classes),
                                            y=dataset.labels[train_idx])
        logger.info("class weights %s", class_weight.tolist())
    trainer = _Trainer(model, config, dataset, masks, has_mask, num_classes, class_weight)
    if config.teacher:
        if not 0.0 <= config.distill <= 1.0:
            raise DataError(f"--distill is the teacher's share of the targets, between 0 and 1; got {config.distill}")
        trainer.teacher = load_teacher(config.teacher, num_classes, (spec.input_height, spec.input_width))
        logger.info("distilling from %s (its share of the targets %.2f)", config.teacher, config.distill)
    if config.context_swap:
        # Donors: masked training films of the same population (adults only: the children's films share one
        # hospital and one projection, so their surroundings carry no acquisition confounder to break).
        adult = np.array([s.population == "adults" for s in dataset.samples])
        trainer.is_donor = np.zeros(len(adult), bool)
        trainer.is_donor[train_idx] = has_mask[train_idx] & adult[train_idx]
        pool = np.flatnonzero(trainer.is_donor)
        trainer.donors = pool if len(pool) else None
        logger.info("context swap on %.0f%% of %d masked adult training films", 100 * config.context_swap, len(pool))
    steps = max(1, (config.epoch_size or len(train_idx)) // config.batch_size)
    trainer.compile(steps * max(1, config.epochs), steps)
    return trainer


def quantization_aware_fine_tune(model, config: TrainConfig, dataset, spec: ModelSpec, masks: np.ndarray,
                                 has_mask: np.ndarray, sides: dict) -> tuple[dict, int]:
    """``config.qat_epochs`` more epochs with every ReLU6 output rounded to the int8 step (straight-through
    gradient), so that the int8 file's decisions stop depending on the calibration draw; checkpointed on the
    same metric, evaluated under the same rounding. Leaves the chosen weights in ``model`` (the plain one).

    Returns:
        (history of the fine-tuning epochs, its best epoch counted from 1).
    """
    from .model import copy_weights

    qat = dataclasses.replace(config, epochs=config.qat_epochs, patience=config.qat_epochs,
                              learning_rate=config.qat_learning_rate, seed=config.seed + 1000, weights=None)
    trainer = make_trainer(qat, dataset, spec, masks, has_mask, sides["train"], fake_quant=True)
    copy_weights(model, trainer.model)
    if trainer.ema is not None:  # the average starts at the fine-tuning's starting point
        for e, w in zip(trainer.ema, trainer.model.weights):
            e.assign(w)
    history, best_epoch = fit(trainer, qat, dataset, spec, sides["train"], sides["val"])
    copy_weights(trainer.model, model)
    return history, best_epoch


def validation_logs(model, dataset, val_idx: np.ndarray, neg: int) -> tuple[float, dict]:
    """(checkpoint metric, logs) of the model on the checkpoint side: loss, accuracy, screening AUCs."""
    num_labels = len(dataset.task.labels)
    val_labels = dataset.labels[val_idx]
    probs = predict_probs(model, dataset.images[val_idx])
    metric, aucs = checkpoint_metric(dataset, val_idx, probs, neg, num_labels)
    onehot = np.eye(num_labels)[val_labels]
    logs = {"val_loss": float(np.mean(-np.sum(onehot * np.log(np.clip(probs, 1e-7, 1.0)), axis=1))),
            "val_accuracy": float(np.mean(probs.argmax(1) == val_labels)), "val_auc": metric}
    logs.update({f"val_auc_{k}": v for k, v in aucs.items()})
    return metric, logs


def fit(trainer: "_Trainer", config: TrainConfig, dataset, spec: ModelSpec, train_idx: np.ndarray,
        val_idx: np.ndarray) -> tuple[dict, int]:
    """The epoch loop with early stopping on the checkpoint metric; leaves the best weights in the model.

    Returns:
        (history of every logged value per epoch, best epoch counted from 1).
    """
    from tqdm import tqdm

    model = trainer.model
    probabilities = sampling_weights(dataset, train_idx, config.balance)
    epoch_size = config.epoch_size or len(train_idx)
    steps = max(1, epoch_size // config.batch_size)
    rng = np.random.default_rng(config.seed)
    history: dict = {}
    best, best_epoch, best_weights, wait = -1.0, -1, model.get_weights(), 0
    bar = tqdm(range(config.epochs), desc=f"training {spec.name}", unit="epoch", disable=not sys.stderr.isatty())
    for epoch in bar:
        if probabilities is None:
            order = rng.permutation(train_idx)[:epoch_size]
        else:
            order = rng.choice(train_idx, size=steps * config.batch_size, replace=True, p=probabilities)
        logs = trainer.run_epoch(order)
        raw = trainer.swap_in_ema()
        metric, val_logs = validation_logs(model, dataset, val_idx, spec.negative_index)
        logs.update(val_logs)
        if metric > best + 1e-4:
            best, best_epoch, wait = metric, epoch, 0
            best_weights = model.get_weights()
        else:
            wait += 1
        if raw is not None:
            model.set_weights(raw)
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        aucs = " ".join(f"{k[8:]} {v:.4f}" for k, v in val_logs.items() if k.startswith("val_auc_"))
        logger.info("epoch %d loss %.4f cam_outside %.3f val_loss %.4f val_auc %.4f %s (best %.4f at epoch %d)",
                    epoch + 1, logs["loss"], logs["cam_outside"], logs["val_loss"], metric, aucs, best,
                    best_epoch + 1)
        if wait >= config.patience:
            logger.info("early stop: no validation AUC gain for %d epochs", config.patience)
            break
    model.set_weights(best_weights)
    return history, best_epoch + 1


def train(config: TrainConfig) -> dict:
    """Run one training; returns a summary dict. Writes model.keras, spec, split, report, curves."""
    import keras
    import tensorflow as tf

    if config.task not in TASKS:
        raise DataError(f"unknown task {config.task!r}; choose one of {sorted(TASKS)}")
    task = TASKS[config.task]
    if config.threads:
        from .shift import set_threads

        set_threads(config.threads)
    keras.utils.set_random_seed(config.seed)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(name=model_name(task.name, config.input_size), task=task.name, labels=task.labels,
                     input_height=config.input_size, input_width=config.input_size)

    started = time.time()
    dataset = load_dataset(config.data, task, spec, cache_dir=config.cache_dir)
    sides = make_split(config, dataset)
    if config.teacher:
        check_teacher_split(config.teacher, dataset, sides)
    masks, has_mask = training_masks(config, dataset, sides["train"])
    trainer = make_trainer(config, dataset, spec, masks, has_mask, sides["train"])
    fit_started = time.time()
    history, best_epoch = fit(trainer, config, dataset, spec, sides["train"], sides["val"])
    qat_best = None
    if config.qat_epochs:
        qat_history, qat_best = quantization_aware_fine_tune(trainer.model, config, dataset, spec, masks, has_mask,
                                                             sides)
        for key, values in qat_history.items():
            history.setdefault(key, []).extend(values)
    fit_seconds = time.time() - fit_started
    return finish(trainer.model, config, dataset, spec, sides, masks, has_mask, history, best_epoch, fit_seconds,
                  started, qat_best_epoch=qat_best)


def round_to_float16(model) -> None:
    """Round every weight to the nearest float16 value (kept as float32).

    The float16 export is then lossless: its top-1 agreement with the Keras model no longer
    depends on how many films sit within 0.002 of a tie (two did on the binary model, failing
    the 99.9% gate), and every figure reported for the Keras model holds for the float16 file.
    The rounding itself moves probabilities by about 0.001 (measured on the binary model).
    """
    model.set_weights([np.asarray(w).astype(np.float16).astype(np.asarray(w).dtype)
                       if np.issubdtype(np.asarray(w).dtype, np.floating) else w for w in model.get_weights()])


def finish(model, config: TrainConfig, dataset, spec: ModelSpec, sides: dict, masks: np.ndarray,
           has_mask: np.ndarray, history: dict, best_epoch: int, fit_seconds: float, started: float,
           qat_best_epoch: int | None = None) -> dict:
    """After the loop: float16-round the chosen weights, pick the threshold on the calibration side,
    write model.keras, spec.json, the held-out reports, curves and config.json; returns the summary."""
    import keras
    import tensorflow as tf

    from .metrics import choose_threshold
    from .model import FEATURE_LAYER
    from .report import write_validation_reports

    task = TASKS[config.task]
    out = Path(config.out)
    name = spec.name
    labels = dataset.labels
    neg = spec.negative_index
    train_idx, val_idx, cal_idx = sides["train"], sides["val"], sides.get("calibration")
    threshold_idx = cal_idx if cal_idx is not None and len(cal_idx) else val_idx
    val_planes = dataset.images[val_idx]
    round_to_float16(model)

    probs_threshold = predict_probs(model, dataset.images[threshold_idx])
    threshold = choose_threshold(labels[threshold_idx], probs_threshold, neg, config.min_sensitivity)
    side = "calibration side (not used to pick the checkpoint)" if cal_idx is not None else "validation side"
    feature_shape = tuple(int(d) for d in model.get_layer(FEATURE_LAYER).output.shape[1:])
    populations = sorted({s.population for s in dataset.samples} - {"unknown"})
    spec = spec.replace(
        **task.spec_fields(populations),
        threshold=threshold,
        threshold_rule=(f"largest threshold on the screening score (1 - P({spec.negative_label})) with "
                        f"sensitivity >= {config.min_sensitivity:.2f} on the {side}"),
        feature_map_shape=feature_shape,
        training={
            "command": config.command,
            "data": portable_path(config.data),
            "data_description": task.description,
            "populations": populations,
            "sources": sorted({f"{s.source} ({s.population})" for s in dataset.samples}),
            "seed": config.seed,
            "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "train_images": int(len(train_idx)),
            "val_images": int(len(val_idx)),
            "calibration_images": int(len(cal_idx)) if cal_idx is not None else 0,
            "best_epoch": best_epoch,
            "epochs_run": len(history.get("loss", [])),
            **({"qat_epochs": config.qat_epochs, "qat_best_epoch": qat_best_epoch} if config.qat_epochs else {}),
            "fit_seconds": round(fit_seconds, 1),
            "machine": f"{platform.machine()} {os.cpu_count()} CPU, Python {platform.python_version()}, "
                       f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
        },
    )
    model.save(out / "model.keras")
    spec.save(out / "spec.json")
    reports = write_validation_reports(model, dataset, spec, out, {"validation": val_idx, "calibration": cal_idx},
                                       masks, has_mask, seed=config.seed, unseen=unseen_planes(config, task, spec))
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    plot_history(history, out / "curves.png", f"{name} training curves")
    summary = {
        "name": name, "out": portable_path(out), "threshold": threshold,
        "val_auc": reports["validation"]["screening"]["roc_auc"],
        "val_auc_by_population": screening_auc_by_population(dataset, val_idx, predict_probs(model, val_planes), neg),
        "best_epoch": best_epoch, "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.time() - started, 1), "skipped_files": len(dataset.skipped),
    }
    record = dataclasses.asdict(config)
    for key in ("data", "out", "weights", "teacher", "split", "cache_dir", "masks"):
        if record[key] and record[key] != "none":
            record[key] = portable_path(record[key])
    (out / "config.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return summary


def _default_data_help() -> str:
    """Each task's default data root, e.g. ``../shared/data for binary and covid, ...``."""
    roots: dict[str, list[str]] = {}
    for task in TASKS.values():
        roots.setdefault(task.default_data, []).append(task.name)
    return ", ".join(f"../shared/data{'' if root == '.' else '/' + root} for {' and '.join(names)}"
                     for root, names in roots.items())


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m training train",
                                description="Train a chest X-ray classifier from scratch on a folder-per-class data set.")
    p.add_argument("--task", choices=sorted(TASKS), default=d.task,
                   help="; ".join(f"{task.name}: {'/'.join(task.labels)}" for task in TASKS.values()))
    p.add_argument("--data", type=Path, default=None, help=f"data root (default: {_default_data_help()})")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: android_assets/training/cxr_<task>_<size>)")
    p.add_argument("--input-size", type=int, default=d.input_size, help="square input size in pixels")
    p.add_argument("--width", type=float, default=d.width, help="filter-count multiplier")
    p.add_argument("--extra-blocks", type=int, default=d.extra_blocks,
                   help="depth: blocks of 256 filters (times --width) appended at the last, input/16 grid "
                        "(an experiment, training/EXPERIMENTS.md rule 10; not the default)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="peak learning rate (cosine schedule)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 penalty on kernels")
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--bn-momentum", type=float, default=d.bn_momentum,
                   help="batch-norm moving-average momentum (lower it for very short runs)")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without validation AUC gain before stopping")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share held out from training: half picks the checkpoint, half the threshold")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--min-sensitivity", type=float, default=d.min_sensitivity,
                   help="sensitivity the screening threshold must reach on the calibration side")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn the shift augmentation off")
    p.add_argument("--crop-augment", type=float, default=d.crop_augment,
                   help="share of training images also cropped to a window of 65-100%% of each axis and stretched "
                        "back (tighter collimation, another detector aspect; default: the preset's)")
    p.add_argument("--context-swap", type=float, default=d.context_swap,
                   help="share of masked adult training films whose lungs are set in another adult film's "
                        "surroundings, so lines, markers and projection stop predicting the label (an experiment, "
                        "training/EXPERIMENTS.md rules 8-9; not the default)")
    p.add_argument("--mixup", type=float, default=d.mixup,
                   help="mixup alpha: each training film blended with another of its batch, weight ~ Beta(alpha, "
                        "alpha) (the larger share kept by the film), labels and lung masks blended alike (0: off; an "
                        "experiment, training/EXPERIMENTS.md rule 15: not adopted)")
    p.add_argument("--teacher", type=Path, default=None,
                   help="a model.keras of the same task (trained on the same split's training side) whose outputs "
                        "join the targets: distillation, e.g. of an ensemble or a larger model into this one (an "
                        "experiment, training/EXPERIMENTS.md rule 18)")
    p.add_argument("--distill", type=float, default=d.distill,
                   help="with --teacher: the teacher's share of each target distribution (0-1)")
    p.add_argument("--augment-preset", choices=sorted(PRESETS), default=d.augment_preset,
                   help="ranges of the shift augmentation: default, or strong (wider tone curves, margins and "
                        "crops; training/augment.py PRESETS)")
    p.add_argument("--balance", choices=("population", "class", "none"), default=d.balance,
                   help="population: each (class, population) pair gets an equal share of every epoch; "
                        "class: each class; none: a plain shuffle with class weights")
    p.add_argument("--no-class-weighting", dest="class_weighting", action="store_false",
                   help="with --balance none: no class weights in the loss")
    p.add_argument("--epoch-size", type=int, default=d.epoch_size,
                   help="images drawn per epoch (0: the size of the training side)")
    p.add_argument("--masks", default=None,
                   help="lung-mask root mirroring the data layout (default: DATA/lung_masks when present; "
                        "'none' turns the heatmap penalty off)")
    p.add_argument("--cam-penalty", type=float, default=d.cam_penalty,
                   help="weight of the penalty on heatmap evidence outside the lungs (images with a mask)")
    p.add_argument("--ema", type=float, default=d.ema,
                   help="decay of the moving average of the weights that is evaluated and saved (0: off)")
    p.add_argument("--qat-epochs", type=int, default=d.qat_epochs,
                   help="quantization-aware fine-tuning epochs after the main fit: every ReLU6 output rounded to the "
                        "int8 export's step (straight-through gradient); with --epochs 0 and --weights, fine-tunes "
                        "an earlier model")
    p.add_argument("--qat-learning-rate", type=float, default=d.qat_learning_rate,
                   help="peak learning rate of the quantization-aware fine-tuning")
    p.add_argument("--weights", type=Path, default=None,
                   help="local .weights.h5 file, or a model.keras of the same architecture, to start from")
    p.add_argument("--split", type=Path, default=None, help="reuse a saved split.json")
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-image cache (default ~/.cache/cxr-edge)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow and OpenCV threads (0: all cores)")
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
    for key in ("weights", "teacher", "split", "cache_dir"):
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
