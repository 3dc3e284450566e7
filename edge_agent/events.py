"""An event for a job, as it travels inside the daemon.

Services, engine processes (engines/channel.py carries it across the process boundary) and
pipelines hand each other `Event`s; the server turns one into a wire event by adding the
request id (protocol.encode_event). The kinds and fields are those of docs/protocol.md.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import CodedError


@dataclass(frozen=True)
class Event:
    kind: str  # accepted, progress, delta, audio, speech, ..., result, error
    final: bool = False  # the request's one terminal event (result or error)
    fields: dict[str, Any] = field(default_factory=dict)
    attachments: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def result(cls, fields: dict[str, Any], attachments: tuple[bytes, ...] = ()) -> Event:
        return cls("result", True, fields, attachments)

    @classmethod
    def failure(cls, error: CodedError, **fields: Any) -> Event:
        return cls("error", True, {"error": error.to_error(), **fields})


# sink(job, event): where a service delivers the events of its jobs (the server, or a pipeline)
Sink = Callable[[str, Event], None]
