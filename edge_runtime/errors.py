"""Exceptions raised by the edge runtime: specific, actionable, never a bare assert."""


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
