"""Speech to listen to in tests and benchmarks: espeak-ng's voice as a WAV file, optionally
padded with room noise (a microphone is never digitally silent) and mixed with noise."""
from __future__ import annotations

import io
import subprocess
import wave

import numpy as np

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
