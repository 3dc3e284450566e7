"""A real ALSA output device for speech tests: an ALSA `file` PCM over `null`, made the
default through ALSA_CONFIG_PATH, so PortAudio (sounddevice) opens a real device whose
samples land in a file.

The file is a FIFO read by a thread here, which stamps every arrival: the plugin truncates a
regular file each time the daemon opens the device, and timestamps are what stop and pause
latency are measured with."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050  # espeak-ng's; the daemon opens the device at the synthesizer's rate

ALSA_CONF = """<{system}>
pcm.!default {{
    type file
    slave.pcm "null"
    file "{out}"
{infile}    format "raw"
}}
"""


class AlsaFileDevice:
    def __init__(self, folder: Path, out: Path | None = None, microphone: Path | None = None):
        """`out`: a regular file (possibly in a folder that does not exist yet) instead of
        the FIFO; then only `samples()` is meaningful. `microphone`: what capture streams of the
        same device read (listen_util.MicrophoneFeed's FIFO)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.fifo = out is None
        self.out = out or folder / "device.fifo"
        self.config = folder / "asound.conf"
        infile = f'    infile "{microphone}"\n' if microphone is not None else ""
        self.config.write_text(ALSA_CONF.format(system="/usr/share/alsa/alsa.conf", out=self.out, infile=infile))
        self.data = bytearray()
        self.points: list[tuple[float, int]] = []  # (arrival time, total bytes so far)
        self._lock = threading.Lock()
        if self.fifo:
            os.mkfifo(self.out)
            # read-write: the FIFO always has a writer, so reads never see EOF between streams
            self._fd = os.open(self.out, os.O_RDWR)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            chunk = os.read(self._fd, 1 << 16)
            with self._lock:
                self.data += chunk
                self.points.append((time.monotonic(), len(self.data)))

    @property
    def env(self) -> dict[str, str]:
        return {"ALSA_CONFIG_PATH": str(self.config)}

    def size(self) -> int:
        if not self.fifo:
            return self.out.stat().st_size if self.out.exists() else 0
        with self._lock:
            return len(self.data)

    def samples(self, since_bytes: int = 0) -> np.ndarray:
        if self.fifo:
            with self._lock:
                data = bytes(self.data[since_bytes:])
        else:
            data = self.out.read_bytes()[since_bytes:] if self.out.exists() else b""
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")

    def watch(self) -> Watcher:
        return Watcher(self)


class Watcher:
    """The device's arrivals from now on, as (time, bytes since now) points."""

    def __init__(self, device: AlsaFileDevice):
        self.device = device
        self.started = time.monotonic()
        self.start_bytes = device.size()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def points(self) -> list[tuple[float, int]]:
        with self.device._lock:
            later = [(t, size - self.start_bytes) for t, size in self.device.points if t >= self.started]
        return [(self.started, 0)] + later

    def first_audio_at(self) -> float | None:
        return next((t for t, size in self.points if size > 0), None)

    def last_growth_at(self) -> float | None:
        """When the device last received samples."""
        points = self.points
        return next((t for t, size in points if size >= points[-1][1]), None)

    def bytes_at(self, moment: float) -> int:
        return max((size for t, size in self.points if t <= moment), default=0)


def write_label_video(path: Path, lines: tuple[str, ...], frames: int = 20) -> None:
    """A camera looking at a printed label, as a video file: a grey card (pure white reads as
    glare to the guidance) with dark print, one text line per entry of `lines`."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (960, 540))
    for _ in range(frames):
        frame = np.full((540, 960, 3), 175, np.uint8)
        for row, line in enumerate(lines):
            cv2.putText(frame, line, (60, 150 + row * 120), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (20, 20, 20), 5)
        writer.write(frame)
    writer.release()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
