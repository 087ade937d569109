"""Fitting the out-of-population check (training side): the regression, its stored form, the split paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.population import apply_population_check, validate_population_check
from edge_runtime.spec import ModelSpec
from training.population_check import fit_check, flag_rate, split_prefix


def test_the_fitted_check_separates_two_populations_and_is_what_the_runtime_applies():
    rng = np.random.default_rng(0)
    children = rng.normal(0.0, 1.0, (300, 16))
    adults = rng.normal(0.0, 1.0, (200, 16))
    adults[:, :3] += 2.5  # the adults differ on three channels
    features = np.concatenate([children, adults])
    check = fit_check(features, np.r_[np.zeros(300), np.ones(200)].astype(bool))
    validate_population_check(check, channels=16)
    held_children = rng.normal(0.0, 1.0, (200, 16))
    held_adults = rng.normal(0.0, 1.0, (200, 16))
    held_adults[:, :3] += 2.5
    assert flag_rate(check, held_children) < 0.1
    assert flag_rate(check, held_adults) > 0.9
    # A pooled (h, w, c) map gives the same answer as its channel means.
    grid = np.broadcast_to(held_adults[0], (4, 4, 16))
    assert apply_population_check(check, grid)["score"] == apply_population_check(check, held_adults[0])["score"]


def test_split_paths_are_made_relative_to_the_data_root():
    spec = ModelSpec(name="m", task="etiology", labels=("NORMAL", "VIRAL"),
                     training={"data": "../shared/data/chest_xray/train"})
    from training.train import REPO_ROOT

    root = (REPO_ROOT / "../shared/data").resolve()
    assert split_prefix(spec, root) == "chest_xray/train/"
    assert split_prefix(spec.replace(training={"data": "../shared/data"}), root) == ""
    assert split_prefix(spec.replace(training={"data": "/elsewhere"}), Path("/nowhere")) == ""
