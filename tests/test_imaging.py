"""Decoding and preprocessing: every input kind to RGB uint8, and training/runtime parity (TF-free)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import corpus
from conftest import SHARED_DATA
from edge_runtime.imaging import (DECODE_MAX_SIDE, MIN_DECODE_SIDE, is_dicom, load_image, prepare_input, preprocess,
                                  read_bytes, to_luminance)
from edge_runtime.spec import ModelSpec

SPEC = ModelSpec(name="cxr_binary_32", task="binary", labels=("NORMAL", "PNEUMONIA"), input_height=32, input_width=32)


def test_grey_and_rgb_jpeg_from_path_bytes_and_stream(tmp_path):
    data = corpus.jpeg_bytes()
    path = tmp_path / "scan with space.jpeg"
    path.write_bytes(data)
    from_path = load_image(path)
    assert from_path.shape == (96, 80, 3) and from_path.dtype == np.uint8
    assert np.array_equal(from_path, load_image(data))
    assert np.array_equal(from_path, load_image(io.BytesIO(data)))
    assert np.array_equal(from_path, load_image(str(path)))


def test_exif_orientation_is_applied():
    data, expected = corpus.exif_rotated_jpeg()
    rgb = load_image(data)
    assert rgb.shape == expected.shape == (80, 48, 3)  # stored 80 wide x 48 high, displayed 48 x 80
    # The red block, top-left as stored, is top-right once rotated 90 degrees clockwise.
    assert rgb[4, -5, 0] > 200 and rgb[4, -5, 1] < 60
    assert rgb[4, 4, 0] < 160 and rgb[-5, -5, 0] < 160


def test_16_bit_png_is_stretched_to_8_bits():
    data, values = corpus.png16_bytes()
    rgb = load_image(data)
    assert rgb.dtype == np.uint8 and rgb.shape == values.shape + (3,)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255
    expected = np.round((values - values.min()) * 255.0 / (values.max() - values.min()))
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_rgba_transparency_becomes_black():
    rgb = load_image(corpus.rgba_png())
    assert tuple(rgb[10, 5]) == (0, 0, 0)
    assert tuple(rgb[10, 50]) == (200, 200, 200)


def test_cmyk_and_palette_images():
    grey = corpus.gradient().astype(int)
    cmyk = load_image(corpus.cmyk_jpeg())
    assert cmyk.shape == (96, 80, 3)
    assert np.abs(to_luminance(cmyk).astype(int) - grey).mean() < 12  # JPEG loss plus CMYK round trip
    palette = load_image(corpus.palette_png())
    assert palette.shape == (96, 80, 3)
    assert np.abs(to_luminance(palette).astype(int) - grey).mean() < 3


def test_one_bit_bmp_and_tiff():
    bits = Image.fromarray(corpus.gradient() > 100)
    for fmt in ("BMP", "TIFF", "PNG"):
        rgb = load_image(corpus.encode(bits, fmt))
        assert rgb.shape == (96, 80, 3) and set(np.unique(rgb)) <= {0, 255}


def test_arrays_of_every_shape():
    grey = corpus.gradient()
    assert load_image(grey).shape == (96, 80, 3)
    assert load_image(grey[:, :, None]).shape == (96, 80, 3)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    assert np.array_equal(load_image(rgba)[..., 0], grey)
    assert load_image(grey.astype(np.uint16) * 100).max() == 255  # deeper arrays are stretched
    with pytest.raises(Exception, match=r"\(H, W\)"):
        load_image(np.zeros((40, 40, 2), np.uint8))


def test_prepare_input_and_preprocess():
    rgb = load_image(corpus.jpeg_bytes())
    prepared = prepare_input(rgb, SPEC)
    assert prepared.shape == (32, 32, 3) and prepared.dtype == np.uint8
    assert (prepared[..., 0] == prepared[..., 1]).all() and (prepared[..., 1] == prepared[..., 2]).all()
    assert np.array_equal(prepared, preprocess(corpus.jpeg_bytes(), SPEC))
    # Colour goes through ITU-R 601-2 luma, the same as Pillow's convert("L").
    colour = np.zeros((40, 40, 3), np.uint8)
    colour[..., 0] = 255
    assert prepare_input(colour, SPEC)[0, 0, 0] == Image.new("RGB", (1, 1), (255, 0, 0)).convert("L").getpixel((0, 0))


def test_is_dicom_and_read_bytes_names():
    assert is_dicom(b"\0" * 128 + b"DICM" + b"\0" * 10)
    assert not is_dicom(corpus.jpeg_bytes())
    assert read_bytes(b"abc", name="upload.png") == (b"abc", "upload.png")
    assert read_bytes(io.BytesIO(b"abc"))[1] == "<stream>"


def test_minimum_side_constant():
    assert MIN_DECODE_SIDE == 32
    load_image(np.zeros((MIN_DECODE_SIDE, MIN_DECODE_SIDE), np.uint8))


@pytest.mark.realdata
def test_fullres_scan_decodes_and_prepares():
    files = sorted((SHARED_DATA / "fullres_sample").rglob("*.jpeg"))
    if not files:
        pytest.skip("fullres_sample not found")
    full = load_image(files[0], decode_max_side=None)
    assert min(full.shape[:2]) > 600 and full.dtype == np.uint8
    # Large JPEGs decode DCT-scaled (the longer side never below DECODE_MAX_SIDE): same picture, fewer pixels.
    rgb = load_image(files[0])
    assert DECODE_MAX_SIDE <= max(rgb.shape[:2]) < 2 * DECODE_MAX_SIDE and min(rgb.shape[:2]) <= min(full.shape[:2])
    assert abs(rgb.shape[1] / rgb.shape[0] - full.shape[1] / full.shape[0]) < 0.01
    assert preprocess(files[0], SPEC).shape == (32, 32, 3)


def test_training_cache_matches_runtime_preprocess(synthetic_data, tmp_path):
    """Training's cached decode and the runtime's preprocess give identical arrays (no TensorFlow)."""
    data = pytest.importorskip("training.data", reason="repository tool: run from a checkout")
    TASKS, decode_samples, list_samples = data.TASKS, data.decode_samples, data.list_samples

    samples = list_samples(synthetic_data, TASKS["binary"])[::8]
    assert len(samples) >= 8
    planes, ok, skipped = decode_samples(samples, SPEC, cache_dir=tmp_path, workers=1, progress=False)
    assert not skipped and ok == list(range(len(samples)))
    cached, _, _ = decode_samples(samples, SPEC, cache_dir=tmp_path, workers=1, progress=False)  # from the cache
    for sample, plane, again in zip(samples, planes, cached):
        runtime = preprocess(sample.path, SPEC)
        assert np.array_equal(plane, runtime[..., 0])
        assert np.array_equal(again, runtime[..., 0])
