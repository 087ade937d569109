"""Clinic web page and JSON API for the edge runtime: a Flask app served by waitress, offline.

Importing this package needs neither Flask nor waitress: :func:`create_app` and the server are imported
on first use, so that the settings and their defaults (:mod:`.config`) and the image store (:mod:`.store`)
serve the CLI, the service writer and the DICOM node on a device without the ``[web]`` extra.
"""

import importlib

from ..errors import ApiError
from .config import WebConfig, is_loopback

# Public name -> the module (needing Flask or waitress) that defines it.
_NEEDS_FLASK = {"create_app": "app", "WebServer": "server", "create_server": "server", "serve": "server"}

__all__ = ["ApiError", "WebConfig", "WebServer", "create_app", "create_server", "is_loopback", "serve"]


def __getattr__(name: str):
    module = _NEEDS_FLASK.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
