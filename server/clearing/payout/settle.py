"""Applying the bank's results (from submit, query or callbacks, in any order, any number of
times, from any process) to the bank transfers, their attempts, their payouts and the ledger:
`Settler`, and the settling of a payout once a transfer's result is final. The whole
protocol (states, why nothing is paid twice, frozen accounts, retry rounds) is the
docstring of `clearing.payout.worker`, whose loop calls the Settler."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import asyncpg

from clearing.events.model import EventType
from clearing.payout import events as payout_events
from clearing.config import WorkerSettings
from clearing.db import sql_list
from clearing.errors import ClearingError, invariant
from clearing.ledger.model import Mode
from clearing.payout.bank import BankResult, BankState
from clearing.payout.claim import Job
from clearing.payout.lifecycle import IN_FLIGHT, pending_posting
from clearing.limits import FAILURE_MESSAGE_LEN_MAX
from clearing.payout.model import PayoutState, TransferState
from clearing.reasons import Reason

# The worker's logger: what goes wrong applying a result is the worker's to report (its
# operators and the chaos test read this name).
log = logging.getLogger("clearing.payout.worker")

FAILURE_CODE_LEN_MAX = 64
REASON_RETRIES_EXHAUSTED = Reason.BANK_RETRIES_EXHAUSTED
# The state list as SQL text: the queries below are built once at import (clearing.db.sql_list).
_IN_FLIGHT_SQL = sql_list(IN_FLIGHT)


def retry_delay_ms(settings: WorkerSettings, failed_in_round: int) -> int:
    """Backoff before retry n (1-based) of a round: base * 2^(n-1)."""
    invariant(failed_in_round >= 1, "a retry follows a failure")
    return settings.retry_backoff_ms * (1 << (failed_in_round - 1))


_SQL_ATTEMPT = """
SELECT a.bank_transfer_id, a.attempt_number, a.state AS attempt_state,
       t.payout_id, t.sequence, t.amount_minor, t.state AS transfer_state, t.attempt_count,
       t.idempotency_key AS current_key,
       p.platform_id, p.hold_transfer_id, p.fee_transfer_id, p.state AS payout_state
FROM bank_transfer_attempts a
JOIN bank_transfers t ON t.bank_transfer_id = a.bank_transfer_id
JOIN payouts p ON p.payout_id = t.payout_id
WHERE a.idempotency_key = $1
"""
_SQL_LOCK_TRANSFER = """
SELECT state, attempt_count, idempotency_key FROM bank_transfers
WHERE bank_transfer_id = $1 FOR UPDATE
"""
_SQL_LOCK_PAYOUT = "SELECT state FROM payouts WHERE payout_id = $1 FOR UPDATE"
_SQL_FINISH_ATTEMPT = f"""
UPDATE bank_transfer_attempts
SET state = $2, bank_reference = CASE WHEN $3 = '' THEN bank_reference ELSE $3 END,
    failure_code = $4, failure_message = $5, finished_at = $6
WHERE idempotency_key = $1 AND state IN ({_IN_FLIGHT_SQL})
RETURNING attempt_number
"""
_SQL_TRANSFER_SUCCEEDED = f"""
UPDATE bank_transfers SET state = {TransferState.SUCCEEDED:d}, finished_at = $2,
       next_attempt_at = NULL
WHERE bank_transfer_id = $1 AND state IN ({_IN_FLIGHT_SQL})
RETURNING amount_minor
"""
_SQL_TRANSFER_RETRY = f"""
UPDATE bank_transfers SET state = {TransferState.QUEUED:d}, next_attempt_at = $2
WHERE bank_transfer_id = $1 AND state IN ({_IN_FLIGHT_SQL})
"""
_SQL_TRANSFER_FAILED = f"""
UPDATE bank_transfers SET state = {TransferState.FAILED:d}, finished_at = $2,
       next_attempt_at = NULL
WHERE bank_transfer_id = $1 AND state IN ({_IN_FLIGHT_SQL})
"""
_SQL_PAID = """
UPDATE payouts SET paid_minor = paid_minor + $2, updated_at = $3 WHERE payout_id = $1
"""
_SQL_TRANSFER_COUNTS = f"""
SELECT count(*) FILTER (WHERE state = {TransferState.SUCCEEDED:d}) AS succeeded,
       count(*) FILTER (WHERE state = {TransferState.FAILED:d}) AS failed,
       count(*) AS total
