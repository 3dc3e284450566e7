"""The engine channel: what the daemon and an engine process say to each other.

One ZeroMQ PAIR socket per engine process (engines/host.py binds it, engines/worker.py
connects). Each message is a JSON header frame, then binary frames (an image, PCM):

  daemon -> engine   EngineJob      {"type": "job", "job": ID, "payload": {...}} + attachments
                     JobNote        {"type": "note", "job": ID, "kind": K, "fields": {...}} + attachments:
                                    more input for a job (what the speaker plays, for the
                                    barge-in watch's echo gate), kept until the job takes it
                     {"type": "cancel", "job": ID} | {"type": "stop"}
  engine -> daemon   {"type": "ready", ...facts} | {"type": "load_failed", "error": MSG}
                     {"type": "heartbeat"}
                     EngineEvent    {"type": "event", "job": ID, "kind": K, "final": B, "fields": {...}}
                                    + attachments
A job ends with exactly one final event; a failure is an `error` event whose fields hold the
protocol's error object (EngineError builds it from a CodedError). The fields and their names
are the ones the protocol puts on the wire, so services pass them on without renaming.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import CodedError
from ..events import Event


def _frame(header: dict) -> bytes:
    return json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class EngineJob:
    job: str
    payload: dict[str, Any]
    attachments: tuple[bytes, ...] = field(default=(), repr=False)

    def frames(self) -> list[bytes]:
        return [_frame({"type": "job", "job": self.job, "payload": self.payload}), *self.attachments]


@dataclass(frozen=True)
class JobNote:
    job: str
    kind: str
    fields: dict[str, Any]
    attachments: tuple[bytes, ...] = field(default=(), repr=False)

    def frames(self) -> list[bytes]:
        return [_frame({"type": "note", "job": self.job, "kind": self.kind, "fields": self.fields}),
                *self.attachments]


@dataclass(frozen=True)
class EngineEvent:
    job: str
    event: Event

    def frames(self) -> list[bytes]:
        event = self.event
        return [_frame({"type": "event", "job": self.job, "kind": event.kind, "final": event.final,
                        "fields": event.fields}), *event.attachments]

    @classmethod
    def from_header(cls, header: dict, attachments: tuple[bytes, ...]) -> EngineEvent:
        return cls(header["job"], Event(header["kind"], bool(header["final"]), header["fields"], attachments))


@dataclass(frozen=True)
class EngineError:
    """A job that failed in the engine: its final `error` event."""
    job: str
    error: CodedError

    def frames(self) -> list[bytes]:
        return EngineEvent(self.job, Event.failure(self.error)).frames()


def control(kind: str, **fields: Any) -> bytes:
    """A message that belongs to no job: ready, load_failed, heartbeat, cancel, forget, stop."""
    return _frame({"type": kind, **fields})


def decode(frames: list[bytes]) -> tuple[dict, tuple[bytes, ...]]:
    """A message's header and its binary frames."""
    return json.loads(frames[0]), tuple(frames[1:])
