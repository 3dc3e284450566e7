"""Spoken answers: a chat, ask or ocr request with `speak` is also read aloud.

The pipeline sits between a service and the client. It forwards the service's events as
they are, cuts streamed text (`delta` events) into sentences and hands each one to the speech
service the moment it is complete, and holds the service's final event back until the
answer has been spoken, so the request ends when the listener has heard it. The speech
events of the utterance (`speech`, `audio`) travel in the same request's stream. Cancelling
the request silences its speech too. Neither service knows about the other.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from . import protocol as P
from .errors import cancelled
from .events import Event
from .services.speech import SpeechService, Utterance
from .speech_text import SentenceStream, shape

# forward(event): an event to the client that asked
Forward = Callable[[Event], None]

NOTHING_READ = "No text found."


class SpokenAnswer:
    def __init__(self, speech: SpeechService, job: str, owner: str, options: P.SpeechOptions, forward: Forward,
                 *, streamed: bool, cancel_service: Callable[[], Awaitable[None]]):
        self.speech = speech
        self.job = job
        self.owner = owner
        self.options = options
        self.forward = forward
        self.streamed = streamed
        self.cancel_service = cancel_service
        self.sentences = SentenceStream()
        self.utterance: Utterance | None = None
        self.held: Event | None = None  # the service's final result, until speech ends
        self.outcome: dict | None = None  # how the speech ended
        self.service_done = False
        self.cancelled = False
        self.finished = False

    async def start(self) -> None:
        """Open the utterance (it takes its place in the speech queue now). A voice the engine
        lacks ends the speech part only: the answer itself still arrives, with the error."""
        try:
            self.utterance = await self.speech.open(self.job, self.owner, self.options, self._on_speech)
        except P.ProtocolError as exc:
            self.outcome = {"state": "error", "error": exc.to_error()}

    # ---------------------------------------------------------------- from the service

    def on_service_event(self, event: Event) -> None:
        if not event.final:
            self.forward(event)
            if event.kind == "delta" and self.streamed and self.utterance is not None:
                self._speak(self.sentences.feed(event.fields.get("text", "")))
            return
        self.service_done = True
        if self.cancelled:  # the answer finished while the client's cancel was on its way: the cancel wins
            event = Event.failure(cancelled())
        if event.kind != "result":  # the answer failed or was cancelled: so is its speech
            if self.utterance is not None:
                self.speech.cancel_utterance(self.utterance, "cancel")
            self._finish(event)
            return
        if self.utterance is not None:
            if self.streamed:
                self._speak(self.sentences.flush())
            else:
                text = event.fields.get("spoken") or event.fields.get("text") or ""  # OCR's spoken form
                self.speech.append_text(self.utterance, text if text.strip() else NOTHING_READ)
            self.speech.close_utterance(self.utterance)
        self.held = event
        self._maybe_finish()

    def _speak(self, sentences: list[str]) -> None:
        assert self.utterance is not None
        options = self.options
        shaped = [shape(s, options.punctuation, options.markdown) for s in sentences]
        self.speech.append(self.utterance, [s for s in shaped if any(c.isalnum() for c in s)])

    # ---------------------------------------------------------------- from the speech service

    def _on_speech(self, event: Event) -> None:
        if not event.final:
            self.forward(event)
            return
        if event.kind == "result":
            self.outcome = dict(event.fields)
        else:
            error = event.fields["error"]
            state = "cancelled" if error["code"] == P.CANCELLED else "error"
            self.outcome = {"state": state, "error": error, **event.fields.get("speech", {})}
        self._maybe_finish()

    # ---------------------------------------------------------------- ending

    async def cancel(self) -> None:
        """The client cancelled the request: stop the answer and its speech."""
        self.cancelled = True
        if not self.service_done:
            await self.cancel_service()  # the service ends the job; on_service_event does the rest
        elif self.utterance is not None:
            self.speech.cancel_utterance(self.utterance, "cancel")  # _on_speech ends the request

    def _maybe_finish(self) -> None:
        if self.held is None or self.outcome is None or self.finished:
            return
        if self.cancelled:
            self._finish(Event.failure(cancelled()))
        else:
            self._finish(Event.result({**self.held.fields, "speech": self.outcome}, self.held.attachments))

    def _finish(self, event: Event) -> None:
        if not self.finished:
            self.finished = True
            self.forward(event)
