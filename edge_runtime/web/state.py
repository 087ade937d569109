"""What the clinic app's request handlers share: its state (settings, models, log, images)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from flask import Flask, current_app

from .config import WebConfig
from .registry import ModelRegistry
from .store import ImageStore

#: Key of the app's :class:`WebState` in ``app.extensions``.
STATE_KEY = "cxr_edge"


@dataclasses.dataclass
class WebState:
    """What request handlers share: settings, models, log and image store."""

    config: WebConfig
    registry: ModelRegistry
    log: Any
    store: ImageStore
    camera: Any = None
    started: float = dataclasses.field(default_factory=time.time)

    def close(self) -> None:
        self.registry.close()
        close = getattr(self.log, "close", None)
        if close is not None:
            close()


def get_state(app: Flask | None = None) -> WebState:
    """The :class:`WebState` of ``app`` (default: the current app)."""
    return (app or current_app).extensions[STATE_KEY]
