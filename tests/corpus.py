"""Builders of the fixed bad-input corpus: broken files, odd image modes and DICOM files (pydicom)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def gradient(height: int = 96, width: int = 80) -> np.ndarray:
    """A smooth (H, W) uint8 ramp: row + column, no two corners alike."""
    yy, xx = np.mgrid[0:height, 0:width]
    return ((yy * 160 // height) + (xx * 90 // width)).astype(np.uint8)


def jpeg_bytes(size=(96, 80), quality=90) -> bytes:
    return encode(Image.fromarray(gradient(*size)).convert("RGB"), "JPEG", quality=quality)


def truncated_jpeg() -> bytes:
    data = jpeg_bytes((200, 200))
    return data[: len(data) // 2]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` 8-bit grey pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + png_chunk(b"IEND", b""))


def exif_rotated_jpeg() -> tuple[bytes, np.ndarray]:
    """A 80 (wide) x 48 JPEG with a red top-left block and EXIF orientation 6 (display rotated 90 deg CW).

    Returns (bytes, expected RGB after the rotation, as Pillow's exif_transpose gives it).
    """
    stored = np.full((48, 80, 3), 128, np.uint8)
    stored[:16, :16] = (255, 0, 0)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    data = encode(image, "JPEG", quality=95, exif=exif.tobytes())
    return data, np.rot90(stored, k=-1)


def png16_bytes() -> tuple[bytes, np.ndarray]:
    values = (1000 + gradient().astype(np.uint16) * 16).astype(np.uint16)
    return encode(Image.fromarray(values), "PNG"), values


def rgba_png() -> bytes:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, 32:, 3] = 255  # right half opaque, left half fully transparent
    return encode(Image.fromarray(rgba), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(gradient()).convert("RGB").convert("CMYK"), "JPEG", quality=95)


def palette_png() -> bytes:
    return encode(Image.fromarray(gradient()).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE), "PNG")


def colour_photo_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    photo = np.stack([(xx * 255 // 320), (yy * 255 // 240), 255 - (xx * 255 // 320)], axis=2).astype(np.int16)
    photo += rng.integers(-20, 20, photo.shape)
    return encode(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)), "JPEG", quality=90)


# -- DICOM ---------------------------------------------------------------------------------------

def dicom_bytes(pixels: np.ndarray | None, photometric: str = "MONOCHROME2", *, bits: int | None = None,
                slope: float | None = None, intercept: float | None = None, window: tuple | None = None,
                transfer_syntax: str | None = None, encapsulated: bytes | None = None) -> bytes:
    """A DICOM Part 10 file built with pydicom (explicit VR little endian unless told otherwise)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = FileDataset("test.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName = "Test^Synthetic"
    if pixels is not None or encapsulated is not None:
        shape = pixels.shape if pixels is not None else (64, 64)
        ds.Rows, ds.Columns = shape[:2]
        ds.PhotometricInterpretation = photometric
        ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
        if photometric == "RGB":
            ds.PlanarConfiguration = 0
        depth = bits or (8 if pixels is None or pixels.dtype == np.uint8 else 16)
        ds.BitsAllocated = depth
        ds.BitsStored = depth if depth == 8 else 12
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        if slope is not None:
            ds.RescaleSlope = slope
            ds.RescaleIntercept = intercept or 0.0
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        if encapsulated is not None:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([encapsulated])
            ds["PixelData"].is_undefined_length = True
        else:
            ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_monochrome1() -> tuple[bytes, np.ndarray]:
    raw = gradient().astype(np.uint16) * 16  # 12-bit values
    return dicom_bytes(raw, "MONOCHROME1"), raw


def dicom_ct_like() -> bytes:
    """MONOCHROME2, 12 bits in 16, rescale slope 1 / intercept -1024, window 40 / 400."""
    raw = np.tile(np.linspace(0, 4095, 128).astype(np.uint16), (96, 1))
    return dicom_bytes(raw, slope=1.0, intercept=-1024.0, window=(40, 400))


def dicom_without_pixels() -> bytes:
    return dicom_bytes(None)


def dicom_compressed() -> bytes:
    """JPEG 2000 transfer syntax whose single fragment is not a codestream (no decoder either way)."""
    from pydicom.uid import JPEG2000Lossless

    return dicom_bytes(None, transfer_syntax=JPEG2000Lossless, bits=16, encapsulated=b"\xff\x4f\xff\x51" + b"\0" * 64)


def dicom_rgb() -> bytes:
    return dicom_bytes(np.zeros((64, 64, 3), np.uint8), "RGB")


def flat_png(width: int, height: int, *, colour_type: int = 0, bit_depth: int = 8, value: int = 0) -> bytes:
    """A PNG of ``width`` x ``height`` constant pixels (grey 0, RGB 2, RGBA 6; 8 or 16 bits), compressed
    row by row so that building an 8000 x 8000 file costs no more memory than one row."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\x00" + bytes([value]) * (width * channels * bit_depth // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def dicom_without_preamble(implicit: bool = False) -> bytes:
    """A bare DICOM data set as old modalities write it: no 128-byte preamble, no ``DICM`` and no file
    meta group, starting with group 0008 (implicit VR little endian when ``implicit``)."""
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    raw = gradient().astype(np.uint16) * 16
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = raw.tobytes()
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()
