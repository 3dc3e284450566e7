"""The speech service: utterances in, audio out, with speech-dispatcher's priorities.

An utterance is text cut into sentences. Sentences are synthesized one at a time by the TTS
engine process (engines/tts.py), the one holding the device first, so the first sentence
plays while the rest is synthesized. Audio for the device goes to devices/audio.py; audio
for the client goes out as `audio` events. Streaming pipelines (chat, ask) keep appending
sentences to an open utterance until they close it.

Device output follows SSIP (docs/protocol.md §4.12 has the table):
  important     never interrupted; cancels whatever else is speaking and any queued
                notification/progress; queued message/text wait; FIFO among themselves
  message       waits for important/message before it; cancels text, notification, progress
  text          waits for important/message; a new text cancels the previous text; cancels
                notification/progress
  notification  dropped if anything else is speaking or queued; a newer one cancels it
  progress      cancels notification; while anything else speaks it is held back, and only
                the newest held one survives, so the last message of a series is always spoken
Pause keeps an utterance's place and the exact sample it stopped at; other, unpaused
utterances may speak meanwhile. Everything here runs in the daemon's event loop; the audio
thread reports back through call_soon_threadsafe.
"""
from __future__ import annotations

import asyncio
import io
import itertools
import logging
import time
import wave
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..devices.audio import AudioOutput, AudioUnavailable, list_devices
from ..engines.host import READY, EngineHost, EngineUnavailable
from ..speech_text import shape, split_sentences
from .common import unload_when_idle

log = logging.getLogger("edge_agent.speech")

RANK = {"important": 0, "message": 1, "text": 2, "notification": 3, "progress": 3}
LOOKAHEAD_SENTENCES = 6  # synthesized ahead of the device, per utterance
LOAD_TIMEOUT_S = 30.0  # espeak-ng starts in well under a second
RETRIES = 1  # a sentence whose synthesis hung or crashed is tried once more on a fresh engine

# listener(kind, final, fields, attachments): the events of one utterance
Listener = Callable[[str, bool, dict, tuple], None]


@dataclass
class Utterance:
    id: str
    owner: str  # the client, for `scope: self`
    options: P.SpeechOptions
    listener: Listener
    voice_id: str | None = None
    sentences: list[str] = field(default_factory=list)
    closed: bool = False
    audio: dict[int, np.ndarray] = field(default_factory=dict)
    sample_rate: int = 0
    synthesized: int = 0  # sentences synthesized (in order)
    playing: int = 0  # the sentence at the device, or next to go there
    resume_at: int = 0  # samples into `playing` already heard (after a pause)
    sent_to_device: int = 0  # sentences handed to the player since it last took this utterance
    paused: bool = False
    began: bool = False
    done: bool = False
    device_error: str | None = None
    seq: int = 0
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

    def summary(self) -> dict:
        duration = self.audio_samples / self.sample_rate if self.sample_rate else 0.0
        out = {"sentences": len(self.sentences), "duration_ms": round(duration * 1000, 1),
               "first_audio_ms": round((self.first_audio - self.created) * 1000, 1) if self.first_audio else None,
               "synth_ms": round(self.synth_s * 1000, 1),
               "rtf": round(self.synth_s / duration, 4) if duration else None}
        if self.device_error:
            out["device_error"] = self.device_error
        return out


