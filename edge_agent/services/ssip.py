"""Who holds the audio device: speech-dispatcher's (SSIP) priority rules, and nothing else.

A pure queue: no audio, no engine, no event loop, so every rule is tested as a table row
(tests/test_ssip.py). The speech service (services/speech.py) asks it what an arriving
utterance does to the others, and who speaks next; it ends the victims itself.

  important     never interrupted; cancels whatever else is speaking and any queued
                notification/progress; queued message/text wait; FIFO among themselves
  message       waits for important/message before it; cancels text, notification, progress
  text          waits for important/message; a new text cancels the previous text; cancels
                notification/progress
  notification  dropped if anything else is speaking or queued; a newer one cancels it
  progress      cancels notification; while anything else speaks it is held back, and only
                the newest held one survives, so the last message of a series is always spoken
A paused utterance keeps its place but is skipped until it is resumed.
"""
from __future__ import annotations

from typing import Generic, Protocol, TypeVar

RANK = {"important": 0, "message": 1, "text": 2, "notification": 3, "progress": 3}

INTERRUPTED, REPLACED, DISCARDED = "interrupted", "replaced", "discarded"


class Queued(Protocol):
    @property
    def priority(self) -> str: ...

    seq: int  # arrival order
    paused: bool
    done: bool


Item = TypeVar("Item", bound=Queued)


class SpeechQueue(Generic[Item]):
    def __init__(self) -> None:
        self.current: Item | None = None  # holds the device
        self.waiting: list[Item] = []  # queued or paused, in arrival order
        self.held_progress: Item | None = None

    def __len__(self) -> int:
        return len(self.waiting) + (1 if self.held_progress is not None else 0)

    def arrive(self, new: Item) -> list[tuple[Item, str]]:
        """Place `new` and return the utterances it ends, each with the reason (`new` itself,
        `discarded`, when it may not speak at all). The caller ends them."""
        priority = new.priority
        active = ([self.current] if self.current is not None else []) + self.waiting
        victims: list[tuple[Item, str]] = []

        def end_where(priorities: tuple[str, ...], reason: str) -> None:
            victims.extend((other, reason) for other in active if other.priority in priorities and other is not new)
            if self.held_progress is not None and "progress" in priorities:
                victims.append((self.held_progress, reason))

        if priority == "important":
            if self.current is not None and self.current.priority != "important":
                victims.append((self.current, INTERRUPTED))
            end_where(("notification", "progress"), INTERRUPTED)
        elif priority == "message":
            end_where(("text", "notification", "progress"), INTERRUPTED)
        elif priority == "text":
            end_where(("text",), REPLACED)
            end_where(("notification", "progress"), INTERRUPTED)
        elif priority == "notification":
            if any(u.priority != "notification" for u in active) or self.held_progress is not None:
                return [(new, DISCARDED)]
            end_where(("notification",), REPLACED)
        elif priority == "progress":
            end_where(("notification",), INTERRUPTED)
            if any(u.priority != "notification" and not u.done for u in active):
                if self.held_progress is not None:
                    victims.append((self.held_progress, REPLACED))
                self.held_progress = new  # spoken once the device is free, unless a newer one comes
                return victims
        self.waiting.append(new)
        return victims

    def remove(self, item: Item) -> bool:
        """Forget an utterance that ended; True if it held the device."""
        if item in self.waiting:
            self.waiting.remove(item)
        if item is self.held_progress:
            self.held_progress = None
        if item is self.current:
            self.current = None
            return True
        return False

    def next(self) -> Item | None:
        """Give the device to the best waiting utterance if nobody holds it; the new holder."""
        if self.current is not None:
            return None
        ready = sorted((u for u in self.waiting if not u.paused), key=lambda u: (RANK[u.priority], u.seq))
        if ready:
            chosen = ready[0]
            self.waiting.remove(chosen)
        elif self.held_progress is not None and not self.held_progress.paused:
            chosen, self.held_progress = self.held_progress, None
        else:
            return None
        self.current = chosen
        return chosen

    def postpone(self, item: Item) -> None:
        """The device holder steps back (paused, or outranked by a resumed one) and waits."""
        if item is self.current:
            self.current = None
            self.waiting.append(item)

    def outranked(self) -> bool:
        """Whether an unpaused waiting utterance outranks the one speaking (after a resume)."""
        current = self.current
        return current is not None and any(RANK[u.priority] < RANK[current.priority]
                                           for u in self.waiting if not u.paused)

    def paused(self) -> int:
        return sum(1 for u in self.waiting if u.paused)
