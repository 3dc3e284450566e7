"""Streaming text past stop strings without ever showing one.

The engine stops generating when a stop string appears in the decoded text, but by then
the pieces that form it have been decoded; a stream must hold back the last few characters
that could still turn out to be the start of a stop string, and cut the text where the stop
string begins when the turn ends.
"""
from __future__ import annotations


class StopStringFilter:
    def __init__(self, stop: tuple[str, ...] | list[str]):
        self.stop = tuple(stop)
        self.text = ""  # everything decoded so far
        self.released = 0  # characters of `text` already handed out

    def _cut(self) -> int | None:
        """Index where the earliest stop string starts, if one is complete in the text."""
        found = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _safe_end(self) -> int:
        """Characters that cannot be the start of a stop string still being completed."""
        end = len(self.text)
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    end = min(end, len(self.text) - k)
                    break
        return end

    def push(self, piece: str) -> str:
        """Add decoded text; return what may be shown now."""
        self.text += piece
        cut = self._cut()
        end = cut if cut is not None else self._safe_end()
        out = self.text[self.released:end] if end > self.released else ""
        self.released = max(self.released, end)
        return out

    def finish(self) -> str:
        """The turn ended: release the rest, up to the first stop string."""
        cut = self._cut()
        end = cut if cut is not None else len(self.text)
        out = self.text[self.released:end] if end > self.released else ""
        self.released = max(self.released, end)
        return out

    @property
    def visible_text(self) -> str:
        cut = self._cut()
        return self.text if cut is None else self.text[:cut]

    @property
    def stopped(self) -> bool:
        return self._cut() is not None
