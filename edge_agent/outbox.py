"""Events waiting for clients that do not read them fast enough, counted in bytes.

ZeroMQ queues a peer's messages up to SNDHWM *messages*, whatever their size: a client that
stops reading (or sets a receive high-water mark of 1) would make the daemon hold every audio
sentence and every result it is sent. So the daemon keeps ZeroMQ's own queue short
(sockets.SEND_HWM messages per client) and what does not fit waits here, in order, where its
bytes are known:

- a producer that can wait does: speech synthesis for a client stops while that client has
  `pause_bytes` waiting and goes on when it has read them (`paused`, `on_drained`);
- a client with more than `per_client` bytes waiting, or the client holding most when all
  together pass `total`, is *overrun*: what waits for it is dropped (memory comes back at
  once) and the server ends each of its requests with `cancelled`, reason `unread_output`.

Nothing here knows about requests beyond the request id and the `final` flag of each event,
which the overrun needs so that every request still gets exactly one terminal event.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple, Protocol


class Sent(Enum):
    SENT = "sent"
    FULL = "full"  # the client's ZeroMQ queue is at its high-water mark: try again later
    GONE = "gone"  # the client cannot be reached any more


class Waiting(NamedTuple):
    """One event a client has not taken. A tuple of bytes, strings and numbers: the garbage
    collector stops tracking it, so a long outbox costs it nothing to scan."""
    frames: tuple[bytes, ...]
    size: int  # the frames' bytes plus what holding them costs (ITEM_OVERHEAD)
    rid: str | None
    final: bool


# what one waiting event costs beyond its bytes (the Python objects that hold it): a flood of
# small events is counted at what it really takes
ITEM_OVERHEAD = 256


@dataclass
class Outbox:
    """One client's events that ZeroMQ could not take yet."""
    items: deque[Waiting] = field(default_factory=deque)
    bytes: int = 0
    retry_at: float = 0.0  # loop time of the next try
    delay: float = 0.0  # wait after a try that sent nothing (doubles up to LAST_RETRY_S)

    def __bool__(self) -> bool:
        return bool(self.items)


class Reader(Protocol):
    """A client as the backlog sees it (sockets.Client)."""
    @property
    def key(self) -> Hashable: ...
    @property
    def outbox(self) -> Outbox: ...


FIRST_RETRY_S = 0.001
LAST_RETRY_S = 0.05
BURST = 32  # events sent to one client before the others (and the socket loop) get a turn


class Backlog:
    """Every client's outbox, the byte limits, and the task that keeps trying to send them."""

    def __init__(self, *, per_client: int, total: int, send_now: Callable[[Any, list[bytes]], Sent],
                 on_overrun: Callable[[Any, list[str]], None], on_drained: Callable[[], None]):
        self.per_client = per_client
        self.total = total
        self.pause_bytes = max(1, per_client // 4)
        self._send_now = send_now  # (client, frames) -> Sent
        self._on_overrun = on_overrun  # (client, ids of requests whose final event was dropped)
        self._on_drained = on_drained  # a paused client has room again
        self.waiting: dict[Hashable, Reader] = {}  # client key -> client (its `outbox` is not empty)
        self.bytes = 0
        self.overruns = 0
        self._task: asyncio.Task | None = None
        self._kick = asyncio.Event()  # a client started waiting: try it soon

    def hold(self, client: Reader, frames: list[bytes], rid: str | None, final: bool) -> None:
        size = sum(len(frame) for frame in frames) + ITEM_OVERHEAD
        outbox = client.outbox
        outbox.items.append(Waiting(tuple(frames), size, rid, final))
        outbox.bytes += size
        self.bytes += size
        if client.key not in self.waiting:
            self.waiting[client.key] = client
            outbox.delay, outbox.retry_at = FIRST_RETRY_S, asyncio.get_running_loop().time() + FIRST_RETRY_S
            self._kick.set()
        if outbox.bytes > self.per_client:
            self.overrun(client)
        while self.bytes > self.total and self.waiting:
            self.overrun(max(self.waiting.values(), key=lambda c: c.outbox.bytes))
        if self.waiting and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._flush())

    def paused(self, client: Reader) -> bool:
        """Whether a producer that can wait should wait before making more for this client."""
        return client.outbox.bytes >= self.pause_bytes

    def discard(self, client: Reader) -> None:
        """Forget what waits for a client that is gone or forgotten."""
        outbox = client.outbox
        self.bytes -= outbox.bytes
        outbox.items.clear()
        outbox.bytes = 0
        if self.waiting.get(client.key) is client:
            del self.waiting[client.key]

    def overrun(self, client: Reader) -> None:
        dropped = [w.rid for w in client.outbox.items if w.final and w.rid is not None]
        self.discard(client)
        self.overruns += 1
        self._on_overrun(client, dropped)

    def status(self) -> dict:
        return {"clients_waiting": len(self.waiting), "unread_bytes": self.bytes, "overruns": self.overruns}

    def _send_some(self, client: Reader) -> tuple[int, bool]:
        """Send what the client's queue takes, up to BURST events: (how many, whether ZeroMQ
        would have taken more)."""
        outbox, count = client.outbox, 0
        while outbox.items and count < BURST:
            head = outbox.items[0]
            outcome = self._send_now(client, list(head.frames))
            if outcome is Sent.FULL:
                return count, False
            if outcome is Sent.GONE:
                self.discard(client)
                return count, False
            outbox.items.popleft()
            outbox.bytes -= head.size
            self.bytes -= head.size
            count += 1
        return count, True

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            self._kick.clear()
            now, drained = loop.time(), False
            next_try = now + LAST_RETRY_S
            for client in list(self.waiting.values()):
                outbox = client.outbox
                if outbox.retry_at <= now:
                    was_paused = self.paused(client)
                    sent, more = self._send_some(client)
                    drained = drained or (was_paused and not self.paused(client))
                    if not outbox.items:
                        if self.waiting.get(client.key) is client:
                            del self.waiting[client.key]
                        continue
                    # a client that took something is tried again at once; one that took nothing
                    # less and less often (it may never read again)
                    outbox.delay = 0.0 if more else FIRST_RETRY_S if sent else min(
                        max(outbox.delay, FIRST_RETRY_S) * 2, LAST_RETRY_S)
                    outbox.retry_at = now + outbox.delay
                next_try = min(next_try, outbox.retry_at)
                await asyncio.sleep(0)  # the socket loop answers between clients' bursts
            if drained:
                self._on_drained()
            timer = loop.call_at(next_try, self._kick.set)  # or sooner, when hold() kicks
            await self._kick.wait()
            timer.cancel()

    async def flushed(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until every outbox is empty: a stopping daemon's last events."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.waiting and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(LAST_RETRY_S / 5)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
