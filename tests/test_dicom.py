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


# -- issue 10: what DICOM readers accept, and messages that say what is wrong ---------------------

@pytest.mark.parametrize("implicit", [False, True], ids=["explicit VR", "implicit VR"])
def test_dicom_without_the_preamble_is_accepted(implicit):
    data = corpus.dicom_without_preamble(implicit)
    assert data[:2] == b"\x08\x00" and b"DICM" not in data[:132]
    assert is_dicom(data)
    rgb = load_image(data, name="old-modality")
    assert rgb.shape == (96, 80, 3)
    part10 = corpus.dicom_monochrome1()[0]
    assert is_dicom(part10[132:])  # file meta group 0002 without preamble
    assert load_image(part10[132:], name="no-preamble.dcm").shape == (96, 80, 3)


def test_truncated_uncompressed_dicom_is_called_truncated():
    data = corpus.dicom_monochrome1()[0]
    with pytest.raises(InvalidImageError) as info:
        load_image(data[: len(data) - 4000], name="cut.dcm")
    assert "truncated" in str(info.value) and "decoder" not in str(info.value)
    assert not isinstance(info.value, UnsupportedFormatError)


def test_dicm_header_followed_by_garbage_is_corrupt_not_without_pixels():
    rng = np.random.default_rng(0)
    data = b"\0" * 128 + b"DICM" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidImageError) as info:
        load_image(data, name="garbage.dcm")
    assert "corrupt" in str(info.value) and "no pixel data" not in str(info.value)
    assert "\n" not in str(info.value)


def test_corrupt_jpeg2000_dicom_prints_no_traceback_and_one_line(capfd):
    import io

    from PIL import Image
    from pydicom.uid import JPEG2000Lossless

    buffer = io.BytesIO()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(
        buffer, format="JPEG2000", irreversible=False)
    codestream = buffer.getvalue()
    data = corpus.dicom_bytes(None, transfer_syntax=JPEG2000Lossless, bits=8,
                              encapsulated=codestream[: len(codestream) // 2])
    import logging

    logging.basicConfig()  # as the CLI and server configure logging: pydicom's records would print
    with pytest.raises(InvalidImageError) as info:
        load_image(data, name="j2k.dcm")
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert "\n" not in str(info.value) and "j2k.dcm" in str(info.value)
