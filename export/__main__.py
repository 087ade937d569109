"""python -m export --model <model.keras> --data <folder> --out android_assets/: assets + parity gate."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_runtime.cam import compute_cam
from edge_runtime.errors import CxrError
from edge_runtime.spec import SPEC_SUFFIX, ModelSpec, sha256_file
from training.backfill import fill_task_fields
from training.data import TASKS, load_dataset, load_split
from training.train import predict_probs

from .binding import embed_spec, write_checksums
from .convert import (FLOAT_HEAD, ExportError, export_fp16, export_int8, int8_bias_correction, quantization_debug,
                      with_feature_output)
from .metadata_bridge import write_metadata_external
from .model_card import write_model_card_for_run
from .parity import bias_correction_sentence, compare, float_head_sentence, gate, gate_sentence, run_tflite

# Keras (TensorFlow) loads only once a model is exported (load_run, export_model, check_parity): --help stays fast.

logger = logging.getLogger("export")

REPO_ROOT = Path(__file__).resolve().parent.parent
ANDROID_VARIANTS = ("fp16", "int8")


def stratified_sample(labels: np.ndarray, indices: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` of ``indices`` drawn with each stratum (class, or class x source) in proportion, at least one each."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[indices])
    chosen = []
    for cls in classes:
        pool = indices[labels[indices] == cls]
        take = max(1, int(round(count * len(pool) / len(indices))))
        chosen.append(rng.choice(pool, size=min(take, len(pool)), replace=False))
    return np.sort(np.concatenate(chosen))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Convert a trained Keras model to float16 and int8 TFLite files for Android and the edge "
                    "runtime, embed metadata, and refuse to ship files that disagree with the Keras model.")
    p.add_argument("--model", type=Path, required=True,
                   help="model.keras written by `python -m training train` (its spec.json and split.json sit beside it)")
    p.add_argument("--data", type=Path, default=None, help="the data root the model was trained on (default: the "
                   "path recorded in its spec)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "android_assets", help="output folder")
    p.add_argument("--calibration-size", type=int, default=1000, help="int8 calibration images (stratified by class and source, from the "
                   "training side of the split, no augmentation)")
    p.add_argument("--parity-max", type=int, default=0, help="limit the parity check to this many validation images "
                   "(0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration", choices=("data", "blank"), default="data",
                   help="'blank' calibrates on constant images: only to prove the parity gate catches a broken export")
    p.add_argument("--metadata-python", default=None,
                   help="Python interpreter with the TFLite metadata writer (default: $CXR_METADATA_PYTHON, this one "
                        "if it can import the writer, else .venv-metadata/bin/python)")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="keep the classifier's own bias in the int8 files (by default it is corrected for the int8 "
                        "trunk's mean error, measured on the calibration images)")
    p.add_argument("--float-head", type=int, default=FLOAT_HEAD, metavar="OPS",
                   help=f"leave the int8 files' first OPS quantizable ops (the stem, then the first block's layers) "
                        f"in float32, where int8 loses most (default {FLOAT_HEAD}: full integer; the shipped covid model "
                        "uses 3, training/EXPERIMENTS.md)")
    p.add_argument("--no-metadata", action="store_true", help="skip Android metadata (not for shipping)")
    p.add_argument("--force", action="store_true",
                   help="write the files even when the parity gate fails (debugging only; the exit code stays 3)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def attach_metadata(model_path: Path, spec_path: Path, labels_path: Path, python: str | None) -> None:
    """Embed Android metadata in place, in this interpreter or the metadata one (its own venv)."""
    write_metadata_external(model_path, model_path, spec_path, labels_path, python=python)
    logger.info("embedded TFLite metadata in %s", model_path.name)


def load_run(args):
    """The training run of ``args.model``: (its spec, as shipped; the Keras model; its data set).

    The spec is shipped at this runtime's spec version, with the task's title, description and
    populations (filled in from ``TASKS`` for runs trained before spec version 2).
    """
    import keras

    train_dir = args.model.parent
    spec, filled = fill_task_fields(ModelSpec.load(train_dir / "spec.json"))
    if filled:
        logger.warning("%s predates spec version %d: %s filled in from training.data.TASKS", train_dir / "spec.json",
                       spec.spec_version, ", ".join(filled))
    model = keras.saving.load_model(args.model, compile=False)
    # Recorded paths are relative to the repository (absolute in older specs; both resolve here).
    data_root = args.data or (REPO_ROOT / spec.training.get("data", ""))
    dataset = load_dataset(data_root, TASKS[spec.task], spec, cache_dir=args.cache_dir, progress=False)
    return spec, model, dataset


def sample_sides(args, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(calibration indices from the training side, parity indices: everything held out, i.e. the checkpoint
    and threshold sides, or a stratified ``--parity-max`` of them)."""
    train_idx, val_idx = load_split(args.model.parent / "split.json", dataset, held_out=True)
    strata = dataset.strata  # class x source folder: children's and adults' films both calibrate int8
    if args.parity_max and len(val_idx) > args.parity_max:
        val_idx = stratified_sample(strata, val_idx, args.parity_max, args.seed)
    cal_idx = stratified_sample(strata, train_idx, args.calibration_size, args.seed)
    logger.info("calibration %d images %s; parity on %d validation images", len(cal_idx),
                np.bincount(dataset.labels[cal_idx]).tolist(), len(val_idx))
    return cal_idx, val_idx


