"""Cameras by name: V4L2 devices, video files or stream URLs, GStreamer pipelines.

Each source has a grabber thread that keeps reading, so a capture returns the newest frame,
not one that waited in a driver or decoder buffer while nobody looked (what a blind user
pointing a phone or webcam needs: the frame of now). A source that fails or vanishes is
reopened with back-off; its state is reported. Any number of clients may capture at once:
they share the grabber's frames instead of fighting over the device.

A video file plays at its own frame rate, like a live camera, and starts over at its end
(reopening it, so a file that was replaced or removed behaves like a camera that was).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import INTERNAL, TIMEOUT, CodedError

LIVE, CONNECTING, RECONNECTING, STOPPED = "live", "connecting", "reconnecting", "stopped"
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class CameraError(CodedError):
    """A camera that cannot deliver: the daemon adds the camera's name."""


@dataclass(frozen=True)
class CameraSpec:
    name: str
    source: str  # /dev/videoN, N, a file path, rtsp://..., http://..., or gst:PIPELINE
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR, as OpenCV delivers it
    sequence: int  # frames read from the source since it was opened the first time
    captured_at: float  # time.monotonic()


def _open(spec: CameraSpec):
    import cv2

    source = spec.source
    if source.startswith("gst:"):
        capture = cv2.VideoCapture(source[4:], cv2.CAP_GSTREAMER)
    elif source.isdigit() or source.startswith("/dev/video"):
        capture = cv2.VideoCapture(int(source) if source.isdigit() else source, cv2.CAP_V4L2)
        if spec.width and spec.height:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, spec.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.height)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    else:
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        return None
    return capture


def _is_file(source: str) -> bool:
    return not (source.startswith("gst:") or source.isdigit() or source.startswith("/dev/video") or "://" in source)


class Camera:
    def __init__(self, spec: CameraSpec):
        self.spec = spec
        self.state = CONNECTING
        self.last_error: str | None = None
        self.reconnects = 0
        self._frame: Frame | None = None
        self._sequence = 0
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{spec.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import cv2

        attempt = 0
        while not self._stop.is_set():
            capture = _open(self.spec)
            if capture is None:
                self.last_error = f"cannot open {self.spec.source}"
                self.state = RECONNECTING if self._sequence else CONNECTING
                self._stop.wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                attempt += 1
                continue
            if self._sequence:
                self.reconnects += 1
            attempt = 0
            fps = capture.get(cv2.CAP_PROP_FPS) if _is_file(self.spec.source) else 0
            interval = 1.0 / fps if fps and fps < 240 else 0.0
            next_at = time.monotonic()
            while not self._stop.is_set():
                ok, image = capture.read()
                if not ok or image is None:
                    self.last_error = f"{self.spec.source}: no frame (ended or disconnected)"
                    break
                with self._condition:
                    self._sequence += 1
                    self._frame = Frame(image, self._sequence, time.monotonic())
                    self.state = LIVE
                    self._condition.notify_all()
                if interval:  # a file plays in real time, like a camera
                    next_at += interval
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
            capture.release()
            if not self._stop.is_set():
                self.state = RECONNECTING
                if not _is_file(self.spec.source):
                    self._stop.wait(BACKOFF_S[0])
        self.state = STOPPED

    def capture(self, timeout: float = 5.0) -> Frame:
        """A frame read after this call began: never one that was already waiting."""
        asked = time.monotonic()
        deadline = asked + timeout
        with self._condition:
            while self._frame is None or self._frame.captured_at < asked:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraError(TIMEOUT, f"camera {self.spec.name!r} delivered no frame in {timeout:.0f} s "
                                      f"({self.state}: {self.last_error or 'no error'})")
                self._condition.wait(remaining)
            return self._frame

    def status(self) -> dict:
        frame = self._frame
        return {"source": self.spec.source, "state": self.state, "reconnects": self.reconnects,
                "last_error": self.last_error, "frames": self._sequence,
                "size": [int(frame.image.shape[1]), int(frame.image.shape[0])] if frame is not None else None,
                "last_frame_age_s": round(time.monotonic() - frame.captured_at, 3) if frame is not None else None}

    def close(self) -> None:
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        self._thread.join(timeout=5)


def encode_jpeg(frame: Frame, quality: int = 90) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CameraError(INTERNAL, "JPEG encoding failed")
    return data.tobytes()
