"""Camera frames for the classifier: a frame-source interface, the Pi camera (picamera2) and a fake."""

from __future__ import annotations

import abc
import logging
import time
from typing import Iterable

import numpy as np

from .errors import CameraError

logger = logging.getLogger(__name__)

#: Still size asked of the Pi camera: the full field of the v2/v3 modules binned 2x2 (fast, and
#: far more pixels than the model's input needs).
DEFAULT_SIZE = (1640, 1232)

_PICAMERA2_HELP = ("picamera2 is not installed. On Raspberry Pi OS: `sudo apt install python3-picamera2` "
                   "(it is not pip-installable into a plain venv; create the venv with --system-site-packages)")


class FrameSource(abc.ABC):
    """Something that hands out RGB frames: use as a context manager, then call :meth:`capture`.

    Subclasses implement :meth:`capture` and, when they hold a device, :meth:`open` and
    :meth:`close`.
    """

    #: How the screening log names frames from this source.
    name = "camera"

    def open(self) -> None:
        """Acquire the device (called by ``__enter__``)."""

    def close(self) -> None:
        """Release the device (called by ``__exit__``; idempotent)."""

    @abc.abstractmethod
    def capture(self) -> np.ndarray:
        """One frame as an (H, W, 3) uint8 array in R, G, B order.

        Raises:
            CameraError: no frame could be captured.
        """

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_frame(frame: np.ndarray, where: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise CameraError(f"{where}: expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    return np.ascontiguousarray(frame)


class FakeFrameSource(FrameSource):
    """Frames from memory, for tests and demos: each :meth:`capture` returns the next one.

    Args:
        frames: (H, W, 3) uint8 RGB arrays.
        repeat: Start again from the first frame when all were used (default: raise).
    """

    name = "fake-camera"

    def __init__(self, frames: Iterable[np.ndarray], repeat: bool = False):
        self._frames = [_check_frame(f, "FakeFrameSource") for f in frames]
        if not self._frames:
            raise ValueError("FakeFrameSource needs at least one frame")
        self._repeat = repeat
        self._next = 0
        self.opened = False
        self.closed = False

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.closed = True

    def capture(self) -> np.ndarray:
        if self._next >= len(self._frames):
            if not self._repeat:
                raise CameraError(f"FakeFrameSource: all {len(self._frames)} frames were captured")
            self._next = 0
        frame = self._frames[self._next]
        self._next += 1
        return frame.copy()


class PiCameraSource(FrameSource):
    """The Raspberry Pi camera through picamera2 (imported only when the camera is opened).

    Frames are requested as libcamera ``RGB888``. Despite the name, libcamera's ``RGB888`` is a
    little-endian packed format whose bytes in memory are B, G, R (it matches OpenCV's BGR), so
    every frame is reversed along the channel axis here, once. We keep colour rather than using
    the cheaper luminance (Y) plane of YUV420: the model only needs luminance, but the quality
    gate needs colour to refuse a camera pointed at a room instead of at a film.

    Args:
        size: (width, height) of the still stream.
        camera_num: Which camera, when several are connected.
        warmup_seconds: Time given to auto-exposure and white balance after starting.
    """

    name = "picamera2"

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, camera_num: int = 0, warmup_seconds: float = 1.0):
        self.size = (int(size[0]), int(size[1]))
        self.camera_num = int(camera_num)
        self.warmup_seconds = float(warmup_seconds)
        self._camera = None

    def open(self) -> None:
        """Import picamera2, configure the still stream as RGB888 and start the camera.

        Raises:
            CameraError: picamera2 missing, no camera, or the camera is busy.
        """
        if self._camera is not None:
            return
        try:
            from picamera2 import Picamera2  # only here: it exists on Raspberry Pi OS only
        except ImportError as err:
            raise CameraError(_PICAMERA2_HELP) from err
        try:
            camera = Picamera2(self.camera_num)
            config = camera.create_still_configuration(main={"size": self.size, "format": "RGB888"})
            camera.configure(config)
            camera.start()
        except Exception as err:  # picamera2 raises RuntimeError, IndexError, OSError ...
            raise CameraError(f"cannot start camera {self.camera_num}: {err} (is it connected and free? "
                              "try `rpicam-hello --list-cameras`)") from err
        self._camera = camera
        if self.warmup_seconds > 0:
            time.sleep(self.warmup_seconds)
        logger.info("camera %d started at %dx%d", self.camera_num, *self.size)

    def capture(self) -> np.ndarray:
        """One still as RGB (H, W, 3) uint8.

        Raises:
            CameraError: the camera is not open or the capture failed.
        """
        if self._camera is None:
            raise CameraError("the camera is not open: use `with PiCameraSource() as camera:`")
        try:
            frame = np.asarray(self._camera.capture_array("main"))
        except Exception as err:
            raise CameraError(f"camera capture failed: {err}") from err
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = frame[:, :, :3]  # XRGB8888 is B, G, R, X in memory: drop the padding byte
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise CameraError(f"camera returned a frame of shape {frame.shape}; expected (H, W, 3)")
        return bgr_to_rgb(frame)

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
        finally:
            camera.close()


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """Reverse the channel order of an (H, W, 3) frame into a new contiguous uint8 array."""
    return np.ascontiguousarray(np.asarray(frame)[:, :, ::-1], dtype=np.uint8)
