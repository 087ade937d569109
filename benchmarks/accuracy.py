"""Accuracy and heatmap parity of the Keras model and its float16 / int8 TFLite files for one task."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from edge_runtime.classifier import screening_score
from edge_runtime.spec import ModelSpec

from .heatmaps import compare_maps

logger = logging.getLogger(__name__)

#: Exported variants, in report order: (key, file suffix).
VARIANTS = (("fp16", "_fp16.tflite"), ("int8", "_int8.tflite"),
            ("fp16_cam", "_fp16_cam.tflite"), ("int8_cam", "_int8_cam.tflite"))


@dataclasses.dataclass
class TaskModels:
    """Where one task's Keras model, shipped spec and exported files live."""

    task: str
    name: str
    spec_path: Path
    train_dir: Path
    files: dict  # variant -> Path (existing files only)

    @property
    def keras_path(self) -> Path:
        return self.train_dir / "model.keras"


def locate(task: str, assets: Path, input_size: int) -> TaskModels:
    """Find a task's model files under ``assets`` (the ``android_assets`` layout).

    Raises:
        FileNotFoundError: the shipped spec, the Keras model or every exported file is missing.
    """
    name = f"cxr_{task}_{input_size}"
    spec_path = assets / f"{name}.spec.json"
    train_dir = assets / "training" / name
    missing = [str(p) for p in (spec_path, train_dir / "model.keras") if not p.exists()]
    files = {key: assets / f"{name}{suffix}" for key, suffix in VARIANTS if (assets / f"{name}{suffix}").exists()}
    if missing or not files:
        raise FileNotFoundError(
            f"task {task!r}: missing {missing or 'every exported .tflite file'} under {assets}; train and export "
            f"it first (python -m training train --task {task}; python -m export --model {train_dir / 'model.keras'})")
    return TaskModels(task, name, spec_path, train_dir, files)


def load_eval_data(models: TaskModels, spec: ModelSpec, data: Path | None, shared_data: Path,
                   cache_dir: Path | None, progress: bool):
    """(inputs (N, H, W, 3) uint8, labels (N,), description) of the evaluation images.

    Without ``data``: the validation side of the model's own saved split. With it: every image
    of that labelled folder (one subfolder per class, or the task's own layout).

    Returns:
        (inputs, labels, description, skipped count, dataset, indices into the dataset).
    """
    from training.data import TASKS, load_dataset, load_split
    from training.evaluate import task_for_folder
    from training.train import portable_path

    if data is not None:
        dataset = load_dataset(data, task_for_folder(spec, Path(data)), spec, cache_dir=cache_dir, progress=progress)
        indices = np.arange(len(dataset.samples))
        description = f"every image of {data} ({len(indices)} images"
    else:
        train_spec = ModelSpec.load(models.train_dir / "spec.json")
        task = TASKS[spec.task]
        root = Path(train_spec.training.get("data") or shared_data / task.default_data)
        if not root.is_absolute() and not root.exists():
            # Recorded relative to the checkout the training ran from.
            root = Path(__file__).resolve().parent.parent / root
        dataset = load_dataset(root, task, spec, cache_dir=cache_dir, progress=progress)
        _, indices = load_split(models.train_dir / "split.json", dataset)
        description = (f"validation side of {portable_path(models.train_dir / 'split.json')} over {portable_path(root)} "
                       f"(grouped by patient and near-duplicate; {len(indices)} images")
    labels = dataset.labels[indices]
    counts = ", ".join(f"{label} {int((labels == i).sum())}" for i, label in enumerate(spec.labels))
    return dataset.rgb(indices), labels, f"{description}: {counts})", len(dataset.skipped), dataset, indices


def lung_localization_report(dataset, indices: np.ndarray, features: np.ndarray, probs: np.ndarray,
                             spec: ModelSpec, mask_root: Path) -> dict:
    """Heatmap of the shown label (edge CAM) against lung masks, per shown label and population."""
    from edge_runtime.cam import compute_cam
    from edge_runtime.classifier import decide
    from training.data import load_masks
    from training.metrics import lung_localization_by_group

    masks, present = load_masks(dataset, mask_root)
    keep = np.nonzero(present[indices])[0]
    if not len(keep):
        return {}
    called = decide(probs[keep], spec.negative_index, spec.threshold)
    weights = np.asarray(spec.cam_weights, dtype=np.float32)
    cams = np.stack([compute_cam(features[k], weights, int(c)) for k, c in zip(keep, called)])
    pops = np.array([dataset.samples[indices[k]].population for k in keep])
    groups = lung_localization_by_group(cams, masks[indices[keep]], called, pops, spec.labels)
    return {f"{label}|{pop}": stats for (label, pop), stats in groups.items()}


