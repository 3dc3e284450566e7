"""What the server asks of every service, and the idle-unload loop they share.

The server keeps its services in a list and treats them alike: `start` with the event loop,
`describe` and `status` for their own sections of those ops, `cancel_all` and `close` at
shutdown. A service that runs jobs delivers their events through the sink it was given.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import zmq.asyncio

from ..config import EngineProcessConfig
from ..engines.host import READY, EngineHost, EngineUnavailable
from ..errors import MODEL_UNAVAILABLE, CodedError, cancelled
from ..events import Event, Sink


class Service:
    name = ""

    def __init__(self) -> None:
        self._background: set[asyncio.Task] = set()

    def start(self) -> None:
        """Called once the event loop runs: background tasks, preloading."""

    def background(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run `coroutine` for as long as the service lives (the loop keeps only weak references)."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def stop_background(self) -> None:
        for task in list(self._background):
            task.cancel()

    def describe(self) -> dict:
        return {}

    def status(self) -> dict | None:
        """This service's engine section of `status` (None: it has no engine)."""
        return None

    def totals(self) -> dict:
        """Top-level `status` figures this service owns."""
        return {}

    def cancel_all(self, reason: str) -> None:
        """End every job of this service now with `cancelled` (shutdown)."""

    async def close(self) -> None:
        """Stop engines and devices."""


async def unload_when_idle(engine: Callable[[], EngineHost | None], keep_alive_s: float,
                           busy: Callable[[], bool]) -> None:
    """Forever: stop the engine once it has been idle for `keep_alive_s` (0 = never)."""
    while True:
        await asyncio.sleep(min(1.0, keep_alive_s) if keep_alive_s else 1.0)
        current = engine()
        if (keep_alive_s and current is not None and current.state == READY and not current.active
                and not busy() and time.monotonic() - current.last_used > keep_alive_s):
            await current.stop()


class EngineJobService(Service):
    """A service each of whose requests is one job of its own engine process (OCR, listen):
    the engine (`target` runs in it; unloaded after `settings.keep_alive_s` idle), the jobs it
    accepted, handing one to the engine, cancelling, and its end with the total time since
    acceptance. Subclasses set `name` and `unavailable` (what a failed start is called)."""

    unavailable = "the engine failed to start"

    def __init__(self, target: str, settings: EngineProcessConfig, context: zmq.asyncio.Context, sink: Sink,
                 nice: int = 0, spec: dict | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.sink = sink
        self.engine = EngineHost(self.name, target, spec or {}, on_event=self.on_engine_event,
                                 progress_timeout_s=settings.engine_timeout_s, load_timeout_s=settings.load_timeout_s,
                                 context=context, nice=nice)
        self.jobs: dict[str, float] = {}  # job -> accepted at

    def start(self) -> None:
        self.background(unload_when_idle(lambda: self.engine, self.settings.keep_alive_s, lambda: bool(self.jobs)))

    async def close(self) -> None:
        self.stop_background()
        await self.engine.stop()
        self.engine.close()

    def accept(self, job: str) -> None:
        self.jobs[job] = time.monotonic()

    async def submit(self, job: str, payload: dict, attachments: tuple[bytes, ...]) -> None:
        """Start the engine if needed (telling the client it loads) and queue the job there."""
        try:
            if self.engine.state != READY:
                self.sink(job, Event("progress", fields={"stage": "loading_model"}))
            await self.engine.ensure_ready()
            if job in self.jobs:
                await self.engine.submit(job, payload, attachments)
        except EngineUnavailable as exc:
            self.jobs.pop(job, None)
            raise CodedError(MODEL_UNAVAILABLE, f"{self.unavailable}: {exc}") from None
        except CodedError:
            self.jobs.pop(job, None)
            raise

    async def cancel(self, job: str) -> None:
        """The request ends now. A job the engine has started runs to its end there (its result
        is dropped); one still waiting in the engine's queue is dropped there, unrun."""
        if self.jobs.pop(job, None) is not None:
            self.sink(job, Event.failure(cancelled()))
            await self.engine.cancel(job)

    def cancel_all(self, reason: str) -> None:
        for job in list(self.jobs):
            self.jobs.pop(job)
            self.sink(job, Event.failure(cancelled(reason)))

    def on_engine_event(self, job: str, event: Event) -> None:
        if not event.final:
            if job in self.jobs:
                self.sink(job, event)
            return
        accepted = self.jobs.pop(job, None)
        if accepted is None:
            return  # cancelled meanwhile
        if event.kind == "result":
            fields = dict(event.fields)
            fields["timings_ms"] = {**fields["timings_ms"], "total": round((time.monotonic() - accepted) * 1000, 1)}
            event = Event.result(fields)
        self.sink(job, event)
