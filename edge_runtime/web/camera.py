"""The web server's camera: finds the Pi camera, and takes one frame per request from a FrameSource."""

from __future__ import annotations

import importlib.util
import logging
import threading

import numpy as np

from ..camera import FrameSource, PiCameraSource

logger = logging.getLogger(__name__)


def detect_camera() -> FrameSource | None:
    """A :class:`~edge_runtime.camera.PiCameraSource` when picamera2 reports a camera, else ``None``."""
    if importlib.util.find_spec("picamera2") is None:
        return None
    try:
        from picamera2 import Picamera2

        cameras = Picamera2.global_camera_info()
    except Exception as err:  # noqa: BLE001 - any failure of the optional camera stack means "no camera"
        logger.info("camera stack present but unusable: %s", err)
        return None
    if not cameras:
        return None
    logger.info("camera found: %s", cameras[0].get("Model", "unknown model"))
    return PiCameraSource()


class FrameTaker:
    """Takes one frame per call from a frame source, opening it only for that frame.

    Opening per frame costs about a second on a Pi, but leaves the camera free for other
    programs between patients and survives a camera being reconnected. Calls are serialised.

    Args:
        source: The frame source.
    """

    def __init__(self, source: FrameSource):
        self.source = source
        self._lock = threading.Lock()

    def __call__(self) -> np.ndarray:
        """One RGB frame.

        Raises:
            CameraError: the camera could not be opened or gave no frame.
        """
        with self._lock, self.source:
            return self.source.capture()