FROM bank_transfers WHERE payout_id = $1
"""
_SQL_PAYOUT_SUCCEEDED = f"""
UPDATE payouts SET state = {PayoutState.SUCCEEDED:d}, finished_at = $2, updated_at = $2,
       failure_reason = '', failure_message = ''
WHERE payout_id = $1 AND state = {PayoutState.SUBMITTED:d}
"""
_SQL_PAYOUT_MANUAL_REVIEW = f"""
UPDATE payouts SET state = {PayoutState.MANUAL_REVIEW:d}, failure_reason = $2, failure_message = $3,
       updated_at = $4
WHERE payout_id = $1 AND state = {PayoutState.SUBMITTED:d}
"""
_SQL_LAST_FAILURE = f"""
SELECT a.failure_code, a.failure_message FROM bank_transfer_attempts a
JOIN bank_transfers t ON t.bank_transfer_id = a.bank_transfer_id
WHERE t.payout_id = $1 AND a.state = {TransferState.FAILED:d}
ORDER BY a.finished_at DESC, a.attempt_number DESC LIMIT 1
"""
# A send blocked by the account's status: a FAILED transfer whose current attempt is still in
# doubt (kept, with the refusal as its failure code, for the query after approval).
_SQL_BLOCKED = f"""
SELECT a.failure_code, a.failure_message FROM bank_transfer_attempts a
JOIN bank_transfers t ON t.bank_transfer_id = a.bank_transfer_id
                     AND t.idempotency_key = a.idempotency_key
WHERE t.payout_id = $1 AND t.state = {TransferState.FAILED:d} AND a.state IN ({_IN_FLIGHT_SQL})
  AND a.failure_code <> ''
