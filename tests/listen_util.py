"""Speech to listen to in tests and benchmarks: espeak-ng's voice as a WAV file, optionally
padded with room noise (a microphone is never digitally silent) and mixed with noise; and a
microphone the daemon can open whose sound a test decides (MicrophoneFeed)."""
from __future__ import annotations

import errno
import fcntl
import io
import os
import subprocess
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_agent.engines.echo import FRAME_S, EchoGate

from .speech_util import SAMPLE_RATE as SPEAKER_RATE
from .speech_util import AlsaFileDevice

COMMANDS = ["what time is it", "read this", "what is this", "stop talking", "repeat that", "louder", "quieter",
            "what is the weather", "call for help", "read the label"]


def espeak(text: str, voice: str = "en-us", rate: int = 160) -> tuple[np.ndarray, int]:
    """espeak-ng's samples (float32, -1..1) and their rate."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
                         capture_output=True, check=True, timeout=60).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate_hz = reader.getframerate()
        # espeak-ng streams its WAV: the header's frame count is a placeholder, read what is there
        samples = np.frombuffer(reader.readframes(len(wav)), np.int16)
    return samples.astype(np.float32) / 32768.0, rate_hz


def speech(text: str, *, voice: str = "en-us", rate: int = 160, pad_s: float = 0.3, noise_dbfs: float | None = -50,
           snr_db: float | None = None, seed: int = 0) -> tuple[np.ndarray, int]:
    """`text` spoken with `pad_s` of quiet before and after; `noise_dbfs`: the level of a
    steady hiss under everything (None: digital silence); `snr_db`: louder noise relative to
    the speech's level instead (background noise)."""
    samples, rate_hz = espeak(text, voice, rate)
    pad = np.zeros(int(pad_s * rate_hz), np.float32)
    mixed = np.concatenate([pad, samples, pad])
    generator = np.random.default_rng(seed)
    if snr_db is not None:
        level = float(np.sqrt(np.mean(samples ** 2))) / (10 ** (snr_db / 20))
        mixed = mixed + generator.normal(0.0, level, len(mixed)).astype(np.float32)
    elif noise_dbfs is not None:
        mixed = mixed + generator.normal(0.0, 10 ** (noise_dbfs / 20), len(mixed)).astype(np.float32)
    return np.clip(mixed, -1.0, 1.0), rate_hz


def speech_bounds_s(samples: np.ndarray, rate_hz: int, level_dbfs: float = -40.0) -> tuple[float, float]:
    """Where the speaker started and stopped: the start of the first and the end of the last
    10 ms above `level_dbfs` (espeak-ng's output goes on about 350 ms past the end, near
    silence). The whole of `samples` if none is that loud."""
    step = rate_hz // 100
    level = 10 ** (level_dbfs / 20)
    loud = [start for start in range(0, len(samples) - step, step)
            if float(np.sqrt(np.mean(samples[start:start + step] ** 2))) > level]
    if not loud:
        return 0.0, len(samples) / rate_hz
    return loud[0] / rate_hz, (loud[-1] + step) / rate_hz


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


def wav(samples: np.ndarray, rate_hz: int, channels: int = 1, width: int = 2) -> bytes:
    """A WAV file of `samples` (float, mono) as `width`-byte integers, copied to `channels`."""
    scaled = np.clip(samples, -1.0, 1.0)
    if width == 1:
        data = (scaled * 127 + 128).astype(np.uint8)
    elif width == 2:
        data = (scaled * 32767).astype("<i2")
    elif width == 3:
        as32 = (scaled * 8388607).astype("<i4")
        data = as32.view(np.uint8).reshape(-1, 4)[:, :3].copy()
    else:
        data = (scaled * 2147483647).astype("<i4")
    frames = np.repeat(data.reshape(len(samples), -1), channels, axis=0) if channels > 1 else data
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate_hz)
        writer.writeframes(np.ascontiguousarray(frames).tobytes())
    return buffer.getvalue()


