"""python -m training evaluate: medical metrics of a trained model on any labelled folder."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


import numpy as np

from edge_runtime.spec import ModelSpec

from .data import TASKS, DataError, Source, Task, load_dataset, load_split, resolve_task
from .report import write_report
from .train import predict_probs

logger = logging.getLogger(__name__)


def task_for_folder(spec: ModelSpec, root: Path) -> Task:
    """The class map to read ``root`` with (see :func:`training.data.resolve_task`)."""
    task = TASKS.get(spec.task) or Task(spec.task, {label: (Source(label),) for label in spec.labels}, ".")
    return resolve_task(task, root)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training evaluate",
        description="Evaluate a trained Keras model on a labelled folder (Kermany layout: one subfolder per class) "
                    "and write JSON, markdown and PNG reports with sensitivity, specificity, PPV, NPV, F1, ROC AUC "
                    "(bootstrap 95%% CI) and confusion matrices.")
    parser.add_argument("--model", type=Path, required=True, help="model.keras with spec.json beside it")
    parser.add_argument("--data", type=Path, required=True, help="labelled folder, e.g. .../chest_xray/test")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report files")
    parser.add_argument("--name", default="evaluation", help="report file prefix")
    parser.add_argument("--threshold", type=float, default=None, help="override the spec's screening threshold")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUC interval")
    parser.add_argument("--split", type=Path, default=None,
                        help="a split.json from training: evaluate only its validation side")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the metrics JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import keras

    from .metrics import by_source, evaluate_predictions  # scikit-learn

    spec_path = args.model.parent / "spec.json"
    try:
        spec = ModelSpec.load(spec_path)
        dataset = load_dataset(args.data, task_for_folder(spec, args.data), spec, cache_dir=args.cache_dir)
    except DataError as err:
        logger.error("%s", err)
        return 2
    indices = np.arange(len(dataset.samples))
    if args.split:
        try:
            indices = load_split(args.split, dataset)[1]
        except DataError as err:
            logger.error("%s", err)
            return 2
    model = keras.saving.load_model(args.model, compile=False)
    probs = predict_probs(model, dataset.images[indices])
    y_true = dataset.labels[indices]
    result = evaluate_predictions(y_true, probs, spec, threshold=args.threshold, n_boot=args.bootstrap)
    result["data"] = str(args.data) + (f" (validation side of {args.split})" if args.split else "")
    sources = [dataset.samples[i].relpath.rsplit("/", 1)[0] for i in indices]
    result["by_source"] = by_source(sources, y_true, probs, spec, args.threshold)
    result["skipped_files"] = [list(s) for s in dataset.skipped]
    paths = write_report(result, args.out, args.name, f"{spec.name} on {args.data}", y_true, probs, spec)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(Path(paths["markdown"]).read_text(encoding="utf-8"))
        print(f"reports: {', '.join(paths.values())}")
    return 0
