"""Audio output: PCM segments played through sounddevice in small chunks from one thread.

Why chunks and a lead: `stop` and `pause` must silence the device within tens of
milliseconds, so at most `lead_ms` of audio is ever handed to the device ahead of its clock,
written `chunk_ms` at a time, and a flush aborts the stream (dropping what the device still
buffers). Pacing against our own clock also keeps devices honest that accept audio faster
than real time (an ALSA `file` PCM over `null` swallows a minute of audio in a millisecond).

The stream is opened when there is something to play and closed after `idle_close_s`
of silence, so a device that was missing or disappeared is simply opened again next time
(PortAudio's device list is refreshed after a failure). Errors never escape the thread:
they are reported through `on_event`.

Events, called from the player thread: on_event(kind, tag, info) with kind one of
  "start"  a segment's first sample went to the device  (info: {"at": monotonic time})
  "end"    its last sample went to the device           (info: {"at": ...})
  "error"  the device could not be opened or failed     (info: {"message": ...}); the
           segments with that tag are dropped
`tag` is the (group, item) pair the caller queued the segment with (for speech: utterance and
sentence); a failure drops every queued segment of the same group.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("edge_agent.audio")


class AudioUnavailable(Exception):
    """No usable output device (PortAudio missing, no device, device busy or gone)."""


@dataclass
class Segment:
    tag: Any
    pcm: np.ndarray  # int16 mono
    sample_rate: int
    offset: int = 0  # samples handed to the device so far
    started: bool = False


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library itself is missing
        raise AudioUnavailable(f"PortAudio is not installed ({exc}); install libportaudio2") from None
    return sounddevice


def device_of(name: str) -> str | int | None:
    """A configured device for PortAudio: "" = the system default, digits = an index, else
    (part of) a name."""
    return None if not name else int(name) if name.isdigit() else name


def list_devices() -> list[dict]:
    sd = _sounddevice()
    default_out = sd.default.device[1]
    return [{"index": i, "name": d["name"], "channels": d["max_output_channels"],
             "default": i == default_out or (default_out == -1 and i == 0)}
            for i, d in enumerate(sd.query_devices()) if d["max_output_channels"] > 0]


class AudioOutput:
    def __init__(self, device: str | int | None, on_event: Callable[[str, Any, dict], None], *,
                 chunk_ms: float = 20.0, lead_ms: float = 40.0, idle_close_s: float = 1.0):
        self.device = device
        self.on_event = on_event
        self.chunk_ms = chunk_ms
        self.lead_s = lead_ms / 1000
        self.idle_close_s = idle_close_s
        self._cond = threading.Condition()
        self._segments: deque[Segment] = deque()
        self._abort = False
        self._closing = False
        self._stream: Any = None  # sounddevice.RawOutputStream while open
        self._stream_rate = 0
        self._clock_start = 0.0  # monotonic time of sample 0 since the last (re)start
        self._written = 0  # samples handed to the device since _clock_start
        self._refresh = False  # PortAudio's device list may be stale after a failure
        self.last_error: str | None = None
        self.opened = 0
        self._thread = threading.Thread(target=self._run, name="edge-agent-audio", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- called from the daemon's loop

    def play(self, tag: Any, pcm: np.ndarray, sample_rate: int) -> None:
        with self._cond:
            self._segments.append(Segment(tag, pcm, sample_rate))
            self._cond.notify_all()

    def flush(self) -> list[tuple[Any, int]]:
        """Drop everything queued and silence the device now. Returns, for segments that had
        started, (tag, samples the listener has heard), so a pause can resume there."""
        with self._cond:
            heard = []
            ahead = self._ahead_samples()
            for segment in self._segments:
                if segment.started:
                    heard.append((segment.tag, max(0, segment.offset - ahead)))
                    ahead = max(0, ahead - segment.offset)
            self._segments.clear()
            self._abort = True
            self._cond.notify_all()
            return heard

    def busy(self) -> bool:
        with self._cond:
            return bool(self._segments)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._segments.clear()
            self._cond.notify_all()
        self._thread.join(timeout=2)

    def status(self) -> dict:
        return {"device": self.device, "open": self._stream is not None, "last_error": self.last_error,
                "opened": self.opened}

    # ---------------------------------------------------------------- the player thread

    def _ahead_samples(self) -> int:
        """Samples handed to the device that its clock has not reached yet."""
        if not self._stream_rate:
            return 0
        due = (time.monotonic() - self._clock_start) * self._stream_rate
        return max(0, int(self._written - due))

    def _open(self, sample_rate: int) -> None:
        sd = _sounddevice()
        if self._refresh:
            sd._terminate()  # re-enumerate devices: one may have appeared since the last failure
            sd._initialize()
            self._refresh = False
        try:
            stream = sd.OutputStream(samplerate=sample_rate, channels=1, dtype="int16", device=self.device,
                                     blocksize=max(1, int(sample_rate * self.chunk_ms / 1000)), latency="low")
            stream.start()
        except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError for an unknown device name
            self._refresh = True
            raise AudioUnavailable(f"cannot open audio output {self.device or 'default'}: {exc}") from None
        self._stream, self._stream_rate = stream, sample_rate
        self._clock_start, self._written = time.monotonic(), 0
        self.opened += 1
        self.last_error = None
        log.info("audio output open: %s at %d Hz", self.device or "default device", sample_rate)

    def _close_stream(self, abort: bool) -> None:
        stream, self._stream, self._stream_rate = self._stream, None, 0
        if stream is None:
            return
        try:
            (stream.abort if abort else stream.stop)()
            stream.close()
        except Exception as exc:  # noqa: BLE001 - a vanished device fails here too
            log.info("closing audio output: %s", exc)

    def _fail(self, tag: Any, message: str) -> None:
        self.last_error = message
        self._refresh = True
        with self._cond:
            kept = deque(s for s in self._segments if s.tag[0] != tag[0])
            self._segments = kept
        self.on_event("error", tag, {"message": message})

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                if self._abort:
                    self._abort = False
                    if self._stream is not None:
                        self._close_stream(abort=True)
                if self._closing:
                    self._close_stream(abort=True)
                    return
                if not self._segments:
                    if self._stream is not None and time.monotonic() - idle_since > self.idle_close_s:
                        self._close_stream(abort=False)
                    self._cond.wait(timeout=0.1)
                    continue
                segment = self._segments[0]
                ahead = self._ahead_samples() / self._stream_rate if self._stream_rate else 0.0
                if ahead > self.lead_s:  # far enough ahead of the device: wait, but wake for a flush
                    self._cond.wait(timeout=ahead - self.lead_s)
                    continue
            try:
                if self._stream is not None and self._stream_rate != segment.sample_rate:
                    self._close_stream(abort=False)
                if self._stream is None:
                    self._open(segment.sample_rate)
            except AudioUnavailable as exc:
                self._fail(segment.tag, str(exc))
                continue
            if self._ahead_samples() == 0:  # the device ran dry (a gap between sentences): restart the clock
                self._clock_start, self._written = time.monotonic(), 0
            chunk_samples = max(1, int(segment.sample_rate * self.chunk_ms / 1000))
            chunk = segment.pcm[segment.offset:segment.offset + chunk_samples]
            if not segment.started:
                segment.started = True
                heard_at = time.monotonic() + self._ahead_samples() / segment.sample_rate
                self.on_event("start", segment.tag, {"at": heard_at})
            try:
                self._stream.write(chunk)
            except Exception as exc:  # noqa: BLE001 - the device disappeared mid-stream
                self._close_stream(abort=True)
                self._fail(segment.tag, f"audio output failed: {exc}")
                continue
            with self._cond:
                if self._abort or not self._segments or self._segments[0] is not segment:
                    continue  # flushed while writing: the chunk is gone with the stream
                segment.offset += len(chunk)
                self._written += len(chunk)
                finished = segment.offset >= len(segment.pcm)
                if finished:
                    self._segments.popleft()
                    idle_since = time.monotonic()
            if finished:
                # the last sample is at the device; it is heard once the clock reaches it
                heard_at = time.monotonic() + self._ahead_samples() / segment.sample_rate
                self.on_event("end", segment.tag, {"at": heard_at})
