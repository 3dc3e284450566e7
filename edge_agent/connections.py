"""Connection caps: a flood of connections must not take the daemon's file descriptors.

Every accepted connection holds a descriptor; at the process's limit libzmq aborts the whole
daemon (an IPC accept failing with EMFILE). ZeroMQ cannot refuse one peer, so the guard
watches each ROUTER socket's accept and disconnect events, and an endpoint that reaches its
cap is unbound for a few seconds: ZeroMQ closes every connection of that endpoint with it
(ZeroMQ clients reconnect by themselves; a request in flight on it is lost, and its client
sees its stream end as on any disconnect), then it listens again. Each endpoint may hold at
most three quarters of the total, so a flood on the TCP endpoint leaves room on the IPC socket
for local apps, and the total stays below the descriptor limit minus what the daemon needs
for itself (engines, files, the backlog the kernel may hand over before an unbind).
"""
from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Callable

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from .sockets import Listener

log = logging.getLogger("edge_agent.server")

RESERVED_FDS = 128  # engines' channels, model files, logs, the daemon's own sockets
BACKLOG = 100  # libzmq's listen backlog: accepted after an unbind is asked for at worst
COOL_DOWN_S = 2.0  # an endpoint that hit its cap stays unbound this long


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (a unit's LimitNOFILE); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(configured: int) -> int:
    """At most `configured` connections, and never so many that the descriptors run out."""
    soft = raise_fd_limit()
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 64
    room = soft - in_use - RESERVED_FDS - BACKLOG
    cap = max(1, min(configured, room))
    if cap < configured:
        log.warning("file descriptor limit %d allows %d connections, not %d (raise LimitNOFILE)", soft, cap,
                    configured)
    return cap


class ConnectionGuard:
    def __init__(self, listeners: list[Listener], total_cap: int, rebind: Callable[[Listener], None]):
        self.listeners = listeners
        self.total_cap = total_cap
        self.endpoint_cap = max(1, total_cap * 3 // 4) if len(listeners) > 1 else total_cap
        self.rebind = rebind
        self.counts = [0] * len(listeners)
        self.paused = [False] * len(listeners)
        self._monitors: list[zmq.asyncio.Socket] = []

    @property
    def total(self) -> int:
        return sum(self.counts)

    def start(self, spawn: Callable) -> None:
        for index, listener in enumerate(self.listeners):
            monitor = listener.sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
            self._monitors.append(monitor)
            spawn(self._watch(index, monitor))

    async def _watch(self, index: int, monitor: zmq.asyncio.Socket) -> None:
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.counts[index] += 1
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.counts[index] = max(0, self.counts[index] - 1)
            self._adjust()

    def _adjust(self) -> None:
        full = self.total >= self.total_cap
        for index, listener in enumerate(self.listeners):
            if self.paused[index] or not (full or self.counts[index] >= self.endpoint_cap):
                continue
            log.warning("%s: %d connections (%d in all): closing them and not listening for %.0f s",
                        listener.endpoint, self.counts[index], self.total, COOL_DOWN_S)
            listener.sock.unbind(listener.endpoint)  # closes the endpoint's connections (no events come)
            self.counts[index] = 0
            self.paused[index] = True
            asyncio.get_running_loop().call_later(COOL_DOWN_S, self._resume, index)

    def _resume(self, index: int) -> None:
        listener = self.listeners[index]
        try:
            self.rebind(listener)
        except zmq.ZMQError as exc:  # the port was taken meanwhile: try again later
            log.error("%s: cannot listen again (%s)", listener.endpoint, exc)
            asyncio.get_running_loop().call_later(COOL_DOWN_S, self._resume, index)
            return
        self.paused[index] = False
        log.info("%s: listening again", listener.endpoint)

    def status(self) -> dict:
        return {"connections": self.total, "cap": self.total_cap,
                "paused": [listener.endpoint for index, listener in enumerate(self.listeners) if self.paused[index]]}

    def close(self) -> None:
        for listener, monitor in zip(self.listeners, self._monitors):
            try:
                listener.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            monitor.close(linger=0)