ORDER BY t.sequence LIMIT 1
"""
_SQL_ATTEMPT_BLOCKED = f"""
UPDATE bank_transfer_attempts
SET state = {TransferState.UNKNOWN:d}, failure_code = $2, failure_message = $3
WHERE idempotency_key = $1 AND state IN ({_IN_FLIGHT_SQL})
RETURNING attempt_number
"""
# "No answer yet" (PROCESSING: SUBMITTED) and "no answer at all" (a timeout: UNKNOWN) for the
# transfer, then its attempt, while the attempt is still the transfer's current one. The
# transfer row is locked first, as everywhere (transfer, then payout, then attempt).
_SQL_TRANSFER_IN_DOUBT = f"""
UPDATE bank_transfers SET state = $3, next_attempt_at = $4
WHERE bank_transfer_id = $1 AND idempotency_key = $2 AND state IN ({_IN_FLIGHT_SQL})
RETURNING 1
"""
_SQL_ATTEMPT_IN_DOUBT = f"""
UPDATE bank_transfer_attempts SET state = $2
WHERE idempotency_key = $1 AND state IN ({_IN_FLIGHT_SQL})
"""


class Settler:
    """Applies bank results to the database and the ledger; safe to call any number of
    times, concurrently, from any process (see the docstring of
    `clearing.payout.worker`)."""

    def __init__(self, deps: Any, settings: WorkerSettings) -> None:
        self._pool: asyncpg.Pool = deps.pool
        self._writer = deps.writer
        self._clock = deps.clock
        self._settings = settings

    async def apply(self, result: BankResult) -> None:
        """Apply one result of the bank (from submit, query or a callback)."""
        if result.state is BankState.SUCCEEDED:
            await self._succeeded(result)
        elif result.state is BankState.FAILED:
            await self._failed(result)
        elif result.state is BankState.PROCESSING:
            await self._processing(result)
        # NOT_FOUND is the caller's to handle (resubmit with the same key)

    async def _attempt(self, key: str) -> asyncpg.Record | None:
        row = await self._pool.fetchrow(_SQL_ATTEMPT, key)
        if row is None:
            log.warning("bank result for an unknown idempotency key",
                        extra={"idempotency_key": key})
        return row

    async def _succeeded(self, result: BankResult) -> None:
        row = await self._attempt(result.idempotency_key)
        if row is None or row["attempt_state"] not in IN_FLIGHT:
            if row is not None and row["attempt_state"] == TransferState.FAILED:
                log.critical("bank reports SUCCEEDED for an attempt it failed",
                             extra={"idempotency_key": result.idempotency_key})
            return  # duplicate or unknown: nothing to do
        if row["transfer_state"] not in IN_FLIGHT:
            self._waiting(row, result)
            return
        await self._post_ledger(row)  # before marking: a replay is answered, never re-posted
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            transfer = await conn.fetchrow(_SQL_LOCK_TRANSFER, row["bank_transfer_id"])
            await conn.fetchrow(_SQL_LOCK_PAYOUT, row["payout_id"])
            if transfer["state"] not in IN_FLIGHT:  # its send was blocked meanwhile
                self._waiting(row, result)
                return
            done = await conn.fetchval(_SQL_FINISH_ATTEMPT, result.idempotency_key,
                                       int(TransferState.SUCCEEDED), result.bank_reference,
                                       "", "", now)
            if done is None:
                return  # another delivery of this result got here first
            amount = await conn.fetchval(_SQL_TRANSFER_SUCCEEDED, row["bank_transfer_id"], now)
            invariant(amount == row["amount_minor"],
                      f"bank transfer {row['bank_transfer_id']} was not in flight")
            await conn.execute(_SQL_PAID, row["payout_id"], amount, now)
            await _settle_payout(conn, row["payout_id"], now)

    async def _post_ledger(self, row: asyncpg.Record) -> None:
        """Post this transfer's slice of the hold and, if any, the whole fee."""
        platform_id, payout_id = row["platform_id"], row["payout_id"]
        await self._writer.submit(pending_posting(
            platform_id, payout_id, f"t{row['sequence']}:post", Mode.POST_PENDING,
            row["hold_transfer_id"], row["amount_minor"]))
        if row["fee_transfer_id"]:
            fee = await self._pool.fetchval(
                "SELECT amount FROM transfers WHERE transfer_id = $1", row["fee_transfer_id"])
            invariant(fee is not None, f"payout {payout_id} fee hold not found")
            await self._writer.submit(pending_posting(
                platform_id, payout_id, "fee:post", Mode.POST_PENDING,
                row["fee_transfer_id"], fee))

    async def _failed(self, result: BankResult) -> None:
        row = await self._attempt(result.idempotency_key)
        if row is None or row["attempt_state"] not in IN_FLIGHT:
            return
        if row["transfer_state"] not in IN_FLIGHT:
            self._waiting(row, result)
            return
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            transfer = await conn.fetchrow(_SQL_LOCK_TRANSFER, row["bank_transfer_id"])
            await conn.fetchrow(_SQL_LOCK_PAYOUT, row["payout_id"])
            if transfer["state"] not in IN_FLIGHT:
                self._waiting(row, result)
                return
            done = await conn.fetchval(
                _SQL_FINISH_ATTEMPT, result.idempotency_key, int(TransferState.FAILED),
                result.bank_reference, result.failure_code[:FAILURE_CODE_LEN_MAX],
                result.failure_message[:FAILURE_MESSAGE_LEN_MAX], now)
            if done is None:
                return
            invariant(transfer["idempotency_key"] == result.idempotency_key,
                      "a FAILED result for an attempt that is not the transfer's current one")
            failed_in_round = transfer["attempt_count"] % self._settings.attempts_per_round
            if failed_in_round:  # retries remain in this round
                delay = retry_delay_ms(self._settings, failed_in_round)
                await conn.execute(_SQL_TRANSFER_RETRY, row["bank_transfer_id"],
                                   now + dt.timedelta(milliseconds=delay))
                return
            await conn.execute(_SQL_TRANSFER_FAILED, row["bank_transfer_id"], now)
            await _settle_payout(conn, row["payout_id"], now)

    @staticmethod
    def _waiting(row: asyncpg.Record, result: BankResult) -> None:
        """A final result for an attempt in doubt whose transfer is not in flight: its send
        was blocked by the account's status (`clearing.payout.worker`, "Frozen accounts"). Not
        applied now: the query after ApprovePayout applies it. A payout rejected meanwhile
        cannot take it any more, which matters only if the bank paid."""
        paid_after_rejection = (result.state is BankState.SUCCEEDED
                                and row["payout_state"] == PayoutState.FAILED)
        log.log(logging.CRITICAL if paid_after_rejection else logging.INFO,
                "bank result for a transfer whose send was blocked: left for the query "
                "after approval", extra={"idempotency_key": result.idempotency_key,
                                         "bank_state": result.state.name})

    async def _processing(self, result: BankResult) -> None:
        """The bank has it but no result yet: wait for the callback, query after the lease."""
        row = await self._attempt(result.idempotency_key)
        if row is None or row["attempt_state"] not in IN_FLIGHT:
            return
        later = self._clock.now() + dt.timedelta(milliseconds=self._settings.stuck_after_ms)
        await self._in_doubt(row["bank_transfer_id"], result.idempotency_key,
                             TransferState.SUBMITTED, later)

    async def unknown(self, job: Job) -> None:
        """No answer from the bank: query it (never resend blindly) after a short delay."""
        later = self._clock.now() + dt.timedelta(milliseconds=self._settings.retry_backoff_ms)
        await self._in_doubt(job.bank_transfer_id, job.order.idempotency_key,
                             TransferState.UNKNOWN, later)

    async def not_sent(self, job: Job, refusal: ClearingError) -> None:
        """The account may not send (frozen or closed, `clearing.ledger.status`): nothing
        goes to the bank. The transfer ends FAILED (no retry: a retry would meet the same
        account); its attempt stays in doubt (UNKNOWN, the refusal's reason as failure
        code) and keeps its key, which the next round after ApprovePayout queries first
        (`clearing.payout.worker`, "Frozen accounts"). The payout goes to MANUAL_REVIEW with that
        reason once none of its transfers is in flight; its funds stay held."""
        now = self._clock.now()
        message = f"not sent to the bank: {refusal.message}"
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.fetchrow(_SQL_LOCK_TRANSFER, job.bank_transfer_id)
            await conn.fetchrow(_SQL_LOCK_PAYOUT, job.payout_id)
            done = await conn.fetchval(
                _SQL_ATTEMPT_BLOCKED, job.order.idempotency_key,
                refusal.reason[:FAILURE_CODE_LEN_MAX], message[:FAILURE_MESSAGE_LEN_MAX])
            if done is None:  # no longer this worker's to decide (a result came meanwhile)
                return
            await conn.execute(_SQL_TRANSFER_FAILED, job.bank_transfer_id, now)
            await _settle_payout(conn, job.payout_id, now)
        log.warning("payout transfer not sent: the account may not send",
                    extra={"idempotency_key": job.order.idempotency_key,
                           "reason": refusal.reason})

    async def _in_doubt(self, bank_transfer_id: int, key: str, state: TransferState,
                        next_attempt_at: dt.datetime) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_SQL_TRANSFER_IN_DOUBT, bank_transfer_id, key, int(state),
                                   next_attempt_at):
                await conn.execute(_SQL_ATTEMPT_IN_DOUBT, key, int(state))


