"""Flask app factory: state, authentication, security headers and JSON errors for the clinic server."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..classifier import Classifier, ClassifierOptions
from ..errors import ApiError, CxrError, ModelError
from ..log import ScreeningLog
from .api import api
from .camera import FrameTaker, detect_camera
from .config import WebConfig, is_loopback
from .pages import pages
from .registry import ModelEntry, ModelRegistry, discover_models
from .state import STATE_KEY, WebState, get_state
from .store import ImageStore, images_dir_for

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent

#: Content-Security-Policy: everything from this server, no inline script or style, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
_AUTH_CHALLENGE = 'Basic realm="cxr-edge", charset="UTF-8"'


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                   **extra: Any) -> Response:
    """A JSON error response in the API's one error shape."""
    body = {"error": {"code": code, "message": message, **extra}}
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _token_matches(header: str, token: str) -> bool:
    """True when an Authorization header carries ``token`` (bearer, or basic auth password)."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        candidate = value
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        candidate = decoded.partition(":")[2]
    else:
        return False
    return hmac.compare_digest(candidate.encode("utf-8"), token.encode("utf-8"))


def _host_name(host: str) -> str:
    """The name part of a Host header value (``[::1]:8080`` -> ``::1``)."""
    return urlsplit("//" + host).hostname or ""


def _default_classifier_factory(config: WebConfig):
    def make(entry: ModelEntry):
        options = ClassifierOptions(num_threads=config.num_threads, heatmap=False,
                                    quality_gate=config.quality_gate, spec_path=str(entry.spec_path),
                                    verify_sha256=config.verify_sha256)
        return Classifier(entry.model_path, options)

    return make


def _open_log(path: Path, patient_reference: bool = False):
    return ScreeningLog(path, store_patient_ids=patient_reference)


def create_app(config: WebConfig | Mapping[str, Any] | None = None) -> Flask:
    """Build the clinic web app: page, history and JSON API.

    Models are found at once (an empty or broken models folder fails here, not at the first
    request); each model's classifier is created on first use and shared by all requests.

    Args:
        config: A :class:`WebConfig`, a mapping of its fields, or ``None`` for the defaults.

    Returns:
        The Flask app; its :class:`WebState` is ``app.extensions["cxr_edge"]``. Serve it with
        :func:`edge_runtime.web.serve` (waitress), not Flask's development server.

    Raises:
        ModelError: no usable model was found, or ``default_model`` is not among them.
        LogError: the screening log cannot be opened.
        SettingsError: invalid settings (e.g. a too-short token; a ``ValueError``).
    """
    config = WebConfig.coerce(config)
    entries = discover_models(config.resolved_models(), config.precision)
    make = config.classifier_factory or _default_classifier_factory(config)
    registry = ModelRegistry(entries, make, config.default_model)
    log_path = config.resolved_log_path()
    source = detect_camera() if config.camera == "auto" else config.camera
    camera = FrameTaker(source) if source is not None else None
    state = WebState(config=config, registry=registry, log=_open_log(log_path, config.patient_reference),
                     store=ImageStore(images_dir_for(log_path)), camera=camera)

    app = Flask(__name__, static_folder=str(_HERE / "static"), template_folder=str(_HERE / "templates"))
    app.config.update(
        MAX_CONTENT_LENGTH=config.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=1024 * 1024,  # text fields only; must exceed the 64 KiB parse chunk
        MAX_FORM_PARTS=32,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.json.sort_keys = False
    app.extensions[STATE_KEY] = state
    app.register_blueprint(api)
    app.register_blueprint(pages)
    _install_guards(app, config)
    _install_error_handlers(app)
    return app


def _install_guards(app: Flask, config: WebConfig) -> None:
    @app.before_request
    def guard() -> Response | None:
        if config.token:
            if not _token_matches(request.headers.get("Authorization", ""), config.token):
                message = ("authentication required: send the token as 'Authorization: Bearer <token>' "
                           "or as the basic-auth password")
                if _wants_json():
                    return error_response(401, "unauthorized", message, {"WWW-Authenticate": _AUTH_CHALLENGE})
                return Response(message + "\n", 401, {"WWW-Authenticate": _AUTH_CHALLENGE,
                                                      "Content-Type": "text/plain; charset=utf-8"})
        elif not is_loopback(_host_name(request.host)):
            # Without a token the server only answers to loopback names: a web page elsewhere
            # cannot reach it through a DNS name rebound to 127.0.0.1.
            return _refuse(403, "forbidden_host", "this server only answers requests addressed to "
                                                   "127.0.0.1/localhost unless it is started with a token")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            site = request.headers.get("Sec-Fetch-Site", "")
            # "null" is what sandboxed frames, file:// pages and some redirects send: not this site.
            if site == "cross-site" or (origin and (origin == "null" or urlsplit(origin).netloc != request.host)):
                return _refuse(403, "cross_origin", "requests from other web sites are refused")
        return None

    @app.after_request
    def harden(response: Response) -> Response:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if not request.path.startswith("/static/"):
            # Results and history are patient data: keep them out of shared caches and disk caches.
            response.headers["Cache-Control"] = "no-store"
        return response


def upload_limit_message(limit: int) -> str:
    """The message of a body over the upload limit (the app's and the server's 413 alike)."""
    return f"the upload is larger than this server accepts ({limit / (1024 * 1024):g} MB)"


def _refuse(status: int, code: str, message: str) -> Response:
    if _wants_json():
        return error_response(status, code, message)
    return Response(message + "\n", status, {"Content-Type": "text/plain; charset=utf-8"})


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_format",
}


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(err: ApiError):
        return error_response(err.status, err.code, err.message, **err.extra)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err: RequestEntityTooLarge):
        limit = get_state().config.max_upload_bytes
        length = request.content_length
        if length is not None and length <= limit:
            # The body is within the limit: werkzeug refused the form's shape (too many fields, or
            # a text field over its memory limit), which is not "larger than 32 MB".
            code = "form_too_large"
            message = (f"the form has more than {app.config['MAX_FORM_PARTS']} fields or a text field over "
                       f"{app.config['MAX_FORM_MEMORY_SIZE'] // 1024} KB; send the image as the 'file' field with "
                       "only the documented fields (model, heatmap, preview)")
        else:
            code, message = "payload_too_large", upload_limit_message(limit)
        if _wants_json():
            return error_response(413, code, message)
        return render_template("error.html", status=413, message=message), 413

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        status = err.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = err.description or err.name
        if _wants_json():
            return error_response(status, code, message)
        return render_template("error.html", status=status, message=err.name), status

    @app.errorhandler(ModelError)
    def model_error(err: ModelError):
        logger.error("model unavailable: %s", err)
        return _unavailable(err.code, "the model could not be loaded on this device; see the server log")

    @app.errorhandler(CxrError)
    def runtime_error(err: CxrError):
        logger.error("runtime error: %s", err)
        return _unavailable(err.code, str(err))

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        # The trace goes to the server log only; the client gets a stable code.
        logger.exception("unexpected error on %s %s", request.method, request.path)
        message = "internal error; see the server log"
        if _wants_json():
            return error_response(500, "internal_error", message)
        return render_template("error.html", status=500, message=message), 500


def _unavailable(code: str, message: str):
    if _wants_json():
        return error_response(503, code, message)
    return render_template("error.html", status=503, message=message), 503
