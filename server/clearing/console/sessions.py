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

from clearing.limits import CONSOLE_SESSIONS_MAX, PARTY_ACCOUNTS_MAX
from clearing.reasons import Reason
from clearing_client import ClearingClient, ClearingRpcError


async def party_accounts(probe: ClearingClient) -> frozenset[int] | None:
    """A party key's accounts, None for any other key (at sign-in): the API refuses a party
    key ListRuleSets (which every other platform key may call) with PARTY_KEY_METHOD_DENIED,
    and lists it its own accounts only."""
    try:
        await probe.list_rule_sets(page_size=1)
        return None
    except ClearingRpcError as err:
        if err.reason != Reason.PARTY_KEY_METHOD_DENIED:
            return None
    listed = await probe.list_accounts(page_size=PARTY_ACCOUNTS_MAX)
    return frozenset(a.account_id for a in listed.accounts)


@dataclass(slots=True)
class Session:
    session_id: str
    api_key: str = field(repr=False)
    csrf: str = field(repr=False)
    created: float
    seen: float
    # what a page keeps for a while (the overview's month): a few entries, named by code
    cache: dict = field(default_factory=dict, repr=False)
    # A party key's accounts (as the API listed them at sign-in); None for any other key.
    # Only what the console shows depends on it (navigation, links): the API filters.
    party_account_ids: frozenset[int] | None = None

    @property
    def party(self) -> bool:
        return self.party_account_ids is not None

    def linkable(self, account_id: int) -> bool:
        """Whether a page links to this account's page (a party key reads only its own)."""
        return self.party_account_ids is None or account_id in self.party_account_ids

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

    def create(self, api_key: str, *,
               party_account_ids: frozenset[int] | None = None) -> Session:
        now = self.clock()
        while len(self._sessions) >= self.sessions_max:
            self._sessions.popitem(last=False)
        session = Session(secrets.token_urlsafe(32), api_key, secrets.token_urlsafe(32),
                          now, now, party_account_ids=party_account_ids)
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
