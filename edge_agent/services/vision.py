"""Image questions (`ask`) through a Phi-3.5-vision package: images from the request or a
camera, a streamed answer, and follow-up questions in a session that keeps its images (the
daemon re-sends them to the engine; the client does not). Also the vision engine of `ocr`:
a transcription question in a throw-away session. Loading, cancelling and timing are the
model service's (services/model.py); the engine process is engines/genai_vision.py."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..engines.genai_vision import DEFAULT_CROPS
from ..events import Sink
from ..models import Package
from ..ocr_layout import script_hint
from .cameras import CameraService
from .model import ModelJob, ModelService
from .sessions import SessionStore

MAX_IMAGES = 4
# image sessions hold their images (megabytes each): fewer than chat sessions, and shorter-lived
MAX_SESSIONS = 16
MAX_SESSIONS_PER_CLIENT = 4
SESSION_IDLE_S = 600.0
TRANSCRIBE = "Transcribe all the text in the image exactly, line by line, in reading order. Output only the text."


@dataclass
class ImageSession:
    id: str
    owner: str
    images: list[bytes]
    messages: list[dict] = field(default_factory=list)
    crops: int | None = None  # the budget its images were seen at; follow-ups keep it unless they ask
    busy: bool = False
    last_used: float = field(default_factory=time.time)
    wiped: bool = False  # dropped by a privacy wipe while a question ran: nothing of it is kept

    def summary(self) -> dict:
        return {"session": self.id, "kind": "image", "images": len(self.images),
                "turns": sum(1 for m in self.messages if m["role"] == "user"), "last_used": round(self.last_used, 3),
                "busy": self.busy}


@dataclass(kw_only=True)
class AskJob(ModelJob):
    session: ImageSession
    question: str
    options: dict
    camera: str | None
    transcribe: bool = False  # the vision engine of the `ocr` op: the result is shaped as OCR's


class VisionService(ModelService):
    name = "vision"
    target = "edge_agent.engines.genai_vision:serve"
    jobs: dict[str, AskJob]  # type: ignore[assignment]

    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink, cameras: CameraService):
        super().__init__(config, context, sink)
        self.cameras = cameras
        self.sessions: SessionStore[ImageSession] = SessionStore("image session", MAX_SESSIONS,
                                                                 MAX_SESSIONS_PER_CLIENT, SESSION_IDLE_S)

    def describe(self) -> dict:
        package = self.available_model()
        return {"available": package is not None, "model": package.name if package else None,
                "max_images": MAX_IMAGES, "sessions": True, "max_tokens_limit": self.settings.max_tokens_limit,
                "crops": {"min": 1, "max": P.MAX_CROPS, "default": self.default_crops(package)},
                "kept_turns": self.config.vision.kept_turns}

    def default_crops(self, package: Package | None) -> int:
        """`vision.crops`, or the package's num_crops (the snapshot's preprocessor config, 4)."""
        if self.config.vision.crops:
            return self.config.vision.crops
        details = package.manifest.details if package is not None and package.manifest is not None else {}
        return int(details.get("num_crops") or DEFAULT_CROPS)

    def engine_spec(self, package: Package) -> dict:
        return {"crops": self.default_crops(package), "kept_turns": self.config.vision.kept_turns,
                "session_reserve_tokens": self.settings.session_reserve_tokens}

    def begin_transcription(self, job: str, body: P.OcrRequest, attachments: tuple[bytes, ...], owner: str) -> None:
        """`ocr` with engine `vision`: a transcription question in a throw-away session."""
        if body.camera is None and len(attachments) != 1:
            raise P.ProtocolError(P.BAD_REQUEST, f"ocr needs exactly one image frame after the header, got "
                                  f"{len(attachments)}", field="image")
        self.begin(job, P.AskRequest(TRANSCRIBE, camera=body.camera, max_tokens=self.settings.max_tokens_limit,
                                     crops=body.crops), attachments, owner)
        self.jobs[job].transcribe = True
        self.jobs[job].options["cap_to_context"] = True

    def begin(self, job: str, body: P.AskRequest, attachments: tuple[bytes, ...], owner: str) -> None:
        max_tokens = self.max_tokens(body.max_tokens)
        if len(attachments) > MAX_IMAGES:
            raise P.ProtocolError(P.BAD_REQUEST, f"at most {MAX_IMAGES} images per question", field="image")
        if body.camera is not None:
            if attachments:
                raise P.ProtocolError(P.BAD_REQUEST, "give a camera or image frames, not both", field="camera")
            self.cameras.check(body.camera)
        session = self.sessions.find(owner, body.session) if body.session else None
        if body.session and session is None and not attachments and body.camera is None:
            raise P.ProtocolError(P.NOT_FOUND, f"no image session {body.session!r}", field="session")
        if session is not None and session.busy:
            raise P.ProtocolError(P.BUSY, f"session {session.id!r} is answering", retry_after_ms=500)
        if session is None:
            if not attachments and body.camera is None:
                raise P.ProtocolError(P.BAD_REQUEST, "ask needs an image (frames after the header, or a camera), "
                                      "or the session of an earlier question", field="image")
            session = self.sessions.create(owner, body.session,
                                           lambda sid: ImageSession(sid, owner, list(attachments)))
        elif attachments:  # new images start the conversation about them afresh
            session.images, session.messages = list(attachments), []
        if attachments or body.camera is not None or body.crops is not None:
            session.crops = body.crops
        session.busy = True
        self.jobs[job] = AskJob(accepted=time.monotonic(), session=session, question=body.question,
                                options={"max_tokens": max_tokens, "temperature": body.temperature,
                                         "top_p": body.top_p, "crops": session.crops}, camera=body.camera)

    async def prepare(self, job: str, pending: AskJob) -> None:  # type: ignore[override]
        if pending.camera is not None:
            _frame, data = await self.cameras.capture(pending.camera)
            pending.session.images, pending.session.messages = [data], []

    def payload(self, pending: AskJob) -> tuple[dict, tuple[bytes, ...]]:  # type: ignore[override]
        messages = pending.session.messages + [{"role": "user", "content": pending.question}]
        # the engine keeps a session's KV for its next question under this key (owner-scoped: two
        # clients may both name a session "s1")
        session = None if pending.transcribe else f"{pending.session.owner}/{pending.session.id}"
        return {"messages": messages, "session": session, **pending.options}, tuple(pending.session.images)

    def release(self, pending: AskJob) -> None:  # type: ignore[override]
        pending.session.busy = False
        if pending.session.wiped:  # the engine may have kept this question's KV
            self.forget_kept_turns()

    def wipe_sessions(self) -> int:
        """The privacy wipe: every client's image sessions, the images they hold, and the
        conversations the engine kept for a follow-up."""
        wiped = self.sessions.wipe()
        for session in wiped:
            session.wiped, session.images, session.messages = True, [], []
        self.forget_kept_turns()
        return len(wiped)

    def finish(self, pending: AskJob, fields: dict) -> dict:  # type: ignore[override]
        if pending.transcribe:
            self.sessions.drop(pending.session)
            text = fields["text"].strip()
            return {"engine": "vision", "text": text, "language": script_hint(text),
                    "lines": [{"text": line} for line in text.splitlines() if line.strip()],
                    "usage": fields["usage"]}
        if not pending.session.wiped:
            pending.session.messages += [{"role": "user", "content": pending.question},
                                         {"role": "assistant", "content": fields["text"]}]
        return {**fields, "session": pending.session.id, "images": len(pending.session.images)}
