"""The daemon's socket loop: ROUTER sockets, validation, routing, per-client limits,
cancellation and shutdown.

One ROUTER socket per configured endpoint (so CURVE can guard a TCP endpoint while the IPC
socket relies on file permissions). Everything here is non-blocking: engines run in their
own processes (engines/host.py) and report back through the services, so `status`, `ping`
and `cancel` are answered at once whatever the engines are doing.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.asyncio

from . import __version__
from . import protocol as P
from .config import Config, is_loopback_endpoint
from .models import resolve, scan
from .pipelines import SpokenAnswer
from .services.cameras import CameraService
from .services.chat import ChatService
from .services.ocr import OcrService
from .services.speech import SpeechService
from .services.vision import VisionService
from .systemd import notify, watchdog_interval_s

log = logging.getLogger("edge_agent.server")

HARD_MAX_FRAME = 64 << 20
SEND_HWM = 100_000


@dataclass
class Listener:
    endpoint: str
    sock: zmq.asyncio.Socket
    admin: bool  # IPC: whoever can open the socket file is the machine's admin for us
    curve: bool


@dataclass
class Client:
    key: tuple[int, bytes]
    envelope: bool = False
    gone: bool = False  # a send failed: its requests are being cancelled
    inflight: dict[str, str] = field(default_factory=dict)  # request id -> job id
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return f"{self.key[0]}:{self.key[1].hex()}"


@dataclass
class Job:
    client: Client
    rid: str
    op: str


class Server:
    def __init__(self, config: Config):
        self.config = config
        self.context = zmq.asyncio.Context()
        self.listeners: list[Listener] = []
        self.clients: dict[tuple[int, bytes], Client] = {}
        self.jobs: dict[str, Job] = {}
        self._job_ids = itertools.count(1)
        self.started = time.monotonic()
        self.stopping = False
        self._stopped = asyncio.Event()
        self._authenticator = None
        self.chat = ChatService(config, self.context, self._emit)
        self.cameras = CameraService(config)
        self.ocr = OcrService(config, self.context, self._emit, self.cameras)
        self.vision = VisionService(config, self.context, self._emit, self.cameras)
        self.speech = SpeechService(config, self.context)
        self.spoken: dict[str, SpokenAnswer] = {}  # jobs whose answer is also spoken

    # ---------------------------------------------------------------- sockets

    def _bind(self) -> None:
        curve_cfg = self.config.server.curve
        for endpoint in self.config.server.endpoints:
            sock = self.context.socket(zmq.ROUTER)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable replies raise: the client is gone
            sock.setsockopt(zmq.MAXMSGSIZE, max(HARD_MAX_FRAME, self.config.server.max_message_bytes))
            sock.setsockopt(zmq.SNDHWM, SEND_HWM)
            sock.setsockopt(zmq.LINGER, int(self.config.server.shutdown_grace_s * 1000))
            use_curve = curve_cfg.enabled and endpoint.startswith("tcp://")
            if use_curve:
                self._start_authenticator()
                from zmq.auth import load_certificate

                public, secret = load_certificate(curve_cfg.server_secret_file)
                if secret is None:
                    raise RuntimeError(f"{curve_cfg.server_secret_file} holds no secret key")
                sock.curve_secretkey = secret
                sock.curve_publickey = public
                sock.curve_server = True
            if endpoint.startswith("ipc://"):
                path = Path(endpoint[len("ipc://"):])
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
                    if _socket_is_live(path):
                        raise RuntimeError(f"another daemon is already serving {endpoint}")
                    path.unlink()  # left by a daemon that was killed
            sock.bind(endpoint)
            if endpoint.startswith("ipc://"):
                os.chmod(endpoint[len("ipc://"):], 0o660)
            self.listeners.append(Listener(endpoint, sock, admin=endpoint.startswith("ipc://"), curve=use_curve))
            log.info("listening on %s%s", endpoint, " (CURVE)" if use_curve else "")
            if not use_curve and not is_loopback_endpoint(endpoint):
                raise RuntimeError(f"refusing to serve {endpoint} without CURVE")  # validate() prevents this

    def _start_authenticator(self) -> None:
        if self._authenticator is not None:
            return
        from zmq.auth.asyncio import AsyncioAuthenticator

        self._authenticator = AsyncioAuthenticator(self.context)
        self._authenticator.start()
        self._authenticator.configure_curve(domain="*", location=self.config.server.curve.authorized_clients_dir)

    # ---------------------------------------------------------------- sending

    def _send(self, client: Client, payload: bytes, attachments: tuple[bytes, ...] = ()) -> bool:
        if client.gone:
            return False
        listener = self.listeners[client.key[0]]
        frames = [client.key[1]] + ([b""] if client.envelope else []) + [payload, *attachments]
        future = listener.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        exc = future.exception() if future.done() else None
        if exc is None:
            return True
        log.log(logging.WARNING if client.inflight else logging.DEBUG,
                "client %s unreachable (%s): cancelling its %d request(s)", client.name, exc, len(client.inflight))
        client.gone = True
        asyncio.ensure_future(self._client_gone(client))
        return False

    def _emit(self, job_id: str, kind: str, final: bool, fields: dict, attachments: tuple[bytes, ...] = ()) -> None:
        """Service events for a job: through its speech pipeline if it has one, else to the client."""
        spoken = self.spoken.get(job_id)
        if spoken is not None:
            spoken.on_service_event(kind, final, fields, attachments)
        else:
            self._deliver(job_id, kind, final, fields, attachments)

    def _deliver(self, job_id: str, kind: str, final: bool, fields: dict, attachments: tuple[bytes, ...] = ()) -> None:
        """An event for a job, to the client that asked."""
        if final:
            self.spoken.pop(job_id, None)
        job = self.jobs.get(job_id)
        if job is None:
            return
        if final:
            del self.jobs[job_id]
            job.client.inflight.pop(job.rid, None)
            if kind == "error":
                log.info("%s id=%s client=%s ended: %s", job.op, job.rid, job.client.name, fields["error"]["code"])
            else:
                log.info("%s id=%s client=%s done", job.op, job.rid, job.client.name)
        self._send(job.client, P.event(job.rid, kind, final, **fields), attachments)

    def _service_of(self, job_id: str):
        """What can cancel a job: its speech pipeline, or the service running it."""
        if job_id in self.spoken:
            return self.spoken[job_id]
        for service in (self.ocr, self.vision, self.speech):
            if job_id in service.jobs:
                return service
        return self.chat

    async def _client_gone(self, client: Client) -> None:
        for rid, job_id in list(client.inflight.items()):
            service = self._service_of(job_id)
            self.jobs.pop(job_id, None)
            client.inflight.pop(rid, None)
            await service.cancel(job_id)
        self.clients.pop(client.key, None)

    # ---------------------------------------------------------------- receiving

    def _start_receiver(self, index: int, listener: Listener) -> asyncio.Task:
        task = asyncio.ensure_future(self._receive(index, listener))

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

    def _handle(self, index: int, listener: Listener, frames: list) -> None:
        identity = frames[0].bytes
        parts = [f.bytes for f in frames[1:]]
        key = (index, identity)
        client = self.clients.get(key)
        if client is None or client.gone:  # a peer that comes back with the same identity starts afresh
            client = Client(key)
        client.envelope = bool(parts) and parts[0] == b""
        if client.envelope:
            parts = parts[1:]
        client.last_seen = time.monotonic()
        self.clients[key] = client
        user_id = frames[-1].get("User-Id") if listener.curve else None
        size = sum(len(p) for p in parts)
        try:
            if size > self.config.server.max_message_bytes:
                raise P.ProtocolError(P.TOO_LARGE, f"message is {size} bytes; the limit is "
                                      f"{self.config.server.max_message_bytes}")
            request = P.parse_request(parts)
        except P.ProtocolError as exc:
            rid = P.request_id_of(parts[0]) if parts and len(parts[0]) <= P.MAX_HEADER_BYTES else None
            log.info("rejected message from %s: %s", client.name, exc.message)
            self._send(client, P.error(rid, exc))
            return
        if self.stopping:
            self._send(client, P.error(request.id, P.ProtocolError(P.CANCELLED, "the daemon is shutting down",
                                                                 reason="shutdown")))
            return
        admin = listener.admin or (user_id is not None and user_id in self.config.server.curve.admin_keys)
        try:
            self._dispatch(client, request, admin)
        except P.ProtocolError as exc:
            self._send(client, P.error(request.id, exc))

    def _dispatch(self, client: Client, request: P.Request, admin: bool) -> None:
        op, rid, body = request.op, request.id, request.body
        if rid in client.inflight:
            raise P.ProtocolError(P.BAD_REQUEST, f"a request with id {rid!r} is still in flight", field="id")
        if op == "ping":
            self._send(client, P.result(rid, pong=True))
        elif op == "describe":
            self._send(client, P.result(rid, **self.describe()))
        elif op == "status":
            self._send(client, P.result(rid, **self.status()))
        elif op == "cancel":
            job_id = client.inflight.get(body.target)
            if job_id is None:
                self._send(client, P.result(rid, cancelled=False, reason="unknown"))
            else:
                log.info("cancel id=%s client=%s", body.target, client.name)
                asyncio.ensure_future(self._service_of(job_id).cancel(job_id))
                self._send(client, P.result(rid, cancelled=True))
        elif op == "sessions":
            self._send(client, P.result(rid, **self.chat.sessions_op(body)))
        elif op == "models":
            self._models(client, rid, body, admin)
        elif op == "chat":
            self._start_chat(client, rid, body)
        elif op == "ocr":
            self._start_ocr(client, rid, body, request.attachments)
        elif op == "capture":
            self._start_capture(client, rid, body)
        elif op == "ask":
            job_id = self._check_limits(client)
            if body.speak:
                self.speech.check_options(body.speak)
            self.vision.begin(job_id, body, request.attachments)
            self._accept(client, rid, "ask", job_id, self._maybe_spoken(client, job_id, body.speak, self.vision,
                                                                       self.vision.run(job_id), streamed=True))
        elif op == "say":
            job_id = self._check_limits(client)
            self.speech.check_options(body.options)

            def listener(kind: str, final: bool, fields: dict, att: tuple) -> None:
                self._deliver(job_id, kind, final, fields, att)

            if self.speech.ready_now():  # queued before the next message is read
                self._accept(client, rid, "say", job_id, _nothing())
                self.speech.say_text(self.speech.open_now(job_id, client.name, body.options, listener), body.text)
            else:
                self._accept(client, rid, "say", job_id, self.speech.say(job_id, client.name, body, listener))
        elif op == "voices":
            job_id = self._check_limits(client)

            async def voices() -> None:
                self._deliver(job_id, "result", True, await self.speech.voices(body.language))

            self._accept(client, rid, "voices", job_id, voices())
        elif op == "speech":
            self._speech_control(client, rid, body, admin)
        elif op == "guide":
            job_id = self._check_limits(client)
            image = self.ocr.begin(job_id, body, request.attachments)
            self._accept(client, rid, "guide", job_id, self.ocr.run(job_id, image, body.camera, mode="guide"))
        else:  # parse_request knows every op; this is a bug
            raise P.ProtocolError(P.INTERNAL, f"op {op} has no handler")

    def _check_limits(self, client: Client) -> str:
        """Per-client and daemon-wide limits for engine work; returns a new job id."""
        limits = self.config.server
        if len(client.inflight) >= limits.max_inflight_per_client:
            raise P.ProtocolError(P.BUSY, f"this client already has {len(client.inflight)} requests in flight "
                                  f"(limit {limits.max_inflight_per_client})", retry_after_ms=250)
        if len(self.jobs) >= limits.max_queue:
            raise P.ProtocolError(P.BUSY, f"the daemon's queue is full ({limits.max_queue} requests)",
                                  retry_after_ms=1000)
        return f"j{next(self._job_ids)}"

    def _accept(self, client: Client, rid: str, op: str, job_id: str, work, queue_position: int = 0) -> None:
        """Register an accepted job, tell the client, and run `work` (a coroutine) for it."""
        self.jobs[job_id] = Job(client, rid, op)
        client.inflight[rid] = job_id
        log.info("%s id=%s client=%s job=%s", op, rid, client.name, job_id)
        self._send(client, P.event(rid, "accepted", queue_position=queue_position))

        async def run() -> None:
            try:
                await work
            except P.ProtocolError as exc:
                self._emit(job_id, "error", True, {"error": exc.to_error()})
            except Exception as exc:  # noqa: BLE001
                log.exception("%s job %s failed", op, job_id)
                self._emit(job_id, "error", True, {"error": {"code": P.INTERNAL, "message": str(exc)}})

        asyncio.ensure_future(run())

    def _maybe_spoken(self, client: Client, job_id: str, speak: P.SpeechOptions | None, service, work,
                      *, streamed: bool):
        """`work` for a job, read aloud when the request asked for `speak`."""
        if speak is None:
            return work
        spoken = SpokenAnswer(self.speech, job_id, client.name, speak,
                              lambda kind, final, fields, att: self._deliver(job_id, kind, final, fields, att),
                              streamed=streamed, cancel_service=lambda: service.cancel(job_id))
        self.spoken[job_id] = spoken

        async def run() -> None:
            await spoken.start()
            await work

        return run()

    def _start_chat(self, client: Client, rid: str, body: P.ChatRequest) -> None:
        job_id = self._check_limits(client)
        if body.speak:
            self.speech.check_options(body.speak)
        self.chat.begin(job_id, body)  # raises ProtocolError: rejected before it was accepted
        self._accept(client, rid, "chat", job_id, self._maybe_spoken(client, job_id, body.speak, self.chat,
                                                                     self.chat.run(job_id), streamed=True),
                     self.chat.queue_position())

    def _start_ocr(self, client: Client, rid: str, body: P.OcrRequest, attachments: tuple[bytes, ...]) -> None:
        job_id = self._check_limits(client)
        if body.speak:
            self.speech.check_options(body.speak)
        if body.engine == "vision":  # Phi-3.5-vision asked to transcribe
            self.vision.begin_ocr(job_id, body, attachments)
            work = self._maybe_spoken(client, job_id, body.speak, self.vision, self.vision.run(job_id), streamed=True)
        else:
            image = self.ocr.begin(job_id, body, attachments)
            work = self._maybe_spoken(client, job_id, body.speak, self.ocr, self.ocr.run(job_id, image, body.camera),
                                      streamed=False)
        self._accept(client, rid, "ocr", job_id, work)

    def _speech_control(self, client: Client, rid: str, body: P.SpeechControlRequest, admin: bool) -> None:
        if body.scope == "all" and not admin:
            raise P.ProtocolError(P.UNAUTHORIZED, f"speech {body.action} of every client's speech is an admin "
                                  "action (IPC clients, or CURVE clients listed in admin_keys)", field="scope")
        target = client.inflight.get(body.target) if body.target is not None else None
        affected = self.speech.control(body, client.name, target)
        self._send(client, P.result(rid, action=body.action, affected=affected))

    def _start_capture(self, client: Client, rid: str, body: P.CaptureRequest) -> None:
        job_id = self._check_limits(client)
        self.cameras.check(body.camera)

        async def capture() -> None:
            frame, data = await self.cameras.capture(body.camera)
            height, width = frame.image.shape[:2]
            self._emit(job_id, "result", True, {"camera": body.camera, "format": "jpeg", "width": int(width),
                                                "height": int(height), "sequence": frame.sequence,
                                                "age_ms": round((time.monotonic() - frame.captured_at) * 1000, 1)},
                       (data,))

        self._accept(client, rid, "capture", job_id, capture())

    def _models(self, client: Client, rid: str, body: P.ModelsRequest, admin: bool) -> None:
        if body.action == "list":
            loaded = self.chat.package.name if self.chat.package and self.chat.engine and \
                self.chat.engine.state == "ready" else None
            models = []
            for package in scan(self.config.models_dir):
                entry = package.describe()
                entry["loaded"] = package.name == loaded
                entry["serves"] = ["chat"] if package.manifest and package.manifest.role == "chat" else []
                models.append(entry)
            self._send(client, P.result(rid, models=models, models_dir=str(self.config.models_dir)))
            return
        if not admin:
            raise P.ProtocolError(P.UNAUTHORIZED, f"models {body.action} is an admin action (IPC clients, or "
                                  "CURVE clients listed in admin_keys)")
        if not body.name:
            raise P.ProtocolError(P.BAD_REQUEST, f"field 'name' is required for {body.action}", field="name")
        package = resolve(self.config.models_dir, body.name)
        if package is None:
            raise P.ProtocolError(P.NOT_FOUND, f"no model package {body.name!r} in {self.config.models_dir}",
                                  field="name")
        if package.manifest is None or package.manifest.role != "chat":
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{body.name} cannot serve chat: "
                                  f"{package.problem or 'role ' + package.manifest.role}")
        job_id = f"j{next(self._job_ids)}"
        self.jobs[job_id] = Job(client, rid, "models")
        client.inflight[rid] = job_id

        async def run() -> None:
            try:
                if body.action == "unload":
                    await self.chat.unload()
                else:
                    if self.chat.package is None or self.chat.package.path != package.path:
                        await self.chat.unload()
                        self.chat.use_package(package)
                    await self.chat.ensure_engine()
                self._emit(job_id, "result", True, {"name": package.name, "action": body.action,
                                                    "state": self.chat.status()["state"]})
            except P.ProtocolError as exc:
                self._emit(job_id, "error", True, {"error": exc.to_error()})

        asyncio.ensure_future(run())

    # ---------------------------------------------------------------- describe / status

    def describe(self) -> dict:
        limits = self.config.server
        return {
            "protocol": {"version": P.VERSION, "supported": list(P.SUPPORTED_VERSIONS)},
            "server": {"name": "edge-agent", "version": __version__},
            "ops": list(P.OPS),
            "services": {"chat": self.chat.describe(), "ocr": self.ocr.describe(), "vision": self.vision.describe(),
                         "camera": self.cameras.describe(), "speech": self.speech.describe()},
            "limits": {"max_message_bytes": limits.max_message_bytes, "max_header_bytes": P.MAX_HEADER_BYTES,
                       "max_inflight_per_client": limits.max_inflight_per_client, "max_queue": limits.max_queue,
                       "max_sessions": limits.max_sessions, "max_id_length": P.MAX_ID_LENGTH},
        }

    def status(self) -> dict:
        engines = {"chat": self.chat.status(), "ocr": self.ocr.status(), "vision": self.vision.status(),
                   "speech": self.speech.status()}
        rss = _rss_bytes(os.getpid())
        engine_rss = 0
        for engine in engines.values():
            if engine.get("pid"):
                engine["rss_bytes"] = _rss_bytes(engine["pid"])
                engine_rss += engine["rss_bytes"]
        return {"uptime_s": round(time.monotonic() - self.started, 1), "pid": os.getpid(),
                "rss_bytes": rss + engine_rss, "daemon_rss_bytes": rss, "clients": len(self.clients),
                "inflight": len(self.jobs), "queue_depth": self.chat.queue_depth(),
                "sessions": len(self.chat.sessions), "engines": engines, "cameras": self.cameras.status()}

    # ---------------------------------------------------------------- run

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._bind()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(self.shutdown(signal.Signals(s).name)))
        self.chat.start()
        self.ocr.start()
        self.vision.start()
        self.speech.start()
        self.cameras.start()
        tasks = [self._start_receiver(i, listener) for i, listener in enumerate(self.listeners)]
        interval = watchdog_interval_s()
        if interval:
            tasks.append(asyncio.ensure_future(self._watchdog(interval)))
        notify(f"READY=1\nSTATUS=serving on {', '.join(l.endpoint for l in self.listeners)}")
        log.info("edge-agent %s ready (pid %d)", __version__, os.getpid())
        await self._stopped.wait()
        for task in tasks:
            task.cancel()

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
        self.chat.cancel_all("shutdown")
        self.ocr.cancel_all("shutdown")
        self.vision.cancel_all("shutdown")
        self.speech.cancel_all("shutdown")
        for job_id, job in list(self.jobs.items()):  # non-chat jobs (models load)
            self._emit(job_id, "error", True, {"error": {"code": P.CANCELLED, "message": "the daemon is shutting "
                                                         "down", "reason": "shutdown"}})
        await self.chat.close()
        await self.ocr.close()
        await self.vision.close()
        await self.speech.close()
        self.cameras.close()
        for listener in self.listeners:
            listener.sock.close()  # LINGER lets the final events reach their clients
            if listener.endpoint.startswith("ipc://"):
                Path(listener.endpoint[len("ipc://"):]).unlink(missing_ok=True)
        if self._authenticator is not None:
            self._authenticator.stop()
        self.context.term()
        self._stopped.set()


async def _nothing() -> None:
    pass


def _socket_is_live(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def serve(config: Config) -> int:
    import faulthandler

    logging.basicConfig(level=config.logging.level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` writes every thread's stack to the log
    server = Server(config)
    asyncio.run(server.run())
    return 0
