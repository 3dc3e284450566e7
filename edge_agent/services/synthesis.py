"""Text to PCM for the speech service: the TTS engine process (engines/tts.py), its voices,
and the choice of a voice for a request. A synthesis that hangs or crashes is retried once on
the fresh engine the host starts; a sentence's synthesis can be abandoned (its utterance was
cancelled) without waiting for it."""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..engines.host import READY, EngineHost, EngineUnavailable
from ..errors import INTERNAL, TIMEOUT, CodedError
from ..events import Event

log = logging.getLogger("edge_agent.speech")

LOAD_TIMEOUT_S = 30.0  # espeak-ng starts in well under a second
RETRIES = 1  # a sentence whose synthesis hung or crashed is tried once more on a fresh engine


class Synthesizer:
    def __init__(self, config: Config, context: zmq.asyncio.Context):
        self.config = config
        self.engine = EngineHost("speech", "edge_agent.engines.tts:serve", {}, on_event=self._on_engine_event,
                                 progress_timeout_s=config.speech.engine_timeout_s,
                                 load_timeout_s=LOAD_TIMEOUT_S, context=context)
        self.voice_info: dict = {}  # the engine's ready message: voices, default voice
        self._pending: dict[str, asyncio.Future] = {}
        self._warned_voices: set[str] = set()  # configured voices already reported as missing

    async def ready(self) -> dict:
        try:
            self.voice_info = await self.engine.ensure_ready()
        except EngineUnavailable as exc:
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"the speech engine failed to start: {exc}") from None
        return self.voice_info

    def ready_now(self) -> bool:
        return self.engine.state == READY and bool(self.voice_info)

    async def close(self) -> None:
        await self.engine.stop()
        self.engine.close()

    async def synthesize(self, key: str, text: str, voice: str | None, options: P.SpeechOptions
                         ) -> tuple[np.ndarray, int, float]:
        """One sentence: (PCM s16 mono, sample rate, seconds spent). `key` names the sentence
        for `abandon`. Raises CodedError when it fails twice or cannot start."""
        payload = {"text": text, "voice": voice, "rate": options.rate or self.config.speech.rate,
                   "pitch": options.pitch, "volume": options.volume}
        for attempt in range(RETRIES + 1):
            await self.ready()
            job = f"{key}#{attempt}"
            future = asyncio.get_running_loop().create_future()
            self._pending[job] = future
            started = time.perf_counter()
            try:
                await self.engine.submit(job, payload)
                event: Event = await future
            except EngineUnavailable as exc:
                event = Event.failure(CodedError(P.MODEL_UNAVAILABLE, str(exc)))
            finally:
                self._pending.pop(job, None)
            if event.kind == "result":
                pcm = np.frombuffer(event.attachments[0], dtype="<i2") if event.attachments else \
                    np.zeros(0, dtype="<i2")
                return pcm, int(event.fields["sample_rate"]), time.perf_counter() - started
            error = event.fields["error"]
            if error["code"] not in (TIMEOUT, INTERNAL) or attempt == RETRIES:
                raise CodedError(error["code"], f"speech synthesis failed: {error['message']}")
            log.warning("synthesis of %s failed (%s); retrying on a fresh engine", key, error["message"])
        raise AssertionError("unreachable")

    def abandon(self, prefix: str) -> None:
        """Stop waiting for every synthesis whose key starts with `prefix`."""
        for job in [k for k in self._pending if k.startswith(prefix)]:
            self._pending.pop(job).cancel()

    def _on_engine_event(self, job: str, event: Event) -> None:
        future = self._pending.get(job)
        if future is not None and not future.done():
            future.set_result(event)

    # ---------------------------------------------------------------- voices

    def voices_matching(self, info: dict, language: str | None) -> list[dict]:
        voices = info["voices"]
        if language:
            voices = [v for v in voices if any(language_matches(lang, language) for lang in v["languages"])]
        return voices

    def voice_for(self, info: dict, options: P.SpeechOptions) -> str | None:
        """The voice id for a request: its `voice`, else the best voice for its `language`, else
        the configured default (a voice name or a language), else the engine's default (None)."""
        voices = info["voices"]
        if options.voice:
            found = voice_named(voices, options.voice)
            if found is None:
                raise P.ProtocolError(P.BAD_REQUEST, f"no voice {options.voice!r}; the `voices` op lists them",
                                      field="voice")
            return found
        if options.language:
            found = voice_speaking(voices, options.language)
            if found is None:
                raise P.ProtocolError(P.BAD_REQUEST, f"no voice for language {options.language!r}; the `voices` "
                                      "op lists them", field="language")
            return found
        configured = self.config.speech.voice
        if configured:
            found = voice_named(voices, configured) or voice_speaking(voices, configured)
            if found is None and configured not in self._warned_voices:
                # not the client's fault: speak with the engine's default, say why once
                self._warned_voices.add(configured)
                log.warning("speech.voice %r matches no voice or language; using the engine's default", configured)
            return found
        return None


def voice_named(voices: list[dict], wanted: str) -> str | None:
    """A voice by its id, the last part of its id, or its name (any case)."""
    low = wanted.lower()
    for voice in voices:
        if low in (voice["id"].lower(), voice["id"].rsplit("/", 1)[-1].lower(), voice["name"].lower()):
            return voice["id"]
    return None


def voice_speaking(voices: list[dict], language: str) -> str | None:
    """The first voice for exactly this language tag, else the first for a related one."""
    matches = [v for v in voices if any(language_matches(lang, language) for lang in v["languages"])]
    exact = [v for v in matches if language.lower() in (lang.lower() for lang in v["languages"])]
    return (exact or matches)[0]["id"] if matches else None


def language_matches(language: str, wanted: str) -> bool:
    language, wanted = language.lower(), wanted.lower()
    return language == wanted or language.startswith(wanted + "-")
