"""The payout worker: it takes due bank transfers, submits them to the bank and settles their
results in the ledger, exactly once, with several server processes and a bank that fails,
times out and answers twice.

States: TransferState and PayoutState (clearing.payout.model, checked against payout.proto's
enums); the SQL here is built from their names (clearing.db.sql_list), never from numbers.

A bank transfer:
- QUEUED -> SUBMITTED: claimed; a new attempt (new key) is recorded before the bank call.
- SUBMITTED -> SUCCEEDED: the bank paid it (hold slice and fee posted first). Final.
- SUBMITTED -> QUEUED: the bank FAILED it and retries remain (due after the backoff).
- SUBMITTED -> FAILED: the bank FAILED it and the round's retries are spent; or a send
  (submit, or resend after NOT_FOUND) was not made because its account may not send: its
  current attempt then stays UNKNOWN, its key kept (see "Frozen accounts" below).
- SUBMITTED -> UNKNOWN: no answer (timeout); due again after retry_backoff_ms for a query.
- UNKNOWN / SUBMITTED past its lease -> query with the SAME key: SUCCEEDED or FAILED as
  above; PROCESSING -> SUBMITTED (wait for the callback, query after stuck_after_ms);
  NOT_FOUND -> resubmitted with the same key.
- FAILED -> QUEUED: retry_payout (`clearing.payout.lifecycle`: ApprovePayout of a
  MANUAL_REVIEW payout); FAILED ->
  UNKNOWN instead when its current attempt is still in doubt (a blocked send): queried
  first, with the same key.
- any but SUCCEEDED -> FAILED: fail_payout (`clearing.payout.lifecycle`: RejectPayout).

A payout (what the worker and the lifecycle's review actions change):
- QUEUED -> SUBMITTED: the first claim of one of its transfers.
- SUBMITTED -> SUCCEEDED: all its transfers SUCCEEDED.
- SUBMITTED -> MANUAL_REVIEW (BANK_RETRIES_EXHAUSTED, or ACCOUNT_FROZEN / ACCOUNT_CLOSED):
  a transfer FAILED for good and none of the others is still QUEUED, SUBMITTED or UNKNOWN.
  Funds stay held.
- MANUAL_REVIEW -> SUBMITTED: retry_payout. REQUESTED, PENDING_REVIEW, QUEUED (nothing at
  the bank yet) or MANUAL_REVIEW -> FAILED: fail_payout.

An attempt (bank_transfer_attempts) is SUBMITTED (UNKNOWN after a timeout or a blocked send)
until the bank gives its final answer, then SUCCEEDED or FAILED. Each attempt has its own bank-side
idempotency key `po{payout_id}-t{sequence}-a{attempt_number}`.

Why nothing is paid twice:

1. Outbox: the attempt row (SUBMITTED, with its key) is committed BEFORE the bank is called,
   in the same short transaction that claims the transfer (`FOR UPDATE SKIP LOCKED`: two
   processes never claim the same row). A claim also leases the row: `next_attempt_at` moves
   `stuck_after_ms` ahead, so no one else looks at it while this worker talks to the bank.
2. A new key (a new attempt, which the bank could pay again) is made only when the bank has
   answered FAILED for the previous one. After a timeout, a lost answer or a crash (an
   attempt left SUBMITTED or UNKNOWN past its lease), the bank is QUERIED with the same key:
   SUCCEEDED / FAILED are applied as if they had come from the submit; NOT_FOUND (it never
   reached the bank) is resubmitted with the SAME key, which the bank deduplicates. There is
   no other way to a new key: a send blocked by the account's status keeps its key too.
3. Results (from submit, query or callbacks, in any order, any number of times) are applied
   by conditional updates (`WHERE state IN IN_FLIGHT`, i.e. SUBMITTED or UNKNOWN) under the
   transfer's and then the payout's row lock: a second delivery finds the attempt final and
   does nothing.
4. The ledger is moved BEFORE the transfer is marked SUCCEEDED, with deterministic request
   ids (`\\x1fpayout:{id}:t{sequence}:post`, `\\x1fpayout:{id}:fee:post`): after a crash in
   between, the transfer is still in flight, is queried again, and the writer answers the
   repeated postings from their first result instead of posting twice. The ids start with
   the non-printable \\x1f (like claims), which client request ids can never contain, so a
   client can never take them first.

Ledger rules. RequestPayout holds the payout as PENDING transfers from the sub-account:
`hold_transfer_id` (the net) and `fee_transfer_id` (the fee; 0 if none). Each succeeded bank
transfer posts its own amount of the hold (a partial POST_PENDING); the fee is posted, whole,
with the first transfer that succeeds (every success submits the same fee posting; its
request id lets only the first one move money). fail_payout voids what is left of the hold;
the fee is voided only when nothing was paid (once money reached the bank the fee was
earned and is already posted). A payout goes to MANUAL_REVIEW only when none of its
transfers is in flight any more, so that a rejection never voids money the bank may still
pay. A failed payout whose release was cut short by a crash is finished by the worker's
repair sweep (the same deterministic void request ids).

Frozen accounts ("a frozen account never sends", `clearing.ledger.status`). Right before
every bank call that can send money (each submit, and each resend with the same key after
the bank answered NOT_FOUND), the worker reads the status of the account the payout debits.
Frozen or closed: nothing is sent; the transfer ends FAILED (no automatic retry) and its
attempt stays UNKNOWN with failure code ACCOUNT_FROZEN / ACCOUNT_CLOSED, so its key is not
abandoned: the bank never answered FAILED for it, and after a NOT_FOUND the original submit
may still reach the bank late. The payout goes to MANUAL_REVIEW with that reason once none
of its transfers is in flight, its funds still held. An approver retries it once the account
is active (ApprovePayout refuses while it is not): retry_payout makes such a transfer
UNKNOWN, so the next round QUERIES the kept key first and applies the bank's answer, or on
NOT_FOUND resubmits with that SAME key (after the status check again). A blocked first
submit is treated the same way, not given a new key: that its key never reached the bank
would rest on timing (a claim whose lease ran out while it waited could have been claimed,
queried and sent by another process meanwhile); keeping the key needs no such argument and
costs one query. A bank result for such a transfer while it waits (a late order's callback)
is not applied: the transfer is not in flight; the query after approval applies it. Or the
approver rejects the payout (the void is allowed on a frozen account: no money leaves).
Queries are not sends and go on.
A transfer the bank had already accepted when the account was frozen (one in flight, or a
freeze committed between the read and the call) is not recalled: the bank's answer is
applied as usual, and a success is booked (its POST_PENDING is `books_external`: the money
has left, and a ledger that refused to say so would only disagree with the bank).

Retries: a transfer gets 1 + retries_max attempts per round (`attempt_count` keeps counting
across rounds; a round ends when attempt_count is a multiple of 1 + retries_max); retry n of
a round waits retry_backoff_ms * 2^(n-1). retry_payout (ApprovePayout) starts a new round.
An attempt whose send was blocked is resumed after approval, not replaced: it keeps its
number, and so its place in its round.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from clearing import metrics
from clearing.config import WorkerSettings
from clearing.db import sql_list
from clearing.errors import ClearingError, InvariantViolation, invariant
from clearing.ledger import status
from clearing.ledger.model import Mode, PendingState
from clearing.payout.lifecycle import IN_FLIGHT, pending_posting, release_holds
from clearing.payout.model import (FAILURE_MESSAGE_LEN_MAX, PayoutState, TransferState,
                                   attempt_key)
from clearing.payout.bank import (BankConnector, BankOrder, BankResult, BankState,
                                  BankTimeout)
from clearing.reasons import Reason

log = logging.getLogger("clearing.payout.worker")

# Failed payouts looked at per repair sweep, and how often the sweep runs.
REPAIR_BATCH_MAX = 100
REPAIR_INTERVAL_S = 60.0
FAILURE_CODE_LEN_MAX = 64
# How long stop() lets in-flight bank calls finish before abandoning them (their attempts
# stay SUBMITTED and are queried after their lease).
STOP_GRACE_S = 5.0
REASON_RETRIES_EXHAUSTED = Reason.BANK_RETRIES_EXHAUSTED


# Transfers the worker claims when due (bank_transfers_due_idx has the same predicate), of
# payouts that may reach the bank.
DUE = (TransferState.QUEUED, *IN_FLIGHT)
AT_BANK = (PayoutState.QUEUED, PayoutState.SUBMITTED)
# The state lists as SQL text: the queries below are built once at import (clearing.db.sql_list).
_DUE_SQL, _AT_BANK_SQL = sql_list(DUE), sql_list(AT_BANK)
_IN_FLIGHT_SQL = sql_list(IN_FLIGHT)


def retry_delay_ms(settings: WorkerSettings, failed_in_round: int) -> int:
    """Backoff before retry n (1-based) of a round: base * 2^(n-1)."""
    invariant(failed_in_round >= 1, "a retry follows a failure")
    return settings.retry_backoff_ms * (1 << (failed_in_round - 1))


# ---- claiming ------------------------------------------------------------------------------

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
    recorded SUBMITTED before anything is sent (see the module docstring)."""
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
        await conn.execute(_SQL_PAYOUTS_SUBMITTED, sorted({j.payout_id for j in jobs}), now)
    return jobs


