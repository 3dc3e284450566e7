"""The chat service: sessions, model package administration, and chat jobs for the engine.

It turns validated chat requests into engine jobs and keeps session histories (so a client
sends only its new message). Loading, unloading, cancelling and timing are the model
service's (services/model.py); the engine process is engines/genai_chat.py.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..engines.host import EngineHost
from ..events import Event, Sink
from ..models import Package, resolve, scan
from .model import ModelJob, ModelService
from .sessions import SessionStore

log = logging.getLogger("edge_agent.chat")


@dataclass
class Session:
    id: str
    owner: str
    system: str | None
    messages: list[dict] = field(default_factory=list)  # user/assistant turns, no system
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    busy: bool = False
    wiped: bool = False  # dropped by a privacy wipe while a turn ran: nothing of it is kept

    def summary(self) -> dict:
        return {"session": self.id, "kind": "chat", "turns": sum(1 for m in self.messages if m["role"] == "user"),
                "created": round(self.created, 3), "last_used": round(self.last_used, 3), "busy": self.busy}


def drop_turns(messages: list[dict], turns: int) -> list[dict]:
    """Remove the oldest `turns` user turns (each user message and the answers after it)."""
    for _ in range(turns):
        cut = 1
        while cut < len(messages) and messages[cut]["role"] != "user":
            cut += 1
        messages = messages[cut:]
    return messages


@dataclass(kw_only=True)
class ChatJob(ModelJob):
    request: P.ChatRequest
    session: Session | None
    user_message: str
    messages: list[dict]
    max_tokens: int


class ChatService(ModelService):
    name = "chat"
    target = "edge_agent.engines.genai_chat:serve"
    jobs: dict[str, ChatJob]  # type: ignore[assignment]

    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink):
        super().__init__(config, context, sink)
        server = config.server
        self.sessions: SessionStore[Session] = SessionStore("session", server.max_sessions,
                                                            server.max_sessions_per_client, server.session_idle_s)

    def start(self) -> None:
        super().start()
        if self.config.models.preload:
            self.background(self._preload())

    async def _preload(self) -> None:
        try:
            await self.ensure_engine()
        except P.ProtocolError as exc:
            log.error("preloading the chat model failed: %s", exc.message)

    # ---------------------------------------------------------------- describe / status

    def describe(self) -> dict:
        info = self.engine.info if self.engine is not None else {}
        package = self.available_model()
        return {"available": package is not None, "model": package.name if package else None,
                "context_length": package.manifest.context_length if package and package.manifest else None,
                "max_tokens_limit": self.settings.max_tokens_limit,
                "default_max_tokens": self.settings.default_max_tokens, "sessions": True,
                "stop_strings": {"max": P.MAX_STOP_STRINGS, "max_bytes": P.MAX_STOP_BYTES},
                # known once the engine has loaded; null before
                "json_schema": info.get("json_schema"),
                "sampling": ["temperature", "top_p", "top_k"] + (["seed"] if info.get("seed") else []),
                "context_policies": ["error", "drop_oldest"], "unbatched": True,
                "priorities": list(P.CHAT_PRIORITIES), "max_batches": self.config.chat.max_batches}

    def engine_spec(self, package: Package) -> dict:
        """The scheduler's limits: batches side by side, the admission window, and the KV cache
        the running sequences may hold (the memory budget less the weights)."""
        budget, chat = self.config.models.memory_budget_mb << 20, self.config.chat
        manifest = package.manifest
        return {"max_batches": chat.max_batches, "admission_window_ms": chat.admission_window_ms,
                "max_batch_size": chat.max_batch_size, "session_reserve_tokens": chat.session_reserve_tokens,
                "kv_budget_bytes": max(1, budget - package.size_bytes) if budget else 0,
                "kv_bytes_per_token": manifest.kv_cache_bytes_per_token if manifest else 0}

    def totals(self) -> dict:
        return {"queue_depth": self.queue_depth(), "sessions": len(self.sessions)}

    def queue_position(self) -> int:
        """Requests that wait for a batch slot ahead of the newest one."""
        slots = int(self.engine.info.get("max_batch", 1)) if self.engine is not None else 1
        return max(0, len(self.jobs) - slots)

    # ---------------------------------------------------------------- model packages (the `models` op)

    def list_models(self) -> dict:
        loaded = self.loaded_package()
        models = []
        for package in scan(self.config.models_dir):
            entry = package.describe()
            entry["loaded"] = loaded is not None and package.name == loaded.name
            entry["serves"] = ["chat"] if package.manifest and package.manifest.role == "chat" else []
            models.append(entry)
        return {"models": models, "models_dir": str(self.config.models_dir)}

    def find_model(self, name: str | None, action: str) -> Package:
        """The package an admin names for load/unload: it must exist and serve chat."""
        if not name:
            raise P.ProtocolError(P.BAD_REQUEST, f"field 'name' is required for {action}", field="name")
        if "/" in name or "\\" in name or name.startswith((".", "~")):  # a client never names a path
            raise P.ProtocolError(P.BAD_REQUEST, f"{name!r} is not a package name: give the name of a folder in "
                                  "the models folder", field="name")
        package = resolve(self.config.models_dir, name)
        if package is None:
            raise P.ProtocolError(P.NOT_FOUND, f"no model package {name!r} in {self.config.models_dir}",
                                  field="name")
        if package.manifest is None or package.manifest.role != "chat":
            why = package.problem if package.manifest is None else f"role {package.manifest.role}"
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{name} cannot serve chat: {why}")
        return package

    async def switch_model(self, action: str, package: Package) -> dict:
        """Admin `models load|unload`: the result fields once it is done."""
        if action == "unload":
            await self.unload()
        else:
            if self.package is None or self.package.path != package.path:
                await self.unload()
                self.use_package(package)
            await self.ensure_engine()
        return {"name": package.name, "action": action, "state": self.status()["state"]}

    # ---------------------------------------------------------------- sessions (the `sessions` op)

    def sessions_op(self, body: P.SessionsRequest, owner: str) -> dict:
        if body.action == "create":
            session = self.sessions.create(owner, body.session, lambda sid: Session(sid, owner, body.system))
            return {"session": session.id}
        if body.action == "list":
            self.sessions.expire()
            return {"sessions": [s.summary() for s in self.sessions.of(owner)]}
        if body.session is None:
            raise P.ProtocolError(P.BAD_REQUEST, f"field 'session' is required for {body.action}", field="session")
        if body.action == "delete":
            return {"session": self.sessions.delete(owner, body.session).id}
        session = self.sessions.get(owner, body.session)
        if session.busy:
            raise P.ProtocolError(P.BUSY, f"session {session.id!r} is answering", retry_after_ms=500)
        session.messages = []
        return {"session": session.id}

    # ---------------------------------------------------------------- chat jobs

    def _messages_for(self, body: P.ChatRequest, owner: str) -> tuple[list[dict], Session | None, str]:
        if body.session is not None:
            session = self.sessions.get(owner, body.session)
            if session.busy:
                raise P.ProtocolError(P.BUSY, f"session {session.id!r} is answering another message",
                                      retry_after_ms=500)
            system = body.system if body.system is not None else session.system
            messages = ([{"role": "system", "content": system}] if system else []) + session.messages + \
                [{"role": "user", "content": body.message}]
            return messages, session, body.message or ""
        messages = [{"role": m.role, "content": m.content} for m in body.messages or ()]
        if body.system is not None:
            messages = [{"role": "system", "content": body.system}] + [m for m in messages if m["role"] != "system"]
        return messages, None, messages[-1]["content"]

    def begin(self, job: str, body: P.ChatRequest, owner: str) -> None:
        """Validate a chat request and claim its session, before it is accepted. Raises
        ProtocolError to reject it; on success `run(job)` does the work."""
        max_tokens = self.max_tokens(body.max_tokens)
        if body.min_tokens > max_tokens:
            raise P.ProtocolError(P.BAD_REQUEST, f"min_tokens {body.min_tokens} is over max_tokens {max_tokens}",
                                  field="min_tokens")
        messages, session, user_message = self._messages_for(body, owner)
        if session is not None:
            session.busy = True
        self.jobs[job] = ChatJob(accepted=time.monotonic(), request=body, session=session, user_message=user_message,
                                 messages=messages, max_tokens=max_tokens)

    def check_engine(self, engine: EngineHost, pending: ChatJob) -> None:  # type: ignore[override]
        if pending.request.json_schema is not None and not engine.info.get("json_schema"):
            raise P.ProtocolError(P.UNSUPPORTED, "this onnxruntime-genai build cannot constrain output to a "
                                  "JSON schema", field="json_schema")

    def wipe_sessions(self) -> int:
        """The privacy wipe: every client's sessions, and the turn the engine kept for one."""
        wiped = self.sessions.wipe()
        for session in wiped:
            session.wiped, session.messages, session.system = True, [], None
        self.forget_kept_turns()
        return len(wiped)

    def payload(self, pending: ChatJob) -> tuple[dict, tuple[bytes, ...]]:  # type: ignore[override]
        body = pending.request
        sampling = {name: getattr(body, name) for name in ("temperature", "top_p", "top_k", "seed",
                                                            "json_schema", "context_policy", "stream",
                                                            "unbatched", "min_tokens")}
        # an answer read aloud as `important` speech is what a person waits for right now
        spoken_important = body.speak is not None and body.speak.priority == "important"
        sampling["priority"] = body.priority or ("high" if spoken_important else "normal")
        return {"messages": pending.messages, "session": pending.session.id if pending.session else None,
                "max_tokens": pending.max_tokens, "stop": list(body.stop), **sampling}, ()

    def release(self, pending: ChatJob) -> None:  # type: ignore[override]
        if pending.session is not None:
            pending.session.busy = False
            pending.session.last_used = time.time()
            if pending.session.wiped:  # the engine may have kept this turn's KV for the next one
                self.forget_kept_turns()

    def on_progress(self, pending: ChatJob, event: Event) -> None:  # type: ignore[override]
        if event.kind == "dropped" and pending.session is not None:
            pending.session.messages = drop_turns(pending.session.messages, event.fields["dropped_turns"])

    def finish(self, pending: ChatJob, fields: dict) -> dict:  # type: ignore[override]
        if pending.session is not None and not pending.session.wiped:
            pending.session.messages += [{"role": "user", "content": pending.user_message},
                                         {"role": "assistant", "content": fields["text"]}]
        return {**fields, "session": pending.session.id if pending.session else None}
