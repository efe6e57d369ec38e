"""The reconciliation's events in the feed (docs/events.md): discrepancy.opened for every
discrepancy inserted, in the transaction of its insert (a run's match statement, a sweep
batch), and discrepancy.resolved when a resolution is approved, in the approval's
transaction.

The inserts are set-based SQL statements: the new discrepancies are read back in one query
(a run's by its run id, new in the import's transaction; a sweep batch's by the ids its
statement returned) and written to the outbox in one multi-row statement, never a round trip
per discrepancy (a run of more than DISCREPANCY_EVENTS_BATCH_MAX discrepancies in slices of
that many, to bound the memory)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import asyncpg

from clearing.events import outbox
from clearing.events.model import EventType
from clearing.limits import DISCREPANCY_EVENTS_BATCH_MAX
from clearing.recon.model import Discrepancy, DiscrepancyState
from clearing.recon.store import discrepancy

_SQL_OF_RUN = """
SELECT * FROM recon_discrepancies WHERE run_id = $1 AND discrepancy_id > $2
ORDER BY run_id, discrepancy_id LIMIT $3
"""
_SQL_OF_IDS = """
SELECT * FROM recon_discrepancies WHERE discrepancy_id = ANY($1::bigint[])
ORDER BY discrepancy_id
"""


def _rows(records: Sequence[asyncpg.Record], request_id: str,
          at: dt.datetime) -> list[outbox.Row]:
    return [outbox.Row(r["platform_id"], EventType.DISCREPANCY_OPENED,
                       str(r["discrepancy_id"]), request_id, discrepancy(r), at)
            for r in records]


async def opened_in_run(conn: asyncpg.Connection, run_id: int, request_id: str,
                        at: dt.datetime) -> int:
    """discrepancy.opened for every discrepancy of `run_id` (just inserted by its match, in
    this transaction); the events written."""
    if not outbox.enabled():
        return 0
    written, after = 0, 0
    while True:
        records = await conn.fetch(_SQL_OF_RUN, run_id, after, DISCREPANCY_EVENTS_BATCH_MAX)
        await outbox.write(conn, _rows(records, request_id, at))
        written += len(records)
        if len(records) < DISCREPANCY_EVENTS_BATCH_MAX:
            return written
        after = records[-1]["discrepancy_id"]


async def opened(conn: asyncpg.Connection, discrepancy_ids: Sequence[int], request_id: str,
                 at: dt.datetime) -> int:
    """discrepancy.opened for the discrepancies just inserted (a sweep batch's, at most a
    batch of items); the events written."""
    if not discrepancy_ids or not outbox.enabled():
        return 0
    records = await conn.fetch(_SQL_OF_IDS, list(discrepancy_ids))
    await outbox.write(conn, _rows(records, request_id, at))
    return len(records)


async def resolved(conn: asyncpg.Connection, platform_id: int, d: Discrepancy,
                   resolution_id: int, request_id: str, at: dt.datetime) -> None:
    """discrepancy.resolved: `d` as its approval left it (RESOLVED by `resolution_id`)."""
    after = dataclasses.replace(d, state=DiscrepancyState.RESOLVED, resolution_id=resolution_id)
    await outbox.write_one(conn, platform_id, EventType.DISCREPANCY_RESOLVED, d.discrepancy_id,
                           request_id, after, at)
