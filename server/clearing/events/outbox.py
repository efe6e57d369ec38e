"""The outbox: the events of a change, written in the change's transaction.

A change calls `write(conn, rows)` (one multi-row INSERT for any number of rows: the splits
sink writes the events of a whole group commit with one statement). Nothing else is
touched: no per-platform counter, so the split path takes no new row lock; the sequencer
(`clearing.events.sequencer`) numbers the rows per platform after they commit.

The payload is the resource's API message, serialized by the encoder the API layer
registered for its kind (`register`): the domain packages never import generated code.
`configure(enabled=False)` turns the outbox off in this process: only for a benchmark's
baseline (CLEARING_EVENTS_OUTBOX=0).
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, NamedTuple, Sequence

import asyncpg

from clearing.events.model import resource_of
from clearing.ledger.batch_sql import int_array, text_array

_encoders: dict[str, Callable[[object], bytes]] = {}
_enabled = True


class Row(NamedTuple):
    """One event of a change: `resource` is the domain object its encoder serializes;
    `payload`, if given, is that serialization already made (the splits sink passes a
    split's first response, the Split message the API layer made in the writer's batch)."""

    platform_id: int
    type: str
    resource_id: str
    request_id: str
    resource: object
    created_at: dt.datetime
    payload: bytes | None = None


def register(kind: str, encoder: Callable[[object], bytes]) -> None:
    """The serializer of a resource kind's domain object as its API message (API layer)."""
    _encoders[kind] = encoder


def configure(*, enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def encode(event_type: str, resource: object) -> bytes:
    encoder = _encoders.get(resource_of(event_type))
    return encoder(resource) if encoder is not None and resource is not None else b""


_SQL_INSERT = """
INSERT INTO event_outbox (platform_id, type, resource_id, request_id, payload, created_at)
SELECT * FROM unnest($1::text::bigint[], $2::text::text[], $3::text::text[],
                     $4::text::text[], $5::bytea[], $6::timestamptz[])
"""
# The usual case: every row of the change made at one time (a batch's), sent once.
_SQL_INSERT_AT = """
INSERT INTO event_outbox (platform_id, type, resource_id, request_id, payload, created_at)
SELECT u.*, $6::timestamptz FROM unnest($1::text::bigint[], $2::text::text[],
                                        $3::text::text[], $4::text::text[],
                                        $5::bytea[])
                            AS u(platform_id, type, resource_id, request_id, payload)
"""


async def write(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    """Write `rows` in the caller's transaction, in one statement. The short columns go as
    array literals (`clearing.ledger.batch_sql.int_array`), the payloads in asyncpg's binary
    bytea[] encoding: PostgreSQL parses a literal character by character, so a payload of
    ~800 bytes as hex cost it 31.7-42.9 µs a row against 5.8-7.5 µs in binary, and the
    server 8.4-9.2 against 3.9-4.4 µs (600-row statements; `python -m bench.long_values`,
    2026-12-08)."""
    if not rows or not _enabled:
        return
    columns = (
        int_array([r.platform_id for r in rows]), text_array([r.type for r in rows]),
        text_array([r.resource_id for r in rows]), text_array([r.request_id for r in rows]),
        [encode(r.type, r.resource) if r.payload is None else r.payload for r in rows])
    at = rows[0].created_at
    if all(r.created_at == at for r in rows):
        await conn.execute(_SQL_INSERT_AT, *columns, at)
    else:
        await conn.execute(_SQL_INSERT, *columns, [r.created_at for r in rows])


async def write_one(conn: asyncpg.Connection, platform_id: int, event_type: str,
                    resource_id: object, request_id: str, resource: object,
                    created_at: dt.datetime) -> None:
    await write(conn, [Row(platform_id, event_type, str(resource_id), request_id or "",
                           resource, created_at)])
