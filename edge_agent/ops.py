"""What each op does: one handler per op (`op_<name>`, one per parser in protocol.py). A
handler either answers at once (a dict: the `result`) or returns `Work` for the server's one
accept path (server.py): the coroutine that runs the job and the cancel of the service that
started it. Handlers validate and reject before anything is accepted; they never block."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from . import protocol as P
from .assistant import AssistRun, Route, Services
from .events import Event
from .logsafe import loggable
from .pipelines import SpokenAnswer
from .services.cameras import CameraService
from .services.chat import ChatService
from .services.listen import ListenService
from .services.ocr import GUIDE, OcrService
from .services.speech import SpeechService
from .services.vision import VisionService
from .sockets import Client

log = logging.getLogger("edge_agent.server")


@dataclass
class Work:
    """A request's job, to be accepted under `job`: `run` delivers the job's events through
    the server's sink (or returns the terminal event); `cancel` ends the job with `cancelled`
    (None: the job has no engine work to stop, and cancelling ends its task); `accepted` runs
    at once after the `accepted` event, before the next message is read."""
    job: str
    run: Coroutine[Any, Any, Event | None]
    cancel: Callable[[], Awaitable[None]] | None = None
    queue_position: int = 0
    accepted: Callable[[], None] | None = None


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it."""
    client: Client
    request: P.Request
    admin: bool

    @property
    def body(self) -> Any:
        return self.request.body


