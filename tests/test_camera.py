"""Frame sources: the fake, and the Pi camera through an injected fake picamera2 (BGR memory order)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.camera import FakeFrameSource, FrameSource, PiCameraSource, bgr_to_rgb
from edge_runtime.errors import CameraError


def coloured_frame(height=48, width=64) -> np.ndarray:
    """R=200, G=100, B=10 everywhere, so any channel swap shows."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 200, 100, 10
    return frame


def test_fake_source_hands_out_rgb_frames_in_order():
    frames = [coloured_frame(), np.full((48, 64, 3), 7, np.uint8)]
    with FakeFrameSource(frames) as source:
        assert isinstance(source, FrameSource) and source.opened
        first = source.capture()
        assert first.dtype == np.uint8 and first.shape == (48, 64, 3)
        assert tuple(first[0, 0]) == (200, 100, 10)  # R, G, B as given
        first[:] = 0  # a copy: the source's frame is untouched
        assert (source.capture() == 7).all()
        with pytest.raises(CameraError, match="all 2 frames"):
            source.capture()
    assert source.closed


def test_fake_source_repeat_and_validation():
    source = FakeFrameSource([coloured_frame()], repeat=True)
    for _ in range(3):
        assert source.capture()[0, 0, 0] == 200
    with pytest.raises(CameraError, match="uint8"):
        FakeFrameSource([np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError):
        FakeFrameSource([])


class _FakePicamera2:
    """Mimics picamera2.Picamera2: 'RGB888' frames come back as B, G, R bytes, like libcamera's."""

    instances: list = []
    channels = 3

    def __init__(self, camera_num=0):
        self.camera_num = camera_num
        self.config = None
        self.started = self.stopped = self.closed = False
        _FakePicamera2.instances.append(self)

    def create_still_configuration(self, main=None, **kwargs):
        return {"main": dict(main or {})}

    def configure(self, config):
        self.config = config

    def start(self):
        self.started = True

    def capture_array(self, stream="main"):
        assert self.started and stream == "main"
        width, height = self.config["main"]["size"]
        rgb = coloured_frame(height, width)
        bgr = rgb[:, :, ::-1]
        if self.channels == 4:  # XRGB8888: B, G, R, X
            bgr = np.concatenate([bgr, np.full((height, width, 1), 255, np.uint8)], axis=2)
        return np.ascontiguousarray(bgr)

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True


@pytest.fixture()
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = _FakePicamera2
    _FakePicamera2.instances = []
    _FakePicamera2.channels = 3
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return _FakePicamera2


def test_pi_camera_converts_bgr_memory_to_rgb(fake_picamera2):
    with PiCameraSource(size=(64, 48), warmup_seconds=0) as camera:
        frame = camera.capture()
        device = fake_picamera2.instances[0]
        assert device.config["main"] == {"size": (64, 48), "format": "RGB888"}
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.flags["C_CONTIGUOUS"]
    assert tuple(frame[0, 0]) == (200, 100, 10)
    assert device.stopped and device.closed


def test_pi_camera_drops_the_padding_of_4_channel_frames(fake_picamera2):
    fake_picamera2.channels = 4
    with PiCameraSource(size=(32, 40), warmup_seconds=0) as camera:
        frame = camera.capture()
    assert frame.shape == (40, 32, 3) and tuple(frame[5, 5]) == (200, 100, 10)


def test_pi_camera_needs_open():
    with pytest.raises(CameraError, match="not open"):
        PiCameraSource().capture()


def test_missing_picamera2_names_the_apt_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    with pytest.raises(CameraError, match="sudo apt install python3-picamera2"):
        PiCameraSource(warmup_seconds=0).open()


def test_camera_start_failure_is_a_camera_error(fake_picamera2, monkeypatch):
    def broken_start(self):
        raise RuntimeError("Camera __init__ sequence did not complete.")

    monkeypatch.setattr(fake_picamera2, "start", broken_start)
    with pytest.raises(CameraError, match="cannot start camera 0"):
        PiCameraSource(warmup_seconds=0).open()


def test_picamera2_is_imported_only_when_the_camera_opens():
    code = ("import sys, edge_runtime, edge_runtime.camera, edge_runtime.cli; "
            "print('picamera2' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.split()
    assert out == ["False", "False"]


def test_bgr_to_rgb():
    frame = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    assert (bgr_to_rgb(frame) == frame[:, :, ::-1]).all()
    assert importlib.import_module("edge_runtime.camera").DEFAULT_SIZE == (1640, 1232)
