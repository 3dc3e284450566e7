"""The hands-free assistant (`assist`): wake phrase (or push-to-talk) -> a command -> a spoken
answer, with barge-in. Like pipelines.py it sits above the services and joins them; no
service knows about it.

One `assist` request runs several jobs of its own inside the daemon, each under an internal
id (`<job>.<n>`) that the server routes back here: a `listen` for the wake phrase, a `listen`
for the command (a grammar of the known phrases), then the answer: the chat model for most
phrases, the camera read flow for "read this", a question to the vision model for "what is
this", the clock for "what time is it". The answer is spoken through SpokenAnswer, as a chat
request with `speak` is. Half-duplex: the daemon listens for the command only after its
acknowledgment has been spoken, and while it answers the microphone is closed, unless
barge-in is on; then a voice-activity watch stops the answer the moment the user speaks.

Events reach the client under the `assist` request: the listen events with a `stage`
(`wake`, `command`, `barge_in`), `wake`, `heard`, the answer's own events (`delta`, `speech`),
`barge_in`, then one `result`.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import protocol as P
from .config import Config
from .errors import CANCELLED, CodedError, cancelled
from .events import Event
from .pipelines import SpokenAnswer
from .services.chat import ChatService
from .services.listen import ListenService
from .services.ocr import OcrService
from .services.speech import SpeechService
from .services.vision import VisionService

CHAT, READ, DESCRIBE, TIME, STOP, NOT_UNDERSTOOD = "chat", "read", "describe", "time", "stop", "not_understood"
# what the assistant does without being told: phrase -> action (other phrases go to the chat model)
BUILT_IN = {"read this": READ, "read the label": READ, "what is this": DESCRIBE, "what time is it": TIME,
            "stop": STOP, "stop talking": STOP}
DESCRIBE_QUESTION = "What is this? Answer in one or two short sentences."
LISTEN_STAGES = ("listening", "speech_start", "partial", "speech_end")
# the answer's events the client sees as they come (the rest are the services' bookkeeping)
ANSWER_EVENTS = ("delta", "speech", "audio")


@dataclass
class Route:
    """An internal job's events, to a callback: the server routes by job id (as for SpokenAnswer)."""
    on_service_event: Callable[[Event], None]


@dataclass
class Services:
    config: Config
    listen: ListenService
    chat: ChatService
    ocr: OcrService
    vision: VisionService
    speech: SpeechService
    routes: dict[str, Any]  # the server's routing table: internal job -> object with on_service_event
    emit: Callable[[str, Event], None]  # a service's final event for a job (the server's _emit)


def phrases_of(config: Config, body: P.AssistRequest) -> dict[str, str]:
    """Every phrase the command grammar allows, with its action."""
    known = dict(BUILT_IN)
    for phrase in [*config.assist.commands, *body.commands]:
        known.setdefault(" ".join(phrase.lower().split()), CHAT)
    return known