def convert_files(model, calibration: np.ndarray, stage: Path, name: str,
                  bias_correction: dict | None = None, float_head: int = 0) -> list[str]:
    """The four files in ``stage``: float16 and int8, each plain and with the feature-map output; their names.

    With ``bias_correction`` (from :func:`export.convert.int8_bias_correction`) the int8 files carry its
    corrected classifier bias; the float16 files and every file's CAM kernel are the model's own. ``float_head``:
    the int8 files' first ops left in float (:func:`export.convert.export_int8`)."""
    cam_model = with_feature_output(model)
    bias = None if bias_correction is None else np.asarray(bias_correction["bias"])
    files = {
        f"{name}_fp16.tflite": lambda p: export_fp16(model, p),
        f"{name}_int8.tflite": lambda p: export_int8(model, calibration, p, classifier_bias=bias,
                                                     float_head=float_head),
        f"{name}_fp16_cam.tflite": lambda p: export_fp16(cam_model, p),
        f"{name}_int8_cam.tflite": lambda p: export_int8(cam_model, calibration, p, classifier_bias=bias,
                                                         float_head=float_head),
    }
    for filename, make in files.items():
        logger.info("converting %s", filename)
        make(stage / filename)
    return list(files)


def write_spec_and_bind(args, spec: ModelSpec, kernel: np.ndarray, bias: np.ndarray, stage: Path,
                        filenames: list[str]) -> ModelSpec:
    """Labels file and ``<name>.spec.json`` (with the CAM weights) in ``stage``; the spec embedded in every file
    (Android metadata for the plain ones unless ``--no-metadata``); then every file's sha256 in the spec."""
    name = spec.name
    labels_path = stage / f"{name}_labels.txt"
    labels_path.write_text("\n".join(spec.labels) + "\n", encoding="utf-8")
    spec = spec.replace(cam_weights=tuple(tuple(row) for row in kernel.tolist()), cam_bias=tuple(bias.tolist()))
    spec_path = stage / f"{name}{SPEC_SUFFIX}"
    spec.save(spec_path)
    with_metadata = set() if args.no_metadata else {f"{name}_{variant}.tflite" for variant in ANDROID_VARIANTS}
    for filename in filenames:
        if filename in with_metadata:  # the metadata writer embeds model_spec.json with the labels
            attach_metadata(stage / filename, spec_path, labels_path, args.metadata_python)
        else:  # every other file gets the same copy appended: the runtime refuses a model without it
            embed_spec(stage / filename, spec)
    spec = spec.replace(files={f: sha256_file(stage / f) for f in [*filenames, labels_path.name]})
    spec.save(spec_path)
    return spec