MIC_RATE = 16_000  # the rate the daemon opens its microphone at
F_SETPIPE_SZ = 1031  # linux/fcntl.h


def echo_path(rt60_s: float, rng: np.random.Generator, delay_s: float = 0.0) -> np.ndarray:
    """A loudspeaker's echo path as an impulse response at MIC_RATE: `delay_s` of silence, the
    direct sound, then a diffuse tail 6 dB under it that decays by 60 dB over `rt60_s` (0: none)."""
    n = int(rt60_s * MIC_RATE)
    tail = rng.normal(0.0, 1.0, n) * np.exp(-6.9 * np.arange(n) / max(1, n))
    tail *= 0.5 / max(1e-9, float(np.sqrt(np.sum(tail ** 2))))
    response = np.concatenate([np.zeros(int(delay_s * MIC_RATE)), [1.0], np.zeros(int(0.003 * MIC_RATE)), tail])
    return response.astype(np.float32)


def gate_decisions(gate: EchoGate, microphone: np.ndarray, start: float) -> list[bool]:
    """The echo gate's verdict on each 10 ms frame of `microphone` (float -1..1 at MIC_RATE),
    its first sample heard at `start`."""
    frame = int(MIC_RATE * FRAME_S)
    frames = to_int16(microphone)[: len(microphone) // frame * frame].reshape(-1, frame)
    return [gate.passes(samples, start + i * FRAME_S) for i, samples in enumerate(frames)]


class MicrophoneFeed:
    """A microphone for the daemon: the FIFO an ALSA `file` PCM reads as its `infile`
    (speech_util.AlsaFileDevice(..., microphone=feed.fifo)). A thread writes 10 ms of sound
    every 10 ms, like a sound card: a quiet room (-60 dBFS hiss), and speech when `say` queues
    it. Room noise nobody reads is dropped, as a sound card's is; the pipe holds at most 4 KiB
    (128 ms), so a stream opened later hears the room from about now. Speech is never dropped:
    it waits for room. `said_at` holds the moments the first sample of each `say` went into
    the pipe."""

    CHUNK = MIC_RATE // 100

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.fifo = folder / "microphone.fifo"
        os.mkfifo(self.fifo)
        # read-write: the pipe always has a writer and a reader, so neither side's open blocks
        self._fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)
        fcntl.fcntl(self._fd, F_SETPIPE_SZ, 4096)
        self._chunks: list[tuple[np.ndarray, bool]] = []  # speech to send: (10 ms, first of a `say`)
        self._echo = np.zeros(0, np.float32)  # sound from elsewhere (a loudspeaker), mixed in as it comes
        self._lock = threading.Lock()
        self.said_at: list[float] = []
        self._noise = np.random.default_rng(1)
        self._closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def say(self, samples: np.ndarray, rate_hz: int) -> None:
        """Speech (float -1..1 at `rate_hz`) into the microphone from the next 10 ms on."""
        import soxr

        pcm = to_int16(soxr.resample(samples.astype(np.float32), rate_hz, MIC_RATE))
        pcm = np.concatenate([pcm, np.zeros(-len(pcm) % self.CHUNK, np.int16)])
        chunks = [(c, i == 0) for i, c in enumerate(pcm.reshape(-1, self.CHUNK))]
        with self._lock:
            self._chunks += chunks

    def echo(self, samples: np.ndarray) -> None:
        """Mix `samples` (float -1..1 at MIC_RATE) into what the microphone hears, after what
        was mixed before (sound from a loudspeaker, as it comes)."""
        with self._lock:
            self._echo = np.concatenate([self._echo, samples.astype(np.float32)])

    def clear(self) -> None:
        """Forget speech not yet sent and what waits in the pipe (a stream opened next hears
        the room, not the end of an interrupted sentence)."""
        with self._lock:
            self._chunks.clear()
            self._echo = np.zeros(0, np.float32)
            try:
                while os.read(self._fd, 1 << 16):
                    pass
            except BlockingIOError:
                pass

    def speaking(self) -> bool:
        with self._lock:
            return bool(self._chunks)

    def _run(self) -> None:
        tick = time.monotonic()
        while not self._closed:
            hiss = self._noise.normal(0.0, 32767 * 10 ** (-60 / 20), self.CHUNK)
            with self._lock:
                speech, first = self._chunks[0] if self._chunks else (None, False)
                echo, self._echo = self._echo[:self.CHUNK], self._echo[self.CHUNK:]
            sound = hiss if speech is None else speech + hiss
            if len(echo):
                sound = sound + np.pad(echo, (0, self.CHUNK - len(echo))) * 32767
            written = self._write(np.clip(sound, -32768, 32767).astype("<i2").tobytes())
            if speech is not None and written:
                with self._lock:
                    self._chunks.pop(0)
                if first:
                    self.said_at.append(time.monotonic())
            tick += self.CHUNK / MIC_RATE
            time.sleep(max(0.0, tick - time.monotonic()))

    def _write(self, chunk: bytes) -> bool:
        try:
            return os.write(self._fd, chunk) == len(chunk)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return False
            raise

    def close(self) -> None:
        self._closed = True


