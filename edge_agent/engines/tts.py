"""Speech synthesis: espeak-ng through pyttsx3's espeak driver, inside an engine child
process (see host.py) so a synthesis that hangs is killed and restarted without touching
playback.

pyttsx3 initializes espeak-ng (in its sample-retrieval mode, so nothing is played here) and
lists the voices; each sentence is then synthesized through the driver's espeak-ng binding
(`pyttsx3.drivers._espeak`) with our own synthesis callback that keeps every sample. We do
not use pyttsx3's `say`/`save_to_file` + `runAndWait` loop: it plays audio itself through
`aplay`, and in 2.99 its loop calls espeak's Cancel when a previous message still counts as
playing, which cut sentences short (or to nothing) and dropped voice/rate changes queued
behind them; the WAV file it writes also misses the samples that arrive with the
end-of-message event. The daemon owns every sample from here on (devices/audio.py plays it).

Jobs: payload {"text": ..., "voice": id|null, "rate": wpm, "pitch": 0-100, "volume": 0-1}
-> result {"sample_rate", "samples", "synth_ms"} + one binary frame (s16le mono).
"""
from __future__ import annotations

import ctypes
import threading
import time

from ..errors import INTERNAL, CodedError
from .channel import EngineJob
from .worker import WorkerChannel, serve_short_jobs

GENDERS = {"Male": "male", "Female": "female"}
SAMPLE_RATE = 22050  # espeak-ng's rate for its own voices (pyttsx3 does not report it)


def list_voices(engine) -> list[dict]:
    voices = []
    for voice in engine.getProperty("voices"):
        voices.append({"id": voice.id, "name": voice.name,
                       "languages": [lang for lang in (voice.languages or []) if lang and lang != "Unknown"],
                       "gender": GENDERS.get(voice.gender)})
    return voices


class TtsWorker:
    def __init__(self, channel: WorkerChannel):
        import pyttsx3
        from pyttsx3.drivers import _espeak

        self.channel = channel
        self.espeak = _espeak
        self.engine = pyttsx3.init("espeak")  # initializes espeak-ng once for this process
        self.voices = list_voices(self.engine)
        self.default_voice = self.engine.getProperty("voice")
        self.samples: list[bytes] = []
        self.finished = threading.Event()

        def on_synth(wav, count, events):  # called from espeak-ng's thread
            if count > 0:
                self.samples.append(ctypes.string_at(wav, count * 2))
            index = 0
            while events[index].type != _espeak.EVENT_LIST_TERMINATED:
                if events[index].type == _espeak.EVENT_MSG_TERMINATED:
                    self.finished.set()
                index += 1
            return 0

        self._callback = on_synth
        _espeak.SetSynthCallback(on_synth)

    def synthesize(self, job: dict) -> tuple[dict, bytes]:
        espeak = self.espeak
        start = time.perf_counter()
        voice = job.get("voice") or self.default_voice
        if espeak.SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        espeak.SetParameter(espeak.RATE, int(job["rate"]), 0)
        espeak.SetParameter(espeak.PITCH, int(job["pitch"]), 0)
        espeak.SetParameter(espeak.VOLUME, int(round(float(job["volume"]) * 100)), 0)
        self.samples, self.finished = [], threading.Event()
        espeak.Synth(job["text"], flags=espeak.ENDPAUSE | espeak.CHARS_UTF8)
        if not self.finished.wait(timeout=60):
            raise TimeoutError("espeak-ng did not finish the sentence")
        pcm = b"".join(self.samples)
        return {"sample_rate": SAMPLE_RATE, "samples": len(pcm) // 2,
                "synth_ms": round((time.perf_counter() - start) * 1000, 2)}, pcm

    def handle(self, job: EngineJob) -> None:
        try:
            info, pcm = self.synthesize(job.payload)
            self.channel.result(job.job, info, (pcm,))
        except Exception as exc:  # noqa: BLE001 - reported, the worker lives on
            self.channel.fail(job.job, CodedError(INTERNAL, f"synthesis failed: {type(exc).__name__}: {exc}"))


def serve(channel: WorkerChannel, spec: dict) -> None:
    serve_short_jobs(channel, TtsWorker, "cannot start espeak-ng through pyttsx3",
                     lambda worker: {"engine": "espeak-ng (pyttsx3)", "voices": worker.voices,
                                     "default_voice": worker.default_voice})
