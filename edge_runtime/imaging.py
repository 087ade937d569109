"""Decoding and preprocessing of X-ray images: the one function training and the device share."""

from __future__ import annotations

import io
import os
import re
import stat
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import (
    ImageTooLargeError,
    ImageTooSmallError,
    InputNotFoundError,
    InvalidImageError,
    NotARegularFileError,
    UnsupportedFormatError,
)
from .spec import ModelSpec

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, np.ndarray]

#: File suffixes of the formats :func:`load_image` decodes, for listing images in a folder (DICOM files
#: often have no suffix at all: callers decide about those).
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
#: Largest image accepted, in pixels (a 16-bit 43x43 cm detector is ~9 MP; film scans up to ~40 MP).
MAX_PIXELS = 64_000_000
#: Largest encoded input accepted, in bytes (a 43x43 cm 16-bit detector's uncompressed DICOM is ~18 MB,
#: a 4,300 x 3,500 one ~30 MB). With MAX_DECODED_BYTES it bounds what one input can cost in memory.
MAX_BYTES = 48 * 1024 * 1024
#: Largest decoded image accepted, in bytes as Pillow stores it (1 byte a pixel for grey, 2 for
#: 16-bit, 4 for RGB/RGBA), checked from the header before anything is decoded: a 265 KB PNG can
#: declare 8000 x 8000 RGBA pixels, 256 MB once decoded. 64 MB admits any 8-bit greyscale image
#: under MAX_PIXELS, 16-bit scans up to 32 MP and colour images up to 16 MP (JPEGs are decoded at
#: a reduced scale first, so this limit applies to what that reduced decode costs).
MAX_DECODED_BYTES = 64 * 1024 * 1024
#: Decodes above this many bytes take one of LARGE_DECODE_SLOTS process-wide slots, so that a few
#: concurrent huge uploads cannot add up (the web server's request threads); smaller images, every
#: ordinary scan among them, never wait for a slot.
LARGE_DECODE_BYTES = 16 * 1024 * 1024
#: How many large decodes may run at once in one process.
LARGE_DECODE_SLOTS = 1
#: Smallest side decoded at all, in pixels: below it an image is refused as ImageTooSmallError. The quality gate
#: asks more of a film it screens (``quality.MIN_SIDE``); this bound holds with the gate off too.
MIN_DECODE_SIDE = 32
#: JPEGs whose longer side is at least twice this are decoded at a reduced scale (DCT scaling, by 1/2,
#: 1/4 or 1/8, the longer side never below this size; other formats are shrunk by an integer factor
#: keeping the shorter side above it): a 2,000-pixel scan decodes several times faster, and the model
#: (160 px), the quality gate (256 px), the preview (512 px) and the overlay lose nothing.
DECODE_MAX_SIDE = 512

_LARGE_DECODES = threading.BoundedSemaphore(LARGE_DECODE_SLOTS)
# Pillow warns about images above its own pixel limit (89 MP); ours (MAX_PIXELS) is lower and is
# enforced with a specific error before decoding, so the warning would only be noise on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_PILLOW_BOMB = re.compile(r"\((\d+) pixels\)")
#: Bytes per pixel of Pillow's in-memory storage, by mode (multi-band 8-bit modes use 4).
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                   6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
#: Pixels per strip when a decoded image is reduced strip by strip (bounds the temporary copies).
_STRIP_PIXELS = 1 << 20

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