async def _settle_payout(conn: asyncpg.Connection, payout_id: int, now: dt.datetime) -> None:
    """After a transfer's final result (payout row locked): SUCCEEDED when all transfers
    succeeded; MANUAL_REVIEW when one failed for good and none is still in flight, with
    failure reason ACCOUNT_FROZEN / ACCOUNT_CLOSED if a send was blocked by the account's
    status (approval waits for the account), else BANK_RETRIES_EXHAUSTED."""
    counts = await conn.fetchrow(_SQL_TRANSFER_COUNTS, payout_id)
    if counts["succeeded"] == counts["total"]:
        await conn.execute(_SQL_PAYOUT_SUCCEEDED, payout_id, now)
        await payout_events.record(conn, [payout_id], EventType.PAYOUT_SUCCEEDED)
    elif counts["succeeded"] + counts["failed"] == counts["total"]:
        last = await conn.fetchrow(_SQL_BLOCKED, payout_id)
        reason = last["failure_code"] if last else REASON_RETRIES_EXHAUSTED
        last = last or await conn.fetchrow(_SQL_LAST_FAILURE, payout_id)
        message = f"{last['failure_code']}: {last['failure_message']}" if last else ""
        await conn.execute(_SQL_PAYOUT_MANUAL_REVIEW, payout_id, reason,
                           message[:FAILURE_MESSAGE_LEN_MAX], now)
        await payout_events.record(conn, [payout_id], EventType.PAYOUT_MANUAL_REVIEW)
