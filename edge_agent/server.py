"""The daemon's socket loop: validation, dispatch by op, per-client limits, jobs,
cancellation and shutdown.

Every op has one handler (`Server.handlers`, the table of ops.py's `op_<name>` methods, one
per parser in protocol.py). A handler either answers at once or returns `Work`; all work goes
through one accept path here (limits, `accepted`, error handling, task references), and each
job keeps the cancel of the service that started it, so `cancel` reaches the right service
for every op. Nothing here blocks: engines run in their own processes (engines/host.py) and
report back through the services, so `status`, `ping` and `cancel` are answered at once
whatever the engines are doing.
"""
from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio

from . import __version__, assistant
from . import protocol as P
from .assistant import Route, Services
from .config import Config
from .connections import ConnectionGuard, connection_cap
from .errors import CANCELLED, CodedError, cancelled
from .events import Event
from .logsafe import RateLimitedLog, loggable
from .ops import Call, Ops, Work
from .pipelines import SpokenAnswer
from .services.base import Service
from .services.cameras import CameraService
from .services.chat import ChatService
from .services.listen import ListenService
from .services.ocr import OcrService
from .services.speech import SpeechService
from .services.vision import VisionService
from .sockets import Client, Listener, Sockets
from .systemd import notify, watchdog_interval_s

log = logging.getLogger("edge_agent.server")

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
REJECTION_LOGS_PER_S = 5  # a client that sends garbage in a loop must not flood the journal
MONITORING_OPS = ("ping", "status", "describe")  # a dashboard polling them does not keep conversations alive
UNREAD_OUTPUT = CodedError(CANCELLED, "cancelled: the client left more than its budget of events unread",
                           reason="unread_output")


@dataclass
class Job:
    client: Client
    rid: str
    op: str
    cancel: Callable[[], Awaitable[None]] | None
    task: asyncio.Task | None = None