def cancel_once_listening(client, op: str, **fields) -> float:
    """Send `op` (listen or assist from the microphone), cancel it once the daemon reports
    `listening`; the seconds from the cancel to its final `cancelled` event."""
    rid = client.send(op, **fields)
    while (event := client.next_event(rid, 30))["event"] != "listening":
        assert not event["final"], event
    started = time.monotonic()
    assert client.cancel(rid)["cancelled"] is True
    while not (event := client.next_event(rid, 10))["final"]:
        pass
    assert event["event"] == "error" and event["error"]["code"] == "cancelled", event
    return time.monotonic() - started


class Loudspeaker:
    """Feeds what the daemon plays (its ALSA output device) back into its microphone,
    attenuated and late, like a loudspeaker beside the microphone."""

    def __init__(self, speaker: AlsaFileDevice, microphone: MicrophoneFeed, gain_db: float, delay_s: float):
        self.speaker, self.microphone = speaker, microphone
        self.gain = 10 ** (gain_db / 20)
        self.delay_s = delay_s
        self.on = False
        self.late = True  # the next sound starts the path's delay
        self._stopped = False
        self._read = speaker.size()
        import soxr

        self._resampler = soxr.ResampleStream(SPEAKER_RATE, MIC_RATE, 1, dtype="float32")
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stopped = True

    def _run(self) -> None:
        while not self._stopped:
            time.sleep(0.01)
            size = self.speaker.size() // 2 * 2
            if size <= self._read:
                continue
            played = self.speaker.samples(self._read)[: (size - self._read) // 2].astype(np.float32) / 32768
            self._read = size
            if self.on:
                echo = self._resampler.resample_chunk(played) * self.gain
                if self.late:  # the path's delay, once: the sound keeps coming that late
                    echo = np.concatenate([np.zeros(int(self.delay_s * MIC_RATE), np.float32), echo])
                    self.late = False
                self.microphone.echo(echo)


def tell_me_a_story(client, microphone: MicrophoneFeed, on_event: Callable[[dict], None]) -> list[dict]:
    """`assist` push-to-talk with barge-in: "tell me a story" said into the microphone once the
    daemon listens for the command, `on_event` called with every event (to interrupt the
    answer), until the final one; the events."""
    events = []
    rid = client.send("assist", trigger="push", wait_s=20.0, barge_in=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        event = client.next_event(rid, 60)
        events.append(event)
        if event["event"] == "listening" and event["stage"] == "command":
            microphone.say(*speech("tell me a story", pad_s=0.2))
        on_event(event)
        if event["final"]:
            break
    return events
