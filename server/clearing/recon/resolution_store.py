"""How resolutions are stored (migration 0013): recon_resolutions (a proposal, written
once, and its review, written once), recon_resolution_events (every step; the table
refuses UPDATE and DELETE), and the discrepancy's state and latest resolution."""

from __future__ import annotations

import datetime as dt

import asyncpg

from clearing.errors import invariant
from clearing.recon.model import (Discrepancy, DiscrepancyState, Resolution, ResolutionAction,
                                  ResolutionEvent, ResolutionState, ResolutionStep)
from clearing.recon.store import discrepancy, lock_day

_SQL_INSERT = f"""
INSERT INTO recon_resolutions (platform_id, discrepancy_id, action, state, note, amount_minor,
    currency_code, order_message, proposed_by_key_id, request_id, created_at)
VALUES ($1, $2, $3, {ResolutionState.PROPOSED:d}, $4, $5, $6, $7, $8, $9, $10)
RETURNING resolution_id
"""
_SQL_EVENT = """
INSERT INTO recon_resolution_events (platform_id, resolution_id, step, key_id, request_id,
    note, transfer_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_SQL_REVIEW = f"""
UPDATE recon_resolutions SET state = $3, reviewed_by_key_id = $4, review_note = $5,
    transfer_id = $6, split_id = $7, reviewed_at = $8
WHERE resolution_id = $1 AND platform_id = $2 AND state = {ResolutionState.PROPOSED:d}
"""
_SQL_DISCREPANCY_STATE = """
UPDATE recon_discrepancies SET state = $3, resolution_id = $4
WHERE discrepancy_id = $1 AND platform_id = $2
"""
_SQL_NEXT_ATTEMPT = f"""
UPDATE recon_resolutions SET attempt = attempt + 1
WHERE resolution_id = $1 AND platform_id = $2 AND attempt = $3
  AND state = {ResolutionState.PROPOSED:d}
"""


async def lock_discrepancy(conn: asyncpg.Connection, platform_id: int,
                           discrepancy_id: int) -> Discrepancy | None:
    row = await conn.fetchrow("SELECT * FROM recon_discrepancies WHERE discrepancy_id = $1"
                              " AND platform_id = $2 FOR UPDATE", discrepancy_id, platform_id)
    return None if row is None else discrepancy(row)


async def channel_of_run(conn: asyncpg.Connection, run_id: int) -> str:
    return await conn.fetchval("SELECT channel FROM recon_runs WHERE run_id = $1", run_id)


async def lock_active_run(conn: asyncpg.Connection, platform_id: int, run_id: int) -> bool:
    """Take the lock of the run's channel and day (the one imports and settlements take:
    no import supersedes its statement meanwhile); whether its statement is active."""
    row = await conn.fetchrow(
        "SELECT r.channel, r.settlement_date FROM recon_runs r WHERE r.run_id = $1", run_id)
    invariant(row is not None, f"run {run_id} of a discrepancy is missing")
    await lock_day(conn, platform_id, row["channel"], row["settlement_date"])
    return await conn.fetchval(
        "SELECT s.superseded_by IS NULL FROM recon_runs r JOIN recon_statements s"
        " USING (statement_id) WHERE r.run_id = $1", run_id)


async def order_is_split(conn: asyncpg.Connection, platform_id: int, order_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT true FROM splits WHERE platform_id = $1 AND order_id = $2 LIMIT 1",
        platform_id, order_id))


async def insert(conn: asyncpg.Connection, platform_id: int, d: Discrepancy,
                 action: ResolutionAction, note: str, amount_minor: int, currency_code: str,
                 order_message: bytes | None, key_id: int, request_id: str,
                 now: dt.datetime) -> int:
    """A PROPOSED resolution, its PROPOSED event, and its discrepancy RESOLUTION_PROPOSED."""
    resolution_id = await conn.fetchval(
        _SQL_INSERT, platform_id, d.discrepancy_id, int(action), note, amount_minor,
        currency_code, order_message, key_id, request_id, now)
    await event(conn, platform_id, resolution_id, ResolutionStep.PROPOSED, key_id, request_id,
                note, 0, now)
    await set_discrepancy(conn, platform_id, d.discrepancy_id,
                          DiscrepancyState.RESOLUTION_PROPOSED, resolution_id)
    return resolution_id


async def event(conn: asyncpg.Connection, platform_id: int, resolution_id: int,
                step: ResolutionStep, key_id: int, request_id: str, note: str,
                transfer_id: int, now: dt.datetime) -> None:
    await conn.execute(_SQL_EVENT, platform_id, resolution_id, int(step), key_id, request_id,
                       note, transfer_id, now)


async def set_discrepancy(conn: asyncpg.Connection, platform_id: int, discrepancy_id: int,
                          state: DiscrepancyState, resolution_id: int) -> None:
    status = await conn.execute(_SQL_DISCREPANCY_STATE, discrepancy_id, platform_id,
                                int(state), resolution_id)
    invariant(status == "UPDATE 1", f"discrepancy {discrepancy_id} updated: {status}")


async def review(conn: asyncpg.Connection, platform_id: int, r: Resolution,
                 state: ResolutionState, key_id: int, note: str, transfer_id: int,
                 split_id: int, now: dt.datetime) -> None:
    """The review, written once (the row must still be PROPOSED)."""
    status = await conn.execute(_SQL_REVIEW, r.resolution_id, platform_id, int(state), key_id,
                                note, transfer_id, split_id, now)
    invariant(status == "UPDATE 1", f"resolution {r.resolution_id} reviewed: {status}")


async def next_attempt(conn: asyncpg.Connection, platform_id: int, resolution_id: int,
                       attempt: int) -> bool:
    """Move a PROPOSED resolution's posting to its next request id, once per attempt."""
    return await conn.execute(_SQL_NEXT_ATTEMPT, resolution_id, platform_id,
                              attempt) == "UPDATE 1"


def _resolution(r: asyncpg.Record, events: tuple[ResolutionEvent, ...]) -> Resolution:
    return Resolution(
        r["resolution_id"], r["discrepancy_id"], ResolutionAction(r["action"]),
        ResolutionState(r["state"]), r["note"], r["amount_minor"], r["currency_code"],
        None if r["order_message"] is None else bytes(r["order_message"]),
        r["proposed_by_key_id"], r["request_id"], r["attempt"], r["reviewed_by_key_id"],
        r["review_note"], r["transfer_id"], r["split_id"], r["created_at"], events)


async def load(conn: asyncpg.Connection, platform_id: int, resolution_id: int, *,
               lock: bool = False) -> Resolution | None:
    """A resolution with its events (`lock`: the row FOR UPDATE)."""
    row = await conn.fetchrow(
        "SELECT * FROM recon_resolutions WHERE resolution_id = $1 AND platform_id = $2"
        + (" FOR UPDATE" if lock else ""), resolution_id, platform_id)
    if row is None:
        return None
    events = tuple(ResolutionEvent(ResolutionStep(e["step"]), e["key_id"], e["request_id"],
                                   e["note"], e["transfer_id"], e["created_at"])
                   for e in await conn.fetch(
                       "SELECT * FROM recon_resolution_events WHERE resolution_id = $1"
                       " ORDER BY event_id", resolution_id))
    return _resolution(row, events)
