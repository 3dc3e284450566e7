"""The chat service: sessions, model lifecycle and the bridge to the chat engine process.

It turns validated chat requests into engine jobs, keeps session histories (so a client sends
only its new message), loads the chat package lazily or at start, unloads it after the
keep-alive, refuses a package that does not fit the memory budget, and turns engine messages
into protocol events. It never blocks: all engine work happens in the engine's process.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..engines.host import READY, EngineHost, EngineUnavailable
from ..models import Package
from .common import (Sink, cancelled, check_package, choose_package, engine_error, load_model, model_engine,
                     unload_when_idle)

log = logging.getLogger("edge_agent.chat")



@dataclass
class Session:
    id: str
    system: str | None
    messages: list[dict] = field(default_factory=list)  # user/assistant turns, no system
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    busy: bool = False

    def summary(self) -> dict:
        return {"session": self.id, "turns": sum(1 for m in self.messages if m["role"] == "user"),
                "created": round(self.created, 3), "last_used": round(self.last_used, 3), "busy": self.busy}


def drop_turns(messages: list[dict], turns: int) -> list[dict]:
    """Remove the oldest `turns` user turns (each user message and the answers after it)."""
    for _ in range(turns):
        cut = 1
        while cut < len(messages) and messages[cut]["role"] != "user":
            cut += 1
        messages = messages[cut:]
    return messages


@dataclass
class PendingJob:
    request: P.ChatRequest
    session: Session | None
    user_message: str
    accepted: float
    messages: list[dict]
    max_tokens: int
    first_delta: float | None = None


class ChatService:
    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink):
        self.config = config
        self.sink = sink
        self.package: Package | None = None
        self.engine: EngineHost | None = None
        self.context = context
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.jobs: dict[str, PendingJob] = {}
        self._session_ids = itertools.count(1)
        self._idle_task: asyncio.Task | None = None
        self._load_lock = asyncio.Lock()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._idle_task = asyncio.ensure_future(
            unload_when_idle(lambda: self.engine, self.config.models.keep_alive_s, lambda: bool(self.jobs)))
        if self.config.models.preload:
            asyncio.ensure_future(self._preload())

    async def _preload(self) -> None:
        try:
            await self.ensure_engine()
        except P.ProtocolError as exc:
            log.error("preloading the chat model failed: %s", exc.message)

    async def close(self) -> None:
        if self._idle_task:
            self._idle_task.cancel()
        if self.engine is not None:
            await self.engine.stop()
            self.engine.close()

    def chosen_package(self) -> Package:
        return choose_package(self.config, "chat")

    def use_package(self, package: Package) -> None:
        """Serve chat from another package from the next load on (admin `models load`)."""
        self.package = package

    async def ensure_engine(self) -> EngineHost:
        async with self._load_lock:
            if self.engine is not None and self.engine.state == READY:
                return self.engine
            package = self.package or self.chosen_package()
            check_package(self.config, package, "chat")
            if self.engine is None or self.engine.spec["package"] != str(package.path):
                if self.engine is not None:
                    await self.engine.stop()
                    self.engine.close()
                self.engine = model_engine("chat", "edge_agent.engines.genai_chat:serve", package, self.config,
                                           on_event=self._on_engine_event, context=self.context)
                self.package = package
            return await load_model(self.engine, "chat", package)

    async def unload(self) -> None:
        if self.engine is not None:
            await self.engine.stop()


    # ---------------------------------------------------------------- describe / status

    def describe(self) -> dict:
        info = self.engine.info if self.engine is not None else {}
        try:
            package = self.package or self.chosen_package()
            name, context = package.name, package.manifest.context_length
            available = True
        except P.ProtocolError:
            name, context, available = None, None, False
        return {"available": available, "model": name, "context_length": context,
                "max_tokens_limit": self.config.chat.max_tokens_limit,
                "default_max_tokens": self.config.chat.default_max_tokens, "sessions": True,
                "stop_strings": {"max": P.MAX_STOP_STRINGS, "max_bytes": P.MAX_STOP_BYTES},
                # known once the engine has loaded; null before
                "json_schema": info.get("json_schema"),
                "sampling": ["temperature", "top_p", "top_k"] + (["seed"] if info.get("seed") else []),
                "context_policies": ["error", "drop_oldest"]}

    def status(self) -> dict:
        if self.engine is None:
            return {"state": "unloaded", "model": None, "restarts": 0, "last_error": None,
                    "active_requests": 0}
        return {**self.engine.status(), "model": self.package.name if self.package else None}

    # ---------------------------------------------------------------- sessions

    def _session(self, sid: str) -> Session:
        session = self.sessions.get(sid)
        if session is None:
            raise P.ProtocolError(P.NOT_FOUND, f"no session {sid!r}", field="session")
        self.sessions.move_to_end(sid)
        return session

    def sessions_op(self, body: P.SessionsRequest) -> dict:
        if body.action == "create":
            sid = body.session or f"s-{next(self._session_ids)}"
            if sid in self.sessions:
                raise P.ProtocolError(P.BAD_REQUEST, f"session {sid!r} already exists", field="session")
            while len(self.sessions) >= self.config.server.max_sessions:
                oldest = next((s for s in self.sessions.values() if not s.busy), None)
                if oldest is None:
                    raise P.ProtocolError(P.BUSY, "every session is busy", retry_after_ms=1000)
                del self.sessions[oldest.id]
            self.sessions[sid] = Session(sid, body.system)
            return {"session": sid}
        if body.action == "list":
            return {"sessions": [s.summary() for s in self.sessions.values()]}
        if body.session is None:
            raise P.ProtocolError(P.BAD_REQUEST, f"field 'session' is required for {body.action}", field="session")
        session = self._session(body.session)
        if session.busy:
            raise P.ProtocolError(P.BUSY, f"session {session.id!r} is answering", retry_after_ms=500)
        if body.action == "delete":
            del self.sessions[session.id]
        else:
            session.messages = []
        return {"session": session.id}

    # ---------------------------------------------------------------- chat

    def _messages_for(self, body: P.ChatRequest) -> tuple[list[dict], Session | None, str]:
        if body.session is not None:
            session = self._session(body.session)
            if session.busy:
                raise P.ProtocolError(P.BUSY, f"session {session.id!r} is answering another message",
                                      retry_after_ms=500)
            system = body.system if body.system is not None else session.system
            messages = ([{"role": "system", "content": system}] if system else []) + session.messages + \
                [{"role": "user", "content": body.message}]
            return messages, session, body.message
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        if body.system is not None:
            messages = [{"role": "system", "content": body.system}] + [m for m in messages if m["role"] != "system"]
        return messages, None, messages[-1]["content"]

    def begin(self, job: str, body: P.ChatRequest) -> None:
        """Validate a chat request and claim its session, before it is accepted. Raises
        ProtocolError to reject it; on success `run(job)` does the work."""
        max_tokens = body.max_tokens or self.config.chat.default_max_tokens
        if max_tokens > self.config.chat.max_tokens_limit:
            raise P.ProtocolError(P.BAD_REQUEST, f"max_tokens {max_tokens} is over the limit of "
                                  f"{self.config.chat.max_tokens_limit}", field="max_tokens")
        messages, session, user_message = self._messages_for(body)
        if session is not None:
            session.busy = True
        self.jobs[job] = PendingJob(body, session, user_message, time.monotonic(), messages, max_tokens)

    async def run(self, job: str) -> None:
        """Load the model if needed and hand the job to the engine; its events arrive through
        the sink. Raises ProtocolError if it cannot start."""
        pending = self.jobs[job]
        body = pending.request
        try:
            if self.engine is None or self.engine.state != READY:
                self.sink(job, "progress", False, {"stage": "loading_model"})
            engine = await self.ensure_engine()
            if job not in self.jobs:  # cancelled while the model loaded
                return
            if body.json_schema is not None and not engine.info.get("json_schema"):
                raise P.ProtocolError(P.UNSUPPORTED, "this onnxruntime-genai build cannot constrain output to a "
                                      "JSON schema", field="json_schema")
            await engine.submit(job, {
                "messages": pending.messages, "session": pending.session.id if pending.session else None,
                "max_tokens": pending.max_tokens, "temperature": body.temperature, "top_p": body.top_p,
                "top_k": body.top_k, "seed": body.seed, "stop": list(body.stop),
                "json_schema": body.json_schema, "context_policy": body.context_policy, "stream": body.stream})
        except (P.ProtocolError, EngineUnavailable) as exc:
            self._forget(job)
            if isinstance(exc, EngineUnavailable):
                exc = P.ProtocolError(P.MODEL_UNAVAILABLE, str(exc))
            raise exc

    def queue_depth(self) -> int:
        """Chat requests accepted but not yet generating (loading the model, or no batch slot)."""
        running = len(self.engine.active) if self.engine is not None else 0
        return max(0, len(self.jobs) - running)

    def queue_position(self) -> int:
        """Requests that wait for a batch slot ahead of the newest one."""
        slots = int(self.engine.info.get("max_batch", 1)) if self.engine is not None else 1
        return max(0, len(self.jobs) - 1 - slots + 1)

    def _forget(self, job: str) -> PendingJob | None:
        pending = self.jobs.pop(job, None)
        if pending is not None and pending.session is not None:
            pending.session.busy = False
            pending.session.last_used = time.time()
        return pending

    async def cancel(self, job: str) -> None:
        if job not in self.jobs:
            return
        if self.engine is not None and job in self.engine.active:
            await self.engine.cancel(job)  # the engine answers with a `cancelled` error
        else:
            self._forget(job)
            self.sink(job, "error", True, cancelled("cancel"))

    def cancel_all(self, reason: str) -> list[str]:
        """Daemon shutdown: end every job now with `cancelled`."""
        jobs = list(self.jobs)
        for job in jobs:
            self._forget(job)
            self.sink(job, "error", True, cancelled(reason))
        return jobs

    def _on_engine_event(self, job: str, message: dict) -> None:
        pending = self.jobs.get(job)
        if pending is None:
            return  # a job already ended here (cancelled at shutdown)
        kind = message["kind"]
        if kind == "delta":
            if pending.first_delta is None:
                pending.first_delta = time.monotonic()
            self.sink(job, "delta", False, {"text": message["text"], "tokens": message["tokens"]})
        elif kind == "dropped":
            if pending.session is not None:
                pending.session.messages = drop_turns(pending.session.messages, message["dropped_turns"])
        elif kind == "done":
            self._forget(job)
            if pending.session is not None:
                pending.session.messages += [{"role": "user", "content": pending.user_message},
                                             {"role": "assistant", "content": message["text"]}]
            # ttft_ms and total_ms as the client sees them (queueing and model loading included);
            # engine_* from the moment the engine took the job
            usage = dict(message["usage"])
            usage["engine_ttft_ms"] = usage.pop("ttft_ms")
            usage["engine_total_ms"] = usage.pop("total_ms")
            first = pending.first_delta
            usage["ttft_ms"] = round((first - pending.accepted) * 1000, 1) if first else usage["engine_ttft_ms"]
            usage["total_ms"] = round((time.monotonic() - pending.accepted) * 1000, 1)
            self.sink(job, "result", True, {
                "text": message["text"], "finish_reason": message["finish_reason"],
                "session": pending.session.id if pending.session else None,
                "dropped_turns": message["dropped_turns"], "prompt_cache": message["prompt_cache"],
                "usage": usage})
        elif kind == "error":
            self._forget(job)
            self.sink(job, "error", True, engine_error(message))
