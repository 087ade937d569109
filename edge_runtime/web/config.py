"""Settings of the clinic web app, with safe defaults (loopback only, bounded uploads)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

from ..errors import SettingsError
from ..log import default_log_path
from ..model_files import DEFAULT_PRECISION, find_models_dir

PathLike = Union[str, os.PathLike]

#: Default address: loopback only. Any other interface needs a token.
DEFAULT_HOST = "127.0.0.1"
#: Default TCP port.
DEFAULT_PORT = 8080
#: Largest accepted request body, in bytes (a 3000 x 3000 16-bit uncompressed DICOM is ~18 MB).
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: Shortest token accepted when the server is reachable from other machines (and in a service's token file).
MIN_TOKEN_LENGTH = 12


def is_loopback(host: str) -> bool:
    """True when ``host`` (a bind address or host name) only reaches this machine."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass
class WebConfig:
    """Everything :func:`edge_runtime.web.create_app` needs.

    Attributes:
        models: A models folder (every ``*.spec.json`` in it), a spec file, a ``.tflite`` file,
            or a sequence of these; ``None``: :func:`edge_runtime.model_files.find_models_dir`
            (``$CXR_MODELS``, the installed models, the repository's ``android_assets/``).
        log_path: SQLite screening log; ``None``: :func:`edge_runtime.log.default_log_path`
            (``$CXR_LOG`` or ``~/.local/share/cxr-edge/screenings.db``). Thumbnails are kept in
            ``<log stem>-images/`` beside it.
        token: Shared secret. When set, every request must carry it as ``Authorization: Bearer
            <token>`` or as the password of HTTP basic auth (any user name).
        require_token: Refuse to start without a token (set by ``serve`` for non-loopback hosts).
        max_upload_bytes: Largest request body accepted (HTTP 413 beyond).
        precision: Model file precision preferred when a spec lists several (``int8``/``fp16``).
        default_model: Name of the model used when a request names none (default: the
            pneumonia screening model if present, else the first).
        num_threads: Interpreter threads per model.
        quality_gate: Refuse inputs that do not look like chest X-rays.
        verify_sha256: Refuse model files whose sha256 differs from their spec.
        history_limit: Rows shown by the history page.
        camera: ``"auto"`` (the Pi camera when picamera2 reports one), ``None`` (no camera), or
            an :class:`edge_runtime.camera.FrameSource` (opened for each frame, then released).
        patient_reference: Offer a patient reference field on the page, keep it in the log,
            show it in the history and on reports, and make it searchable (off by default).
        classifier_factory: ``f(entry: ModelEntry) -> classifier``; by default the runtime's
            :class:`~edge_runtime.classifier.Classifier` with the settings above (tests may pass
            a stand-in).
    """

    models: PathLike | Sequence[PathLike] | None = None
    log_path: PathLike | None = None
    token: str | None = None
    require_token: bool = False
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    precision: str = DEFAULT_PRECISION
    default_model: str | None = None
    num_threads: int = 1
    quality_gate: bool = True
    verify_sha256: bool = True
    history_limit: int = 50
    camera: Any = "auto"
    patient_reference: bool = False
    classifier_factory: Callable[..., Any] | None = None

    def __post_init__(self):
        """Check the settings.

        Raises:
            SettingsError: a setting is invalid (a ``ValueError``; the message says which and why).
        """
        if self.token is not None and not isinstance(self.token, str):
            raise SettingsError("token must be a string")
        if self.token == "":
            self.token = None
        if self.token is not None and not self.token.strip():
            raise SettingsError("the token is only whitespace (an empty $CXR_TOKEN or token file?): give a real "
                             "secret of at least 12 characters")
        if self.token is not None and self.token != self.token.strip():
            raise SettingsError("the token starts or ends with whitespace; clients would not send it so: remove it")
        if self.require_token and not self.token:
            raise SettingsError(
                "a token is required when the server is reachable from other machines (any address "
                f"but 127.0.0.1/::1/localhost): give one of at least {MIN_TOKEN_LENGTH} characters")
        if self.token and len(self.token) < MIN_TOKEN_LENGTH:
            raise SettingsError(f"token is too short: use at least {MIN_TOKEN_LENGTH} characters "
                             "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(18))')")
        if self.max_upload_bytes < 1024:
            raise SettingsError(f"max_upload_bytes must be at least 1024, got {self.max_upload_bytes}")
        if self.precision not in ("int8", "fp16"):
            raise SettingsError(f"precision must be 'int8' or 'fp16', got {self.precision!r}")
        if self.num_threads < 1:
            raise SettingsError(f"num_threads must be at least 1, got {self.num_threads}")
        if not (self.camera is None or self.camera == "auto" or hasattr(self.camera, "capture")):
            raise SettingsError("camera must be 'auto', None or an edge_runtime.camera.FrameSource")
        if not 1 <= self.history_limit <= 1000:
            raise SettingsError(f"history_limit must be in 1..1000, got {self.history_limit}")

    @classmethod
    def coerce(cls, config: "WebConfig | Mapping[str, Any] | None") -> "WebConfig":
        """Accept a :class:`WebConfig`, a mapping of its fields, or ``None`` (defaults).

        Raises:
            SettingsError: an unknown setting, an invalid value, or ``config`` of another type.
        """
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, Mapping):
            known = {field.name for field in dataclasses.fields(cls)}
            unknown = sorted(set(config) - known)
            if unknown:
                raise SettingsError(f"unknown web settings {unknown}; known: {sorted(known)}")
            return cls(**dict(config))
        raise SettingsError(f"config must be a WebConfig or a mapping, got {type(config).__name__}")

    def resolved_log_path(self) -> Path:
        """The log path to use (``log_path`` or the log's default)."""
        if self.log_path is not None:
            return Path(self.log_path)
        return default_log_path()

    def resolved_models(self) -> PathLike | Sequence[PathLike]:
        """The model sources to use (``models`` or the shipped models folder).

        Raises:
            ModelError: ``models`` is None and no models folder is found.
        """
        if self.models is not None:
            return self.models
        return find_models_dir()
