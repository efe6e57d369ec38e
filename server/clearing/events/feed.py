"""Reading the feed: pages of a platform's events after a cursor, the cursor's checks, and
the hub that wakes this process's live streams when the sequencer has numbered events
(LISTEN clearing_events on one connection; streams also poll, so a lost notification or a
broken listener only delays them)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg

from clearing.errors import ClearingError
from clearing.events.model import Event
from clearing.events.sequencer import CHANNEL
from clearing.reasons import Reason

log = logging.getLogger("clearing.events.feed")

_COLUMNS = "platform_id, seq, type, resource_id, request_id, payload, created_at"


class CursorOutOfRange(ClearingError):
    code = "OUT_OF_RANGE"


async def head(conn: asyncpg.Connection, platform_id: int) -> int:
    """The platform's newest sequence number (0: none yet)."""
    return await conn.fetchval(
        "SELECT coalesce((SELECT seq FROM event_heads WHERE platform_id = $1), 0)",
        platform_id)


async def check_cursor(conn: asyncpg.Connection, platform_id: int, cursor: int) -> int:
    """Where to read from: `cursor`, or for 0 just before the oldest event kept. Raises
    CursorOutOfRange for a cursor beyond the platform's newest event or whose next events
    were pruned."""
    row = await conn.fetchrow(
        "SELECT coalesce((SELECT seq FROM event_heads WHERE platform_id = $1), 0) AS head,"
        " (SELECT min(seq) FROM events WHERE platform_id = $1) AS oldest", platform_id)
    if cursor > row["head"]:
        raise CursorOutOfRange(
            f"cursor {cursor} is beyond the platform's newest event ({row['head']})",
            reason=Reason.EVENT_CURSOR_AHEAD)
    oldest = row["oldest"] if row["oldest"] is not None else row["head"] + 1
    if cursor == 0:
        return oldest - 1
    if cursor + 1 < oldest:
        raise CursorOutOfRange(
            f"the events after cursor {cursor} were pruned (retention); the oldest kept is"
            f" {oldest}: resume from cursor {oldest - 1} (events were missed)",
            reason=Reason.EVENT_CURSOR_EXPIRED)
    return cursor


# The first number in ($2, $3] with no event (NULL: none missing).
_SQL_FIRST_HOLE = """
SELECT $2 + n FROM (
  SELECT seq, row_number() OVER (ORDER BY seq) AS n
  FROM events WHERE platform_id = $1 AND seq > $2 AND seq <= $3) x
WHERE seq <> $2 + n ORDER BY seq LIMIT 1
"""


async def read(conn: asyncpg.Connection, platform_id: int, after: int,
               types: Sequence[str], limit: int) -> tuple[list[Event], int]:
    """Up to `limit` events after `after` (of `types`, if any), oldest first, and the seq
    the read reached (the last event read, or with a filter the last seq looked at)."""
    if types:
        # Bound the look ahead: the filtered page reaches at most `after + span`, and never
        # beyond the head read BEFORE the rows (a round numbered between the two statements
        # would otherwise be skipped: READ COMMITTED gives each statement its own snapshot).
        newest = await head(conn, platform_id)
        span = min(limit * 20, max(newest - after, 0))
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM events WHERE platform_id = $1 AND seq > $2"
            " AND seq <= $2 + $4 AND type = ANY($3::text[]) ORDER BY seq LIMIT $5",
            platform_id, after, list(types), span, limit)
        reached = rows[-1]["seq"] if len(rows) == limit else after + span
    else:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM events WHERE platform_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT $3", platform_id, after, limit)
        reached = rows[-1]["seq"] if rows else after
    # Numbers are gap-free: a missing one was pruned (by created_at, not in seq order; or
    # between check_cursor and this read). Never jump over it (found in review).
    if types:
        hole = await conn.fetchval(_SQL_FIRST_HOLE, platform_id, after, reached)
    else:
        hole = next((after + i + 1 for i, r in enumerate(rows) if r["seq"] != after + i + 1),
                    None)
    if hole is not None:
        if hole == after + 1:
            resume = await conn.fetchval(
                "SELECT min(seq) - 1 FROM events WHERE platform_id = $1 AND seq > $2",
                platform_id, after)
            raise CursorOutOfRange(
                f"the events after cursor {after} were pruned (retention): resume from"
                f" cursor {resume} (events were missed)", reason=Reason.EVENT_CURSOR_EXPIRED,
                metadata={"cursor": str(resume)})
        rows = [r for r in rows if r["seq"] < hole]
        reached = hole - 1
    return [Event(r["platform_id"], r["seq"], r["type"], r["resource_id"], r["request_id"],
                  bytes(r["payload"]), r["created_at"]) for r in rows], max(reached, after)


class Hub:
    """Wakes this process's live streams when events were numbered (see the module). Its
    LISTEN is on a connection of its own, not a pooled one (pooled connections carry no
    session state: `clearing.db.create_pool`)."""

    def __init__(self, database_url: str) -> None:
        self._dsn = database_url
        self._conn: asyncpg.Connection | None = None
        self._changed = asyncio.Event()
        self.closing = False

    def close_streams(self) -> None:
        """The server is stopping: wake every live stream so that it ends now (each tells
        its client the cursor to resume from) instead of holding the shutdown's grace."""
        self.closing = True
        self._changed.set()

    async def start(self) -> None:
        try:
            self._conn = await asyncpg.connect(self._dsn, timeout=10)
            await self._conn.add_listener(CHANNEL, self._notified)
        except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as exc:  # streams poll
            log.warning("events listener not started; streams poll: %s", exc)
            await self._release()

    async def stop(self) -> None:
        self._changed.set()
        await self._release()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing a broken connection
                conn.terminate()

    def _notified(self, *_args) -> None:
        self._changed.set()

    async def wait(self, timeout_s: float) -> None:
        """Until events were numbered (by any process) or `timeout_s` passed."""
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            return
        if changed is self._changed and changed.is_set() and not self.closing:
            self._changed = asyncio.Event()  # the next wait waits for the next round
