"""CAM math and overlays: exact for GAP + dense, guarded against an all-zero map, sizes preserved."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_runtime.cam import (JET, colorize, compute_cam, encode_png, fit_within, normalize_map, overlay_heatmap,
                              side_by_side, upsample)


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


def test_upsample_and_colormap():
    cam = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    big = upsample(cam, (40, 60))
    assert big.shape == (40, 60) and 0.0 <= big.min() and big.max() <= 1.0
    assert JET.shape == (256, 3)
    low, high = colorize(np.array([0.0, 1.0]))
    assert low[2] > 100 and low[0] == 0  # blue for low
    assert high[0] > 100 and high[2] == 0  # red for high


def test_overlay_sizes_and_alpha():
    image = np.full((90, 70, 3), 100, np.uint8)
    cam = np.random.default_rng(2).random((5, 5)).astype(np.float32)
    overlay = overlay_heatmap(image, cam, alpha=0.4)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    assert np.array_equal(overlay_heatmap(image, cam, alpha=0.0), image)
    # 8-bit upsampling: within 1.5 map levels, i.e. 6 colour levels (JET climbs 4 per map level)
    full = overlay_heatmap(image, cam, alpha=1.0).astype(int)
    assert np.abs(full - colorize(upsample(cam, (90, 70))).astype(int)).max() <= 6
    with pytest.raises(ValueError):
        overlay_heatmap(image, cam, alpha=1.5)
    panel = side_by_side(image, overlay)
    assert panel.shape == (90, 70 + 8 + 70, 3)
    assert side_by_side(image, np.zeros((50, 30, 3), np.uint8)).shape == (90, 108, 3)


def test_fit_within_and_png():
    image = np.zeros((300, 1200, 3), np.uint8)
    assert fit_within(image, 600).shape == (150, 600, 3)
    assert fit_within(image, 5000) is image
    png = encode_png(image[:10, :20])
    assert Image.open(io.BytesIO(png)).size == (20, 10)
