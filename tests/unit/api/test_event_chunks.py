"""WatchEvents' messages: an event with an empty payload first in a read made `_chunks`
index an empty list (IndexError: the stream ended INTERNAL). Review of the events merge."""

from __future__ import annotations

import datetime as dt

from clearing.api.event import _MESSAGE_PAYLOAD_BYTES, _chunks
from clearing.events.model import Event

NOW = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)


def _event(seq: int, size: int) -> Event:
    return Event(1, seq, "account.frozen", str(seq), "", b"x" * size, NOW)


def test_chunks_of_empty_and_large_payloads():
    assert [[e.seq for e in c] for c in _chunks([_event(1, 0), _event(2, 0)])] == [[1, 2]]
    half = _MESSAGE_PAYLOAD_BYTES // 2 - 100
    runs = _chunks([_event(1, 0), _event(2, half), _event(3, half), _event(4, half)])
    assert [[e.seq for e in c] for c in runs] == [[1, 2, 3], [4]]
    assert _chunks([]) == []