def evaluate_task(models: TaskModels, data: Path | None, shared_data: Path, cache_dir: Path | None,
                  n_boot: int, cam_images: int, threads: int, seed: int, progress: bool) -> dict:
    """Every accuracy and heatmap parity number of one task, plus the arrays the plots need.

    Returns:
        ``{"report": JSON-ready dict, "plot": arrays for figures}``.
    """
    import keras

    from edge_runtime.cam import compute_cam
    from export.parity import compare, run_tflite
    from training.gradcam import gradcam_heatmaps
    from training.metrics import evaluate_predictions
    from training.report import population_breakdown
    from training.train import default_mask_root, predict_probs

    spec = ModelSpec.load(models.spec_path)
    inputs, labels, description, skipped, dataset, indices = load_eval_data(models, spec, data, shared_data,
                                                                            cache_dir, progress)
    model = keras.saving.load_model(models.keras_path, compile=False)
    probs = {"keras": predict_probs(model, inputs[..., 0])}
    features = {}
    variants = list(models.files.items())
    if progress:
        from tqdm import tqdm

        variants = tqdm(variants, desc=f"{models.task}: TFLite inference", unit="file", leave=False)
    for key, path in variants:
        probs[key], feats = run_tflite(path, inputs, spec_path=models.spec_path, num_threads=threads)
        if feats is not None:
            features[key] = feats
    metrics = {key: evaluate_predictions(labels, p, spec, n_boot=n_boot, seed=seed) for key, p in probs.items()}
    parity = {key: compare(probs["keras"], p, labels, spec) for key, p in probs.items() if key != "keras"}
    for key, stats in parity.items():
        stats["auc_delta_abs"] = abs(stats["auc_delta"])

    heatmap = {}
    cam_plot = None
    if features:
        count = min(cam_images, len(inputs))
        cam_idx = np.unique(np.linspace(0, len(inputs) - 1, count).round().astype(int))
        classes = probs["keras"][cam_idx].argmax(axis=1)
        reference = gradcam_heatmaps(model, inputs[cam_idx], classes)
        weights = np.asarray(spec.cam_weights, dtype=np.float32)
        edge_maps = {}
        for key, feats in features.items():
            edge_maps[key] = np.stack([compute_cam(feats[i], weights, int(c)) for i, c in zip(cam_idx, classes)])
            heatmap[key] = compare_maps(reference, edge_maps[key])
            heatmap[key]["class_explained"] = "the Keras model's argmax class (same class for both maps)"
        cam_plot = {"indices": cam_idx, "classes": classes, "reference": reference, "edge": edge_maps}

    localization = {}
    if "int8_cam" in features:
        localization = lung_localization_report(dataset, indices, features["int8_cam"], probs["int8_cam"], spec,
                                                default_mask_root(dataset.root))
    by_population = {key: population_breakdown(dataset, indices, probs[key], spec, seed=seed, n_boot=n_boot)
                     for key in ("keras", "int8") if key in probs}
    neg = spec.negative_index
    positive = (labels != neg).astype(int)
    report = {
        "model": models.name,
        "task": models.task,
        # From the spec (version 2 on); older specs carry none, and the report then shows the task name alone.
        "title": spec.title or None,
        "description": spec.description or None,
        "populations": list(spec.populations),
        "labels": list(spec.labels),
        "negative_label": spec.negative_label,
        "threshold": float(spec.threshold),
        "data": description,
        "skipped_unreadable_files": int(skipped),
        "images": int(len(labels)),
        "files": {key: path.name for key, path in models.files.items()},
        "metrics": metrics,
        "parity_vs_keras": parity,
        "heatmap_parity": heatmap,
        "by_population": by_population,
        "lung_localization": localization,
    }
    plot = {
        "spec": spec, "labels": labels, "inputs": inputs, "cam": cam_plot,
        "roc": {key: (positive, screening_score(p, neg)) for key, p in probs.items() if "cam" not in key},
        "confusion": {key: metrics[key]["screening"]["at_threshold"]["confusion_matrix"]
                      for key in probs if "cam" not in key},
    }
    return {"report": report, "plot": plot}
