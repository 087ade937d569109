"""DICOM decoding for X-ray exports (optional ``pydicom``): rescale, VOI window, MONOCHROME1."""

from __future__ import annotations

import io

import numpy as np

from .errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError


def decode_dicom(data: bytes, *, name: str = "<dicom>", max_pixels: int | None = None) -> np.ndarray:
    """Decode a DICOM Part 10 file into a 2-D uint8 display image.

    Applies the Modality LUT (rescale slope/intercept), then the VOI LUT or window
    centre/width when present (else the full used range), and inverts MONOCHROME1 so that
    bone is bright as on every other input.

    Raises:
        UnsupportedFormatError: pydicom missing, no pixel data, colour or multi-frame data, or a
            compressed transfer syntax without a decoder installed.
        InvalidImageError: the file is corrupt.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UnsupportedFormatError(
            f"{name}: is a DICOM file, but pydicom is not installed: pip install 'cxr-edge[dicom]'"
        ) from err
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except Exception as err:  # pydicom raises many types for corrupt files
        raise InvalidImageError(f"{name}: corrupt DICOM file ({err})") from err
    if "PixelData" not in dataset:
        raise UnsupportedFormatError(f"{name}: DICOM file has no pixel data (a report or structured document?)")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedFormatError(
            f"{name}: DICOM photometric interpretation {photometric} is not a greyscale radiograph"
        )
    rows, cols = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    if max_pixels is not None and rows * cols > max_pixels:
        raise ImageTooLargeError(f"{name}: DICOM image is {cols}x{rows}; the limit is {max_pixels} pixels")
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise UnsupportedFormatError(f"{name}: multi-frame DICOM is not supported; export a single image")
    try:
        pixels = dataset.pixel_array
    except Exception as err:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", syntax)
        raise UnsupportedFormatError(
            f"{name}: cannot decode DICOM pixel data (transfer syntax {syntax_name}): {err}. "
            "Install a decoder (pip install pylibjpeg pylibjpeg-libjpeg) or export uncompressed"
        ) from err
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    has_voi = any(tag in dataset for tag in ("VOILUTSequence", "WindowCenter"))
    if has_voi:
        values = np.asarray(apply_voi_lut(values, dataset, index=0), dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        scaled = np.zeros(values.shape, dtype=np.uint8)
    else:
        scaled = np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if photometric == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled
