"""DICOM decoding for X-ray exports (optional ``pydicom``): rescale, VOI window, MONOCHROME1."""

from __future__ import annotations

import io
import logging
import threading

import numpy as np

from .errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError

#: Longest a pydicom message may run in one of our errors (theirs can span many lines).
_MAX_DETAIL = 160
#: Elements whose presence shows that pydicom read a real data set (not garbage after ``DICM``).
_IDENTIFYING = ("SOPClassUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "Rows")


def _detail(err: BaseException) -> str:
    """pydicom's message on one line, shortened: no traceback, no multi-line dumps."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


_QUIET = threading.local()


class _DropWhileDecoding(logging.Filter):
    """Drops pydicom's records (its pixel handlers log errors with tracebacks) on a thread that is
    inside :func:`decode_dicom`: our error says the same once, on one line, and the traceback
    would otherwise reach the CLI's stderr and the server log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_QUIET, "active", False)


class _quiet_pydicom:
    def __enter__(self):
        _QUIET.active = True
        return self

    def __exit__(self, *exc):
        _QUIET.active = False


_FILTER = _DropWhileDecoding()


def _install_filter() -> None:
    # A logger's filters apply to records created on it, so each pydicom logger that logs gets one.
    for logger_name in ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils"):
        target = logging.getLogger(logger_name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


def _bare_transfer_syntax(dataset):
    """A data set without file meta (no preamble, no group 0002) is uncompressed little endian, in
    the VR encoding pydicom found while reading it: record that, as DICOM readers assume it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    encoding = getattr(dataset, "original_encoding", None) or (getattr(dataset, "is_implicit_VR", True), True)
    syntax = ImplicitVRLittleEndian if encoding[0] else ExplicitVRLittleEndian
    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    return syntax


def decode_dicom(data: bytes, *, name: str = "<dicom>", max_pixels: int | None = None,
                 max_decoded_bytes: int | None = None, reduce_to: int | None = None) -> np.ndarray:
    """Decode a DICOM file (Part 10, or a bare data set without the preamble) into a 2-D uint8 image.

    Applies the Modality LUT (rescale slope/intercept), then the VOI LUT or window
    centre/width when present (else the full used range), and inverts MONOCHROME1 so that
    bone is bright as on every other input.

    Args:
        data: The file's bytes.
        name: How messages name the input.
        max_pixels: Refuse images with more pixels.
        max_decoded_bytes: Refuse images whose pixel data decodes to more bytes.
        reduce_to: Shrink images larger than twice this on both sides by an integer factor
            (box mean, before the LUTs, so that no full-size float copy is made).

    Raises:
        UnsupportedFormatError: pydicom missing, no pixel data, colour or multi-frame data, or a
            compressed transfer syntax without a decoder installed.
        ImageTooLargeError: beyond ``max_pixels`` or ``max_decoded_bytes``.
        InvalidImageError: the file is corrupt or truncated.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UnsupportedFormatError(
            f"{name}: is a DICOM file, but pydicom is not installed: pip install 'cxr-edge[dicom]'"
        ) from err
    from .imaging import decode_slot, has_dicom_preamble  # imaging imports this module when it meets DICOM

    _install_filter()
    with _quiet_pydicom():
        try:
            dataset = pydicom.dcmread(io.BytesIO(data), force=not has_dicom_preamble(data))
        except Exception as err:  # pydicom raises many types for corrupt files
            raise InvalidImageError(f"{name}: corrupt DICOM file ({_detail(err)})") from err
        try:
            has_pixels = "PixelData" in dataset
            identified = any(tag in dataset for tag in _IDENTIFYING)
        except Exception as err:  # noqa: BLE001 - a garbage element can fail lazily
            raise InvalidImageError(f"{name}: corrupt DICOM file ({_detail(err)})") from err
        if not has_pixels:
            if not identified:
                raise InvalidImageError(f"{name}: corrupt DICOM file: the header is followed by no readable "
                                        "data elements")
            raise UnsupportedFormatError(f"{name}: DICOM file has no pixel data (a report or structured document?)")
        photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise UnsupportedFormatError(
                f"{name}: DICOM photometric interpretation {photometric} is not a greyscale radiograph"
            )
        rows, cols = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
        if max_pixels is not None and rows * cols > max_pixels:
            raise ImageTooLargeError(f"{name}: DICOM image is {cols}x{rows}; the limit is {max_pixels} pixels")
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise UnsupportedFormatError(f"{name}: multi-frame DICOM is not supported; export a single image")
        bits = int(dataset.get("BitsAllocated", 16) or 16)
        decoded = rows * cols * max(1, (bits + 7) // 8)
        if max_decoded_bytes is not None and decoded > max_decoded_bytes:
            raise ImageTooLargeError(f"{name}: DICOM pixel data is {decoded / 2**20:.0f} MB once decoded; the "
                                     f"limit is {max_decoded_bytes // 2**20} MB")
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is None:
            syntax = _bare_transfer_syntax(dataset)
        compressed = bool(getattr(syntax, "is_compressed", False))
        if not compressed:
            expected = rows * cols * bits // 8
            found = len(dataset.get("PixelData", b"") or b"")
            if found < expected:
                raise InvalidImageError(f"{name}: DICOM pixel data is truncated ({found} of {expected} bytes)")
        with decode_slot(decoded):
            try:
                pixels = dataset.pixel_array
            except Exception as err:  # noqa: BLE001 - pixel handlers raise many types
                syntax_name = getattr(syntax, "name", syntax)
                if not compressed:
                    raise InvalidImageError(f"{name}: DICOM pixel data is corrupt ({_detail(err)})") from err
                raise UnsupportedFormatError(
                    f"{name}: cannot decode the compressed DICOM pixel data (transfer syntax {syntax_name}): "
                    f"{_detail(err)}. The data may be corrupt; if it is not, install a decoder (pip install "
                    "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or export uncompressed"
                ) from err
            if pixels.ndim != 2:
                raise UnsupportedFormatError(f"{name}: DICOM pixel data has shape {pixels.shape}; expected one "
                                             "greyscale image")
            factor = min(pixels.shape) // reduce_to if reduce_to else 1
            if factor >= 2:
                height, width = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
                reduced = pixels[:height, :width].reshape(height // factor, factor, width // factor, factor)
                # Back to the stored integer type: a Modality LUT indexes by stored value.
                pixels = np.rint(reduced.mean(axis=(1, 3), dtype=np.float32)).astype(pixels.dtype)
            try:
                values = apply_modality_lut(pixels, dataset).astype(np.float64)
                has_voi = any(tag in dataset for tag in ("VOILUTSequence", "WindowCenter"))
                if has_voi:
                    values = np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64)
            except Exception as err:  # noqa: BLE001 - malformed LUT or window elements
                raise InvalidImageError(f"{name}: DICOM rescale or window elements are invalid "
                                        f"({_detail(err)})") from err
    low, high = float(values.min()), float(values.max())
    if high <= low:
        scaled = np.zeros(values.shape, dtype=np.uint8)
    else:
        scaled = np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if photometric == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled
