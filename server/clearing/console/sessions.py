"""Console sessions, held in the console's memory: an opaque random id (the cookie) names
the API key it signs in with, its CSRF token and its times. Nothing of a session is in the
cookie but its id; a restart of the console signs everyone out.

A session ends on sign-out, after `idle_s` without a request, or `max_s` after sign-in,
whichever comes first; when CONSOLE_SESSIONS_MAX are held, a new one ends the least
recently used."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from clearing.limits import CONSOLE_SESSIONS_MAX


@dataclass(slots=True)
class Session:
    session_id: str
    api_key: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    seen: float
    # what a page keeps for a while (the overview's month): a few entries, named by code
    cache: dict = field(default_factory=dict, repr=False)

    def csrf_ok(self, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(), self.csrf.encode())


class SessionStore:
    def __init__(self, idle_s: float, max_s: float, *, clock=time.monotonic,
                 sessions_max: int = CONSOLE_SESSIONS_MAX) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self.clock = clock
        self.sessions_max = sessions_max
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, api_key: str) -> Session:
        now = self.clock()
        while len(self._sessions) >= self.sessions_max:
            self._sessions.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), api_key, secrets.token_urlsafe(32),
                          now, now)
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this id (its idle clock restarted), None if there is none or
        it expired (then it is dropped)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle_s or now - session.created > self.max_s:
            del self._sessions[session_id]
            return None
        session.seen = now
        self._sessions.move_to_end(session_id)
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)
