"""The engine process's side of the channel (engines/channel.py): start-up, the job loop
for short jobs, and a sender that keeps the heartbeat the host watches (engines/host.py)."""
from __future__ import annotations

import ctypes
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from ..errors import CodedError
from ..errors import cancelled as cancelled_error
from ..events import Event
from .channel import EngineError, EngineEvent, EngineJob, JobNote, control, decode

HEARTBEAT_S = 0.5
KEPT_NOTES = 64  # JobNotes held for their jobs (a sentence each, for the barge-in watch)
PR_SET_PDEATHSIG = 1  # linux/prctl.h

# what the host sends: a job, or {"type": "cancel", "job": ID} / {"type": "stop"} (a JobNote is
# kept for its job, which takes it with `take_notes`: the job loops see {"type": "note"} and skip it)
Incoming = EngineJob | dict


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when the daemon dies, even by SIGKILL (a model engine
    left behind holds gigabytes); and exit now if the daemon is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the host's stop and the socket's close still end us
        pass
    if os.getppid() != parent:
        os._exit(1)


def child_main(endpoint: str, target: str, spec: dict, nice: int = 0, parent: int = 0) -> None:
    """Entry point of an engine process: import the worker and hand it a connected socket."""
    import importlib

    if parent:
        die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal goes to the daemon only
    if nice:
        os.nice(nice)
    module_name, func_name = target.split(":")
    context = zmq.Context()
    sock = context.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    try:
        getattr(importlib.import_module(module_name), func_name)(WorkerChannel(sock), spec)
    finally:
        sock.close()
        context.term()


class WorkerChannel:
    """Sends events and control messages to the host; every send counts as a heartbeat."""

    def __init__(self, sock: zmq.Socket):
        self.sock = sock
        self._last_sent = time.monotonic()
        self._deferred: list[Incoming] = []  # read during a job by `cancel_requested`, for run_jobs
        # notes for jobs, kept until their job takes them (a job waiting behind another gets its
        # notes too); the oldest go first, a late note is never taken
        self._notes: deque[JobNote] = deque(maxlen=KEPT_NOTES)

    def _send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)
        self._last_sent = time.monotonic()

    def ready(self, **facts: Any) -> None:
        self._send([control("ready", **facts)])

    def load_failed(self, message: str) -> None:
        self._send([control("load_failed", error=message)])

    def heartbeat(self) -> None:
        if time.monotonic() - self._last_sent >= HEARTBEAT_S:
            self._send([control("heartbeat")])

    def event(self, job: str, kind: str, fields: dict, attachments: tuple[bytes, ...] = ()) -> None:
        self._send(EngineEvent(job, Event(kind, False, fields, attachments)).frames())

    def result(self, job: str, fields: dict, attachments: tuple[bytes, ...] = ()) -> None:
        self._send(EngineEvent(job, Event.result(fields, attachments)).frames())

    def fail(self, job: str, error: CodedError) -> None:
        self._send(EngineError(job, error).frames())

    def poll(self, timeout_ms: int) -> bool:
        return bool(self._deferred) or bool(self.sock.poll(timeout_ms))

    def receive(self) -> Incoming:
        if self._deferred:
            return self._deferred.pop(0)
        message = self._read()
        if isinstance(message, JobNote):
            self._notes.append(message)  # for a job that waits: it takes it once it runs
            return {"type": "note", "job": message.job}
        return message

    def _read(self) -> Incoming | JobNote:
        header, attachments = decode(self.sock.recv_multipart())
        if header["type"] == "job":
            return EngineJob(header["job"], header["payload"], attachments)
        if header["type"] == "note":
            return JobNote(header["job"], header["kind"], header["fields"], attachments)
        return header

    def take_notes(self, job: str) -> list[JobNote]:
        """The notes for `job` read so far (by `cancel_requested`, or while it waited)."""
        notes = [n for n in self._notes if n.job == job]
        if notes:
            self._notes = deque((n for n in self._notes if n.job != job), maxlen=KEPT_NOTES)
        return notes

    def cancel_requested(self, job: str) -> bool:
        """For a job that runs long (listening to a microphone): whether the host cancelled it
        or asked the engine to stop. Everything else that arrived meanwhile is kept, in order,
        for the job loop."""
        ended = any(isinstance(m, dict) and m["type"] == "stop" for m in self._deferred)
        while self.sock.poll(0):
            message = self._read()
            if isinstance(message, dict) and message["type"] == "cancel" and message["job"] == job:
                ended = True
                continue
            if isinstance(message, JobNote):
                self._notes.append(message)  # this job's, or one waiting behind it
                continue
            if isinstance(message, dict) and message["type"] == "stop":
                ended = True
            self._deferred.append(message)
        return ended


def run_jobs(channel: WorkerChannel, handle: Callable[[EngineJob], None]) -> None:
    """A worker's loop for short, uninterruptible jobs (an OCR pass, a sentence): heartbeats
    while idle, `handle(job)` for each job, until `stop`. Before each job, everything the host
    sent meanwhile is read, so a job cancelled while it waited is dropped unrun (its `cancelled`
    event went out from the host already): a client that queues and cancels in a loop cannot
    keep the engine busy for everyone else. A job that has started runs to its end, unless it
    asks `channel.cancel_requested` as it goes (listening to a microphone does)."""
    waiting: list[EngineJob] = []
    cancelled: set[str] = set()
    while True:
        while channel.poll(0 if waiting else int(HEARTBEAT_S * 1000)):
            message = channel.receive()
            if isinstance(message, EngineJob):
                waiting.append(message)
            elif message["type"] == "cancel":
                cancelled.add(message["job"])
            elif message["type"] == "stop":
                return
        if not waiting:
            channel.heartbeat()
            cancelled.clear()  # for jobs that had ended before their cancel came
            continue
        job = waiting.pop(0)
        if job.job in cancelled:
            cancelled.discard(job.job)
            channel.fail(job.job, cancelled_error())  # the host counts it done
            continue
        handle(job)


def serve_short_jobs(channel: WorkerChannel, create: Callable[[WorkerChannel], Any], cannot_start: str,
                     ready: Callable[[Any], dict]) -> None:
    """A short-job engine from start to stop: build its worker (`load_failed` with
    `cannot_start` and the exception if that fails), report `ready` with the worker's facts,
    then run_jobs with the worker's `handle`."""
    try:
        worker = create(channel)
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not raised
        channel.load_failed(f"{cannot_start}: {type(exc).__name__}: {exc}")
        return
    channel.ready(**ready(worker))
    run_jobs(channel, worker.handle)


def serve_model(channel: WorkerChannel, spec: dict, create: Callable[[WorkerChannel, dict], Any]) -> None:
    """A model engine from start to stop: load (`load_failed` if that fails), report the
    worker's `info()`, then its own `run()` loop."""
    try:
        worker = create(channel, spec)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
        channel.load_failed(f"cannot load {spec.get('package')}: {exc}")
        return
    channel.ready(**worker.info())
    worker.run()
