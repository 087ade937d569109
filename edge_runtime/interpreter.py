"""Chooses the TFLite interpreter: ai_edge_litert, then tflite_runtime, then tensorflow.lite."""

from __future__ import annotations

import importlib
import logging

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
        interpreter = interpreter_class(model_path=str(model_path), num_threads=int(num_threads))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelError(f"{model_path}: not a valid TFLite model for {runtime}: {err}") from err
    logger.debug("loaded %s with %s (%d threads)", model_path, runtime, num_threads)
    return interpreter, runtime
