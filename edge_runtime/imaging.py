"""Decoding and preprocessing of X-ray images: the one function training and the device share."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import (
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidImageError,
    UnsupportedFormatError,
)
from .spec import ModelSpec

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, np.ndarray]

#: Largest image accepted, in pixels (a 16-bit 43x43 cm detector is ~9 MP; film scans up to ~40 MP).
MAX_PIXELS = 64_000_000
#: Largest encoded input accepted, in bytes.
MAX_BYTES = 200 * 1024 * 1024
#: Smallest side accepted, in pixels.
MIN_SIDE = 32
#: JPEGs larger than twice this on both sides are decoded at a reduced scale (DCT scaling, by 1/2, 1/4
#: or 1/8, never below this size): a 2,000-pixel scan decodes several times faster, and the model
#: (160 px) and the heatmap overlay lose nothing.
DECODE_MAX_SIDE = 512

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

# Signatures of formats people upload by mistake, named in the error rather than "cannot decode".
_FOREIGN_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"<!DOCTYPE", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"<?xml", "an XML/SVG document"),
    (b"<svg", "an SVG drawing"),
)


def is_dicom(data: bytes) -> bool:
    """True when ``data`` carries the DICOM Part 10 magic ``DICM`` at offset 128."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_bytes(source: ImageSource, max_bytes: int = MAX_BYTES, name: str | None = None) -> tuple[bytes, str]:
    """Read an image source into bytes, returning ``(data, name)`` for messages."""
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), name or "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or str(path)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageTooLargeError(f"{name}: file is {size} bytes; the limit is {max_bytes}")
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise InvalidImageError(f"{name}: no such file") from err
        except IsADirectoryError as err:
            raise InvalidImageError(f"{name}: is a folder, not an image file") from err
        except OSError as err:
            raise InvalidImageError(f"{name}: cannot read file: {err.strerror or err}") from err
    elif hasattr(source, "read"):
        name = name or getattr(source, "name", "<stream>")
        data = source.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"{name}: more than {max_bytes} bytes; refusing to read further")
    else:
        raise InvalidImageError(f"cannot read an image from a {type(source).__name__}")
    if not data:
        raise InvalidImageError(f"{name}: empty file (0 bytes)")
    return data, str(name)


def _check_size(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(
            f"{name}: image is {width}x{height} pixels; a chest X-ray needs at least {MIN_SIDE} a side"
        )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array of any depth to uint8 by its own min..max."""
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float64)
    low, high = float(np.min(array)), float(np.max(array))
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.clip(np.round((array - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an RGB uint8 array, X-ray bit depths handled explicitly."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 12/16-bit greyscale (or 32-bit) scans: stretch the used range to 8 bits.
        gray = _to_uint8(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent areas become black, like unexposed film.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode == "1":
        image = image.convert("L")
    return np.asarray(image.convert("RGB"))


def load_image(source: ImageSource, *, max_pixels: int = MAX_PIXELS, name: str | None = None,
               decode_max_side: int | None = DECODE_MAX_SIDE) -> np.ndarray:
    """Decode an image file, bytes, stream or array into an ``(H, W, 3)`` RGB uint8 array.

    Handles JPEG, PNG (8/16-bit), BMP, TIFF, WebP and DICOM (sniffed by its magic bytes, read
    with the optional ``pydicom``); greyscale, RGB, RGBA, CMYK and palette images; EXIF
    orientation. The full resolution is kept; :func:`prepare_input` resizes.

    Args:
        source: Path, bytes, binary stream, or an already-decoded array (H, W) / (H, W, 3|4).
        max_pixels: Refuse images declaring more pixels than this (decompression bombs).
        name: How error messages name the input (default: its path, or ``<bytes>``).
        decode_max_side: Let large JPEGs decode at a reduced scale no smaller than this
            (``None``: always full resolution).

    Returns:
        ``np.ndarray`` of shape (H, W, 3), dtype uint8, RGB order.

    Raises:
        InvalidImageError: empty, truncated or undecodable input (subclasses name the cause:
            :class:`UnsupportedFormatError`, :class:`ImageTooLargeError`,
            :class:`ImageTooSmallError`).
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name or "<array>", max_pixels)
    data, name = read_bytes(source, name=name)
    if is_dicom(data):
        from .dicom import decode_dicom  # optional dependency, imported only for DICOM

        gray = decode_dicom(data, name=name, max_pixels=max_pixels)
        return _array_to_rgb(gray, name, max_pixels)
    head = data[:16].lstrip().lower()
    for signature, what in _FOREIGN_SIGNATURES:
        if head.startswith(signature.lower()):
            raise UnsupportedFormatError(f"{name}: this is {what}, not an image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_size(image.width, image.height, name, max_pixels)
            if decode_max_side and image.format == "JPEG" and min(image.size) > decode_max_side:
                image.draft(image.mode, (decode_max_side, decode_max_side))
            image = ImageOps.exif_transpose(image)
            rgb = _pil_to_rgb(image)
    except (ImageTooLargeError, ImageTooSmallError):
        raise
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{name}: {err}") from err
    except UnidentifiedImageError as err:
        raise InvalidImageError(
            f"{name}: not a recognised image (expected JPEG, PNG, BMP, TIFF, WebP or DICOM)"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidImageError(f"{name}: image data is corrupt or truncated ({err})") from err
    return np.ascontiguousarray(rgb)


def _array_to_rgb(array: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got {array.shape}")
    _check_size(array.shape[1], array.shape[0], name, max_pixels)
    array = _to_uint8(array)
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def to_luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an RGB uint8 array, exactly as Pillow's ``convert("L")`` computes it."""
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))


def prepare_input(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn a decoded RGB image into the model's input tensor content.

    Converts to 8-bit luminance, resizes (aspect not kept, antialiased) to the spec's size and
    replicates the grey level into three channels. No scaling: the model takes 0..255 uint8.

    Returns:
        ``np.ndarray`` of shape (input_height, input_width, 3), dtype uint8.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidImageError(f"prepare_input expects an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}")
    gray = Image.fromarray(image, "RGB").convert("L")
    height, width = spec.input_size
    if gray.size != (width, height):
        gray = gray.resize((width, height), _RESAMPLE[spec.interpolation])
    plane = np.asarray(gray)
    return np.repeat(plane[:, :, None], 3, axis=2)


def preprocess(source: ImageSource, spec: ModelSpec) -> np.ndarray:
    """Decode ``source`` and prepare it for ``spec``: what training and the device both call."""
    return prepare_input(load_image(source), spec)
