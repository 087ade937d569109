"""DICOM input built with pydicom: MONOCHROME1 inversion, rescale and window, and clear refusals."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import corpus
from edge_runtime.errors import InvalidImageError, UnsupportedFormatError
from edge_runtime.imaging import is_dicom, load_image

pytest.importorskip("pydicom")


def test_monochrome1_is_inverted():
    data, raw = corpus.dicom_monochrome1()
    assert is_dicom(data)
    rgb = load_image(data, name="mono1.dcm")
    grey = rgb[..., 0].astype(int)
    assert rgb.shape == raw.shape + (3,)
    # In MONOCHROME1 the highest value is the darkest: the raw maximum becomes black.
    assert grey[np.unravel_index(raw.argmax(), raw.shape)] == 0
    assert grey[np.unravel_index(raw.argmin(), raw.shape)] == 255
    assert np.corrcoef(grey.ravel(), raw.ravel())[0, 1] < -0.99


def test_monochrome2_16_bit_rescale_and_window():
    """Raw 0..4095, slope 1, intercept -1024 (so -1024..3071), window centre 40 width 400."""
    rgb = load_image(corpus.dicom_ct_like(), name="ct.dcm")
    row = rgb[0, :, 0].astype(int)
    values = np.linspace(0, 4095, 128) - 1024.0
    assert (np.diff(row) >= 0).all()  # monotonic
    assert (row[values < 40 - 200 - 1] == 0).all()  # below the window: black
    assert (row[values > 40 + 200 + 1] == 255).all()  # above the window: white
    inside = (values > -150) & (values < 230)
    assert 0 < row[inside].min() and row[inside].max() < 255  # the window is spread over the grey scale
    middle = int(np.argmin(np.abs(values - 40)))
    assert abs(row[middle] - 128) <= 10


def test_monochrome2_without_window_uses_the_full_range():
    raw = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)
    rgb = load_image(corpus.dicom_bytes(raw), name="plain.dcm")
    assert rgb.min() == 0 and rgb.max() == 255
    assert np.corrcoef(rgb[..., 0].ravel(), raw.ravel())[0, 1] > 0.99


def test_eight_bit_dicom():
    raw = corpus.gradient()
    rgb = load_image(corpus.dicom_bytes(raw), name="eight.dcm")
    assert np.corrcoef(rgb[..., 0].ravel(), raw.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("build, error, words", [
    (corpus.dicom_without_pixels, UnsupportedFormatError, "no pixel data"),
    (corpus.dicom_compressed, UnsupportedFormatError, "JPEG 2000"),
    (corpus.dicom_rgb, UnsupportedFormatError, "not a greyscale radiograph"),
])
def test_dicom_refusals_name_the_file_and_cause(build, error, words):
    with pytest.raises(error) as info:
        load_image(build(), name="study 17.dcm")
    message = str(info.value)
    assert message.startswith("study 17.dcm: ") and words in message


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_corrupt_dicom():
    data = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"garbage" * 5
    with pytest.raises(InvalidImageError, match="broken.dcm"):
        load_image(data, name="broken.dcm")


def test_dicom_without_pydicom_says_what_to_install(monkeypatch):
    data, _ = corpus.dicom_monochrome1()
    monkeypatch.setitem(sys.modules, "pydicom", None)
    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)
    with pytest.raises(UnsupportedFormatError, match="pydicom is not installed"):
        load_image(data, name="x.dcm")
