"""Clinic web page and JSON API for the edge runtime: a Flask app served by waitress, offline."""

from ..errors import ApiError
from .app import create_app
from .config import WebConfig, is_loopback
from .server import WebServer, create_server, serve

__all__ = ["ApiError", "WebConfig", "WebServer", "create_app", "create_server", "is_loopback", "serve"]
