"""What every engine-backed service does the same way: unload an idle engine, end requests
with `cancelled`, and turn an engine's error message into a protocol error object."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from .. import protocol as P
from ..engines.host import READY, EngineHost

ENGINE_MESSAGE_KEYS = ("type", "kind", "final", "code", "message")


async def unload_when_idle(engine: Callable[[], EngineHost | None], keep_alive_s: float,
                           busy: Callable[[], bool]) -> None:
    """Forever: stop the engine once it has been idle for `keep_alive_s` (0 = never)."""
    while True:
        await asyncio.sleep(min(1.0, keep_alive_s) if keep_alive_s else 1.0)
        current = engine()
        if (keep_alive_s and current is not None and current.state == READY and not current.active
                and not busy() and time.monotonic() - current.last_used > keep_alive_s):
            await current.stop()


def cancelled(reason: str) -> dict:
    message = "cancelled" if reason == "cancel" else f"cancelled: {reason}"
    return {"error": {"code": P.CANCELLED, "message": message, "reason": reason}}


def engine_error(message: dict) -> dict:
    """An engine's `error` message as the `error` field of a protocol event."""
    extra = {k: v for k, v in message.items() if k not in ENGINE_MESSAGE_KEYS}
    return {"error": {"code": message["code"], "message": message["message"], **extra}}