def cam_correlation(feats: np.ndarray, kernel: np.ndarray, keras_probs: np.ndarray, keras_cam: np.ndarray) -> dict:
    """Mean Pearson r of the edge CAM (feature map x dense kernel) and Keras Grad-CAM, same class, same image."""
    rs = []
    for i in range(len(keras_cam)):
        cls = int(keras_probs[i].argmax())
        edge = compute_cam(feats[i], kernel, cls).ravel()
        ref = keras_cam[i].ravel()
        if edge.std() > 0 and ref.std() > 0:
            rs.append(float(np.corrcoef(edge, ref)[0, 1]))
    return {"cam_pearson_r_mean": float(np.mean(rs)) if rs else float("nan"), "cam_images": len(rs)}


def check_parity(model, spec: ModelSpec, kernel: np.ndarray, stage: Path, filenames: list[str],
                 val_inputs: np.ndarray, y_val: np.ndarray, keras_probs: np.ndarray) -> tuple[dict, list[str]]:
    """Every file run through the edge runtime on the parity images and gated against Keras.

    Returns:
        (file name -> its statistics, the gate failures as ``file: reason``).
    """
    from training.gradcam import gradcam_heatmaps

    cam_idx = np.arange(min(200, len(val_inputs)))
    keras_cam = gradcam_heatmaps(model, val_inputs[cam_idx], keras_probs[cam_idx].argmax(axis=1))
    stats_by_file, failures = {}, []
    for filename in filenames:
        precision = "int8" if "_int8" in filename else "fp16"
        probs, feats = run_tflite(stage / filename, val_inputs)
        stats = compare(keras_probs, probs, y_val, spec)
        stats["size_bytes"] = (stage / filename).stat().st_size
        if feats is not None:
            stats.update(cam_correlation(feats, kernel, keras_probs, keras_cam))
        stats["gate_failures"] = gate(precision, stats)
        failures += [f"{filename}: {f}" for f in stats["gate_failures"]]
        stats_by_file[filename] = stats
        logger.info("%s: %.1f KB, top-1 agreement %.4f, dAUC %+.4f, max |dp| %.4f%s", filename,
                    stats["size_bytes"] / 1024, stats["top1_agreement"], stats["auc_delta"], stats["max_prob_diff"],
                    f", CAM r {stats['cam_pearson_r_mean']:.3f}" if "cam_pearson_r_mean" in stats else "")
    return stats_by_file, failures


def export_model(args) -> dict:
    """Convert, bind, check and (when the parity gate passes, or with ``--force``) ship one trained model.

    Returns:
        The parity report (also written as ``<name>_parity.json`` / ``.md`` in ``args.out``).

    Raises:
        ExportError: the parity gate failed (files shipped only with ``--force``).
    """
    from training.model import CLASSIFIER_LAYER

    spec, model, dataset = load_run(args)
    cal_idx, val_idx = sample_sides(args, dataset)
    calibration = dataset.rgb(cal_idx)
    if args.calibration == "blank":
        calibration = np.full_like(calibration, 128)
    val_inputs, y_val = dataset.rgb(val_idx), dataset.labels[val_idx]
    keras_probs = predict_probs(model, dataset.images[val_idx])
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in model.get_layer(CLASSIFIER_LAYER).get_weights())
    name = spec.name
    stage = Path(tempfile.mkdtemp(prefix=f"export-{name}-"))
    correction = (None if args.no_bias_correction else
                  int8_bias_correction(model, calibration, stage, float_head=args.float_head))
    filenames = convert_files(model, calibration, stage, name, correction, float_head=args.float_head)
    spec = write_spec_and_bind(args, spec, kernel, bias, stage, filenames)

    report = {"model": name, "keras_model": str(args.model), "validation_images": int(len(val_idx)),
              "calibration_images": int(len(cal_idx)), "calibration": args.calibration,
              "int8_float_head_ops": int(args.float_head),
              "int8_bias_correction": (None if correction is None else
                                       {k: v for k, v in correction.items() if k != "bias"}), "files": {}}
    report["files"], failures = check_parity(model, spec, kernel, stage, filenames, val_inputs, y_val, keras_probs)
    if failures and args.calibration == "data":
        report["quantization_debugger_worst_layers"] = quantization_debug(model, calibration[:100])
    report["passed"] = not failures
    report["failures"] = failures
    args.out.mkdir(parents=True, exist_ok=True)
    write_parity_report(report, args.out / f"{name}_parity")
    if not failures or args.force:
        for path in stage.iterdir():
            shutil.move(str(path), args.out / path.name)
        write_checksums(args.out)  # the list a clinic checks a model update against
    shutil.rmtree(stage, ignore_errors=True)
    if failures:
        raise ExportError("parity gate failed" + (" (files written anyway: --force)" if args.force else
                                                  ", nothing shipped") + ":\n  " + "\n  ".join(failures)
                          + f"\nreport: {args.out / (name + '_parity.md')}")
    card = write_model_card_for_run(spec, args.model.parent, report, args.out / f"MODEL_CARD_{name}.md")
    if card is not None:
        logger.info("wrote %s", card)
    return report


