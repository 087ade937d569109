"""cxr-edge: offline chest X-ray screening on a Raspberry Pi or a laptop, without TensorFlow."""

from . import errors
from .classifier import Classifier, ClassifierOptions, Result
from .imaging import load_image, preprocess
from .log import ScreeningLog
from .spec import ModelSpec

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "ClassifierOptions",
    "ModelSpec",
    "Result",
    "ScreeningLog",
    "errors",
    "load_image",
    "preprocess",
    "__version__",
]
