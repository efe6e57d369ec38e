"""A payout's events (clearing.events), written in the transaction of its state change:
the payout as the change left it."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from clearing.events import outbox
from clearing.payout import store


async def record(conn: asyncpg.Connection, payout_ids: Iterable[int], event_type: str,
                 request_id: str = "") -> None:
    """One `event_type` event per payout, read back after the change (same transaction)."""
    if not outbox.enabled():
        return
    ids = sorted(set(payout_ids))
    if not ids:
        return
    rows = await conn.fetch("SELECT payout_id, platform_id FROM payouts"
                            " WHERE payout_id = ANY($1::bigint[])", ids)
    events = []
    for r in rows:
        payout = await store.get_payout(conn, r["platform_id"], r["payout_id"])
        events.append(outbox.Row(r["platform_id"], event_type, str(r["payout_id"]),
                                 request_id, payout, payout.updated_at))
    await outbox.write(conn, events)
