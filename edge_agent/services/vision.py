"""Image questions (`ask`) through a Phi-3.5-vision package: images from the request or a
camera, a streamed answer, and follow-up questions in a session that keeps its images (the
daemon re-sends them to the engine; the client does not)."""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..engines.host import READY, EngineHost, EngineUnavailable
from ..models import Package
from ..ocr_layout import script_hint
from .cameras import CameraService
from .common import (Sink, cancelled, check_package, choose_package, engine_error, load_model, model_engine,
                     unload_when_idle)

MAX_IMAGES = 4
MAX_SESSIONS = 16
TRANSCRIBE = "Transcribe all the text in the image exactly, line by line, in reading order. Output only the text."


@dataclass
class ImageSession:
    id: str
    images: list[bytes]
    messages: list[dict] = field(default_factory=list)
    busy: bool = False


@dataclass
class AskJob:
    session: ImageSession
    question: str
    accepted: float
    options: dict
    camera: str | None = None
    mode: str = "ask"  # or "ocr": the vision engine of the `ocr` op
    first_delta: float | None = None


class VisionService:
    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink, cameras: CameraService):
        self.config = config
        self.sink = sink
        self.cameras = cameras
        self.context = context
        self.engine: EngineHost | None = None
        self.package: Package | None = None
        self.sessions: dict[str, ImageSession] = {}
        self.jobs: dict[str, AskJob] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._idle_task: asyncio.Task | None = None

    def start(self) -> None:
        self._idle_task = asyncio.ensure_future(
            unload_when_idle(lambda: self.engine, self.config.models.keep_alive_s, lambda: bool(self.jobs)))

    async def close(self) -> None:
        if self._idle_task:
            self._idle_task.cancel()
        if self.engine is not None:
            await self.engine.stop()
            self.engine.close()

    def chosen_package(self) -> Package:
        return choose_package(self.config, "vision")

    async def ensure_engine(self) -> EngineHost:
        async with self._lock:
            if self.engine is not None and self.engine.state == READY:
                return self.engine
            package = self.package or self.chosen_package()
            check_package(self.config, package, "vision")
            if self.engine is None:
                self.engine = model_engine("vision", "edge_agent.engines.genai_vision:serve", package, self.config,
                                           on_event=self._on_engine_event, context=self.context)
                self.package = package
            return await load_model(self.engine, "vision", package)

    def describe(self) -> dict:
        try:
            name = (self.package or self.chosen_package()).name
        except P.ProtocolError:
            name = None
        return {"available": name is not None, "model": name, "max_images": MAX_IMAGES, "sessions": True,
                "max_tokens_limit": self.config.chat.max_tokens_limit}

    def status(self) -> dict:
        if self.engine is None:
            return {"state": "unloaded", "model": None, "restarts": 0, "last_error": None, "active_requests": 0}
        return {**self.engine.status(), "model": self.package.name if self.package else None}

    def begin_ocr(self, job: str, body: P.OcrRequest, attachments: tuple[bytes, ...]) -> None:
        """`ocr` with engine `vision`: a transcription question in a throw-away session."""
        if body.camera is None and len(attachments) != 1:
            raise P.ProtocolError(P.BAD_REQUEST, f"ocr needs exactly one image frame after the header, got "
                                  f"{len(attachments)}", field="image")
        self.begin(job, P.AskRequest(TRANSCRIBE, camera=body.camera, max_tokens=self.config.chat.max_tokens_limit),
                   attachments)
        self.jobs[job].mode = "ocr"
        self.jobs[job].options["cap_to_context"] = True

    def begin(self, job: str, body: P.AskRequest, attachments: tuple[bytes, ...]) -> None:
        max_tokens = body.max_tokens or self.config.chat.default_max_tokens
        if max_tokens > self.config.chat.max_tokens_limit:
            raise P.ProtocolError(P.BAD_REQUEST, f"max_tokens {max_tokens} is over the limit of "
                                  f"{self.config.chat.max_tokens_limit}", field="max_tokens")
        if len(attachments) > MAX_IMAGES:
            raise P.ProtocolError(P.BAD_REQUEST, f"at most {MAX_IMAGES} images per question", field="image")
        if body.camera is not None:
            if attachments:
                raise P.ProtocolError(P.BAD_REQUEST, "give a camera or image frames, not both", field="camera")
            self.cameras.check(body.camera)
        session = self.sessions.get(body.session) if body.session else None
        if session is not None and session.busy:
            raise P.ProtocolError(P.BUSY, f"session {session.id!r} is answering", retry_after_ms=500)
        if session is None:
            if not attachments and body.camera is None:
                raise P.ProtocolError(P.BAD_REQUEST, "ask needs an image (frames after the header, or a camera), "
                                      "or the session of an earlier question", field="image")
            while len(self.sessions) >= MAX_SESSIONS:
                del self.sessions[next(s for s in self.sessions if not self.sessions[s].busy)]
            session = ImageSession(body.session or f"v-{next(self._ids)}", list(attachments))
            self.sessions[session.id] = session
        elif attachments:  # new images start the conversation about them afresh
            session.images, session.messages = list(attachments), []
        session.busy = True
        self.jobs[job] = AskJob(session, body.question, time.monotonic(),
                                {"max_tokens": max_tokens, "temperature": body.temperature, "top_p": body.top_p},
                                body.camera)

    async def run(self, job: str) -> None:
        pending = self.jobs[job]
        try:
            if pending.camera is not None:
                _frame, data = await self.cameras.capture(pending.camera)
                pending.session.images, pending.session.messages = [data], []
            if self.engine is None or self.engine.state != READY:
                self.sink(job, "progress", False, {"stage": "loading_model"})
            engine = await self.ensure_engine()
            if job not in self.jobs:
                return
            messages = pending.session.messages + [{"role": "user", "content": pending.question}]
            await engine.submit(job, {"messages": messages, **pending.options}, tuple(pending.session.images))
        except (P.ProtocolError, EngineUnavailable) as exc:
            self._forget(job)
            raise exc if isinstance(exc, P.ProtocolError) else P.ProtocolError(P.MODEL_UNAVAILABLE, str(exc))

    def _forget(self, job: str) -> AskJob | None:
        pending = self.jobs.pop(job, None)
        if pending is not None:
            pending.session.busy = False
        return pending

    async def cancel(self, job: str) -> None:
        if job not in self.jobs:
            return
        if self.engine is not None and job in self.engine.active:
            await self.engine.cancel(job)
        else:
            self._forget(job)
            self.sink(job, "error", True, cancelled("cancel"))

    def cancel_all(self, reason: str) -> None:
        for job in list(self.jobs):
            self._forget(job)
            self.sink(job, "error", True, cancelled(reason))

    def _on_engine_event(self, job: str, message: dict) -> None:
        pending = self.jobs.get(job)
        if pending is None:
            return
        kind = message["kind"]
        if kind == "delta":
            pending.first_delta = pending.first_delta or time.monotonic()
            self.sink(job, "delta", False, {"text": message["text"], "tokens": message["tokens"]})
        elif kind == "done":
            self._forget(job)
            usage = dict(message["usage"])
            usage["engine_ttft_ms"] = usage.pop("ttft_ms")
            usage["ttft_ms"] = round((pending.first_delta - pending.accepted) * 1000, 1) if pending.first_delta \
                else usage["engine_ttft_ms"]
            if pending.mode == "ocr":
                self.sessions.pop(pending.session.id, None)
                text = message["text"].strip()
                self.sink(job, "result", True, {"engine": "vision", "text": text, "language": script_hint(text),
                                                "lines": [{"text": line} for line in text.splitlines() if line.strip()],
                                                "usage": usage})
                return
            pending.session.messages += [{"role": "user", "content": pending.question},
                                         {"role": "assistant", "content": message["text"]}]
            self.sink(job, "result", True, {"text": message["text"], "finish_reason": message["finish_reason"],
                                            "session": pending.session.id, "images": len(pending.session.images),
                                            "usage": usage})
        elif kind == "error":
            self._forget(job)
            self.sink(job, "error", True, engine_error(message))
