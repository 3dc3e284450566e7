"""Logging what clients send without letting them write the log: client text is escaped (no
forged lines), cut short (no megabyte entries) and, for messages a client can trigger in a
loop, rate-limited with a count of what was left out."""
from __future__ import annotations

import logging
import time

MAX_LOGGED_CHARS = 200


def loggable(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """One line of printable text: control characters and newlines escaped, cut at `limit`."""
    text = str(value)
    cut = len(text) > limit
    text = text[:limit].encode("unicode_escape", errors="backslashreplace").decode("ascii")
    return text + (f"... ({len(str(value))} characters)" if cut else "")


class RateLimitedLog:
    """At most `per_second` records a second (info level); the rest are counted and reported
    with the next record that gets through."""

    def __init__(self, logger: logging.Logger, per_second: float):
        self.logger = logger
        self.per_second = per_second
        self._tokens = per_second
        self._last = time.monotonic()
        self._dropped = 0

    def log(self, message: str, *args: object) -> None:
        now = time.monotonic()
        self._tokens = min(self.per_second, self._tokens + (now - self._last) * self.per_second)
        self._last = now
        if self._tokens < 1:
            self._dropped += 1
            return
        self._tokens -= 1
        if self._dropped:
            self.logger.info("(%d similar messages left out)", self._dropped)
            self._dropped = 0
        self.logger.info(message, *(loggable(a) for a in args))
