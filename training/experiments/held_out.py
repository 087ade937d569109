"""The held-out predictions of several training runs, for the experiment scripts beside this file.

`load(runs)` reads each run folder (model.keras, spec.json, split.json), decodes the data set once (the data root is
the spec's `training.data`, relative to the repository, as `python -m export` reads it) and returns it with, per run,
its split's sides and the model's probabilities on the checkpoint (`val`) and threshold (`calibration`) sides.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_runtime.spec import ModelSpec  # noqa: E402
from training.data import TASKS, load_dataset, load_split_sides  # noqa: E402
from training.train import REPO_ROOT, predict_probs  # noqa: E402

SIDES = ("val", "calibration")


def load(runs: list[Path]):
    """(the data set, {run name: {"sides": {side: indices}, "probs": {side: probabilities}}}, the first run's spec)."""
    import keras

    specs = [ModelSpec.load(run / "spec.json") for run in runs]
    keys = {(s.task, s.input_height, s.input_width, s.training.get("data")) for s in specs}
    if len(keys) > 1:
        raise SystemExit(f"the runs differ in task, input size or data: {sorted(keys, key=str)}")
    spec = specs[0]
    dataset = load_dataset(REPO_ROOT / spec.training.get("data", ""), TASKS[spec.task], spec, progress=False)
    out = {}
    for run in runs:
        sides = load_split_sides(run / "split.json", dataset)
        model = keras.models.load_model(run / "model.keras", compile=False)
        out[run.name] = {"sides": sides,
                         "probs": {side: predict_probs(model, dataset.images[sides[side]]) for side in SIDES}}
    return dataset, out, spec


def populations(dataset, indices: np.ndarray) -> np.ndarray:
    """The population of each indexed sample."""
    return np.array([dataset.samples[i].population for i in indices])
