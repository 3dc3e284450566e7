"""The speech service: utterances in, audio out, with speech-dispatcher's priorities.

An utterance is text cut into sentences. Sentences are synthesized one at a time
(services/synthesis.py), the one holding the device first, so the first sentence plays
while the rest is synthesized. Audio for the device goes through services/playback.py;
audio for the client goes out as `audio` events. Streaming pipelines (chat, ask) keep
appending sentences to an open utterance until they close it.

Who holds the device is decided by the SSIP queue (services/ssip.py, docs/protocol.md
§4.12 has the table). Pause keeps an utterance's place and the exact sample it stopped at;
other, unpaused utterances may speak meanwhile. Everything here runs in the daemon's event
loop; the audio thread reports back through the playback. The file stays whole (a little over
400 lines): an utterance's life, from open to its one terminal event, is one state machine.
"""
from __future__ import annotations

import asyncio
import io
import itertools
import logging
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..devices.audio import AudioUnavailable, list_devices
from ..errors import DEVICE_UNAVAILABLE, INTERNAL, CodedError
from ..errors import cancelled as cancellation
from ..events import Event
from ..speech_text import shape, split_sentences
from .base import Service, unload_when_idle
from .playback import Playback
from .ssip import SpeechQueue
from .synthesis import Synthesizer

log = logging.getLogger("edge_agent.speech")

LOOKAHEAD_SENTENCES = 6  # synthesized ahead of the device, per utterance

# listener(event): the events of one utterance
Listener = Callable[[Event], None]


@dataclass
class Utterance:
    id: str
    owner: str  # the client, for `scope: self`
    options: P.SpeechOptions
    listener: Listener
    voice_id: str | None = None
    sentences: list[str] = field(default_factory=list)
    closed: bool = False
    shaping: int = 0  # texts still being shaped off the loop (append_text)
    last_shaping: asyncio.Task | None = None
    seq: int = 0
    paused: bool = False
    done: bool = False
    synthesized: int = 0  # sentences synthesized (in order)
    synth_turn: int = -1  # when its last sentence was synthesized (round-robin order among utterances)
    began: bool = False
    device_error: str | None = None
    # at the device (services/playback.py keeps these)
    audio: dict[int, np.ndarray] = field(default_factory=dict)
    sample_rate: int = 0
    playing: int = 0
    resume_at: int = 0
    sent_to_device: int = 0
    # the result's figures
    created: float = field(default_factory=time.monotonic)
    first_audio: float | None = None
    synth_s: float = 0.0
    audio_samples: int = 0

    @property
    def device(self) -> bool:
        return self.options.output in ("device", "both") and self.device_error is None

    @property
    def client(self) -> bool:
        return self.options.output in ("client", "both")

    @property
    def priority(self) -> str:
        return self.options.priority

    def tell(self, kind: str, **fields) -> None:
        self.listener(Event(kind, fields=fields))

    def summary(self) -> dict:
        duration = self.audio_samples / self.sample_rate if self.sample_rate else 0.0
        out: dict[str, Any] = {"sentences": len(self.sentences), "duration_ms": round(duration * 1000, 1),
               "first_audio_ms": round((self.first_audio - self.created) * 1000, 1) if self.first_audio else None,
               "synth_ms": round(self.synth_s * 1000, 1),
               "rtf": round(self.synth_s / duration, 4) if duration else None}
        if self.device_error:
            out["device_error"] = self.device_error
        return out