# ---- applying results ------------------------------------------------------------------------

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
    times, concurrently, from any process (see the module docstring)."""

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
        was blocked by the account's status (module docstring, "Frozen accounts"). Not
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
        (module docstring, "Frozen accounts"). The payout goes to MANUAL_REVIEW with that
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
    elif counts["succeeded"] + counts["failed"] == counts["total"]:
        last = await conn.fetchrow(_SQL_BLOCKED, payout_id)
        reason = last["failure_code"] if last else REASON_RETRIES_EXHAUSTED
        last = last or await conn.fetchrow(_SQL_LAST_FAILURE, payout_id)
        message = f"{last['failure_code']}: {last['failure_message']}" if last else ""
        await conn.execute(_SQL_PAYOUT_MANUAL_REVIEW, payout_id, reason,
                           message[:FAILURE_MESSAGE_LEN_MAX], now)


# ---- the worker ------------------------------------------------------------------------------

class PayoutWorker:
    """Claims due bank transfers and works them, `concurrency_max` at a time; runs in every
    server process (see the module docstring). `deps` has pool, writer and clock. The
    bank's own start/close belong to whoever made it.

    Without a bank (`bank` None: CLEARING_BANK_CONNECTOR=none) it claims nothing and sends
    nothing: payouts stay QUEUED (GetPayout's waiting_reason says why); only the repair
    sweep of failed payouts runs, which moves no money out."""

    def __init__(self, deps: Any, bank: BankConnector | None,
                 settings: WorkerSettings) -> None:
        self._pool: asyncpg.Pool = deps.pool
        self._clock = deps.clock
        self._bank = bank
        self._settings = settings
        self.settler = Settler(deps, settings)
        self._deps = deps
        self._task: asyncio.Task | None = None
        self._jobs: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        if bank is not None:
            bank.on_result(self._on_callback)

    def start(self) -> None:
        invariant(self._task is None, "payout worker started twice")
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="payout-worker")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop claiming; give in-flight bank calls `grace_s`, then abandon them (their
        attempts stay SUBMITTED and are queried after their lease)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        jobs = list(self._jobs)
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=grace_s)
            for job in pending:
                job.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    async def _run(self) -> None:
        last_repair = -REPAIR_INTERVAL_S
        poll_s = self._settings.poll_interval_ms / 1000.0
        while not self._stopping.is_set():
            if self._clock.monotonic() - last_repair >= REPAIR_INTERVAL_S:
                last_repair = self._clock.monotonic()
                await self._guard(repair_failed_payouts(self._deps), "repair sweep")
            free = self._settings.concurrency_max - len(self._jobs)
            claimed = 0
            if free > 0 and self._bank is not None:
                limit = min(free, self._settings.claim_batch_max)
                jobs = await self._guard(claim(self._pool, self._clock.now(), self._settings,
                                               limit), "claim") or []
                for job in jobs:
                    self._spawn(job)
                claimed = len(jobs)
                if claimed == limit:
                    continue  # more may be due: claim again at once
            if self._jobs and (free <= 0 or claimed):
                await asyncio.wait(list(self._jobs), timeout=poll_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(poll_s)

    async def _guard(self, coro, what: str):
        """Run a step of the loop; a database hiccup is logged and retried next poll."""
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except InvariantViolation:  # a bug: loudly; the transfer stays in flight, untouched
            log.critical("payout worker %s broke an invariant", what, exc_info=True)
            return None
        except Exception:  # noqa: BLE001 - the loop must survive; the rows wait for us
            log.exception("payout worker %s failed", what)
            return None

    def _spawn(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(
            self._guard(self.work(job), f"job {job.order.idempotency_key}"))
        self._jobs.add(task)
        metrics.PAYOUT_JOBS_IN_FLIGHT.inc()
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task) -> None:
        self._jobs.discard(task)
        metrics.PAYOUT_JOBS_IN_FLIGHT.dec()

    async def work(self, job: Job) -> None:
        """One claimed transfer: query first if its attempt is in doubt, then submit (a new
        attempt, or the same key again when the bank never got it), then apply."""
        if job.query_first:
            result = await self._call("query", self._bank.query(job.order.idempotency_key))
            if result is None:
                await self.settler.unknown(job)
                return
            if result.state is not BankState.NOT_FOUND:
                await self.settler.apply(result)
                return
        refusal = await self._send_refusal(job)  # read right before the call: each send
        if refusal is not None:
            await self.settler.not_sent(job, refusal)
            return
        result = await self._call("submit", self._bank.submit(job.order))
        if result is None or result.state is BankState.NOT_FOUND:
            await self.settler.unknown(job)
            return
        await self.settler.apply(result)

    async def _send_refusal(self, job: Job) -> ClearingError | None:
        """Why the job's account may not send money now (`clearing.ledger.status`), read
        from the database right before the bank call; None if it may."""
        account_status = await self._pool.fetchval(
            "SELECT status FROM accounts WHERE account_id = $1", job.account_id)
        invariant(account_status is not None, f"payout {job.payout_id} has no account")
        return status.refusal(job.account_id, account_status)

    async def _call(self, name: str, coro) -> BankResult | None:
        """A bank call bounded by submit_timeout_ms; None when no answer came. Counted in
        clearing_bank_calls_total by call and result."""
        try:
            result = await asyncio.wait_for(coro, self._settings.submit_timeout_ms / 1000.0)
        except (BankTimeout, asyncio.TimeoutError):
            metrics.BANK_CALLS.labels(name, "no_answer").inc()
            return None
        metrics.BANK_CALLS.labels(name, result.state.name.lower()).inc()
        return result

    async def _on_callback(self, result: BankResult) -> None:
        """A callback from the bank; duplicates and stale ones are no-ops. A failure to apply
        it is logged: the attempt stays in flight and is queried after its lease."""
        if result.state in (BankState.SUCCEEDED, BankState.FAILED):
            await self._guard(self.settler.apply(result),
                              f"callback {result.idempotency_key}")


# ---- repair ------------------------------------------------------------------------------------

_SQL_OPEN_HOLDS = f"""
SELECT p.payout_id FROM payouts p
JOIN transfers h ON h.transfer_id = p.hold_transfer_id
LEFT JOIN transfers f ON f.transfer_id = p.fee_transfer_id AND p.fee_transfer_id <> 0
WHERE p.state = {PayoutState.FAILED:d}
  AND (h.pending_state = {PendingState.OPEN:d}
       OR (p.paid_minor = 0 AND f.pending_state = {PendingState.OPEN:d}))
LIMIT $1
"""


async def repair_failed_payouts(deps: Any) -> int:
    """Finish releases a crash cut short: FAILED payouts whose hold (or unpaid fee) is still
    open. Returns how many were repaired."""
    rows = await deps.pool.fetch(_SQL_OPEN_HOLDS, REPAIR_BATCH_MAX)
    for row in rows:
        try:
            await release_holds(deps, row["payout_id"])
        except ClearingError:
            log.exception("release of failed payout %s failed", row["payout_id"])
    return len(rows)
