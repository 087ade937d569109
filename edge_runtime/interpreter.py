"""Chooses the TFLite interpreter: ai_edge_litert, then tflite_runtime, then tensorflow.lite."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile

from .errors import ModelError, RuntimeUnavailableError

logger = logging.getLogger(__name__)

#: (import path of the module holding ``Interpreter``, runtime name), in order of preference.
_CANDIDATES = (
    ("ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "tflite_runtime"),
    ("tensorflow.lite", "tensorflow.lite"),
)


def find_interpreter_class(prefer: str | None = None):
    """Return ``(Interpreter class, runtime name)`` of the first installed runtime.

    Args:
        prefer: Name of one runtime to use (``ai_edge_litert``, ``tflite_runtime`` or
            ``tensorflow.lite``) instead of the first found.

    Raises:
        RuntimeUnavailableError: none is installed, with what to install.
    """
    candidates = _CANDIDATES
    if prefer:
        candidates = tuple(c for c in _CANDIDATES if c[1] == prefer)
        if not candidates:
            raise RuntimeUnavailableError(
                f"unknown runtime {prefer!r}; choose one of {[c[1] for c in _CANDIDATES]}")
    errors = []
    for module_name, runtime in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            errors.append(f"{module_name}: {err}")
            continue
        interpreter = getattr(module, "Interpreter", None)
        if interpreter is not None:
            return interpreter, runtime
        errors.append(f"{module_name}: has no Interpreter")
    raise RuntimeUnavailableError(
        "no TFLite runtime is installed. Install one: `pip install ai-edge-litert` (Python 3.9-3.12, numpy 2), "
        "or on an older Raspberry Pi OS `pip install tflite-runtime 'numpy<2'`. Tried: " + "; ".join(errors))


#: Lines the TFLite C++ runtime prints to stderr on every start, which are not news to anyone.
_NATIVE_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextlib.contextmanager
def _filtered_native_stderr():
    """Capture what native code writes to file descriptor 2 while the interpreter is created, and
    pass everything on except the XNNPACK "INFO" line (no environment variable silences it)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield  # no usable fd 2 (an embedded interpreter): nothing to filter
        return
    capture = tempfile.TemporaryFile()
    try:
        os.dup2(capture.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", errors="replace")
        capture.close()
        for line in text.splitlines():
            if line.strip() in _NATIVE_NOISE:
                logger.debug("%s", line.strip())
            elif line:
                print(line, file=sys.stderr, flush=True)


def make_interpreter(model_path: str, num_threads: int = 1, prefer: str | None = None):
    """Create and allocate an interpreter for ``model_path``.

    Returns:
        ``(interpreter, runtime name)``.

    Raises:
        RuntimeUnavailableError: no runtime installed.
        ModelError: the file is not a valid TFLite model.
    """
    interpreter_class, runtime = find_interpreter_class(prefer)
    try:
        with _filtered_native_stderr():
            interpreter = interpreter_class(model_path=str(model_path), num_threads=int(num_threads))
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelError(f"{model_path}: not a valid TFLite model for {runtime}: {err}") from err
    logger.debug("loaded %s with %s (%d threads)", model_path, runtime, num_threads)
    return interpreter, runtime