def has_dicom_preamble(data: bytes) -> bool:
    """True when ``data`` carries the DICOM Part 10 magic ``DICM`` at offset 128."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def is_dicom(data: bytes) -> bool:
    """True for a DICOM file: the Part 10 magic ``DICM`` at offset 128, or (as DICOM readers
    accept) a bare data set without the 128-byte preamble, starting with a group 0002 or 0008
    element in little-endian explicit or implicit VR."""
    if has_dicom_preamble(data):
        return True
    if len(data) < 8 or data[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    element = int.from_bytes(data[2:4], "little")
    vr = data[4:6]
    if vr.isalpha() and vr.isupper():  # explicit VR: two upper-case letters
        return element <= 0x0120
    return element <= 0x0120 and int.from_bytes(data[4:8], "little") <= 1024  # implicit VR: a short length


def read_bytes(source: ImageSource, max_bytes: int = MAX_BYTES, name: str | None = None) -> tuple[bytes, str]:
    """Read an image source into bytes, returning ``(data, name)`` for messages.

    Only regular files are read (a device such as ``/dev/zero``, a FIFO or a socket is refused
    before it is opened, so nothing blocks), and never more than ``max_bytes`` + 1 bytes.

    Raises:
        InputNotFoundError: no such file.
        NotARegularFileError: a folder, device, FIFO or socket.
        ImageTooLargeError: more than ``max_bytes``.
        InvalidImageError: empty, or unreadable (permissions, I/O error).
    """
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), name or "<bytes>"
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"{name}: input is {len(data)} bytes; the limit is {max_bytes}")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or str(path)
        try:
            info = path.stat()
            if stat.S_ISDIR(info.st_mode):
                raise NotARegularFileError(f"{name}: is a folder, not an image file")
            if not stat.S_ISREG(info.st_mode):
                raise NotARegularFileError(f"{name}: is a {_file_kind(info.st_mode)}, not a regular image file")
            if info.st_size > max_bytes:
                raise ImageTooLargeError(f"{name}: file is {info.st_size} bytes; the limit is {max_bytes}")
            with open(path, "rb") as stream:
                data = stream.read(max_bytes + 1)  # a file still growing cannot push past the cap
        except FileNotFoundError as err:
            raise InputNotFoundError(f"{name}: no such file") from err
        except IsADirectoryError as err:
            raise NotARegularFileError(f"{name}: is a folder, not an image file") from err
        except OSError as err:
            if err.errno == 40:  # ELOOP: a symbolic link loop
                raise NotARegularFileError(f"{name}: symbolic link loop") from err
            raise InvalidImageError(f"{name}: cannot read file: {err.strerror or err}") from err
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"{name}: file grew beyond {max_bytes} bytes while being read")
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


def _file_kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _check_size(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if min(width, height) < MIN_DECODE_SIDE:
        raise ImageTooSmallError(
            f"{name}: image is {width}x{height} pixels; a chest X-ray needs at least {MIN_DECODE_SIDE} a side"
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
    orientation. Images larger than twice ``decode_max_side`` on both sides are reduced by an
    integer factor while decoding (never below ``decode_max_side``); :func:`prepare_input` resizes.

    Args:
        source: Path, bytes, binary stream, or an already-decoded array (H, W) / (H, W, 3|4).
        max_pixels: Refuse images declaring more pixels than this (decompression bombs).
        name: How error messages name the input (default: its path, or ``<bytes>``).
        decode_max_side: Let large images decode at a reduced scale no smaller than this
            (``None``: always full resolution; the memory limits still apply).

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
        from .dicom import decode_dicom  # only for DICOM (it needs pydicom); dicom.py uses this module's limits

        gray = decode_dicom(data, name=name, max_pixels=max_pixels, max_decoded_bytes=MAX_DECODED_BYTES,
                            reduce_to=decode_max_side)
        return _array_to_rgb(gray, name, max_pixels)
    head = data[:16].lstrip().lower()
    for signature, what in _FOREIGN_SIGNATURES:
        if head.startswith(signature.lower()):
            raise UnsupportedFormatError(f"{name}: this is {what}, not an image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_size(image.width, image.height, name, max_pixels)
            if decode_max_side and image.format == "JPEG" and max(image.size) >= 2 * decode_max_side:
                # DCT scaling by 1/2, 1/4 or 1/8, keeping the longer side >= decode_max_side: the
                # largest 2396 x 1990 scan decodes at 1/4 (599 x 498), 4x fewer pixels for every
                # later step than a rule on the shorter side (1/2).
                long_side = max(image.size)
                image.draft(image.mode, (-(-image.width * decode_max_side // long_side),
                                         -(-image.height * decode_max_side // long_side)))
            decoded = image.width * image.height * _STORAGE_BYTES.get(image.mode, 4)
            if decoded > MAX_DECODED_BYTES:
                raise ImageTooLargeError(
                    f"{name}: image is {image.width}x{image.height} {image.mode}, {decoded / 2**20:.0f} MB once "
                    f"decoded; the limit is {MAX_DECODED_BYTES // 2**20} MB (save it as 8-bit greyscale, or smaller)")
            with decode_slot(decoded):
                rgb = _decode_rgb(image, decode_max_side)
    except (ImageTooLargeError, ImageTooSmallError):
        raise
    except Image.DecompressionBombError as err:
        match = _PILLOW_BOMB.search(str(err))
        declared = f"declares {int(match.group(1))} pixels" if match else "declares too many pixels"
        raise ImageTooLargeError(f"{name}: image {declared}; the limit is {max_pixels}") from err
    except UnidentifiedImageError as err:
        raise InvalidImageError(
            f"{name}: not a recognised image (expected JPEG, PNG, BMP, TIFF, WebP or DICOM)"
        ) from err
    except MemoryError as err:
        raise ImageTooLargeError(f"{name}: not enough memory to decode this image") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidImageError(f"{name}: image data is corrupt or truncated ({err})") from err
    return np.ascontiguousarray(rgb)


class decode_slot:
    """Context manager: a decode of ``decoded_bytes`` above LARGE_DECODE_BYTES waits for one of the
    process-wide large-decode slots; smaller ones pass straight through."""

    def __init__(self, decoded_bytes: int):
        self._semaphore = _LARGE_DECODES if decoded_bytes > LARGE_DECODE_BYTES else None

    def __enter__(self) -> "decode_slot":
        if self._semaphore is not None:
            self._semaphore.acquire()
        return self

    def __exit__(self, *exc) -> None:
        if self._semaphore is not None:
            self._semaphore.release()


def _decode_rgb(image: Image.Image, decode_max_side: int | None) -> np.ndarray:
    """Decode an opened Pillow image to RGB uint8, reduced by an integer factor when it is large.

    JPEGs were already reduced by DCT scaling (``draft``); other formats are decoded at full size
    and shrunk at once (box filter), strip by strip, so no full-size RGB or float copy is made.
    """
    orientation = image.getexif().get(0x0112)
    image.load()
    factor = min(image.size) // decode_max_side if decode_max_side else 1
    if factor < 2:
        return _pil_to_rgb(ImageOps.exif_transpose(image))
    rgb = _reduced_rgb(image, factor)
    method = _EXIF_TRANSPOSE.get(orientation)
    if method is not None:
        rgb = np.asarray(Image.fromarray(rgb, "RGB").transpose(method))
    return rgb


def _reduced_rgb(image: Image.Image, factor: int) -> np.ndarray:
    """RGB uint8 of ``image`` shrunk by ``factor`` (box filter), converted strip by strip."""
    width, height = image.size
    high_depth = image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
    rows = max(1, _STRIP_PIXELS // (width * factor)) * factor
    parts = []
    if high_depth:
        out_w, out_h = width // factor, height // factor
        for top in range(0, out_h * factor, rows):
            bottom = min(top + rows, out_h * factor)
            strip = np.asarray(image.crop((0, top, out_w * factor, bottom))).astype(np.float32)
            parts.append(strip.reshape((bottom - top) // factor, factor, out_w, factor).mean(axis=(1, 3)))
        gray = _to_uint8(np.concatenate(parts))
        return np.repeat(gray[:, :, None], 3, axis=2)
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(top + rows, height)))
        parts.append(np.asarray(Image.fromarray(_pil_to_rgb(strip), "RGB").reduce(factor)))
    return np.concatenate(parts)


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
