"""Running an engine in a child process that can hang or die without taking the daemon along.

The daemon's socket loop talks to each engine through a ZeroMQ PAIR socket over a private
IPC path (the messages are in engines/channel.py; the child's side is engines/worker.py).
The child sends a heartbeat at least every HEARTBEAT_S and after every engine step; the host
declares it hung when a job is in flight and nothing arrived for `progress_timeout_s`, and
dead when the process exits. Either way the jobs in flight end with an error, the process is
killed and a fresh one is started.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from ..errors import INTERNAL, TIMEOUT, CodedError, cancelled
from ..events import Event
from .channel import EngineEvent, EngineJob, JobNote, control, decode
from .worker import HEARTBEAT_S, child_main

log = logging.getLogger("edge_agent.engine")

UNLOADED, LOADING, READY, FAILED, RESTARTING = "unloaded", "loading", "ready", "failed", "restarting"


class EngineUnavailable(Exception):
    """The engine could not be started (load failed or timed out)."""


class EngineHost:
    """One engine child process, restarted on crash or hang; lives in the daemon's asyncio loop."""

    def __init__(self, name: str, target: str, spec: dict, *, on_event: Callable[[str, Event], None],
                 progress_timeout_s: float, load_timeout_s: float, context: zmq.asyncio.Context, nice: int = 0):
        self.name = name
        self.target = target
        self.spec = spec
        self.nice = nice  # added to the child's niceness: a compute engine yields to the daemon and to speech
        self.on_event = on_event
        self.progress_timeout_s = progress_timeout_s
        self.load_timeout_s = load_timeout_s
        self.context = context
        self.state = UNLOADED
        self.info: dict[str, Any] = {}
        self.restarts = 0
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self.last_used = time.monotonic()
        self.active: set[str] = set()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []
        self._ready: asyncio.Future | None = None
        self._starting: asyncio.Task | None = None
        self._last_heard = time.monotonic()
        self._dir: Path | None = None  # private folder of the channel sockets, made at the first start
        self._generation = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def ensure_ready(self) -> dict:
        """Start the child if needed and wait until its model is loaded."""
        if self.state == READY:
            return self.info
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)
        return self.info

    async def _start(self) -> None:
        self._teardown(kill=True)
        self.state = LOADING if self.state != RESTARTING else RESTARTING
        self._generation += 1
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"edge-agent-{self.name}-"))
        endpoint = f"ipc://{self._dir}/engine-{self._generation}.sock"
        sock = self.context.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        self._sock = sock
        spawn = multiprocessing.get_context("spawn")
        process = spawn.Process(target=child_main, args=(endpoint, self.target, self.spec, self.nice, os.getpid()),
                                name=f"edge-agent-{self.name}", daemon=True)
        process.start()
        self._process = process
        self._last_heard = time.monotonic()
        self._ready = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.ensure_future(self._read(sock, self._generation)),
                       asyncio.ensure_future(self._watch(self._generation))]
        log.info("%s engine: started process %s", self.name, process.pid)
        try:
            self.info = await asyncio.wait_for(asyncio.shield(self._ready), self.load_timeout_s)
        except asyncio.TimeoutError:
            self._fail(f"loading took longer than {self.load_timeout_s:.0f} s")
            raise EngineUnavailable(self.last_error) from None
        except EngineUnavailable:
            raise
        self.state = READY
        self.loaded_at = time.monotonic()
        self.last_used = time.monotonic()
        self.last_error = None

    def _fail(self, message: str) -> None:
        self.state = FAILED
        self.last_error = message
        self._teardown(kill=True)

    def _teardown(self, kill: bool) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._process is not None:
            if kill and self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self.loaded_at = None

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to exit, then make sure it did. Jobs still running end `cancelled`."""
        jobs, self.active = self.active, set()
        for job in jobs:
            self.on_event(job, Event.failure(cancelled("unload")))
        self._generation += 1  # the watcher must not take this exit for a crash and restart it
        if self._process is not None and self._process.is_alive() and self._sock is not None:
            try:
                await self._sock.send(control("stop"))
            except zmq.ZMQError:
                pass
            deadline = time.monotonic() + timeout
            while self._process.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self._teardown(kill=True)
        self.state = UNLOADED

    def close(self) -> None:
        self._teardown(kill=True)
        if self._dir is None:
            return
        try:
            for item in self._dir.iterdir():
                item.unlink()
            self._dir.rmdir()
        except OSError:
            pass
        self._dir = None

    # ---------------------------------------------------------------- jobs

    async def submit(self, job: str, payload: dict, attachments: tuple[bytes, ...] = ()) -> None:
        """Hand a job to the child; binary attachments (an image) travel as extra frames."""
        if self.state != READY or self._sock is None:
            raise EngineUnavailable(f"{self.name} engine is {self.state}")
        self.active.add(job)
        self.last_used = time.monotonic()
        if len(self.active) == 1:
            self._last_heard = time.monotonic()  # hang timing starts with the work
        await self._sock.send_multipart(EngineJob(job, payload, attachments).frames())

    async def cancel(self, job: str) -> None:
        if job in self.active and self._sock is not None:
            await self._sock.send(control("cancel", job=job))

    async def note(self, job: str, kind: str, fields: dict, attachments: tuple[bytes, ...] = ()) -> None:
        """More input for a running job (channel.JobNote); nothing if the job is not running."""
        if job in self.active and self._sock is not None:
            await self._sock.send_multipart(JobNote(job, kind, fields, attachments).frames())

    async def send_control(self, kind: str) -> None:
        """A message for the running child that is no job (`forget`: drop what it kept between
        requests); nothing if no child runs (a new one keeps nothing)."""
        if self.state == READY and self._sock is not None:
            await self._sock.send(control(kind))

    # ---------------------------------------------------------------- child messages and health

    async def _read(self, sock: zmq.asyncio.Socket, generation: int) -> None:
        while True:
            frames = await sock.recv_multipart()
            if generation != self._generation:
                return
            self._last_heard = time.monotonic()
            header, attachments = decode(frames)
            kind = header.get("type")
            if kind == "ready":
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(header)
            elif kind == "load_failed":
                self._fail(header.get("error", "load failed"))
                if self._ready is not None and not self._ready.done():
                    self._ready.set_exception(EngineUnavailable(self.last_error))
                return
            elif kind == "event":
                message = EngineEvent.from_header(header, attachments)
                if message.event.final:
                    self.active.discard(message.job)
                    self.last_used = time.monotonic()
                self.on_event(message.job, message.event)

    async def _watch(self, generation: int) -> None:
        while generation == self._generation:
            await asyncio.sleep(HEARTBEAT_S / 2)
            if generation != self._generation:
                return  # stopped or replaced meanwhile: this process's exit is expected
            process = self._process
            if process is None:
                return
            if not process.is_alive():
                code = process.exitcode
                why = f"engine process exited with {('signal ' + str(-code)) if code and code < 0 else code}"
                self._recover(why, INTERNAL)
                return
            if self.active and time.monotonic() - self._last_heard > self.progress_timeout_s:
                self._recover(f"engine made no progress for {self.progress_timeout_s:.0f} s", TIMEOUT)
                return

    def _recover(self, why: str, code: str) -> None:
        """Crash or hang: fail the jobs in flight, replace the process."""
        log.error("%s engine: %s; restarting it", self.name, why)
        was_ready = self.state == READY
        jobs, self.active = self.active, set()
        self._generation += 1  # stale reader and watcher stop delivering
        self._teardown(kill=True)
        self.restarts += 1
        self.last_error = why
        for job in jobs:
            self.on_event(job, Event.failure(CodedError(code, why)))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(EngineUnavailable(why))
        if was_ready:
            self.state = RESTARTING
            self._starting = asyncio.ensure_future(self._start())
            self._starting.add_done_callback(lambda t: t.exception())  # failure is kept in state
        else:
            self.state = FAILED

    def status(self) -> dict:
        now = time.monotonic()
        return {
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "loaded_for_s": round(now - self.loaded_at, 1) if self.loaded_at else None,
            "idle_for_s": round(now - self.last_used, 1) if not self.active else 0.0,
            "active_requests": len(self.active),
        }


