"""Claiming due bank transfers (the outbox step of the payout protocol, whose whole story is
the docstring of `clearing.payout.worker`): one short transaction takes due transfers with
`FOR UPDATE SKIP LOCKED`, records each new attempt SUBMITTED with its key before anything
is sent, and leases the rows for `stuck_after_ms`. It owns `Job`, what a claimed transfer
asks of the worker: submit a new attempt, or query the bank about the one in doubt."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from clearing.events.model import EventType
from clearing.payout import events as payout_events
from clearing.config import WorkerSettings
from clearing.db import sql_list
from clearing.errors import invariant
from clearing.payout.bank import BankOrder
from clearing.payout.lifecycle import IN_FLIGHT
from clearing.payout.model import PayoutState, TransferState, attempt_key

# Transfers the worker claims when due (bank_transfers_due_idx has the same predicate), of
# payouts that may reach the bank.
DUE = (TransferState.QUEUED, *IN_FLIGHT)
AT_BANK = (PayoutState.QUEUED, PayoutState.SUBMITTED)
# The state lists as SQL text: the queries below are built once at import (clearing.db.sql_list).
_DUE_SQL, _AT_BANK_SQL = sql_list(DUE), sql_list(AT_BANK)


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed transfer and what to do with it: SUBMIT a new attempt, or QUERY the
    bank about the current one (then resubmit it with the same key if the bank never got
    it)."""

    bank_transfer_id: int
    payout_id: int
    query_first: bool
    order: BankOrder
    account_id: int  # the ledger account the money leaves (the payout's account)


_SQL_CLAIM = f"""
SELECT t.bank_transfer_id, t.payout_id, t.sequence, t.amount_minor, t.currency_code,
       t.state, t.attempt_count, t.idempotency_key, p.memo, p.account_id,
       b.bank_code, b.account_number, b.holder_name, b.account_type
FROM bank_transfers t
JOIN payouts p ON p.payout_id = t.payout_id
JOIN bank_accounts b ON b.bank_account_id = p.bank_account_id
WHERE t.state IN ({_DUE_SQL}) AND t.next_attempt_at <= $1 AND p.state IN ({_AT_BANK_SQL})
ORDER BY t.next_attempt_at
LIMIT $2
FOR UPDATE OF t SKIP LOCKED
"""
_SQL_NEW_ATTEMPTS = f"""
INSERT INTO bank_transfer_attempts (bank_transfer_id, attempt_number, idempotency_key, state,
                                    submitted_at)
SELECT u.id, u.n, u.k, {TransferState.SUBMITTED:d}, $4
FROM unnest($1::bigint[], $2::integer[], $3::text[]) AS u(id, n, k)
"""
_SQL_LEASE = f"""
UPDATE bank_transfers AS t
SET state = CASE WHEN t.state = {TransferState.QUEUED:d} THEN {TransferState.SUBMITTED:d}
                 ELSE t.state END,
    attempt_count = u.n, idempotency_key = u.k, next_attempt_at = $4
FROM unnest($1::bigint[], $2::integer[], $3::text[]) AS u(id, n, k)
WHERE t.bank_transfer_id = u.id
"""
_SQL_PAYOUTS_SUBMITTED = f"""
UPDATE payouts SET state = {PayoutState.SUBMITTED:d}, updated_at = $2
WHERE payout_id = ANY($1::bigint[]) AND state = {PayoutState.QUEUED:d}
RETURNING payout_id
"""


def _job(row: asyncpg.Record) -> tuple[Job, int, str]:
    """The job for a claimed row, with the attempt number and key it uses."""
    query_first = row["state"] != TransferState.QUEUED
    attempt = row["attempt_count"] if query_first else row["attempt_count"] + 1
    key = row["idempotency_key"] if query_first else attempt_key(
        row["payout_id"], row["sequence"], attempt)
    invariant(bool(key), f"bank transfer {row['bank_transfer_id']} in flight without a key")
    order = BankOrder(idempotency_key=key, bank_code=row["bank_code"],
                      account_number=row["account_number"], holder_name=row["holder_name"],
                      account_type=row["account_type"], amount_minor=row["amount_minor"],
                      currency_code=row["currency_code"].strip(), memo=row["memo"])
    return (Job(row["bank_transfer_id"], row["payout_id"], query_first, order,
                row["account_id"]), attempt, key)


async def claim(pool: asyncpg.Pool, now: dt.datetime, settings: WorkerSettings,
                limit: int) -> list[Job]:
    """Claim up to `limit` due transfers in one short transaction; new attempts are
    recorded SUBMITTED before anything is sent (see the docstring of `clearing.payout.worker`)."""
    invariant(1 <= limit <= settings.claim_batch_max, "claim limit out of range")
    lease_until = now + dt.timedelta(milliseconds=settings.stuck_after_ms)
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_SQL_CLAIM, now, limit)
        if not rows:
            return []
        jobs, ids, attempts, keys, fresh = [], [], [], [], []
        for row in rows:
            job, attempt, key = _job(row)
            jobs.append(job)
            ids.append(job.bank_transfer_id), attempts.append(attempt), keys.append(key)
            if not job.query_first:
                fresh.append((job.bank_transfer_id, attempt, key))
        if fresh:
            await conn.execute(_SQL_NEW_ATTEMPTS, [f[0] for f in fresh], [f[1] for f in fresh],
                               [f[2] for f in fresh], now)
        await conn.execute(_SQL_LEASE, ids, attempts, keys, lease_until)
        sent = await conn.fetch(_SQL_PAYOUTS_SUBMITTED, sorted({j.payout_id for j in jobs}),
                                now)
        await payout_events.record(conn, [r["payout_id"] for r in sent], EventType.PAYOUT_SENT)
    return jobs
