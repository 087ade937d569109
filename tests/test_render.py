"""Heatmap drawing: colour map, overlay, panels, PNG/JPEG bytes, heatmap files and their names."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_runtime.cam import upsample
from edge_runtime.render import (JET, colorize, encode_jpeg, encode_png, fit_within, heatmap_name, overlay_heatmap,
                                 side_by_side)


def test_colormap():
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
    assert Image.open(io.BytesIO(encode_png(image[:10, :20], compress_level=1))).size == (20, 10)
    assert Image.open(io.BytesIO(encode_jpeg(image[:10, :20]))).format == "JPEG"


def test_heatmap_names_carry_no_file_name_unless_identifiers_are_kept():
    digest = "ab" * 32
    assert heatmap_name("Doe_John.jpeg", digest) == f"{digest[:16]}.heatmap.png"
    assert heatmap_name("Doe John.jpeg", digest, identifiers=True) == f"Doe_John-{digest[:8]}.heatmap.png"
    assert heatmap_name("", digest, identifiers=True) == f"{digest[:16]}.heatmap.png"
