"""Every exception the edge runtime raises on purpose: one hierarchy under :class:`CxrError`, each with a stable ``code``.

Classes that callers also catch as a builtin keep that builtin as a second base
(:class:`UnknownModelError` is a ``LookupError``, :class:`SettingsError` a ``ValueError``).
"""

from __future__ import annotations

from typing import Any


class CxrError(Exception):
    """Base class of every error this package raises on purpose."""

    #: Stable machine-readable code (used by the JSON API and the CLI).
    code = "error"


class InvalidImageError(CxrError):
    """The input cannot be decoded as an image (empty, truncated, not an image)."""

    code = "invalid_image"


class InputNotFoundError(InvalidImageError):
    """The input file does not exist (or vanished before it could be read)."""

    code = "file_not_found"


class NotARegularFileError(InvalidImageError):
    """The input is a folder, device, FIFO or socket: only regular files are read."""

    code = "not_a_regular_file"


class UnsupportedFormatError(InvalidImageError):
    """The input is a known format this runtime does not read (PDF, compressed DICOM ...)."""

    code = "unsupported_format"


class ImageTooLargeError(InvalidImageError):
    """The image declares more pixels than the configured limit (decompression bomb guard)."""

    code = "image_too_large"


class ImageTooSmallError(InvalidImageError):
    """The image is too small to hold a readable chest X-ray."""

    code = "image_too_small"


class NotChestXrayError(CxrError):
    """The image decoded, but does not look like a chest X-ray (photo, blank, low quality)."""

    code = "not_chest_xray"

    def __init__(self, message, reason="not_chest_xray", details=None):
        super().__init__(message)
        self.reason = reason
        self.details = dict(details or {})


class ModelError(CxrError):
    """The model file or its spec is missing, invalid or inconsistent."""

    code = "model_error"


class ModelIntegrityError(ModelError):
    """The model file does not match the sha256 recorded in its spec (tampered or truncated)."""

    code = "model_integrity"


class StorageError(CxrError):
    """An output (heatmap, moved file) cannot be written: disk full, read-only or missing folder.
    Fatal for a batch or a watcher: going on would only fail every following file the same way."""

    code = "storage_error"


class RuntimeUnavailableError(CxrError):
    """No TFLite interpreter package is installed."""

    code = "runtime_unavailable"


class LogError(CxrError):
    """The screening log cannot be opened or written (not a database, read-only, disk full)."""

    code = "log_error"


class CameraError(CxrError):
    """The camera is missing, busy, or returned an unusable frame."""

    code = "camera_error"


class DicomNodeError(CxrError):
    """The node cannot start (pynetdicom missing, port in use, bad --forward or AE title)."""

    code = "dicom_node_error"


class ServiceError(CxrError):
    """A unit cannot be written as asked (bad option, unsafe token file, missing user)."""

    code = "service_error"


class UsageError(CxrError):
    """A combination of options that cannot work (exit code 2)."""

    code = "usage_error"


class SettingsError(CxrError, ValueError):
    """Invalid settings of the web server (a too-short token, an unknown setting, a bad limit)."""

    code = "invalid_settings"


class UnknownModelError(CxrError, LookupError):
    """A request named a model this server does not offer."""

    code = "unknown_model"


class ApiError(CxrError):
    """An error the web API answers as ``{"error": {"code": ..., "message": ...}}`` with an HTTP status.

    Args:
        status: HTTP status code.
        code: Stable machine-readable code.
        message: Human-readable explanation (never a stack trace, never patient data).
        extra: More fields for the ``error`` object (e.g. ``reason``).
    """

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
