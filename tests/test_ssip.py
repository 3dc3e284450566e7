"""The SSIP queue's rules, one table row per rule (services/ssip.py; docs/protocol.md §4.12).
The daemon tests in test_speech.py check the same rules at a real audio device."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from edge_agent.services.ssip import SpeechQueue


@dataclass(eq=False)
class Item:
    name: str
    priority: str
    seq: int
    paused: bool = False
    done: bool = False


def queue_with(speaking: str | None, waiting: tuple[str, ...] = (), held: str | None = None):
    """A queue whose device holder, waiting and held utterances are named by priority:
    the speaker is 'speaking', the waiting ones 'waiting0', 'waiting1', ..."""
    queue: SpeechQueue[Item] = SpeechQueue()
    seq = 0
    if speaking:
        queue.current = Item("speaking", speaking, seq)
        seq += 1
    for index, priority in enumerate(waiting):
        queue.waiting.append(Item(f"waiting{index}", priority, seq))
        seq += 1
    if held:
        queue.held_progress = Item("held", held, seq)
    return queue


def placement(queue: SpeechQueue, new: Item, victims) -> str:
    if (new, "discarded") in victims:
        return "discarded"
    if queue.held_progress is new:
        return "held"
    return "queued" if new in queue.waiting else "lost"


# speaking, waiting, held progress, new priority -> ended (name: reason), where the new one goes
RULES = [
    # important: never interrupted; interrupts any other speaker and queued notification/progress
    ("text", (), None, "important", {"speaking": "interrupted"}, "queued"),
    ("message", ("notification", "progress"), None, "important",
     {"speaking": "interrupted", "waiting0": "interrupted", "waiting1": "interrupted"}, "queued"),
    ("important", (), None, "important", {}, "queued"),
    ("text", ("message", "text"), None, "important", {"speaking": "interrupted"}, "queued"),  # queued ones wait
    # message: waits for important/message; cancels text, notification, progress
    ("message", (), None, "message", {}, "queued"),
    ("important", (), None, "message", {}, "queued"),
    ("text", ("notification",), None, "message", {"speaking": "interrupted", "waiting0": "interrupted"}, "queued"),
    (None, (), "progress", "message", {"held": "interrupted"}, "queued"),
    # text: a new text replaces the previous one; waits for important/message
    ("text", (), None, "text", {"speaking": "replaced"}, "queued"),
    ("message", ("text",), None, "text", {"waiting0": "replaced"}, "queued"),
    ("notification", (), None, "text", {"speaking": "interrupted"}, "queued"),
    # notification: dropped when anything else speaks or waits; a newer one replaces it
    ("text", (), None, "notification", {"new": "discarded"}, "discarded"),
    (None, ("message",), None, "notification", {"new": "discarded"}, "discarded"),
    (None, (), "progress", "notification", {"new": "discarded"}, "discarded"),
    ("notification", (), None, "notification", {"speaking": "replaced"}, "queued"),
    (None, (), None, "notification", {}, "queued"),
    # progress: cancels notification; held back while others speak, the newest held survives
    ("notification", (), None, "progress", {"speaking": "interrupted"}, "queued"),
    ("message", (), None, "progress", {}, "held"),
    ("message", (), "progress", "progress", {"held": "replaced"}, "held"),
    (None, (), None, "progress", {}, "queued"),
]


@pytest.mark.parametrize("speaking, waiting, held, priority, ended, where", RULES,
                         ids=[f"{r[3]}-over-{r[0]}-{'+'.join(r[1]) or 'none'}-{r[2] or ''}" for r in RULES])
def test_ssip_rule(speaking, waiting, held, priority, ended, where):
    queue = queue_with(speaking, waiting, held)
    new = Item("new", priority, 100)
    victims = queue.arrive(new)
    assert {item.name: reason for item, reason in victims} == ended
    assert placement(queue, new, victims) == where


def test_device_goes_to_the_best_waiting_then_in_arrival_order_and_skips_paused():
    queue: SpeechQueue[Item] = SpeechQueue()
    text, message, important = Item("text", "text", 0), Item("message", "message", 1), Item("imp", "important", 2)
    second_message = Item("message2", "message", 3)
    for item in (text, message, important, second_message):
        queue.waiting.append(item)
    important.paused = True
    assert queue.next() is message and queue.next() is None  # the device is taken
    queue.remove(message)
    assert queue.next() is second_message
    queue.remove(second_message)
    important.paused = False
    assert queue.next() is important


def test_a_held_progress_speaks_once_the_device_is_free():
    queue = queue_with("message", held="progress")
    held = queue.held_progress
    assert queue.next() is None
    queue.remove(queue.current)
    assert queue.next() is held and queue.held_progress is None


def test_a_resumed_utterance_that_outranks_the_speaker_takes_the_device_back():
    queue = queue_with("text", ("important",))
    resumed = queue.waiting[0]
    assert queue.outranked()
    speaker = queue.current
    queue.postpone(speaker)
    assert queue.next() is resumed and speaker in queue.waiting
    resumed.paused = True
    assert not queue.outranked()