class Ops:
    def __init__(self, *, chat: ChatService, ocr: OcrService, vision: VisionService, speech: SpeechService,
                 listen: ListenService, cameras: CameraService, new_job: Callable[[Client], str],
                 cancel: Callable[[str], Coroutine[Any, Any, None]],
                 deliver: Callable[[str, Event], None], spoken: dict[str, SpokenAnswer | Route],
                 describe: Callable[[], dict], status: Callable[[], dict], spawn: Callable[[Coroutine], Any],
                 assistant: Services):
        self.chat, self.ocr, self.vision, self.speech, self.cameras = chat, ocr, vision, speech, cameras
        self.listen = listen
        self._new_job = new_job  # a job id within the client's and the daemon's limits
        self._cancel = cancel
        self._deliver = deliver  # an event straight to the client (not through a speech pipeline)
        self.spoken = spoken  # jobs whose answer is also spoken: the server routes their events there
        self._describe, self._status, self._spawn = describe, status, spawn
        self.assistant = assistant

    def wipe_sessions(self, why: str) -> int:
        """Every client's chat and image sessions, and what the chat engine kept of them."""
        wiped = self.chat.wipe_sessions() + self.vision.wipe_sessions()
        log.info("privacy: %d session(s) wiped (%s)", wiped, why)
        return wiped

    def table(self) -> dict[str, Callable[[Call], dict | Work]]:
        return {op: getattr(self, f"op_{op}") for op in P.OPS}

    def _spoken(self, call: Call, job_id: str, speak: P.SpeechOptions | None, service_cancel, run: Coroutine,
                *, streamed: bool, queue_position: int = 0) -> Work:
        """The work of a job, read aloud when the request asked for `speak`."""
        if speak is None:
            return Work(job_id, run, service_cancel, queue_position)
        spoken = SpokenAnswer(self.speech, job_id, call.client.name, speak,
                              lambda event: self._deliver(job_id, event), streamed=streamed,
                              cancel_service=service_cancel)
        self.spoken[job_id] = spoken

        async def speak_and_run() -> None:
            await spoken.start()
            await run

        return Work(job_id, speak_and_run(), spoken.cancel, queue_position)

    # ---------------------------------------------------------------- ops answered at once

    def op_ping(self, call: Call) -> dict:
        return {"pong": True}

    def op_describe(self, call: Call) -> dict:
        return self._describe()

    def op_status(self, call: Call) -> dict:
        return self._status()

    def op_cancel(self, call: Call) -> dict:
        job_id = call.client.inflight.get(call.body.target)
        if job_id is None:
            return {"cancelled": False, "reason": "unknown"}
        log.info("cancel id=%s client=%s", loggable(call.body.target), call.client.name)
        self._spawn(self._cancel(job_id))
        return {"cancelled": True}

    def op_sessions(self, call: Call) -> dict:
        body, owner = call.body, call.client.owner
        if body.all:
            if not call.admin:
                raise P.ProtocolError(P.UNAUTHORIZED, "sessions reset of every client's sessions is an admin action "
                                      "(IPC clients, or CURVE clients listed in admin_keys)", field="all")
            return {"wiped": self.wipe_sessions("admin reset --all")}
        if body.action == "list":  # this client's chat sessions, then its image sessions
            chats = self.chat.sessions_op(body, owner)["sessions"]
            self.vision.sessions.expire()
            return {"sessions": chats + [s.summary() for s in self.vision.sessions.of(owner)]}
        if body.action == "delete" and body.session and self.vision.sessions.find(owner, body.session):
            return {"session": self.vision.sessions.delete(owner, body.session).id}
        return self.chat.sessions_op(body, owner)

    def op_speech(self, call: Call) -> dict:
        body = call.body
        if body.scope == "all" and not call.admin:
            raise P.ProtocolError(P.UNAUTHORIZED, f"speech {body.action} of every client's speech is an admin "
                                  "action (IPC clients, or CURVE clients listed in admin_keys)", field="scope")
        target = call.client.inflight.get(body.target) if body.target is not None else None
        return {"action": body.action, "affected": self.speech.control(body, call.client.name, target)}

    # ---------------------------------------------------------------- ops that run as jobs

    def op_models(self, call: Call) -> dict | Work:
        body = call.body
        if body.action == "list":
            return self.chat.list_models()
        if not call.admin:
            raise P.ProtocolError(P.UNAUTHORIZED, f"models {body.action} is an admin action (IPC clients, or "
                                  "CURVE clients listed in admin_keys)")
        package = self.chat.find_model(body.name, body.action)
        job_id = self._new_job(call.client)

        async def switch() -> Event:
            return Event.result(await self.chat.switch_model(body.action, package))

        return Work(job_id, switch())

    def op_chat(self, call: Call) -> Work:
        body = call.body
        job_id = self._new_job(call.client)
        if body.speak:
            self.speech.check_options(body.speak)
        self.chat.begin(job_id, body, call.client.owner)  # raises ProtocolError: rejected before it was accepted
        return self._spoken(call, job_id, body.speak, lambda: self.chat.cancel(job_id), self.chat.run(job_id),
                            streamed=True, queue_position=self.chat.queue_position())

    def op_ask(self, call: Call) -> Work:
        body = call.body
        job_id = self._new_job(call.client)
        if body.speak:
            self.speech.check_options(body.speak)
        self.vision.begin(job_id, body, call.request.attachments, call.client.owner)
        return self._spoken(call, job_id, body.speak, lambda: self.vision.cancel(job_id), self.vision.run(job_id),
                            streamed=True)

    def op_ocr(self, call: Call) -> Work:
        body, attachments = call.body, call.request.attachments
        job_id = self._new_job(call.client)
        if body.speak:
            self.speech.check_options(body.speak)
        if body.engine == "vision":  # Phi-3.5-vision asked to transcribe
            self.vision.begin_transcription(job_id, body, attachments, call.client.owner)
            return self._spoken(call, job_id, body.speak, lambda: self.vision.cancel(job_id),
                                self.vision.run(job_id), streamed=True)
        image = self.ocr.begin(job_id, body, attachments)
        return self._spoken(call, job_id, body.speak, lambda: self.ocr.cancel(job_id),
                            self.ocr.run(job_id, image, body.camera, keep_margins=body.keep_margins,
                                        correct_words=body.correct_words),
                            streamed=False)

    def op_guide(self, call: Call) -> Work:
        job_id = self._new_job(call.client)
        image = self.ocr.begin(job_id, call.body, call.request.attachments)
        return Work(job_id, self.ocr.run(job_id, image, call.body.camera, task=GUIDE),
                    lambda: self.ocr.cancel(job_id))

    def op_capture(self, call: Call) -> Work:
        job_id = self._new_job(call.client)
        self.cameras.check(call.body.camera)
        return Work(job_id, self.cameras.capture_result(call.body.camera))

    def op_listen(self, call: Call) -> Work:
        job_id = self._new_job(call.client)
        audio = call.request.attachments
        payload = self.listen.begin(job_id, call.body, audio, call.admin)
        return Work(job_id, self.listen.submit(job_id, payload, audio), lambda: self.listen.cancel(job_id))

    def op_assist(self, call: Call) -> Work:
        body, attachments = call.body, call.request.attachments
        job_id = self._new_job(call.client)
        if body.source == "microphone":
            self.listen.check_microphone(attachments, call.admin)
        else:
            self.listen.check_sent_audio(P.ListenRequest(format=body.format, sample_rate=body.sample_rate), attachments)
        if body.speak:
            self.speech.check_options(body.speak)
        run = AssistRun(self.assistant, job_id, call.client.name, call.client.owner, call.admin, body, attachments,
                        lambda event: self._deliver(job_id, event))
        return Work(job_id, run.run(), run.cancel)

    def op_say(self, call: Call) -> Work:
        body = call.body
        job_id = self._new_job(call.client)
        self.speech.check_options(body.options)

        def listener(event: Event) -> None:
            self._deliver(job_id, event)

        async def say() -> None:
            await self.speech.say(job_id, call.client.name, body, listener)

        def queue_now() -> None:
            # queued before the next message is read, so a `speech` control right behind it sees it
            self.speech.say_text(self.speech.open_now(job_id, call.client.name, body.options, listener), body.text)

        def cancel() -> Awaitable[None]:
            return self.speech.cancel(job_id)

        if self.speech.ready_now():
            return Work(job_id, _nothing(), cancel, accepted=queue_now)
        return Work(job_id, say(), cancel)

    def op_voices(self, call: Call) -> Work:
        job_id = self._new_job(call.client)

        async def voices() -> Event:
            return Event.result(await self.speech.voices(call.body.language))

        return Work(job_id, voices())


async def _nothing() -> None:
    pass