class SpeechService:
    def __init__(self, config: Config, context: zmq.asyncio.Context):
        self.config = config
        self.engine = EngineHost("speech", "edge_agent.engines.tts:serve", {}, on_event=self._on_engine_event,
                                 progress_timeout_s=config.speech.engine_timeout_s,
                                 load_timeout_s=LOAD_TIMEOUT_S, context=context)
        self.utterances: dict[str, Utterance] = {}
        self.queue: list[Utterance] = []  # device utterances waiting (or paused), not current
        self.current: Utterance | None = None
        self.held_progress: Utterance | None = None
        self.player: AudioOutput | None = None
        self._player_generation = 0
        self._seq = itertools.count()
        self._warned_voices: set[str] = set()  # configured voices already reported as missing
        self._pending: dict[str, asyncio.Future] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.voice_info: dict = {}  # the engine's ready message: voices, default voice

    @property
    def jobs(self) -> dict[str, Utterance]:
        """Utterances in flight by job id (the server routes `cancel` by this)."""
        return self.utterances

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        device = self.config.speech.device
        self.player = AudioOutput(int(device) if device.isdigit() else (device or None), self._from_player,
                                  chunk_ms=self.config.speech.chunk_ms, lead_ms=self.config.speech.lead_ms,
                                  idle_close_s=self.config.speech.idle_close_s)
        self._tasks = [asyncio.ensure_future(self._synthesis_loop()),
                       asyncio.ensure_future(unload_when_idle(lambda: self.engine, self.config.speech.keep_alive_s,
                                                              lambda: bool(self.utterances)))]
        if self.config.speech.preload:
            asyncio.ensure_future(self._preload())

    async def _preload(self) -> None:
        try:
            await self.engine.ensure_ready()
        except EngineUnavailable as exc:
            log.error("starting the speech engine failed: %s", exc)

    async def close(self) -> None:
        self.cancel_all("shutdown")
        for task in self._tasks:
            task.cancel()
        if self.player is not None:
            self.player.close()
        await self.engine.stop()
        self.engine.close()

    def describe(self) -> dict:
        return {"available": True, "engine": "espeak-ng (pyttsx3)", "priorities": list(P.PRIORITIES),
                "outputs": list(P.SPEECH_OUTPUTS), "formats": list(P.AUDIO_FORMATS),
                "punctuation": list(P.PUNCTUATION), "rate_range": list(P.RATE_RANGE),
                "default_rate": self.config.speech.rate, "max_text_chars": P.MAX_SAY_CHARS,
                "actions": list(P.SPEECH_ACTIONS), "device": self.config.speech.device or "default"}

    def status(self) -> dict:
        return {**self.engine.status(), "speaking": self.current.id if self.current else None,
                "queued": len(self.queue) + (1 if self.held_progress else 0),
                "paused": sum(1 for u in self.queue if u.paused),
                "audio": self.player.status() if self.player else None}

    async def voices(self, language: str | None) -> dict:
        info = await self._ready()
        voices = info["voices"]
        if language:
            voices = [v for v in voices if any(_language_matches(lang, language) for lang in v["languages"])]
        try:
            devices = list_devices()
        except AudioUnavailable as exc:
            devices = []
            log.info("listing audio devices: %s", exc)
        return {"voices": voices, "default_voice": self.config.speech.voice or info["default_voice"],
                "devices": devices}

    async def _ready(self) -> dict:
        try:
            self.voice_info = await self.engine.ensure_ready()
        except EngineUnavailable as exc:
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"the speech engine failed to start: {exc}") from None
        return self.voice_info

    def check_options(self, options: P.SpeechOptions) -> None:
        """Reject an unknown voice or language before a request is accepted (once the engine
        has reported its voices; before that, `open` checks)."""
        if self.voice_info:
            self._voice_for(self.voice_info, options)

    # ---------------------------------------------------------------- utterances

    async def open(self, uid: str, owner: str, options: P.SpeechOptions, listener: Listener) -> Utterance:
        """A new utterance with no text yet (a pipeline appends as text arrives). Raises
        ProtocolError for a voice or language the engine does not have."""
        return self.open_now(uid, owner, options, listener, await self._ready())

    def ready_now(self) -> bool:
        return self.engine.state == READY and bool(self.voice_info)

    def open_now(self, uid: str, owner: str, options: P.SpeechOptions, listener: Listener,
                 info: dict | None = None) -> Utterance:
        """`open` without waiting, for an engine that is ready: the utterance takes its place
        in the queue before the next request is read, so a `speech` control right behind a
        `say` sees it."""
        voice_id = self._voice_for(info or self.voice_info, options)
        utterance = Utterance(uid, owner, options, listener, voice_id=voice_id, seq=next(self._seq))
        self.utterances[uid] = utterance
        if utterance.device:
            self._arrive(utterance)
        return utterance

    async def say(self, uid: str, owner: str, body: P.SayRequest, listener: Listener) -> None:
        self.say_text(await self.open(uid, owner, body.options, listener), body.text)

    def say_text(self, utterance: Utterance, text: str) -> None:
        self.append_text(utterance, text)
        self.close_utterance(utterance)

    def append_text(self, utterance: Utterance, text: str, *, shaped: bool = False) -> None:
        options = utterance.options
        self.append(utterance, split_sentences(text if shaped else shape(text, options.punctuation, options.markdown)))

    def append(self, utterance: Utterance, sentences: list[str]) -> None:
        if utterance.done or not sentences:
            return
        utterance.sentences += sentences
        self._wake.set()
        if utterance is self.current:
            self._feed_player(utterance)

    def close_utterance(self, utterance: Utterance) -> None:
        if utterance.done:
            return
        utterance.closed = True
        self._check_finished(utterance)

    def _voice_for(self, info: dict, options: P.SpeechOptions) -> str | None:
        """The voice id for a request: its `voice`, else the best voice for its `language`, else
        the configured default (a voice name or a language), else the engine's default (None)."""
        voices = info["voices"]
        if options.voice:
            found = _voice_named(voices, options.voice)
            if found is None:
                raise P.ProtocolError(P.BAD_REQUEST, f"no voice {options.voice!r}; the `voices` op lists them",
                                      field="voice")
            return found
        if options.language:
            found = _voice_speaking(voices, options.language)
            if found is None:
                raise P.ProtocolError(P.BAD_REQUEST, f"no voice for language {options.language!r}; the `voices` "
                                      "op lists them", field="language")
            return found
        configured = self.config.speech.voice
        if configured:
            found = _voice_named(voices, configured) or _voice_speaking(voices, configured)
            if found is None:  # not the client's fault: speak with the engine's default, say why once
                if configured not in self._warned_voices:
                    self._warned_voices.add(configured)
                    log.warning("speech.voice %r matches no voice or language; using the engine's default",
                                configured)
            return found
        return None

    # ---------------------------------------------------------------- SSIP rules

    def _arrive(self, new: Utterance) -> None:
        priority = new.priority
        active = ([self.current] if self.current else []) + self.queue

        def cancel_where(priorities: tuple[str, ...], reason: str) -> None:
            for other in [u for u in active if u.priority in priorities and u is not new]:
                self._end(other, cancelled=reason)
            if self.held_progress is not None and "progress" in priorities:
                self._end(self.held_progress, cancelled=reason)

        if priority == "important":
            if self.current is not None and self.current.priority != "important":
                self._end(self.current, cancelled="interrupted")
            cancel_where(("notification", "progress"), "interrupted")
        elif priority == "message":
            cancel_where(("text", "notification", "progress"), "interrupted")
        elif priority == "text":
            cancel_where(("text",), "replaced")
            cancel_where(("notification", "progress"), "interrupted")
        elif priority == "notification":
            if any(u.priority != "notification" for u in active) or self.held_progress is not None:
                self._end(new, cancelled="discarded")
                return
            cancel_where(("notification",), "replaced")
        elif priority == "progress":
            cancel_where(("notification",), "interrupted")
            if any(u.priority != "notification" and not u.done for u in active):
                if self.held_progress is not None:
                    self._end(self.held_progress, cancelled="replaced")
                self.held_progress = new  # spoken once the device is free, unless a newer one comes
                return
        self.queue.append(new)
        self._schedule()

    def _schedule(self) -> None:
        """Give the device to the best waiting utterance if nobody holds it."""
        if self.current is not None:
            return
        ready = sorted((u for u in self.queue if not u.paused), key=lambda u: (RANK[u.priority], u.seq))
        if ready:
            chosen = ready[0]
            self.queue.remove(chosen)
        elif self.held_progress is not None and not self.held_progress.paused:
            chosen, self.held_progress = self.held_progress, None
        else:
            return
        self.current = chosen
        chosen.sent_to_device = chosen.playing
        self._wake.set()
        self._feed_player(chosen)

    def _feed_player(self, utterance: Utterance) -> None:
        while utterance.sent_to_device in utterance.audio and self.player is not None:
            index = utterance.sent_to_device
            pcm = utterance.audio[index]
            if index == utterance.playing and utterance.resume_at:
                pcm = pcm[utterance.resume_at:]
            self.player.play((utterance.id, index, self._player_generation), pcm, utterance.sample_rate)
            utterance.sent_to_device += 1

    def _release_device(self, utterance: Utterance) -> None:
        """Silence the device now and remember how far the listener got."""
        if self.current is not utterance:
            return
        heard = self.player.flush() if self.player is not None else []
        generation = self._player_generation
        self._player_generation += 1
        for (uid, index, gen), samples in heard:
            if uid == utterance.id and gen == generation:
                if index != utterance.playing:  # its `start` report was still on its way
                    utterance.playing, utterance.resume_at = index, 0
                utterance.resume_at += samples
        self.current = None

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
                chosen = [u for u in chosen if u is self.current]
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
                utterance.listener("speech", False, {"state": "resumed", "sentence": utterance.playing}, ())
            self._preempt_for_resumed()
            self._schedule()
        return len(chosen)

    def _pause(self, utterance: Utterance) -> None:
        utterance.paused = True
        if utterance is self.current:
            self._release_device(utterance)
            self.queue.append(utterance)
        sample_rate = utterance.sample_rate or 1
        utterance.listener("speech", False, {"state": "paused", "sentence": utterance.playing,
                                             "offset_ms": round(utterance.resume_at / sample_rate * 1000, 1)}, ())

    def _preempt_for_resumed(self) -> None:
        """A resumed utterance that outranks the one speaking takes the device back; the
        other one is postponed (not cancelled) and continues where it was."""
        current = self.current
        if current is None:
            return
        waiting = [u for u in self.queue if not u.paused]
        if any(RANK[u.priority] < RANK[current.priority] for u in waiting):
            self._release_device(current)
            self.queue.append(current)

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
        if utterance.done or not utterance.closed:
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
        if utterance is self.current:
            if cancelled or error:
                self._release_device(utterance)
            self.current = None
        if utterance in self.queue:
            self.queue.remove(utterance)
        if utterance is self.held_progress:
            self.held_progress = None
        self.utterances.pop(utterance.id, None)
        for key in [k for k in self._pending if k.startswith(utterance.id + "#")]:
            self._pending.pop(key).cancel()
        summary = utterance.summary()
        if error is not None:
            utterance.listener("error", True, {"error": error, "speech": summary}, ())
        elif cancelled is not None:
            message = "cancelled" if cancelled == "cancel" else f"cancelled: {cancelled}"
            utterance.listener("error", True, {"error": {"code": P.CANCELLED, "message": message, "reason": cancelled},
                                               "speech": summary}, ())
        else:
            utterance.listener("result", True, {"state": "end", **summary}, ())
        if self._loop is not None:
            self._loop.call_soon(self._schedule)

    # ---------------------------------------------------------------- synthesis

    def _next_to_synthesize(self) -> tuple[Utterance, int] | None:
        order = ([self.current] if self.current else []) + \
            sorted((u for u in self.utterances.values() if u is not self.current), key=lambda u: u.seq)
        for utterance in order:
            if utterance.done or utterance.synthesized >= len(utterance.sentences):
                continue
            if not utterance.client and utterance.synthesized - utterance.playing >= LOOKAHEAD_SENTENCES:
                continue
            return utterance, utterance.synthesized
        return None

    async def _synthesis_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (work := self._next_to_synthesize()) is not None:
                utterance, index = work
                try:
                    message = await self._synthesize(utterance, index)
                except asyncio.CancelledError:
                    if not utterance.done:
                        raise
                    continue
                except P.ProtocolError as exc:
                    self._end(utterance, error=exc.to_error())
                    continue
                if utterance.done:
                    continue
                self._synthesized(utterance, index, message)

    async def _synthesize(self, utterance: Utterance, index: int) -> dict:
        options = utterance.options
        payload = {"text": utterance.sentences[index], "voice": utterance.voice_id,
                   "rate": options.rate or self.config.speech.rate, "pitch": options.pitch, "volume": options.volume}
        for attempt in range(RETRIES + 1):
            await self._ready()
            job = f"{utterance.id}#{index}#{attempt}"
            future = asyncio.get_running_loop().create_future()
            self._pending[job] = future
            started = time.perf_counter()
            try:
                await self.engine.submit(job, payload)
                message = await future
            except EngineUnavailable as exc:
                message = {"kind": "error", "code": P.MODEL_UNAVAILABLE, "message": str(exc)}
            finally:
                self._pending.pop(job, None)
            if message["kind"] == "done":
                utterance.synth_s += time.perf_counter() - started
                return message
            if message["code"] not in (P.TIMEOUT, P.INTERNAL) or attempt == RETRIES:
                raise P.ProtocolError(message["code"], f"speech synthesis failed: {message['message']}")
            log.warning("synthesis of %s sentence %d failed (%s); retrying on a fresh engine", utterance.id, index,
                        message["message"])
        raise AssertionError("unreachable")

    def _on_engine_event(self, job: str, message: dict) -> None:
        future = self._pending.get(job)
        if future is not None and not future.done():
            future.set_result(message)

    def _synthesized(self, utterance: Utterance, index: int, message: dict) -> None:
        pcm = np.frombuffer(message["attachments"][0], dtype="<i2") if message.get("attachments") else \
            np.zeros(0, dtype="<i2")
        rate = int(message["sample_rate"])
        utterance.sample_rate = utterance.sample_rate or rate
        utterance.synthesized = index + 1
        utterance.audio_samples += len(pcm)
        if utterance.client:
            if utterance.first_audio is None and not utterance.device:
                utterance.first_audio = time.monotonic()
            if not utterance.began and not utterance.device:
                utterance.began = True
                utterance.listener("speech", False, {"state": "begin"}, ())
            fmt = utterance.options.format
            data = _wav(pcm, rate) if fmt == "wav" else pcm.tobytes()
            utterance.listener("audio", False, {"sentence": index, "text": utterance.sentences[index], "format": fmt,
                                                "sample_rate": rate, "channels": 1, "sample_format": "s16le",
                                                "samples": len(pcm)}, (data,))
        if utterance.device:
            utterance.audio[index] = pcm
            if utterance is self.current:
                self._feed_player(utterance)
        self._check_finished(utterance)

    # ---------------------------------------------------------------- the player's reports

    def _from_player(self, kind: str, tag, info: dict) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._player_event, kind, tag, info)

    def _player_event(self, kind: str, tag, info: dict) -> None:
        uid, index, generation = tag
        utterance = self.utterances.get(uid)
        if utterance is None or generation != self._player_generation or utterance is not self.current:
            return  # flushed meanwhile
        if kind == "start":
            utterance.playing = index
            events = []
            if not utterance.began:
                utterance.began = True
                utterance.first_audio = info["at"]
                events.append({"state": "begin"})
            if utterance.resume_at == 0:
                events.append({"state": "mark", "sentence": index, "text": utterance.sentences[index]})
            # told when the listener hears it, like the end (the device runs up to lead_ms ahead)
            self._loop.call_later(max(0.0, info["at"] - time.monotonic()), self._announce, utterance, events)
        elif kind == "end":
            utterance.audio.pop(index, None)
            utterance.playing = index + 1
            utterance.resume_at = 0
            if utterance.closed and utterance.playing >= len(utterance.sentences):
                # the last sample is at the device; the result goes out when it is heard
                self.current = None
                self._schedule()
                delay = max(0.0, info["at"] - time.monotonic())
                self._loop.call_later(delay, self._check_finished, utterance)
        elif kind == "error":
            message = info["message"]
            log.warning("speech %s: %s", uid, message)
            self._player_generation += 1
            self.current = None
            utterance.device_error = message
            if utterance.options.output == "device":
                self._end(utterance, error={"code": P.DEVICE_UNAVAILABLE, "message": message})
            else:
                self._check_finished(utterance)  # `both`: the client still gets every sentence
            self._schedule()


    @staticmethod
    def _announce(utterance: Utterance, events: list[dict]) -> None:
        for fields in events:
            if not utterance.done:
                utterance.listener("speech", False, fields, ())


def _voice_named(voices: list[dict], wanted: str) -> str | None:
    """A voice by its id, the last part of its id, or its name (any case)."""
    low = wanted.lower()
    for voice in voices:
        if low in (voice["id"].lower(), voice["id"].rsplit("/", 1)[-1].lower(), voice["name"].lower()):
            return voice["id"]
    return None


def _voice_speaking(voices: list[dict], language: str) -> str | None:
    """The first voice for exactly this language tag, else the first for a related one."""
    matches = [v for v in voices if any(_language_matches(lang, language) for lang in v["languages"])]
    exact = [v for v in matches if language.lower() in (lang.lower() for lang in v["languages"])]
    return (exact or matches)[0]["id"] if matches else None


def _language_matches(language: str, wanted: str) -> bool:
    language, wanted = language.lower(), wanted.lower()
    return language == wanted or language.startswith(wanted + "-")


def _wav(pcm: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return buffer.getvalue()
