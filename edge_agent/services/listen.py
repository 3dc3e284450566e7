"""The listen service: speech in, text out, through pocketsphinx in its own process
(engines/sphinx.py). The audio comes from the client (a WAV file or raw PCM in the request's
frames) or from the daemon's microphone, opened by the engine for the request only (admin
clients by default: `[listen] microphone`). Audio is held in memory for the job only, never
written, and transcripts are not logged. A microphone request holds the recogniser while it
waits for speech (its `wait_s`): requests behind it wait.
Loaded on first use, unloaded after `listen.keep_alive_s` idle seconds."""
from __future__ import annotations

from typing import Any

import zmq.asyncio

from .. import protocol as P
from ..audio_input import max_bytes
from ..config import Config
from ..events import Sink
from ..protocol import LISTEN_ENGINES, LISTEN_MODES
from .base import EngineJobService


class ListenService(EngineJobService):
    name = "listen"
    unavailable = "the speech recogniser failed to start"

    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink):
        super().__init__("edge_agent.engines.sphinx:serve", config.listen, context, sink)
        self.config = config

    def describe(self) -> dict:
        listen = self.config.listen
        return {"available": True, "engines": list(LISTEN_ENGINES), "modes": list(LISTEN_MODES),
                "languages": ["en-us"], "formats": list(P.AUDIO_FORMATS), "sample_rates": list(P.SAMPLE_RATES),
                "max_audio_s": listen.max_audio_s, "max_audio_bytes": max_bytes(listen.max_audio_s),
                "max_utterance_s": listen.max_utterance_s, "vad_mode": listen.vad_mode,
                "end_silence_ms": listen.end_silence_ms, "command_end_silence_ms": listen.command_end_silence_ms,
                "wait_s": listen.wait_s,
                "sources": ["client"] + (["microphone"] if listen.microphone != "off" else []),
                "microphone": listen.microphone}

    def status(self) -> dict:
        return {**self.engine.status(), "model": "pocketsphinx en-us"}

    def begin(self, job: str, body: P.ListenRequest, attachments: tuple[bytes, ...], admin: bool) -> dict:
        """Validate before accepting; returns the engine's job payload."""
        listen = self.config.listen
        if body.source == "microphone":
            self.check_microphone(attachments, admin)
        else:
            self.check_sent_audio(body, attachments)
        self.accept(job)
        payload: dict[str, Any] = {"mode": body.mode, "commands": list(body.commands), "wake_phrase": body.wake_phrase,
                   "source": body.source, "format": body.format, "sample_rate": body.sample_rate,
                   "vad_mode": listen.vad_mode if body.vad_mode is None else body.vad_mode,
                   "end_silence_ms": body.end_silence_ms or (listen.command_end_silence_ms if body.mode == "commands"
                                                             else listen.end_silence_ms),
                   "max_utterance_s": min(body.max_utterance_s or listen.max_utterance_s, listen.max_audio_s),
                   "max_audio_s": listen.max_audio_s}
        if body.source == "microphone":
            wait_s = listen.wait_s if body.wait_s is None else body.wait_s
            # the whole request: the wait for speech, then at most one utterance
            payload.update(device=listen.device, wait_s=wait_s, max_audio_s=wait_s + payload["max_utterance_s"] + 1.0)
        return payload

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
