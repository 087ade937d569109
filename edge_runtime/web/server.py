"""Run the clinic app with waitress: loopback by default, a token required on any other interface."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Sequence

from .app import SECURITY_HEADERS, create_app, upload_limit_message
from ..model_files import DEFAULT_PRECISION
from .config import DEFAULT_HOST, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_PORT, PathLike, WebConfig, is_loopback
from .state import get_state

logger = logging.getLogger(__name__)

#: Request-handling threads: requests for one model queue on its classifier's lock anyway, but a few
#: slow uploads (huge images wait for the one large-decode slot, see edge_runtime.imaging) must not
#: take every thread from an ordinary request.
DEFAULT_THREADS = 8


#: waitress's own errors (it answers these before the app sees the request) as API error codes.
_WAITRESS_CODES = {400: "bad_request", 413: "payload_too_large", 431: "headers_too_large", 500: "internal_error"}


def _json_error_channel(max_upload_bytes: int):
    """A waitress channel class whose own error responses (a body over the limit, a malformed
    request) are the API's JSON error with the security headers, not waitress's text/plain."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self):
            error = self.request.error
            status = int(getattr(error, "code", 400) or 400)
            code = _WAITRESS_CODES.get(status, "bad_request")
            message = (upload_limit_message(max_upload_bytes) if status == 413
                       else " ".join(str(getattr(error, "reason", "") or "bad request").lower().split()))
            body = json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")
            self.status = f"{status} {getattr(error, 'reason', '')}".strip()
            self.response_headers.extend([("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                          *SECURITY_HEADERS.items()])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


class WebServer:
    """A waitress server around the clinic app, runnable in the foreground or in a thread.

    Attributes:
        app: The Flask app (its state: ``app.extensions["cxr_edge"]``).
        host: The bound address.
        port: The bound port (the real one when 0 was asked).
        url: Base URL, e.g. ``http://127.0.0.1:8080``.
    """

    def __init__(self, app, host: str, port: int, threads: int = DEFAULT_THREADS):
        import waitress

        self.app = app
        max_body = get_state(app).config.max_upload_bytes
        self._server = waitress.create_server(
            app, host=host, port=port, threads=threads,
            # A little above the app's own limit, so the app answers 413 as JSON.
            max_request_body_size=max_body + 1024 * 1024,
            ident="cxr-edge", expose_tracebacks=False, clear_untrusted_proxy_headers=True,
        )
        # Bodies beyond waitress's limit never reach the app: answer them in the API's own form.
        channel = _json_error_channel(max_body)
        for server in getattr(self._server, "map", {}).values() or [self._server]:
            if hasattr(server, "channel_class"):
                server.channel_class = channel
        if hasattr(self._server, "channel_class"):
            self._server.channel_class = channel
        listen = getattr(self._server, "effective_listen", None) or [
            (self._server.effective_host, self._server.effective_port)]
        self.host, self.port = listen[0][0], int(listen[0][1])
        shown = f"[{self.host}]" if ":" in str(self.host) else self.host
        self.url = f"http://{shown}:{self.port}"
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve until :meth:`close` is called (or Ctrl+C in the foreground)."""
        self._server.run()

    def start(self) -> "WebServer":
        """Serve from a daemon thread; returns at once."""
        self._thread = threading.Thread(target=self.run, name="cxr-edge-web", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (open connections included), then close the models and the screening log."""
        from waitress import wasyncore

        server = self._server
        single = hasattr(server, "trigger")
        if single and self._thread is not None and self._thread.is_alive():
            # Close every channel from inside the serving loop (sockets are not closed under a
            # running select() in another thread); the loop ends when its map is empty.
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
            server.task_dispatcher.shutdown()
        elif single:
            server.task_dispatcher.shutdown()
            wasyncore.close_all(server._map)
        else:
            server.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        get_state(self.app).close()

    def __enter__(self) -> "WebServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def create_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                  models: PathLike | Sequence[PathLike] | None = None, token: str | None = None,
                  *, threads: int = DEFAULT_THREADS, preload: bool = True, **settings: Any) -> WebServer:
    """Build the app and bind its waitress server, without serving yet.

    Same arguments as :func:`serve`. Binding to anything but a loopback address requires
    ``token``.

    Raises:
        SettingsError: a non-loopback ``host`` without a token, or invalid settings (a ``ValueError``).
        ModelError: no usable model, or (with ``preload``) the default model fails to load.
        OSError: the port cannot be bound.
    """
    config = WebConfig(models=models, token=token, require_token=not is_loopback(host), **settings)
    app = create_app(config)
    state = get_state(app)
    try:
        if preload:
            # Load the default model now: a broken model fails at start, not at the first patient.
            state.registry.classifier(None)
        server = WebServer(app, host, port, threads=threads)
    except BaseException:
        state.close()
        raise
    if config.token:
        logger.warning("authentication required: every request must carry the token "
                       "(Authorization: Bearer <token>, or as the basic-auth password of any user)")
    if not is_loopback(host):
        logger.warning("listening on %s, reachable from other machines: traffic is plain HTTP, so use "
                       "only on a trusted clinic network", host)
    logger.info("serving %d model(s) %s on %s (log: %s)", len(state.registry.entries),
                list(state.registry.entries), server.url, Path(config.resolved_log_path()).name)
    return server


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          models: PathLike | Sequence[PathLike] | None = None, token: str | None = None,
          *, log_path: PathLike | None = None, threads: int = DEFAULT_THREADS,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, precision: str = DEFAULT_PRECISION,
          default_model: str | None = None, num_threads: int = 1, quality_gate: bool = True,
          verify_sha256: bool = True, camera: bool = True, preload: bool = True,
          patient_reference: bool = False) -> None:
    """Serve the clinic page and JSON API with waitress until interrupted (Ctrl+C or SIGTERM).

    Returns normally on SIGTERM (a service manager stopping it); raises ``KeyboardInterrupt``
    after a clean stop on Ctrl+C, so that the CLI exits 130.

    Args:
        host: Address to bind. ``127.0.0.1`` (default) keeps the server on this machine; any
            non-loopback address (e.g. ``0.0.0.0``) requires ``token``.
        port: TCP port (0 picks a free one).
        models: Models folder (each ``*.spec.json`` in it), spec file, ``.tflite`` file, or a
            sequence of these; ``None``: the shipped models (``$CXR_MODELS``, the installed
            package's models, the repository's ``android_assets/``).
        token: Shared secret, sent by clients as ``Authorization: Bearer <token>`` or as the
            basic-auth password (browsers prompt for it). At least 12 characters.
        log_path: SQLite screening log (default ``$CXR_LOG`` or
            ``~/.local/share/cxr-edge/screenings.db``); thumbnails go to ``<stem>-images/`` beside it.
        threads: waitress request threads.
        max_upload_bytes: Largest upload accepted (HTTP 413 beyond).
        precision: Model file precision preferred when a spec lists several (``int8``/``fp16``).
        default_model: Model name used when a request names none.
        num_threads: Interpreter threads per model.
        quality_gate: Refuse inputs that do not look like chest X-rays.
        verify_sha256: Refuse model files whose sha256 differs from their spec.
        camera: Offer "take a frame from the camera" when picamera2 reports a Pi camera.
        preload: Load the default model before accepting requests.
        patient_reference: Offer a patient reference field on the page and keep it in the log
            (off by default: the log then holds no patient identifier).

    Raises:
        SettingsError: a non-loopback ``host`` without a token, or invalid settings (a ``ValueError``).
        ModelError: no usable model was found, or the default model cannot be loaded.
        LogError: the screening log cannot be opened.
        OSError: the port cannot be bound.
    """
    server = create_server(host, port, models, token, threads=threads, preload=preload, log_path=log_path,
                           max_upload_bytes=max_upload_bytes, precision=precision,
                           default_model=default_model, num_threads=num_threads,
                           quality_gate=quality_gate, verify_sha256=verify_sha256,
                           camera="auto" if camera else None, patient_reference=patient_reference)
    previous = None
    terminated = []
    if threading.current_thread() is threading.main_thread():
        def _terminate(signum, frame):
            terminated.append(signum)
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        server.run()  # waitress itself returns on KeyboardInterrupt (Ctrl+C, or SIGTERM above)
    except KeyboardInterrupt:
        pass
    finally:
        logger.info("stopping")
        server.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not terminated:
        raise KeyboardInterrupt  # waitress swallowed Ctrl+C; the caller's exit code says "interrupted"