def write_parity_report(report: dict, stem: Path) -> None:
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Parity of {report['model']} exports with the Keras model", "",
             f"Held-out images: {report['validation_images']} (grouped split of the training data); "
             f"int8 calibration: {report['calibration_images']} training images ({report['calibration']}).", "",
             "| file | size KB | top-1 agreement | decision agreement | AUC Keras | AUC TFLite | delta AUC | "
             "max abs prob diff | CAM r | gate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for filename, s in report["files"].items():
        cam = f"{s['cam_pearson_r_mean']:.3f}" if "cam_pearson_r_mean" in s else "-"
        lines.append(f"| {filename} | {s['size_bytes'] / 1024:.1f} | {s['top1_agreement']:.4f} | "
                     f"{s['decision_agreement']:.4f} | {s['auc_keras']:.4f} | {s['auc_tflite']:.4f} | "
                     f"{s['auc_delta']:+.4f} | {s['max_prob_diff']:.4f} | {cam} | "
                     f"{'pass' if not s['gate_failures'] else 'FAIL: ' + '; '.join(s['gate_failures'])} |")
    lines += ["", f"{gate_sentence()} CAM r: mean Pearson r between the edge CAM (feature-map output + dense weights) "
              "and the Keras Grad-CAM, on up to 200 validation images.", "", bias_correction_sentence(report), "",
              float_head_sentence(report)]
    if report.get("quantization_debugger_worst_layers"):
        lines += ["", "Worst layers by the TFLite quantization debugger (RMSE / scale):", ""]
        lines += [f"- {r['tensor']}: {r['rmse/scale']:.3f}" for r in report["quantization_debugger_worst_layers"]]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.model.is_file():
        logger.error("model file not found: %s", args.model)
        return 2
    try:
        report = export_model(args)
    except (ExportError, CxrError) as err:
        logger.error("%s", err)
        return 3
    summary = {f: {"size_kb": round(s["size_bytes"] / 1024, 1), "top1_agreement": s["top1_agreement"],
                   "auc_delta": s["auc_delta"], "max_prob_diff": s["max_prob_diff"],
                   **({"cam_r": s["cam_pearson_r_mean"]} if "cam_pearson_r_mean" in s else {})}
               for f, s in report["files"].items()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for f, s in summary.items():
            print(f"{f:40s} {s['size_kb']:8.1f} KB  agreement {s['top1_agreement']:.4f}  "
                  f"dAUC {s['auc_delta']:+.4f}  max|dp| {s['max_prob_diff']:.4f}"
                  + (f"  CAM r {s['cam_r']:.3f}" if "cam_r" in s else ""))
        print(f"parity gate passed; assets in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
