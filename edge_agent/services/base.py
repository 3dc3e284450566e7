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

from ..engines.host import READY, EngineHost


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