class SpeechService(Service):
    name = "speech"

    def __init__(self, config: Config, context: zmq.asyncio.Context):
        super().__init__()
        self.config = config
        self.synthesizer = Synthesizer(config, context)
        self.playback = Playback(config.speech, self._device_report)
        self.queue: SpeechQueue[Utterance] = SpeechQueue()
        self.utterances: dict[str, Utterance] = {}
        self._seq = itertools.count()
        self._turns = itertools.count()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # whether a client (by name) has so much unread that its audio should wait (server.py sets it)
        self.client_paused: Callable[[str], bool] = lambda name: False
        # who is told what the device plays: (samples, rate, when the first is heard); the
        # barge-in watch's echo gate (assistant.py)
        self.monitors: list[Callable[[np.ndarray, int, float], None]] = []

    def monitor(self, listener: Callable[[np.ndarray, int, float], None]) -> Callable[[], None]:
        """Tell `listener` every sentence the device starts to play, from now on; returns the
        call that stops it."""
        self.monitors.append(listener)
        return lambda: self.monitors.remove(listener) if listener in self.monitors else None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.playback.start()
        self.background(self._synthesis_loop())
        self.background(unload_when_idle(lambda: self.synthesizer.engine, self.config.speech.keep_alive_s,
                                         lambda: bool(self.utterances)))
        if self.config.speech.preload:
            self.background(self._preload())

    async def _preload(self) -> None:
        try:
            await self.synthesizer.ready()
        except CodedError as exc:
            log.error("starting the speech engine failed: %s", exc.message)

    async def close(self) -> None:
        self.cancel_all("shutdown")
        self.stop_background()
        self.playback.close()
        await self.synthesizer.close()

    def describe(self) -> dict:
        return {"available": True, "engine": "espeak-ng (pyttsx3)", "priorities": list(P.PRIORITIES),
                "outputs": list(P.SPEECH_OUTPUTS), "formats": list(P.AUDIO_FORMATS),
                "punctuation": list(P.PUNCTUATION), "rate_range": list(P.RATE_RANGE),
                "default_rate": self.config.speech.rate, "max_text_chars": P.MAX_SAY_CHARS,
                "actions": list(P.SPEECH_ACTIONS), "device": self.config.speech.device or "default"}

    def status(self) -> dict:
        current = self.queue.current
        return {**self.synthesizer.engine.status(), "speaking": current.id if current else None,
                "queued": len(self.queue), "paused": self.queue.paused(), "audio": self.playback.status()}

    async def voices(self, language: str | None) -> dict:
        info = await self.synthesizer.ready()
        try:
            devices = list_devices()
        except AudioUnavailable as exc:
            devices = []
            log.info("listing audio devices: %s", exc)
        return {"voices": self.synthesizer.voices_matching(info, language),
                "default_voice": self.config.speech.voice or info["default_voice"], "devices": devices}

    def check_options(self, options: P.SpeechOptions) -> None:
        """Reject an unknown voice or language before a request is accepted (once the engine
        has reported its voices; before that, `open` checks)."""
        if self.synthesizer.voice_info:
            self.synthesizer.voice_for(self.synthesizer.voice_info, options)

    # ---------------------------------------------------------------- utterances

    async def open(self, uid: str, owner: str, options: P.SpeechOptions, listener: Listener) -> Utterance:
        """A new utterance with no text yet (a pipeline appends as text arrives). Raises
        ProtocolError for a voice or language the engine does not have."""
        return self.open_now(uid, owner, options, listener, await self.synthesizer.ready())

    def ready_now(self) -> bool:
        return self.synthesizer.ready_now()

    def open_now(self, uid: str, owner: str, options: P.SpeechOptions, listener: Listener,
                 info: dict | None = None) -> Utterance:
        """`open` without waiting, for an engine that is ready: the utterance takes its place
        in the queue before the next request is read, so a `speech` control right behind a
        `say` sees it."""
        voice_id = self.synthesizer.voice_for(info or self.synthesizer.voice_info, options)
        utterance = Utterance(uid, owner, options, listener, voice_id=voice_id, seq=next(self._seq))
        self.utterances[uid] = utterance
        if utterance.device:
            for victim, reason in self.queue.arrive(utterance):
                self._end(victim, cancelled=reason)
            self._schedule()
        return utterance

    async def say(self, uid: str, owner: str, body: P.SayRequest, listener: Listener) -> None:
        self.say_text(await self.open(uid, owner, body.options, listener), body.text)

    def say_text(self, utterance: Utterance, text: str) -> None:
        self.append_text(utterance, text)
        self.close_utterance(utterance)

    def append_text(self, utterance: Utterance, text: str) -> None:
        """Shape and split `text` in a worker thread (up to 20,000 characters: the socket loop
        must not wait for it), then append its sentences, in the order the texts came."""
        utterance.shaping += 1
        options, before = utterance.options, utterance.last_shaping
        assert self._loop is not None
        shaped = self._loop.run_in_executor(None, _sentences, text, options.punctuation, options.markdown)

        async def land() -> None:
            if before is not None:
                await asyncio.wait([before])
            try:
                sentences = await shaped
            except Exception as exc:  # noqa: BLE001 - a bug in shaping ends this utterance, not the daemon
                log.exception("shaping text for %s failed", utterance.id)
                self._end(utterance, error={"code": INTERNAL, "message": f"text shaping failed: {exc}"})
                return
            finally:
                utterance.shaping -= 1
            self.append(utterance, sentences)
            self._check_finished(utterance)

        utterance.last_shaping = self.background(land())

    def append(self, utterance: Utterance, sentences: list[str]) -> None:
        if utterance.done or not sentences:
            return
        utterance.sentences += sentences
        self._wake.set()
        if utterance is self.queue.current:
            self.playback.feed(utterance)

    def close_utterance(self, utterance: Utterance) -> None:
        if utterance.done:
            return
        utterance.closed = True
        self._check_finished(utterance)

    def output_drained(self) -> None:
        """A client whose speech waited for it to read has room again."""
        self._wake.set()

    def _schedule(self) -> None:
        """Give the device to the best waiting utterance if nobody holds it."""
        chosen = self.queue.next()
        if chosen is not None:
            self._wake.set()
            self.playback.take(chosen)

    # ---------------------------------------------------------------- control

    def control(self, body: P.SpeechControlRequest, owner: str, target_uid: str | None) -> int:
        """stop / cancel / pause / resume; returns how many utterances it touched."""
        if body.target is not None:
            chosen = [self.utterances[target_uid]] if target_uid in self.utterances else []
        elif body.scope == "all":
            chosen = list(self.utterances.values())
        else:
            chosen = [u for u in self.utterances.values() if u.owner == owner]
        if body.action == "stop":  # the one speaking now (a queued target is dropped)
            if body.target is None:
                chosen = [u for u in chosen if u is self.queue.current]
            for utterance in chosen:
                self._end(utterance, cancelled="stop")
        elif body.action == "cancel":
            for utterance in chosen:
                self._end(utterance, cancelled="cancel")
        elif body.action == "pause":
            chosen = [u for u in chosen if u.device and not u.paused and not u.done]
            for utterance in chosen:
                self._pause(utterance)
            self._schedule()
        else:
            chosen = [u for u in chosen if u.paused and not u.done]
            for utterance in chosen:
                utterance.paused = False
                utterance.tell("speech", state="resumed", sentence=utterance.playing)
            current = self.queue.current
            if current is not None and self.queue.outranked():
                # the resumed one takes the device back; the speaker is postponed, not cancelled
                self.playback.silence(current)
                self.queue.postpone(current)
            self._schedule()
        return len(chosen)

    def _pause(self, utterance: Utterance) -> None:
        utterance.paused = True
        if utterance is self.queue.current:
            self.playback.silence(utterance)
            self.queue.postpone(utterance)
        sample_rate = utterance.sample_rate or 1
        utterance.tell("speech", state="paused", sentence=utterance.playing,
                       offset_ms=round(utterance.resume_at / sample_rate * 1000, 1))

    async def cancel(self, uid: str) -> None:
        utterance = self.utterances.get(uid)
        if utterance is not None:
            self._end(utterance, cancelled="cancel")

    def cancel_utterance(self, utterance: Utterance, reason: str) -> None:
        self._end(utterance, cancelled=reason)

    def cancel_all(self, reason: str) -> None:
        for utterance in list(self.utterances.values()):
            self._end(utterance, cancelled=reason)

    # ---------------------------------------------------------------- ending

    def _check_finished(self, utterance: Utterance) -> None:
        if utterance.done or not utterance.closed or utterance.shaping:
            return
        total = len(utterance.sentences)
        if utterance.synthesized < total:
            return
        if utterance.device and utterance.playing < total:
            return
        self._end(utterance)

    def _end(self, utterance: Utterance, cancelled: str | None = None, error: dict | None = None) -> None:
        if utterance.done:
            return
        utterance.done = True
        if utterance is self.queue.current and (cancelled or error):
            self.playback.silence(utterance)
        self.queue.remove(utterance)
        self.utterances.pop(utterance.id, None)
        self.synthesizer.abandon(utterance.id + "#")
        summary = utterance.summary()
        if error is not None:
            utterance.listener(Event("error", True, {"error": error, "speech": summary}))
        elif cancelled is not None:
            utterance.listener(Event.failure(cancellation(cancelled), speech=summary))
        else:
            utterance.listener(Event.result({"state": "end", **summary}))
        if self._loop is not None:
            self._loop.call_soon(self._schedule)

    # ---------------------------------------------------------------- synthesis

    def _next_to_synthesize(self) -> tuple[Utterance, int] | None:
        """The device's utterance first (its listener is waiting), then the others in turn, one
        sentence each: a long text for one client does not hold up a short one for another."""
        current = self.queue.current
        order = ([current] if current else []) + \
            sorted((u for u in self.utterances.values() if u is not current), key=lambda u: (u.synth_turn, u.seq))
        for utterance in order:
            if utterance.done or utterance.synthesized >= len(utterance.sentences):
                continue
            if not utterance.client and utterance.synthesized - utterance.playing >= LOOKAHEAD_SENTENCES:
                continue
            if utterance.client and self.client_paused(utterance.owner):
                continue  # it has not read what it was sent: output_drained() wakes us
            return utterance, utterance.synthesized
        return None

    async def _synthesis_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (work := self._next_to_synthesize()) is not None:
                utterance, index = work
                try:
                    pcm, rate, seconds = await self.synthesizer.synthesize(
                        f"{utterance.id}#{index}", utterance.sentences[index], utterance.voice_id, utterance.options)
                except asyncio.CancelledError:
                    if not utterance.done:
                        raise
                    continue
                except CodedError as exc:
                    self._end(utterance, error=exc.to_error())
                    continue
                if utterance.done:
                    continue
                utterance.synth_turn = next(self._turns)
                utterance.synth_s += seconds
                self._synthesized(utterance, index, pcm, rate)

    def _synthesized(self, utterance: Utterance, index: int, pcm: np.ndarray, rate: int) -> None:
        utterance.sample_rate = utterance.sample_rate or rate
        utterance.synthesized = index + 1
        utterance.audio_samples += len(pcm)
        if utterance.client:
            if utterance.first_audio is None and not utterance.device:
                utterance.first_audio = time.monotonic()
            if not utterance.began and not utterance.device:
                utterance.began = True
                utterance.tell("speech", state="begin")
            fmt = utterance.options.format
            data = _wav(pcm, rate) if fmt == "wav" else pcm.tobytes()
            utterance.listener(Event("audio", False, {"sentence": index, "text": utterance.sentences[index],
                                                      "format": fmt, "sample_rate": rate, "channels": 1,
                                                      "sample_format": "s16le", "samples": len(pcm)}, (data,)))
        if utterance.device:
            utterance.audio[index] = pcm
            if utterance is self.queue.current:
                self.playback.feed(utterance)
        self._check_finished(utterance)

    # ---------------------------------------------------------------- the device's reports

    def _device_report(self, kind: str, uid: str, index: int, info: dict) -> None:
        utterance = self.utterances.get(uid)
        if utterance is None or utterance is not self.queue.current:
            return  # silenced meanwhile
        if kind == "start":
            utterance.playing = index
            pcm = utterance.audio.get(index)
            if pcm is not None:
                for listener in list(self.monitors):
                    listener(pcm[utterance.resume_at:], utterance.sample_rate, info["at"])
            events: list[dict[str, Any]] = []
            if not utterance.began:
                utterance.began = True
                utterance.first_audio = info["at"]
                events.append({"state": "begin"})
            if utterance.resume_at == 0:
                events.append({"state": "mark", "sentence": index, "text": utterance.sentences[index]})
            # told when the listener hears it, like the end (the device runs up to lead_ms ahead)
            self._later(info["at"], self._announce, utterance, events)
        elif kind == "end":
            utterance.audio.pop(index, None)
            utterance.playing = index + 1
            utterance.resume_at = 0
            if utterance.closed and utterance.playing >= len(utterance.sentences):
                # the last sample is at the device; the result goes out when it is heard
                self.queue.remove(utterance)
                self._schedule()
                self._later(info["at"], self._check_finished, utterance)
        elif kind == "error":
            message = info["message"]
            log.warning("speech %s: %s", uid, message)
            self.playback.invalidate()
            self.queue.remove(utterance)
            utterance.device_error = message
            if utterance.options.output == "device":
                self._end(utterance, error={"code": DEVICE_UNAVAILABLE, "message": message})
            else:
                self._check_finished(utterance)  # `both`: the client still gets every sentence
            self._schedule()

    def _later(self, at: float, callback, *args) -> None:
        assert self._loop is not None
        self._loop.call_later(max(0.0, at - time.monotonic()), callback, *args)

    @staticmethod
    def _announce(utterance: Utterance, events: list[dict]) -> None:
        for fields in events:
            if not utterance.done:
                utterance.tell("speech", **fields)


def _sentences(text: str, punctuation: str, markdown: bool) -> list[str]:
    return split_sentences(shape(text, punctuation, markdown))


def _wav(pcm: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return buffer.getvalue()
