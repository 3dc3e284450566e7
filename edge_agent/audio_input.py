"""Audio from clients: check before anything listens to the samples.

A `listen` request's audio is a WAV file (integer PCM, 8 to 32 bits, any channel count up to
8) or raw PCM (signed 16-bit little-endian, mono, at the request's `sample_rate`). Its length
is checked from the header before the samples are read (a WAV header can claim hours), the
samples are mixed to mono and resampled to the recogniser's 16 kHz (soxr). Every refusal is an
AudioError (a CodedError about the request's `audio`), raised in the engine process that
decodes it, as images are (images.py). Nothing here writes audio anywhere.
"""
from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

from .errors import BAD_REQUEST, TOO_LARGE, UNSUPPORTED, CodedError
from .protocol import AUDIO_FORMATS, SAMPLE_RATES

SAMPLE_RATE = 16_000  # what the recognisers take
MAX_CHANNELS = 8


class AudioError(CodedError):
    def __init__(self, code: str, message: str, field: str = "audio"):
        super().__init__(code, message, field=field)


@dataclass(frozen=True)
class LoadedAudio:
    samples: Any  # numpy int16, mono, SAMPLE_RATE
    format: str
    sample_rate: int  # as sent
    channels: int  # as sent

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def max_bytes(max_seconds: float) -> int:
    """The most bytes a request's audio may have: `max_seconds` of 8-channel 32-bit audio at the
    highest rate would be absurd, so the limit is 16-bit stereo at 48 kHz, plus a header."""
    return int(max_seconds * 48_000 * 2 * 2) + 4096


def load_audio(data: bytes, fmt: str, sample_rate: int | None, max_seconds: float) -> LoadedAudio:
    import numpy as np

    if not data:
        raise AudioError(BAD_REQUEST, "the audio frame is empty")
    if fmt == "pcm":
        if sample_rate is None:
            raise AudioError(BAD_REQUEST, "raw PCM needs its sample_rate", field="sample_rate")
        if len(data) % 2:
            raise AudioError(BAD_REQUEST, f"raw PCM is signed 16-bit samples: {len(data)} bytes is an odd count")
        _check_rate(sample_rate, "the raw PCM's sample_rate", field="sample_rate")
        _check_length(len(data) // 2, sample_rate, max_seconds)
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        channels = 1
    elif fmt == "wav":
        samples, sample_rate, channels = _read_wav(data, max_seconds)
    else:
        raise AudioError(UNSUPPORTED, f"audio format {fmt!r}: send {' or '.join(AUDIO_FORMATS)}", field="format")
    if len(samples) == 0:
        raise AudioError(BAD_REQUEST, "the audio has no samples")
    return LoadedAudio(_to_16k(samples, sample_rate), fmt, sample_rate, channels)


def _check_rate(rate: int, what: str, field: str = "audio") -> None:
    low, high = SAMPLE_RATES
    if not low <= rate <= high:
        raise AudioError(UNSUPPORTED, f"{what} is {rate} Hz: the rate must be {low} to {high} Hz", field=field)


def _check_length(frames: int, sample_rate: int, max_seconds: float) -> None:
    """After _check_rate (a positive rate)."""
    if frames / sample_rate > max_seconds:
        raise AudioError(TOO_LARGE, f"the audio is {frames / sample_rate:.1f} s long; the limit is {max_seconds:g} s")


def _read_wav(data: bytes, max_seconds: float) -> tuple[Any, int, int]:
    import numpy as np

    try:
        with wave.open(io.BytesIO(data)) as wav:
            channels, width, rate, frames = wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()
            if not 1 <= channels <= MAX_CHANNELS:
                raise AudioError(UNSUPPORTED, f"a WAV of {channels} channels: at most {MAX_CHANNELS}")
            if width not in (1, 2, 3, 4):
                raise AudioError(UNSUPPORTED, f"a WAV of {width * 8}-bit samples: send 8 to 32-bit integer PCM")
            _check_rate(rate, "the WAV's rate")
            # streamed WAVs (espeak-ng --stdout, arecord to a pipe) claim 2**31 frames: count what is there
            frames = min(frames, len(data) // (width * channels))
            _check_length(frames, rate, max_seconds)
            raw = wav.readframes(frames)
    except AudioError:
        raise
    except (wave.Error, EOFError, ValueError) as exc:  # not RIFF/WAVE, float or compressed data, cut short
        raise AudioError(BAD_REQUEST if "unknown format" not in str(exc) else UNSUPPORTED,
                         f"the audio frame is not a readable integer-PCM WAV file: {exc}") from None
    usable = len(raw) - len(raw) % (width * channels)  # a header that claims more than the file has
    raw = raw[:usable]
    if width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        bytes3 = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        value = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
        samples = (np.where(value >= 1 << 23, value - (1 << 24), value) / float(1 << 23)).astype(np.float32)
    else:
        kind = "<i2" if width == 2 else "<i4"
        samples = np.frombuffer(raw, kind).astype(np.float32) / float(1 << (8 * width - 1))
    return samples.reshape(-1, channels).mean(axis=1), rate, channels


def _to_16k(samples: Any, sample_rate: int) -> Any:
    import numpy as np
    import soxr

    if sample_rate != SAMPLE_RATE:
        samples = soxr.resample(samples, sample_rate, SAMPLE_RATE)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)

