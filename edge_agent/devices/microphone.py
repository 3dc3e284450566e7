"""Audio input: a sounddevice (PortAudio) capture stream read as 16 kHz mono 16-bit frames.

The stream is opened for one listening request and closed at its end: a microphone that is
open only while the daemon listens is what a user of an assistant expects (and what the
device's activity light shows). A capture thread hands each block to a bounded queue; the
reader (`frames`) takes them with a timeout, so the engine that listens keeps its
heartbeat and sees a cancel while the device is silent or stalls. A device that refuses
16 kHz is opened at its own default rate and resampled (soxr, streaming).

Nothing captured is written anywhere: the frames live in the queue until they are read.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .audio import AudioUnavailable, _sounddevice, device_of

SAMPLE_RATE = 16_000
BLOCK_S = 0.01  # PortAudio delivers 10 ms at a time: barge-in and end of speech wait on it
MAX_BACKLOG_S = 5.0  # of audio not yet read; older blocks are dropped (counted in `dropped_s`)


class Microphone:
    def __init__(self, device: str = ""):
        self.device = device
        self._blocks: queue.Queue[bytes | AudioUnavailable] = queue.Queue(maxsize=int(MAX_BACKLOG_S / BLOCK_S))
        self._stream: Any = None
        self._resampler: Any = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.rate = 0  # the device's rate
        self.dropped_s = 0.0
        # when the first sample was heard (time.monotonic(), the first block's return less its
        # length): sample n of the stream was heard n / rate later, unless blocks were dropped
        self.started_at: float | None = None

    def open(self) -> None:
        sd = _sounddevice()
        last: Exception | None = None
        device = device_of(self.device)
        try:
            rates = [SAMPLE_RATE, int(sd.query_devices(device, "input")["default_samplerate"])]
        except Exception as exc:  # noqa: BLE001 - ValueError: no such device; PortAudioError
            raise AudioUnavailable(f"no audio input device {self.device or '(default)'}: {exc}") from None
        for rate in dict.fromkeys(rates):
            try:
                stream = sd.RawInputStream(samplerate=rate, channels=1, dtype="int16", device=device,
                                           blocksize=int(rate * BLOCK_S))
                stream.start()
            except Exception as exc:  # noqa: BLE001 - PortAudioError: a rate or device it refuses
                last = exc
                continue
            if rate != SAMPLE_RATE:
                import soxr

                self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="int16")
            self._stream, self.rate = stream, rate
            self._thread = threading.Thread(target=self._capture, name="edge-agent-microphone", daemon=True)
            self._thread.start()
            return
        raise AudioUnavailable(f"cannot open audio input {self.device or '(default)'}: {last}")

    def _capture(self) -> None:
        """Blocking reads of one block at a time. (PortAudio's callback mode chose other
        periods on ALSA's `file` PCM and handed back partly stale buffers.) The thread closes
        the stream itself, between reads, so a close never races a read."""
        stream, block = self._stream, int(self.rate * BLOCK_S)
        try:
            while not self._closing.is_set():
                data, _overflowed = stream.read(block)
                if self.started_at is None:
                    self.started_at = time.monotonic() - BLOCK_S
                self._queue(bytes(data))
        except Exception as exc:  # noqa: BLE001 - the device vanished or failed mid-stream
            self._queue(AudioUnavailable(f"audio input {self.device or '(default)'} failed: {exc}"))
        finally:
            try:
                stream.abort()
                stream.close()
            except Exception:  # noqa: BLE001, S110 - a vanished device fails here too; it is closed either way
                pass

    def _queue(self, item: bytes | AudioUnavailable) -> None:
        """Queue a block; drop the oldest when the reader lags too far."""
        while True:
            try:
                self._blocks.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._blocks.get_nowait()
                    self.dropped_s += BLOCK_S
                except queue.Empty:
                    pass

    def read(self, timeout: float) -> bytes | None:
        """The next block as 16 kHz mono int16 bytes (possibly empty after resampling), or None
        when the device gave nothing for `timeout` seconds; AudioUnavailable if it failed."""
        try:
            block = self._blocks.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(block, AudioUnavailable):
            raise block
        if self._resampler is None:
            return block
        samples = np.frombuffer(block, dtype="<i2")
        return self._resampler.resample_chunk(samples).astype("<i2").tobytes()

    def frames(self, frame_bytes: int, timeout: float) -> Iterator[bytes | None]:
        """Frames of exactly `frame_bytes`; None whenever `timeout` passes without audio (the
        caller heartbeats, checks for a cancel, and asks again)."""
        pending = b""
        while True:
            while len(pending) >= frame_bytes:
                yield pending[:frame_bytes]
                pending = pending[frame_bytes:]
            block = self.read(timeout)
            if block is None:
                yield None
                continue
            pending += block

    def close(self) -> None:
        """Stop capturing: the thread ends after its current read (a device stalled inside a
        read keeps only that daemon thread)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        while not self._blocks.empty():  # nothing heard is kept
            self._blocks.get_nowait()
