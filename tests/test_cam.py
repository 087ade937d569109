"""CAM math: exact for GAP + dense, guarded against an all-zero map, upsampled within [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.cam import compute_cam, normalize_map, upsample


def test_cam_is_relu_of_the_weighted_feature_sum_normalised():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 6, 8)).astype(np.float32)
    weights = rng.normal(size=(8, 3)).astype(np.float32)
    for k in range(3):
        expected = np.maximum(np.einsum("hwc,c->hw", features, weights[:, k]), 0)
        cam = compute_cam(features[None], weights, k)  # a batch of one is accepted
        assert cam.shape == (5, 6) and cam.dtype == np.float32
        assert cam.max() == pytest.approx(1.0)
        np.testing.assert_allclose(cam, expected / expected.max(), rtol=1e-5, atol=1e-6)


def test_cam_equals_gradcam_for_gap_dense_head():
    """Grad-CAM weights are the spatial mean of d logit / d F = W[c, k] / (h w): same map after normalising."""
    rng = np.random.default_rng(1)
    features = np.abs(rng.normal(size=(4, 4, 6))).astype(np.float32)
    weights = rng.normal(size=(6, 2)).astype(np.float32)
    alphas = np.full((4, 4, 6), 1.0 / 16) * weights[:, 1]  # gradient of the logit w.r.t. each feature
    gradcam = np.maximum((features * alphas.mean(axis=(0, 1))).sum(axis=-1), 0)
    np.testing.assert_allclose(compute_cam(features, weights, 1), gradcam / gradcam.max(), rtol=1e-5, atol=1e-6)


def test_all_zero_and_negative_maps_stay_zero():
    zero = compute_cam(np.zeros((3, 3, 4), np.float32), np.ones((4, 2), np.float32), 0)
    assert not zero.any() and np.isfinite(zero).all()
    negative = compute_cam(np.ones((3, 3, 4), np.float32), -np.ones((4, 2), np.float32), 1)
    assert not negative.any()
    assert not normalize_map(np.full((2, 2), np.nan)).any()
    assert normalize_map(np.zeros((0,))).size == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        compute_cam(np.zeros((3, 3, 4)), np.zeros((5, 2)), 0)


def test_upsample_stays_in_range():
    cam = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    big = upsample(cam, (40, 60))
    assert big.shape == (40, 60) and 0.0 <= big.min() and big.max() <= 1.0
