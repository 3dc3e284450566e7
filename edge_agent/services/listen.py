"""The listen service: speech in, text out, through pocketsphinx in its own process
(engines/sphinx.py), which also runs Whisper (engines/whisper.py) for dictation when a speech
package is installed (`models.speech`). The audio comes from the client (a WAV file or raw PCM in the request's
frames) or from the daemon's microphone, opened by the engine for the request only (admin
clients by default: `[listen] microphone`). Audio is held in memory for the job only, never
written, and transcripts are not logged. A microphone request holds the recogniser while it
waits for speech (its `wait_s`): requests behind it wait.
Loaded on first use, unloaded after `listen.keep_alive_s` idle seconds."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import zmq.asyncio

from .. import protocol as P
from ..audio_input import max_bytes
from ..config import Config
from ..events import Sink
from ..models import Package
from ..protocol import LISTEN_MODES
from .base import EngineJobService
from .packages import check_hashes, check_package, choose_package, file_stamps

# Whisper hears 30 s windows; the pre-roll before the start of speech is part of it
WHISPER_MAX_UTTERANCE_S = 29.5
MAX_PENDING_NOTES = 32  # sentences the speaker played before the engine took the job


class ListenService(EngineJobService):
    name = "listen"
    unavailable = "the speech recogniser failed to start"

    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink):
        super().__init__("edge_agent.engines.sphinx:serve", config.listen, context, sink)
        self.config = config
        self.speech_packages: dict[str, Package] = {}  # path -> the Whisper package a job uses
        # notes for accepted jobs that the engine does not run yet (sent when it does)
        self.pending_notes: dict[str, list[tuple[str, dict, tuple[bytes, ...]]]] = {}
        self._hashed: tuple = ()  # file_stamps of the speech package whose hashes were last checked

    def speech_package(self) -> Package | None:
        """The Whisper package dictation would use now, or None when there is none to use."""
        try:
            package = choose_package(self.config, "speech")
        except P.ProtocolError:
            return None
        return package

    def describe(self) -> dict:
        listen = self.config.listen
        whisper = self.speech_package()
        return {"available": True, "engines": ["pocketsphinx"] + (["whisper"] if whisper else []),
                "whisper_model": whisper.name if whisper else None, "whisper_language": listen.language,
                "modes": list(LISTEN_MODES),
                "languages": ["en-us"], "formats": list(P.AUDIO_FORMATS), "sample_rates": list(P.SAMPLE_RATES),
                "max_audio_s": listen.max_audio_s, "max_audio_bytes": max_bytes(listen.max_audio_s),
                "max_utterance_s": listen.max_utterance_s, "vad_mode": listen.vad_mode,
                "end_silence_ms": listen.end_silence_ms, "command_end_silence_ms": listen.command_end_silence_ms,
                "wait_s": listen.wait_s,
                "sources": ["client"] + (["microphone"] if listen.microphone != "off" else []),
                "microphone": listen.microphone}

    def status(self) -> dict:
        used = {Path(p).name for p in self.speech_packages}
        return {**self.engine.status(), "model": "pocketsphinx en-us", "whisper_models": sorted(used)}

    def begin(self, job: str, body: P.ListenRequest, attachments: tuple[bytes, ...], admin: bool) -> dict:
        """Validate before accepting; returns the engine's job payload."""
        listen = self.config.listen
        if body.source == "microphone":
            self.check_microphone(attachments, admin)
        else:
            self.check_sent_audio(body, attachments)
        whisper = self.whisper_for(body)
        self.accept(job)
        payload: dict[str, Any] = {"mode": body.mode, "commands": list(body.commands), "wake_phrase": body.wake_phrase,
                   "source": body.source, "format": body.format, "sample_rate": body.sample_rate,
                   "vad_mode": listen.vad_mode if body.vad_mode is None else body.vad_mode,
                   "end_silence_ms": body.end_silence_ms or (listen.command_end_silence_ms if body.mode == "commands"
                                                             else listen.end_silence_ms),
                   "max_utterance_s": min(body.max_utterance_s or listen.max_utterance_s, listen.max_audio_s),
                   "max_audio_s": listen.max_audio_s}
        if whisper is not None:
            self.speech_packages[str(whisper.path)] = whisper
            payload.update(engine="whisper", package=str(whisper.path), threads=self.config.models.threads,
                           language=body.language or listen.language,
                           max_utterance_s=min(payload["max_utterance_s"], WHISPER_MAX_UTTERANCE_S))
        if body.source == "microphone":
            wait_s = listen.wait_s if body.wait_s is None else body.wait_s
            # the whole request: the wait for speech, then at most one utterance
            payload.update(device=listen.device, wait_s=wait_s, max_audio_s=wait_s + payload["max_utterance_s"] + 1.0)
        return payload

    def whisper_for(self, body: P.ListenRequest) -> Package | None:
        """The Whisper package that hears this request, or None for pocketsphinx. `auto`
        dictation uses Whisper when a speech package is installed."""
        if body.engine == "pocketsphinx" or body.mode != "dictation":
            return None
        if body.engine == "auto":
            package = self.speech_package()
            if package is None:
                return None
        else:
            package = choose_package(self.config, "speech")  # model_unavailable: none, or a broken one
        check_package(self.config, package, "speech")
        return package

    async def submit(self, job: str, payload: dict, attachments: tuple[bytes, ...]) -> None:
        if payload.get("engine") == "whisper":
            package = self.speech_packages[payload["package"]]
            stamps = file_stamps(package)
            if stamps != self._hashed:  # first use, or the files changed: read every byte once, off the loop
                try:
                    await asyncio.get_running_loop().run_in_executor(None, check_hashes, package, "speech")
                except P.ProtocolError:
                    self.jobs.pop(job, None)
                    raise
                self._hashed = stamps
        try:
            await super().submit(job, payload, attachments)
        finally:
            notes = self.pending_notes.pop(job, [])
        for kind, fields, frames in notes:
            await self.engine.note(job, kind, fields, frames)

    async def note(self, job: str, kind: str, fields: dict, attachments: tuple[bytes, ...]) -> None:
        """More input for an accepted job (what the speaker plays, for the barge-in watch);
        kept until the engine runs it, dropped once the job has ended."""
        if job not in self.jobs:
            self.pending_notes.pop(job, None)
            return
        if job in self.engine.active:
            await self.engine.note(job, kind, fields, attachments)
        else:
            notes = self.pending_notes.setdefault(job, [])
            notes.append((kind, fields, attachments))
            del notes[:-MAX_PENDING_NOTES]  # the oldest matter least: their sound is over

    def check_microphone(self, attachments: tuple[bytes, ...], admin: bool) -> None:
        access = self.config.listen.microphone
        if access == "off":
            raise P.ProtocolError(P.UNSUPPORTED, "this daemon does not listen to its microphone (listen.microphone "
                                  "is off); send the audio instead", field="source")
        if access == "admin" and not admin:
            raise P.ProtocolError(P.UNAUTHORIZED, "listening to the daemon's microphone is for admin clients (IPC "
                                  "clients, or CURVE clients listed in admin_keys; listen.microphone)",
                                  field="source")
        if attachments:
            raise P.ProtocolError(P.BAD_REQUEST, "source microphone takes no audio frames", field="audio")

    def check_sent_audio(self, body: P.ListenRequest, attachments: tuple[bytes, ...]) -> None:
        if not attachments:
            raise P.ProtocolError(P.BAD_REQUEST, "listen needs the audio in frames after the header (a WAV file, "
                                  "or raw PCM in one or more frames), or source microphone", field="audio")
        if body.format == "wav" and len(attachments) != 1:
            raise P.ProtocolError(P.BAD_REQUEST, f"a WAV file comes in one frame; got {len(attachments)} "
                                  "(send raw PCM to send it in pieces)", field="audio")
        listen = self.config.listen
        size, limit = sum(len(a) for a in attachments), max_bytes(listen.max_audio_s)
        if size > limit:
            raise P.ProtocolError(P.TOO_LARGE, f"the audio is {size} bytes; the limit is {limit} "
                                  f"({listen.max_audio_s:g} s of 48 kHz stereo)", field="audio")
