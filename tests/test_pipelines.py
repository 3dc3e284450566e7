"""The spoken-answer pipeline's ordering of service events, speech events and a client's
cancel, for the races a daemon test cannot time: the speech service here is a recorder with
the same methods (the daemon tests in test_speech.py drive the real one)."""
from __future__ import annotations

import asyncio

from edge_agent import protocol as P
from edge_agent.events import Event
from edge_agent.pipelines import SpokenAnswer


class RecordingSpeech:
    """What the pipeline asks of the speech service; a cancel ends the utterance at once, as
    the real service does."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.listener = None

    async def open(self, uid, owner, options, listener):
        self.listener = listener
        self.calls.append(("open", uid))
        return uid

    def append(self, utterance, sentences):
        self.calls.append(("append", tuple(sentences)))

    def append_text(self, utterance, text):
        self.calls.append(("append_text", text))

    def close_utterance(self, utterance):
        self.calls.append(("close",))

    def cancel_utterance(self, utterance, reason):
        self.calls.append(("cancel", reason))
        self.listener(Event("error", True, {"error": {"code": P.CANCELLED, "message": "cancelled", "reason": reason},
                                            "speech": {"sentences": 0}}))

    def end_normally(self):
        self.listener(Event("result", True, {"state": "end", "sentences": 1}))


def make(service_cancel):
    speech, forwarded = RecordingSpeech(), []
    answer = SpokenAnswer(speech, "j1", "client", P.SpeechOptions(), forwarded.append,
                          streamed=True, cancel_service=service_cancel)
    return answer, speech, forwarded


def finals(forwarded):
    return [(event.kind, event.fields) for event in forwarded if event.final]


def test_cancel_that_arrives_after_the_answer_finished_still_silences_it():
    async def scenario():
        async def service_already_done():
            # The engine had finished: the cancel finds nothing to stop and the answer's
            # `result` arrives while the cancel is on its way.
            answer.on_service_event(Event("result", True, {"text": "Hello there. More."}))

        answer, speech, forwarded = make(service_already_done)
        await answer.start()
        answer.on_service_event(Event("delta", False, {"text": "Hello there. "}))
        answer.on_service_event(Event("delta", False, {"text": "More"}))
        await answer.cancel()
        return speech, forwarded

    speech, forwarded = asyncio.run(scenario())
    assert ("cancel", "cancel") in speech.calls and ("close",) not in speech.calls
    [(kind, fields)] = finals(forwarded)
    assert kind == "error" and fields["error"]["code"] == P.CANCELLED


def test_cancel_while_the_answer_runs_ends_answer_and_speech_once():
    async def scenario():
        async def service_cancels():
            answer.on_service_event(Event("error", True, {"error": {"code": P.CANCELLED, "message": "cancelled"}}))

        answer, speech, forwarded = make(service_cancels)
        await answer.start()
        answer.on_service_event(Event("delta", False, {"text": "Hello there. "}))
        await answer.cancel()
        return speech, forwarded

    speech, forwarded = asyncio.run(scenario())
    assert ("append", ("Hello there.",)) in speech.calls and ("cancel", "cancel") in speech.calls
    [(kind, fields)] = finals(forwarded)
    assert kind == "error" and fields["error"]["code"] == P.CANCELLED


def test_final_answer_waits_for_its_speech_and_carries_the_outcome():
    async def scenario():
        async def never():
            raise AssertionError("not cancelled")

        answer, speech, forwarded = make(never)
        await answer.start()
        answer.on_service_event(Event("delta", False, {"text": "Hello there."}))
        answer.on_service_event(Event("result", True, {"text": "Hello there."}))
        held = finals(forwarded)
        speech.end_normally()
        return speech, held, forwarded

    speech, held, forwarded = asyncio.run(scenario())
    assert held == [] and speech.calls[-2:] == [("append", ("Hello there.",)), ("close",)]
    [(kind, fields)] = finals(forwarded)
    assert kind == "result" and fields["speech"]["state"] == "end" and fields["text"] == "Hello there."