class AssistRun:
    """One `assist` request from wake to result."""

    def __init__(self, services: Services, job: str, client: str, owner: str, admin: bool, body: P.AssistRequest,
                 attachments: tuple[bytes, ...], forward: Callable[[Event], None]):
        self.s = services
        self.job, self.client, self.owner, self.admin = job, client, owner, admin
        self.body = body
        self.attachments = attachments
        self.forward = forward
        settings = services.config.assist
        self.settings = settings
        self.speak = body.speak or P.SpeechOptions(priority="message")
        self.barge_in = settings.barge_in if body.barge_in is None else body.barge_in
        self.camera = body.camera or settings.camera or _only_camera(services.config)
        self.actions = phrases_of(services.config, body)
        self._subs = 0
        self._cancels: dict[str, Callable[[], Awaitable[None]]] = {}  # internal jobs running now
        self.cancelled = False
        self.barged_in: dict | None = None
        self.started = time.monotonic()
        self._stopping: asyncio.Future | None = None  # the answer's work being cancelled after a barge-in
        self._watch_job: str | None = None  # the barge-in watch's listen job
        self._notes: set[asyncio.Future] = set()  # what the speaker plays, on its way to the watch

    # ---------------------------------------------------------------- the loop

    async def run(self) -> Event:
        started = self.started = time.monotonic()
        result: dict[str, Any] = {"trigger": self.body.trigger, "woken": self.body.trigger == "push"}
        skip_ms = 0
        if self.body.trigger == "wake":
            wake_phrase = self.body.wake_phrase or self.settings.wake_phrase
            wake = await self._listen("wake", P.ListenRequest(
                mode="wake", wake_phrase=wake_phrase, source=self.body.source,
                wait_s=self.body.wait_s or self.settings.wait_s, format=self.body.format,
                sample_rate=self.body.sample_rate))
            if not wake.get("wake"):
                return self._end(result | {"action": None, "heard": ""}, started)
            result["woken"] = True
            self.forward(Event("wake", fields={"phrase": wake_phrase, "at_ms": wake.get("end_ms")}))
            skip_ms = wake.get("phrase_end_ms", wake.get("end_ms", 0))
            if self.body.source == "microphone" and self.settings.acknowledgment:
                await self._say(self.settings.acknowledgment)  # half-duplex: heard before the microphone opens
        command = await self._listen("command", P.ListenRequest(
            mode="commands", commands=tuple(self.actions), source=self.body.source,
            wait_s=self.settings.command_wait_s if self.body.trigger == "wake" else self.body.wait_s,
            format=self.body.format, sample_rate=self.body.sample_rate), skip_ms=skip_ms)
        phrase: str | None = command.get("command")
        action = self.actions.get(phrase, NOT_UNDERSTOOD) if phrase else NOT_UNDERSTOOD
        result.update(heard=command.get("text", ""), command=phrase, action=action)
        self.forward(Event("heard", fields={"text": result["heard"], "command": phrase, "action": action}))
        result["answer"] = await self._answer(action, phrase or "")
        if self.barged_in is not None:
            result["barge_in"] = self.barged_in
        return self._end(result, started)

    def _end(self, result: dict, started: float) -> Event:
        if self.cancelled:
            return Event.failure(cancelled())
        return Event.result({**result, "timings_ms": {"total": round((time.monotonic() - started) * 1000, 1)}})

    def _sub(self) -> str:
        if self.cancelled:
            raise cancelled()
        self._subs += 1
        return f"{self.job}.{self._subs}"

    async def cancel(self) -> None:
        """The client cancelled: end whatever runs now; `run` then ends with `cancelled`."""
        self.cancelled = True
        for stop in list(self._cancels.values()):
            await stop()

    # ---------------------------------------------------------------- listening

    async def _listen(self, stage: str, request: P.ListenRequest, skip_ms: int = 0,
                      on_speech: Callable[[dict], None] | None = None) -> dict:
        sub = self._sub()
        attachments = self.attachments if request.source == "client" else ()
        payload = self.s.listen.begin(sub, request, attachments, self.admin)
        if skip_ms:
            payload["skip_ms"] = skip_ms
        if stage == "barge_in":
            payload["mode"] = "activity"  # the engine's voice-activity watch: ends at the start of speech
            payload["echo_gate"] = self.settings.echo_gate
            self._watch_job = sub
        done: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        def on_event(event: Event) -> None:
            if not event.final:
                if event.kind == "speech_start" and on_speech is not None:
                    on_speech(event.fields)
                if event.kind in LISTEN_STAGES:
                    self.forward(Event(event.kind, fields={**event.fields, "stage": stage}))
            elif not done.done():
                done.set_result(event)

        return await self._run_sub(sub, Route(on_event), lambda: self.s.listen.cancel(sub),
                                   self.s.listen.submit(sub, payload, attachments), done)

    async def _run_sub(self, sub: str, route: Any, cancel: Callable[[], Awaitable[None]],
                       work: Awaitable[Event | None], done: asyncio.Future[Event]) -> dict:
        """Run an internal job to its final event; its result's fields, or its error raised."""
        self.s.routes[sub] = route
        self._cancels[sub] = cancel
        try:
            final = await work
            if final is not None:
                self.s.emit(sub, final)
            event = await done
        except asyncio.CancelledError:  # the task running this was cancelled (the barge-in watch's end)
            await cancel()
            raise
        finally:
            self.s.routes.pop(sub, None)
            self._cancels.pop(sub, None)
        if event.kind == "error":
            error = dict(event.fields["error"])
            raise CodedError(error.pop("code"), error.pop("message"), **error)
        return dict(event.fields)

    # ---------------------------------------------------------------- answering

    async def _answer(self, action: str, phrase: str) -> dict:
        if action == TIME:
            text = time.strftime("It is %-I:%M %p.")
            return {"text": text, "speech": await self._say(text)}
        if action == STOP:  # this client's speech (an answer of an earlier assist, a `say`)
            stopped = self.s.speech.control(P.SpeechControlRequest("stop"), self.client, None)
            return {"stopped": stopped}
        if action == NOT_UNDERSTOOD:
            return {"text": self.settings.not_understood, "speech": await self._say(self.settings.not_understood)}
        return await self._spoken_answer(action, phrase)

    def _answer_listener(self) -> tuple[asyncio.Future[Event], Callable[[Event], None]]:
        """The final event of an answer's work (a future), and the listener that passes its
        other events the client sees on and sets it."""
        done: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        def listener(event: Event) -> None:
            if not event.final:
                if event.kind in ANSWER_EVENTS:
                    self.forward(event)
            elif not done.done():
                done.set_result(event)

        return done, listener

    async def _say(self, text: str) -> dict:
        """Speak a fixed text; how its speech ended."""
        sub = self._sub()
        done, listener = self._answer_listener()

        async def say() -> None:
            await self.s.speech.say(sub, self.client, P.SayRequest(text, self.speak), listener)

        try:
            return await self._run_sub(sub, Route(lambda event: None), lambda: self.s.speech.cancel(sub), say(), done)
        except CodedError as exc:
            if exc.code == CANCELLED and self.cancelled:
                raise
            return {"state": "error", "error": exc.to_error()}  # a missing device: the answer still counts

    async def _spoken_answer(self, action: str, phrase: str) -> dict:
        sub = self._sub()
        done, forward = self._answer_listener()

        speak = self.speak
        if action == CHAT:
            self.s.chat.begin(sub, P.ChatRequest(messages=(P.Message("user", phrase),),
                                                 max_tokens=self.settings.max_tokens, speak=speak), self.owner)
            work, stop = self.s.chat.run(sub), (lambda: self.s.chat.cancel(sub))
        elif action == READ:
            image = self.s.ocr.begin(sub, P.OcrRequest(speak=speak, camera=self._camera()), ())
            work, stop = self.s.ocr.run(sub, image, self._camera()), (lambda: self.s.ocr.cancel(sub))
        else:
            self.s.vision.begin(sub, P.AskRequest(DESCRIBE_QUESTION, camera=self._camera(), speak=speak), (),
                                self.owner)
            work, stop = self.s.vision.run(sub), (lambda: self.s.vision.cancel(sub))
        spoken = SpokenAnswer(self.s.speech, sub, self.client, speak, forward, streamed=action != READ,
                              cancel_service=stop)
        watch: asyncio.Task | None = None

        async def answer() -> None:
            nonlocal watch
            await spoken.start()
            if self.barge_in:
                watch = asyncio.ensure_future(self._watch_for_barge_in(spoken))
            await work

        try:
            return await self._run_sub(sub, spoken, spoken.cancel, answer(), done)
        except CodedError as exc:
            if exc.code == CANCELLED and self.barged_in is not None and not self.cancelled:
                # the model's work was stopped too: no answer text, the speech cut short
                return {"speech": {"state": "cancelled", "error": cancelled("barge_in").to_error()}}
            raise
        finally:
            if watch is not None:
                watch.cancel()

    def _camera(self) -> str:
        if not self.camera:
            raise P.ProtocolError(P.BAD_REQUEST, "no camera to look through: configure one, name it in "
                                  "[assist] camera or in the request", field="camera")
        return self.camera

    # ---------------------------------------------------------------- barge-in

    async def _watch_for_barge_in(self, spoken: SpokenAnswer) -> None:
        """While the answer is spoken: the first speech the microphone hears silences it now,
        then ends the answer's work."""

        def on_speech(fields: dict) -> None:
            if self.barged_in is not None or spoken.finished:
                return
            self.barged_in = {"at_ms": round((time.monotonic() - self.started) * 1000)}  # since the request began
            if spoken.utterance is not None:
                self.s.speech.cancel_utterance(spoken.utterance, "barge_in")  # silence first, at once
            self.forward(Event("barge_in", fields={}))
            # then the model's work behind it (the task is kept: the loop holds only weak references)
            self._stopping = asyncio.ensure_future(spoken.cancel())

        stop_monitoring = self.s.speech.monitor(self._echo_reference) if self.settings.echo_gate else None
        try:
            await self._listen("barge_in", P.ListenRequest(mode="dictation", source="microphone", engine="pocketsphinx",
                                                           wait_s=P.MAX_WAIT_S), on_speech=on_speech)
        except CodedError:
            return  # no microphone: the answer is spoken to its end, as without barge-in
        finally:
            if stop_monitoring is not None:
                stop_monitoring()

    def _echo_reference(self, pcm: Any, rate: int, at: float) -> None:
        """What the speaker starts to play, for the watch's echo gate (a note to its listen job)."""
        if self._watch_job is None:
            return
        task = asyncio.ensure_future(self.s.listen.note(self._watch_job, "reference", {"at": at, "rate": rate},
                                                        (pcm.astype("<i2").tobytes(),)))
        self._notes.add(task)  # kept until sent: the loop holds only weak references
        task.add_done_callback(self._notes.discard)


def describe(config: Config) -> dict:
    settings = config.assist
    return {"triggers": list(P.ASSIST_TRIGGERS),
            "wake_phrase": settings.wake_phrase, "built_in": dict(BUILT_IN),
            "commands": list(settings.commands), "camera": settings.camera or _only_camera(config) or None,
            "barge_in": settings.barge_in, "echo_gate": settings.echo_gate, "acknowledgment": settings.acknowledgment}


def _only_camera(config: Config) -> str:
    return next(iter(config.cameras)) if len(config.cameras) == 1 else ""
