"""Conversations kept on the daemon (chat sessions, image sessions), owned by the client that
made them.

A session belongs to an owner: the client's identity (its CURVE key over TCP, else its
connection). Only the owner lists it, and a name the owner chose ("kitchen") means that
owner's session only, so one client can neither read nor take over another's. A session the
daemon names gets an unguessable id, which works as a capability: whoever holds it may use it
from another connection too (a client that reconnected). Each owner has a quota; when it is
used up the owner's least recently used idle session makes room, never someone else's, and a
full store answers `busy`. Idle sessions expire.
"""
from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ..errors import BAD_REQUEST, BUSY, NOT_FOUND, CodedError

TOKEN_PREFIX = "s-"
TOKEN_BYTES = 16  # 128 bits: not guessable


class Kept(Protocol):
    id: str
    owner: str
    busy: bool
    last_used: float  # time.time()


S = TypeVar("S", bound=Kept)


def is_token(sid: str) -> bool:
    return sid.startswith(TOKEN_PREFIX) and len(sid) >= len(TOKEN_PREFIX) + 20


class SessionStore(Generic[S]):
    def __init__(self, what: str, max_total: int, max_per_owner: int, idle_s: float):
        self.what = what  # "session", "image session": for messages
        self.max_total = max_total
        self.max_per_owner = max_per_owner
        self.idle_s = idle_s
        self._sessions: OrderedDict[tuple[str, str], S] = OrderedDict()  # (owner or "", id), least recent first

    def __len__(self) -> int:
        return len(self._sessions)

    @staticmethod
    def _key(owner: str, sid: str) -> tuple[str, str]:
        return ("", sid) if is_token(sid) else (owner, sid)

    def create(self, owner: str, sid: str | None, make: Callable[[str], S]) -> S:
        """A new session of `owner`, named `sid` or (None) given an unguessable id."""
        if sid is not None and is_token(sid):
            raise CodedError(BAD_REQUEST, f"session names starting with {TOKEN_PREFIX!r} and this long are the "
                             "daemon's own; choose another", field="session")
        sid = sid or TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        key = self._key(owner, sid)
        if key in self._sessions:
            raise CodedError(BAD_REQUEST, f"{self.what} {sid!r} already exists", field="session")
        self.expire()
        mine = [k for k, s in self._sessions.items() if s.owner == owner]
        if len(mine) >= self.max_per_owner:
            self._evict(mine, f"this client already has {len(mine)} {self.what}s (limit {self.max_per_owner})")
        elif len(self._sessions) >= self.max_total:
            self._evict(mine, f"the daemon keeps {len(self._sessions)} {self.what}s, its limit")
        session = make(sid)
        self._sessions[key] = session
        return session

    def _evict(self, mine: list[tuple[str, str]], why: str) -> None:
        """Make room by dropping the owner's least recently used idle session, or refuse:
        another client's sessions are never dropped to make room."""
        for key in mine:  # least recently used first
            if not self._sessions[key].busy:
                del self._sessions[key]
                return
        raise CodedError(BUSY, f"{why}, and none of this client's is idle to make room; delete one or try later",
                         retry_after_ms=1000)

    def get(self, owner: str, sid: str) -> S:
        """The session `sid` as `owner` may use it; `not_found` for any other client's."""
        key = self._key(owner, sid)  # a name is looked up among the owner's own only
        session = self._sessions.get(key)
        if session is None:
            raise CodedError(NOT_FOUND, f"no {self.what} {sid!r}", field="session")
        self._sessions.move_to_end(key)
        session.last_used = time.time()
        return session

    def find(self, owner: str, sid: str) -> S | None:
        try:
            return self.get(owner, sid)
        except CodedError:
            return None

    def delete(self, owner: str, sid: str) -> S:
        session = self.get(owner, sid)
        if session.busy:
            raise CodedError(BUSY, f"{self.what} {sid!r} is answering", retry_after_ms=500)
        del self._sessions[self._key(owner, sid)]
        return session

    def drop(self, session: S) -> None:
        """Remove this session if it is still kept (a wipe may have taken it already)."""
        key = self._key(session.owner, session.id)
        if self._sessions.get(key) is session:
            del self._sessions[key]

    def wipe(self) -> list[S]:
        """Drop every session of every client (the privacy wipe); returned so that their
        service can clear what a running turn still holds."""
        wiped = list(self._sessions.values())
        self._sessions.clear()
        return wiped

    def of(self, owner: str) -> list[S]:
        return [s for s in self._sessions.values() if s.owner == owner]

    def expire(self) -> int:
        """Drop sessions idle for longer than `idle_s` (0 = never); how many went."""
        if not self.idle_s:
            return 0
        cutoff = time.time() - self.idle_s
        old = [k for k, s in self._sessions.items() if not s.busy and s.last_used < cutoff]
        for key in old:
            del self._sessions[key]
        return len(old)