class Server:
    def __init__(self, config: Config):
        self.config = config
        self.context = zmq.asyncio.Context()
        self.sockets = Sockets(config, self.context, self._client_gone, self._client_overrun, self._output_drained)
        self.jobs: dict[str, Job] = {}
        self._job_ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._rejections = RateLimitedLog(log, per_second=REJECTION_LOGS_PER_S)
        self.guard: ConnectionGuard | None = None
        self.started = time.monotonic()
        self.last_request = time.monotonic()  # of any op but the monitoring ones: the privacy wipe's clock
        self._wiped_since_request = False
        self.stopping = False
        self._stopped = asyncio.Event()
        self.cameras = CameraService(config)
        self.chat = ChatService(config, self.context, self._emit)
        self.ocr = OcrService(config, self.context, self._emit, self.cameras)
        self.vision = VisionService(config, self.context, self._emit, self.cameras)
        self.speech = SpeechService(config, self.context)
        self.speech.client_paused = self.sockets.paused
        self.listen = ListenService(config, self.context, self._emit)
        self.services: list[Service] = [self.chat, self.ocr, self.vision, self.speech, self.listen, self.cameras]
        # jobs whose events go through a pipeline: a spoken answer, an assist's internal jobs
        self.spoken: dict[str, SpokenAnswer | Route] = {}
        self.ops = Ops(chat=self.chat, ocr=self.ocr, vision=self.vision, speech=self.speech, listen=self.listen,
                       cameras=self.cameras,
                       new_job=self._new_job, cancel=self._cancel, deliver=self._deliver, spoken=self.spoken,
                       describe=self.describe, status=self.status, spawn=self._spawn,
                       assistant=Services(config, self.listen, self.chat, self.ocr, self.vision, self.speech,
                                          routes=self.spoken, emit=self._emit))
        self.handlers: dict[str, Callable[[Call], dict | Work]] = self.ops.table()

    # ---------------------------------------------------------------- events out

    def _send(self, client: Client, rid: str | None, payload: bytes, final: bool = True) -> bool:
        return self.sockets.send(client, [payload], rid, final)

    def _emit(self, job_id: str, event: Event) -> None:
        """A service's event for a job: through its speech pipeline if it has one, else to the client."""
        spoken = self.spoken.get(job_id)
        if spoken is not None:
            spoken.on_service_event(event)
        else:
            self._deliver(job_id, event)

    def _deliver(self, job_id: str, event: Event) -> None:
        """An event for a job, to the client that asked."""
        if event.final:
            self.spoken.pop(job_id, None)
        job = self.jobs.get(job_id)
        if job is None:
            return
        client = job.client
        if client.overrun:  # it left too much unread: its requests end, and only that is sent
            if not event.final:
                return
            event = Event.failure(UNREAD_OUTPUT)
        if event.final:
            del self.jobs[job_id]
            client.inflight.pop(job.rid, None)
            client.overrun = client.overrun and bool(client.inflight)
            outcome = event.fields["error"]["code"] if event.kind == "error" else "done"
            log.info("%s id=%s client=%s ended: %s", job.op, loggable(job.rid), client.name, outcome)
        self.sockets.send(client, P.encode_event(job.rid, event), job.rid, event.final)

    async def _cancel(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        if job.cancel is not None:
            await job.cancel()
        elif job.task is not None:
            job.task.cancel()  # the accept path turns this into the `cancelled` event

    def _client_gone(self, client: Client) -> None:
        async def cancel_all() -> None:
            for job_id in list(client.inflight.values()):
                await self._cancel(job_id)
            self.sockets.clients.pop(client.key, None)

        self._spawn(cancel_all())

    def _client_overrun(self, client: Client, dropped_final: list[str]) -> None:
        """A client left more unread than its budget: what waited for it was dropped; each of its
        requests ends with `cancelled` (reason `unread_output`), the finished ones too."""
        log.warning("client %s left more than its budget unread: ending its %d request(s)",
                    client.name, len(client.inflight) + len(dropped_final))
        for rid in dropped_final:
            self._send(client, rid, P.error(rid, UNREAD_OUTPUT))
        if client.inflight:
            client.overrun = True
            for job_id in list(client.inflight.values()):
                self._spawn(self._cancel(job_id))

    def _output_drained(self) -> None:
        self.speech.output_drained()

    def _spawn(self, coroutine: Coroutine) -> asyncio.Task:
        """A task whose reference is kept until it ends (the loop keeps only weak ones)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- messages in

    def _start_receiver(self, index: int, listener: Listener) -> asyncio.Task:
        task = self._spawn(self._receive(index, listener))

        def ended(t: asyncio.Task) -> None:
            if self.stopping:
                return
            reason = "cancelled" if t.cancelled() else repr(t.exception())
            log.error("receive loop on %s ended (%s); restarting it", listener.endpoint, reason)
            self._start_receiver(index, listener)

        task.add_done_callback(ended)
        return task

    async def _receive(self, index: int, listener: Listener) -> None:
        sock = listener.sock
        while not self.stopping:
            try:
                frames = await sock.recv_multipart(copy=False)
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as exc:
                if self.stopping:
                    return
                log.error("receive on %s failed: %s", listener.endpoint, exc)
                continue
            try:
                self._handle(index, listener, frames)
            except Exception:  # a bug must not stop the loop for everyone
                log.exception("internal error while handling a message")
            del frames  # not held while waiting for the next message (it may be hundreds of megabytes)
            # pyzmq hands over a message that is already queued without yielding to the event loop;
            # let what this message started (a cancel ending its target and freeing the client's
            # slot, a job's first step) run before the next message is handled
            await asyncio.sleep(0)

    def _handle(self, index: int, listener: Listener, frames: list) -> None:
        body = frames[1:]
        size = sum(len(f) for f in body)
        if size > self.config.server.max_message_bytes:  # refused before a copy is made: only the header is read
            head = [f.bytes if len(f) <= P.MAX_HEADER_BYTES else b"" for f in body[:2]]
            client, parts = self.sockets.client(index, frames[0].bytes, head)
            self._refuse(client, parts, P.ProtocolError(
                P.TOO_LARGE, f"message is {size} bytes; the limit is {self.config.server.max_message_bytes}"))
            return
        client, parts = self.sockets.client(index, frames[0].bytes, [f.bytes for f in body])
        user_id = frames[-1].get("User-Id") if listener.curve else None
        client.curve_key = user_id
        try:
            if self.sockets.revoked(client):
                raise P.ProtocolError(P.UNAUTHORIZED, "this client's certificate is no longer allowed")
            request = P.parse_request(parts)
        except P.ProtocolError as exc:
            self._refuse(client, parts, exc)
            return
        if self.stopping:
            self._send(client, request.id, P.error(request.id, cancelled("shutdown")))
            return
        admin = listener.admin or (user_id is not None and user_id in self.config.server.curve.admin_keys)
        try:
            self.dispatch(Call(client, request, admin))
        except P.ProtocolError as exc:
            self._send(client, request.id, P.error(request.id, exc))

    def _refuse(self, client: Client, parts: list[bytes], exc: P.ProtocolError) -> None:
        """A message that is no request: its error, with the id when the header still tells it
        (an oversized header's too)."""
        self._rejections.log("rejected message from %s: %s", client.name, exc.message)
        rid = P.request_id_of(parts[0]) if parts else None
        self._send(client, rid, P.error(rid, exc))

    def dispatch(self, call: Call) -> None:
        rid = call.request.id
        if call.request.op not in MONITORING_OPS:
            self.last_request, self._wiped_since_request = time.monotonic(), False
        if rid in call.client.inflight:
            raise P.ProtocolError(P.BAD_REQUEST, f"a request with id {rid!r} is still in flight", field="id")
        answer = self.handlers[call.request.op](call)
        if isinstance(answer, Work):
            self._accept(call, answer)
        else:
            self._send(call.client, rid, P.result(rid, **answer))

    def _new_job(self, client: Client) -> str:
        """Per-client and daemon-wide limits for engine work; returns a new job id."""
        limits = self.config.server
        if len(client.inflight) >= limits.max_inflight_per_client:
            raise P.ProtocolError(P.BUSY, f"this client already has {len(client.inflight)} requests in flight "
                                  f"(limit {limits.max_inflight_per_client})", retry_after_ms=250)
        if len(self.jobs) >= limits.max_queue:
            raise P.ProtocolError(P.BUSY, f"the daemon's queue is full ({limits.max_queue} requests)",
                                  retry_after_ms=1000)
        return f"j{next(self._job_ids)}"

    def _accept(self, call: Call, work: Work) -> None:
        """Register an accepted job, tell the client, and run its work."""
        client, rid, op, job_id = call.client, call.request.id, call.request.op, work.job
        job = self.jobs[job_id] = Job(client, rid, op, work.cancel)
        client.inflight[rid] = job_id
        log.info("%s id=%s client=%s job=%s", op, loggable(rid), client.name, job_id)
        self._send(client, rid, P.event(rid, "accepted", queue_position=work.queue_position), final=False)

        async def run() -> None:
            try:
                final = await work.run
                if final is not None:
                    self._emit(job_id, final)
            except asyncio.CancelledError:
                self._emit(job_id, Event.failure(cancelled()))
            except P.ProtocolError as exc:
                self._emit(job_id, Event.failure(exc))
            except Exception as exc:  # noqa: BLE001
                log.exception("%s job %s failed", op, job_id)
                self._emit(job_id, Event.failure(P.ProtocolError(P.INTERNAL, str(exc))))

        job.task = self._spawn(run())
        if work.accepted is not None:
            work.accepted()

    # ---------------------------------------------------------------- describe / status

    def describe(self) -> dict:
        limits = self.config.server
        return {
            "protocol": {"version": P.VERSION, "supported": list(P.SUPPORTED_VERSIONS)},
            "server": {"name": "edge-agent", "version": __version__},
            "ops": list(P.OPS),
            "services": {**{service.name: service.describe() for service in self.services},
                         "assist": assistant.describe(self.config)},
            "limits": {"max_message_bytes": limits.max_message_bytes, "max_header_bytes": P.MAX_HEADER_BYTES,
                       "max_inflight_per_client": limits.max_inflight_per_client, "max_queue": limits.max_queue,
                       "max_sessions": limits.max_sessions, "max_id_length": P.MAX_ID_LENGTH},
        }

    def status(self) -> dict:
        engines = {}
        for service in self.services:
            section = service.status()
            if section is not None:
                if section.get("pid"):
                    section["rss_bytes"] = _rss_bytes(section["pid"])
                engines[service.name] = section
        rss = _rss_bytes(os.getpid())
        totals: dict = {}
        for service in self.services:
            totals.update(service.totals())
        return {"uptime_s": round(time.monotonic() - self.started, 1), "pid": os.getpid(),
                "rss_bytes": rss + sum(e.get("rss_bytes", 0) for e in engines.values()), "daemon_rss_bytes": rss,
                "clients": len(self.sockets.clients), "inflight": len(self.jobs),
                "output": self.sockets.backlog.status(),
                **({"connections": self.guard.status()} if self.guard else {}), **totals, "engines": engines}

    # ---------------------------------------------------------------- run

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.sockets.bind()
        except (zmq.ZMQError, OSError, RuntimeError) as exc:  # a busy port, a live daemon, a bad folder
            self.sockets.close()  # the endpoints bound so far go (an IPC socket file left would mislead)
            self.context.term()
            raise RuntimeError(str(exc)) from None
        self.guard = ConnectionGuard(self.sockets.listeners, connection_cap(self.config.server.max_connections),
                                     self.sockets.rebind)
        self.guard.start(self._spawn)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.sockets.reload_curve_clients)
        for service in self.services:
            service.start()
        receivers = [self._start_receiver(i, listener) for i, listener in enumerate(self.sockets.listeners)]
        interval = watchdog_interval_s()
        watchdog = self._spawn(self._watchdog(interval)) if interval else None
        sweeper = self._spawn(self._forget_idle_clients())
        notify(f"READY=1\nSTATUS=serving on {', '.join(s.endpoint for s in self.sockets.listeners)}")
        log.info("edge-agent %s ready (pid %d)", __version__, os.getpid())
        await self._stopped.wait()
        for task in receivers + [sweeper] + ([watchdog] if watchdog else []):
            task.cancel()

    async def _forget_idle_clients(self) -> None:
        """Housekeeping every second: forget idle clients, reload a changed CURVE allow-list,
        the privacy wipe once nobody has asked anything for privacy.wipe_idle_s."""
        idle_s, last_sweep = self.config.server.client_idle_s, time.monotonic()
        wipe_idle_s = self.config.privacy.wipe_idle_s
        while True:
            await asyncio.sleep(min(1.0, wipe_idle_s / 4) if wipe_idle_s else 1.0)
            self.sockets.reload_curve_clients()
            if (wipe_idle_s and not self._wiped_since_request and not self.jobs
                    and time.monotonic() - self.last_request >= wipe_idle_s):
                self.ops.wipe_sessions(f"nothing asked for {wipe_idle_s:g} s")
                self._wiped_since_request = True
            if time.monotonic() - last_sweep >= min(10.0, idle_s / 2):
                self.sockets.forget_idle(idle_s)
                last_sweep = time.monotonic()

    def _on_signal(self, sig: int) -> None:
        self._spawn(self.shutdown(signal.Signals(sig).name))

    async def _watchdog(self, interval: float) -> None:
        # fed from the event loop itself: a blocked loop stops the pings and systemd restarts us
        while True:
            notify(f"WATCHDOG=1\nSTATUS=chat {self.chat.status()['state']}, ocr {self.ocr.status()['state']}, "
                   f"{len(self.jobs)} request(s) in flight")
            await asyncio.sleep(interval)

    async def shutdown(self, reason: str = "shutdown") -> None:
        if self.stopping:
            return
        self.stopping = True
        notify("STOPPING=1")
        log.info("%s: ending %d request(s) in flight", reason, len(self.jobs))
        for service in self.services:
            service.cancel_all("shutdown")
        for job_id in list(self.jobs):  # jobs with no service of their own (capture, voices, models)
            self._emit(job_id, Event.failure(cancelled("shutdown")))
        for service in self.services:
            await service.close()
        if self.guard is not None:
            self.guard.close()
        await self.sockets.backlog.flushed(self.config.server.shutdown_grace_s)
        self.sockets.close()
        self.context.term()
        self._stopped.set()


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _give_freed_memory_back() -> None:
    """Serve large allocations (client frames, images) from mmap, so that their memory goes back
    to the system when they are freed: after a burst of oversized messages was refused, glibc's
    adaptive threshold otherwise keeps a gigabyte and more in the heap for good."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc: its allocator keeps its own policy
        pass


def serve(config: Config) -> int:
    import faulthandler

    _give_freed_memory_back()
    logging.basicConfig(level=config.logging.level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` writes every thread's stack to the log
    server = Server(config)
    asyncio.run(server.run())
    return 0
