"""Running an engine in a child process that can hang or die without taking the daemon along.

The daemon's socket loop talks to each engine through a ZeroMQ PAIR socket over a private
IPC path. The child sends a heartbeat at least every HEARTBEAT_S and after every engine
step; the host declares it hung when a job is in flight and nothing arrived for
`progress_timeout_s`, and dead when the process exits. Either way the jobs in flight end
with an error, the process is killed and a fresh one is started.

Messages are single JSON frames:
  host -> child: {"type": "job", "job": ID, ...payload} [+ binary frames] | {"type": "cancel", "job": ID}
                 | {"type": "stop"}
  child -> host: {"type": "ready", ...info} | {"type": "load_failed", "error": MSG}
                 {"type": "heartbeat"} | {"type": "event", "job": ID, "kind": ..., ...} [+ binary frames,
                 handed on under "attachments"]
A job ends when the child sends an event with "final": true. `receive(sock)` reads one
host message in the child: the JSON header with the binary frames under "attachments".
"""
from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import zmq
import zmq.asyncio

log = logging.getLogger("edge_agent.engine")

HEARTBEAT_S = 0.5
UNLOADED, LOADING, READY, FAILED, RESTARTING = "unloaded", "loading", "ready", "failed", "restarting"


class EngineUnavailable(Exception):
    """The engine could not be started (load failed or timed out)."""


def child_main(endpoint: str, target: str, spec: dict, nice: int = 0) -> None:
    """Entry point of the child process: import the worker and hand it a connected socket."""
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal goes to the daemon only
    if nice:
        os.nice(nice)
    module_name, func_name = target.split(":")
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    try:
        getattr(importlib.import_module(module_name), func_name)(sock, spec)
    finally:
        sock.close()
        context.term()


class EngineHost:
    """One engine child process, restarted on crash or hang; lives in the daemon's asyncio loop."""

    def __init__(self, name: str, target: str, spec: dict, *, on_event: Callable[[str, dict], None],
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
        self._process: multiprocessing.Process | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []
        self._ready: asyncio.Future | None = None
        self._starting: asyncio.Task | None = None
        self._last_heard = time.monotonic()
        self._dir = Path(tempfile.mkdtemp(prefix=f"edge-agent-{name}-"))
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
        endpoint = f"ipc://{self._dir}/engine-{self._generation}.sock"
        sock = self.context.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        self._sock = sock
        spawn = multiprocessing.get_context("spawn")
        self._process = spawn.Process(target=child_main, args=(endpoint, self.target, self.spec, self.nice),
                                      name=f"edge-agent-{self.name}", daemon=True)
        self._process.start()
        self._last_heard = time.monotonic()
        self._ready = asyncio.get_running_loop().create_future()
        self._tasks = [asyncio.ensure_future(self._read(sock, self._generation)),
                       asyncio.ensure_future(self._watch(self._generation))]
        log.info("%s engine: started process %s", self.name, self._process.pid)
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
            self.on_event(job, {"kind": "error", "final": True, "code": "cancelled",
                                "message": "the model was unloaded", "reason": "unload"})
        self._generation += 1  # the watcher must not take this exit for a crash and restart it
        if self._process is not None and self._process.is_alive() and self._sock is not None:
            try:
                await self._sock.send(json.dumps({"type": "stop"}).encode())
            except zmq.ZMQError:
                pass
            deadline = time.monotonic() + timeout
            while self._process.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self._teardown(kill=True)
        self.state = UNLOADED

    def close(self) -> None:
        self._teardown(kill=True)
        try:
            for item in self._dir.iterdir():
                item.unlink()
            self._dir.rmdir()
        except OSError:
            pass

    # ---------------------------------------------------------------- jobs

    async def submit(self, job: str, payload: dict, attachments: tuple[bytes, ...] = ()) -> None:
        """Hand a job to the child; binary attachments (an image) travel as extra frames."""
        if self.state != READY or self._sock is None:
            raise EngineUnavailable(f"{self.name} engine is {self.state}")
        self.active.add(job)
        self.last_used = time.monotonic()
        if len(self.active) == 1:
            self._last_heard = time.monotonic()  # hang timing starts with the work
        await self._sock.send_multipart([json.dumps({"type": "job", "job": job, **payload}).encode(), *attachments])

    async def cancel(self, job: str) -> None:
        if job in self.active and self._sock is not None:
            await self._sock.send(json.dumps({"type": "cancel", "job": job}).encode())

    # ---------------------------------------------------------------- child messages and health

    async def _read(self, sock: zmq.asyncio.Socket, generation: int) -> None:
        while True:
            frames = await sock.recv_multipart()
            if generation != self._generation:
                return
            self._last_heard = time.monotonic()
            message = json.loads(frames[0])
            if len(frames) > 1:
                message["attachments"] = frames[1:]
            kind = message.get("type")
            if kind == "ready":
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(message)
            elif kind == "load_failed":
                self._fail(message.get("error", "load failed"))
                if self._ready is not None and not self._ready.done():
                    self._ready.set_exception(EngineUnavailable(self.last_error))
                return
            elif kind == "event":
                job = message.pop("job")
                if message.get("final"):
                    self.active.discard(job)
                    self.last_used = time.monotonic()
                self.on_event(job, message)

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
                self._recover(why, "internal")
                return
            if self.active and time.monotonic() - self._last_heard > self.progress_timeout_s:
                self._recover(f"engine made no progress for {self.progress_timeout_s:.0f} s", "timeout")
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
            self.on_event(job, {"kind": "error", "final": True, "code": code, "message": why})
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


def receive(sock: zmq.Socket) -> dict:
    """One message from the host, in the child process."""
    frames = sock.recv_multipart()
    message = json.loads(frames[0])
    message["attachments"] = frames[1:]
    return message


def run_jobs(sock: zmq.Socket, heartbeat: Callable[[], None], handle: Callable[[dict], None]) -> None:
    """A child's loop for short, uninterruptible jobs (an OCR pass, a sentence): heartbeats
    while idle, `handle(message)` for each job, until `stop`. A `cancel` needs nothing here:
    the job finishes in moments and the host drops its result."""
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while True:
        if not poller.poll(int(HEARTBEAT_S * 1000)):
            heartbeat()
            continue
        message = receive(sock)
        if message["type"] == "stop":
            return
        if message["type"] == "job":
            handle(message)


def serve_short_jobs(sock: zmq.Socket, create: Callable[[zmq.Socket], Any], cannot_start: str,
                     ready: Callable[[Any], dict]) -> None:
    """A short-job child from start to stop: build its worker (`load_failed` with `cannot_start`
    and the exception if that fails), report `ready` with the worker's facts, then run_jobs."""
    send, _ = worker_loop_sender(sock)
    try:
        worker = create(sock)
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not raised
        send({"type": "load_failed", "error": f"{cannot_start}: {type(exc).__name__}: {exc}"})
        return
    send({"type": "ready", **ready(worker)})
    run_jobs(sock, worker.heartbeat, worker.handle)


def worker_loop_sender(sock: zmq.Socket):
    """Helpers for the child side: send JSON messages and timed heartbeats."""
    last = [time.monotonic()]

    def send(message: dict) -> None:
        sock.send(json.dumps(message, ensure_ascii=False).encode())
        last[0] = time.monotonic()

    def heartbeat() -> None:
        if time.monotonic() - last[0] >= HEARTBEAT_S:
            send({"type": "heartbeat"})

    return send, heartbeat
