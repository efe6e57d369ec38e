"""Risk events in PostgreSQL: written by the splits sink in the transaction of their split
(with the receivers' inflows, the counters' truth), or by the daily swing job; read with
filters and pages; their steps are the audit trail (rows are only added, never deleted)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

from clearing.events import outbox
from clearing.events.model import EventType
from clearing.errors import NotFound
from clearing.reasons import Reason
from clearing.risk.check import RiskNote
from clearing.risk.model import (EventStep, RiskDecision, RiskEvent, RiskEventState,
                                 RiskRule)

STEP_OPENED = "opened"
STEP_PROPOSED = "proposed"
STEP_RELEASED = "released"
STEP_REJECTED = "rejected"

_SQL_INFLOWS = """
INSERT INTO risk_inflows (platform_id, account_id, paid_at, split_id, order_id,
                          currency_code, amount_minor)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::bigint[], $5::text[],
                     $6::text[], $7::bigint[])
"""
_SQL_EVENTS = f"""
WITH e AS (
  INSERT INTO risk_events (platform_id, rule, state, account_id, split_id, order_id,
                           currency_code, amount_minor, held_minor, observed, limit_value,
                           evidence, created_at, updated_at)
  SELECT u.p, u.rule, {RiskEventState.OPEN:d}, u.a, u.s, u.o, u.c, u.amount, u.held, u.obs, u.lim, u.ev::jsonb,
         $12, $12
  FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[], $5::text[],
              $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[])
       AS u(p, rule, a, s, o, c, amount, held, obs, lim, ev)
  RETURNING event_id
)
INSERT INTO risk_event_steps (event_id, step, key_id, note, decision, request_id, at)
SELECT event_id, 'opened', 0, '', 0, '', $12 FROM e
RETURNING event_id
"""


async def write_from_splits(conn: asyncpg.Connection,
                            splits: Sequence[tuple[int, int, str, int, RiskNote]],
                            at: dt.datetime) -> None:
    """The inflows and events of committed splits: (platform, split id, order id, paid
    time in ns, note) each. Runs in the splits' transaction."""
    inflows: list[list] = [[] for _ in range(7)]
    events: list[list] = [[] for _ in range(11)]
    for platform_id, split_id, order_id, paid_ns, note in splits:
        paid = dt.datetime.fromtimestamp(paid_ns / 1e9, dt.timezone.utc)
        for account_id, amount in note.shares.items():
            for col, value in zip(inflows, (platform_id, account_id, paid, split_id, order_id,
                                            note.currency_code, amount)):
                col.append(value)
        for flag in note.flags:
            hit = flag.hits[0]
            for col, value in zip(events, (
                    platform_id, int(hit.rule), flag.account_id, split_id, order_id,
                    note.currency_code, flag.amount_minor, flag.held_minor, hit.observed,
                    hit.limit, flag.evidence_json)):
                col.append(value)
    if inflows[0]:
        await conn.execute(_SQL_INFLOWS, *inflows)
    if events[0]:
        opened = await conn.fetch(_SQL_EVENTS, *events, at)
        if outbox.enabled():  # risk_event.opened, in the splits' transaction
            by_id = {r["event_id"] for r in opened}
            rows = []
            for platform_id, event_id in await conn.fetch(
                    "SELECT platform_id, event_id FROM risk_events"
                    " WHERE event_id = ANY($1::bigint[]) ORDER BY event_id", sorted(by_id)):
                event = await get(conn, platform_id, event_id)
                rows.append(outbox.Row(platform_id, EventType.RISK_EVENT_OPENED,
                                       str(event_id), "", event, at))
            await outbox.write(conn, rows)


_COLUMNS = ("event_id, rule, state, account_id, split_id, order_id, currency_code,"
            " amount_minor, held_minor, observed, limit_value, evidence::text AS evidence,"
            " decision, proposed_by, created_at")


def _event(r: asyncpg.Record, steps: tuple[EventStep, ...] = ()) -> RiskEvent:
    return RiskEvent(r["event_id"], RiskRule(r["rule"]), RiskEventState(r["state"]),
                     r["account_id"], r["split_id"], r["order_id"], r["currency_code"],
                     r["amount_minor"], r["held_minor"], r["observed"], r["limit_value"],
                     r["evidence"], RiskDecision(r["decision"]), r["proposed_by"],
                     r["created_at"], steps)


async def get(conn: asyncpg.Connection, platform_id: int, event_id: int, *,
              lock: bool = False) -> RiskEvent:
    """An event with its steps; NotFound RISK_EVENT_NOT_FOUND."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM risk_events WHERE platform_id = $1 AND event_id = $2"
        + (" FOR UPDATE" if lock else ""), platform_id, event_id)
    if row is None:
        raise NotFound(f"no risk event {event_id}", reason=Reason.RISK_EVENT_NOT_FOUND,
                       metadata={"event_id": str(event_id)})
    steps = await conn.fetch(
        "SELECT step, key_id, note, at FROM risk_event_steps WHERE event_id = $1"
        " ORDER BY at, step", event_id)
    return _event(row, tuple(EventStep(s["step"], s["key_id"], s["note"], s["at"])
                             for s in steps))


async def list_events(conn: asyncpg.Connection, platform_id: int, *, state: int, rule: int,
                      account_id: int, before_id: int, limit: int) -> list[RiskEvent]:
    """Events newest first, with ids below `before_id` (0: from the newest)."""
    where, args = ["platform_id = $1"], [platform_id]
    for column, value in (("state", state), ("rule", rule), ("account_id", account_id)):
        if value:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if before_id:
        args.append(before_id)
        where.append(f"event_id < ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM risk_events WHERE {' AND '.join(where)}"
                            f" ORDER BY event_id DESC LIMIT ${len(args)}", *args)
    return [_event(r) for r in rows]


async def add_step(conn: asyncpg.Connection, event_id: int, step: str, key_id: int,
                   note: str, decision: RiskDecision, request_id: str) -> None:
    await conn.execute(
        "INSERT INTO risk_event_steps (event_id, step, key_id, note, decision, request_id)"
        " VALUES ($1, $2, $3, $4, $5, $6)", event_id, step, key_id, note, int(decision),
        request_id)


async def open_count(conn: asyncpg.Connection) -> int:
    """Events waiting for a reviewer, every platform (the metric)."""
    return await conn.fetchval(
        "SELECT count(*) FROM risk_events WHERE state IN"
        f" ({RiskEventState.OPEN:d}, {RiskEventState.RESOLUTION_PROPOSED:d})")
