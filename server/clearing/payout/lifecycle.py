"""A payout's life after the worker: the review actions and the release of its holds.

The worker (`clearing.payout.worker`, with `.claim` and `.settle`) claims, sends, queries
and settles bank transfers; a payout it cannot finish goes to MANUAL_REVIEW with its funds
held. What happens then, and to a payout still waiting for review, is decided here:

- `fail_payout` / `fail_in` (RejectPayout): REQUESTED, PENDING_REVIEW, QUEUED (nothing at
  the bank yet) or MANUAL_REVIEW -> FAILED; its transfers that did not succeed end FAILED.
  Refused (FAILED_PRECONDITION PAYOUT_NOT_IN_REVIEW) while a transfer is in flight, so a
  rejection never voids money the bank may still pay.
- `release_holds`: a FAILED payout's hold is voided (what is left of it after partial
  payments) and its fee too if nothing was paid (once money reached the bank the fee was
  earned and is posted). Idempotent: deterministic ledger request ids
  (`ledger_request_id`); the worker's repair sweep finishes a release a crash cut short.
- `retry_payout` / `retry_in` (ApprovePayout of a MANUAL_REVIEW payout): its FAILED
  transfers are queued again (a new round of attempts), except one whose send was blocked
  by the account's status, which goes back UNKNOWN so its kept key is queried first; the
  payout is SUBMITTED again.

Lock order, as in the worker: a payout's transfers (in id order), then the payout.
`pending_posting` is the ledger posting of a hold's post (the bank paid) or void, shared
with the worker. The exactly-once argument is the worker's module docstring.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import asyncpg

from clearing.events.model import EventType
from clearing.payout import events as payout_events
from clearing.db import sql_list
from clearing.errors import FailedPrecondition, NotFound, invariant
from clearing.ledger.model import Leg, Mode, Posting
from clearing.limits import FAILURE_MESSAGE_LEN_MAX
from clearing.payout.model import PayoutState, TransferState
from clearing.reasons import Reason

METHOD_POST = "PayoutPost"
METHOD_VOID = "PayoutVoid"
# A transfer (or attempt) the bank may still pay.
IN_FLIGHT = (TransferState.SUBMITTED, TransferState.UNKNOWN)
# Payout states fail_payout accepts: nothing of theirs is at the bank.
FAILABLE = (PayoutState.REQUESTED, PayoutState.PENDING_REVIEW, PayoutState.QUEUED,
            PayoutState.MANUAL_REVIEW)
# The state lists as SQL text (clearing.db.sql_list).
_IN_FLIGHT_SQL, _FAILABLE_SQL = sql_list(IN_FLIGHT), sql_list(FAILABLE)


def _hash(*parts: object) -> bytes:
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()


def ledger_request_id(payout_id: int, what: str) -> str:
    """The deterministic ledger request id of one of a payout's postings (the worker's
    module docstring, point 4)."""
    return f"\x1fpayout:{payout_id}:{what}"


def pending_posting(platform_id: int, payout_id: int, what: str, mode: Mode, pending_id: int,
                    amount_minor: int) -> Posting:
    """A post (the bank paid: `books_external`, booked whatever the accounts' statuses
    are now) or void (never refused by a status) of one of a payout's holds."""
    request_id = ledger_request_id(payout_id, what)
    method = METHOD_POST if mode is Mode.POST_PENDING else METHOD_VOID
    leg = Leg(0, 0, amount_minor, "", mode, pending_id=pending_id,
              memo=f"payout {payout_id} {what}")
    return Posting(platform_id, request_id, method,
                   _hash(method, request_id, pending_id, amount_minor), (leg,),
                   books_external=mode is Mode.POST_PENDING)


# ---- review actions ----------------------------------------------------------------------------

_SQL_LOCK_TRANSFERS = """
SELECT bank_transfer_id, state FROM bank_transfers WHERE payout_id = $1
ORDER BY bank_transfer_id FOR UPDATE
"""
_SQL_PAYOUT_FOR_ACTION = """
SELECT state, platform_id, paid_minor, hold_transfer_id, fee_transfer_id FROM payouts
WHERE payout_id = $1 FOR UPDATE
"""
_SQL_FAIL_TRANSFERS = f"""
UPDATE bank_transfers SET state = {TransferState.FAILED:d}, next_attempt_at = NULL,
       finished_at = coalesce(finished_at, $2)
WHERE payout_id = $1 AND state <> {TransferState.SUCCEEDED:d}
"""
_SQL_FAIL_PAYOUT = f"""
UPDATE payouts SET state = {PayoutState.FAILED:d}, failure_reason = $2, failure_message = $3,
       finished_at = $4, updated_at = $4
WHERE payout_id = $1 AND state IN ({_FAILABLE_SQL})
"""
# A transfer whose current attempt is in doubt (its send was blocked) goes back UNKNOWN: the
# kept key is queried first; the others QUEUED (a new attempt). The blocked attempt's
# refusal is cleared first: it is plainly in doubt again.
_SQL_RESUME_ATTEMPTS = f"""
UPDATE bank_transfer_attempts a SET failure_code = '', failure_message = ''
FROM bank_transfers t
WHERE t.payout_id = $1 AND t.state = {TransferState.FAILED:d}
  AND a.idempotency_key = t.idempotency_key
  AND a.state IN ({_IN_FLIGHT_SQL})
"""
_SQL_REQUEUE_TRANSFERS = f"""
UPDATE bank_transfers t
SET state = CASE WHEN EXISTS (SELECT 1 FROM bank_transfer_attempts a
                              WHERE a.idempotency_key = t.idempotency_key
                                AND a.state IN ({_IN_FLIGHT_SQL}))
                 THEN {TransferState.UNKNOWN:d} ELSE {TransferState.QUEUED:d} END,
    next_attempt_at = $2, finished_at = NULL
WHERE payout_id = $1 AND state = {TransferState.FAILED:d}
"""
_SQL_RESUBMIT_PAYOUT = f"""
UPDATE payouts SET state = {PayoutState.SUBMITTED:d}, failure_reason = '', failure_message = '',
       updated_at = $2
WHERE payout_id = $1 AND state = {PayoutState.MANUAL_REVIEW:d}
"""


async def _lock_for_action(conn: asyncpg.Connection, payout_id: int) -> tuple[asyncpg.Record,
                                                                                list]:
    """Lock a payout's transfers, then the payout (the worker's lock order)."""
    transfers = await conn.fetch(_SQL_LOCK_TRANSFERS, payout_id)
    payout = await conn.fetchrow(_SQL_PAYOUT_FOR_ACTION, payout_id)
    if payout is None:
        raise NotFound(f"payout {payout_id} not found", reason=Reason.PAYOUT_NOT_FOUND)
    return payout, transfers


def _not_in_review(payout_id: int, state: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"payout {payout_id} is {PayoutState(state).name}, not under review",
        reason=Reason.PAYOUT_NOT_IN_REVIEW, metadata={"payout_id": str(payout_id)})


async def fail_payout(deps: Any, payout_id: int, reason: str, message: str) -> None:
    """End a payout FAILED (RejectPayout): transfers that did not succeed become FAILED, the
    rest of the hold is voided, the fee too if nothing was paid. Allowed while nothing of
    the payout is at the bank (REQUESTED, PENDING_REVIEW, QUEUED before any attempt,
    MANUAL_REVIEW); else FAILED_PRECONDITION PAYOUT_NOT_IN_REVIEW. Calling it again on a
    FAILED payout only finishes its release (after a crash)."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await fail_in(conn, payout_id, reason, message, deps.clock.now())
    await release_holds(deps, payout_id)


async def fail_in(conn: asyncpg.Connection, payout_id: int, reason: str, message: str,
                  now: dt.datetime, *, event: str = EventType.PAYOUT_FAILED,
                  request_id: str = "") -> None:
    """`fail_payout`'s state change, in the caller's transaction (then `release_holds`)."""
    payout, transfers = await _lock_for_action(conn, payout_id)
    state = PayoutState(payout["state"])
    if state is not PayoutState.FAILED:
        busy = any(t["state"] in IN_FLIGHT for t in transfers)
        if state not in FAILABLE or busy:
            raise _not_in_review(payout_id, state)
        await conn.execute(_SQL_FAIL_TRANSFERS, payout_id, now)
        await conn.execute(_SQL_FAIL_PAYOUT, payout_id, reason,
                           message[:FAILURE_MESSAGE_LEN_MAX], now)
        await payout_events.record(conn, [payout_id], event, request_id)


async def release_holds(deps: Any, payout_id: int) -> None:
    """Void what is left of a FAILED payout's hold, and its fee if nothing was paid.
    Idempotent (deterministic request ids)."""
    payout = await deps.pool.fetchrow(
        "SELECT state, platform_id, paid_minor, hold_transfer_id, fee_transfer_id "
        "FROM payouts WHERE payout_id = $1", payout_id)
    invariant(payout is not None and payout["state"] == PayoutState.FAILED,
              f"payout {payout_id} is not FAILED")
    platform_id = payout["platform_id"]
    hold_state = await deps.pool.fetchval(
        "SELECT pending_state FROM transfers WHERE transfer_id = $1", payout["hold_transfer_id"])
    if hold_state == 1:  # OPEN: something is left to release
        await deps.writer.submit(pending_posting(platform_id, payout_id, "void",
                                                 Mode.VOID_PENDING,
                                                 payout["hold_transfer_id"], 0))
    if payout["fee_transfer_id"] and payout["paid_minor"] == 0:
        await deps.writer.submit(pending_posting(platform_id, payout_id, "fee:void",
                                                 Mode.VOID_PENDING,
                                                 payout["fee_transfer_id"], 0))


async def retry_payout(deps: Any, payout_id: int) -> None:
    """ApprovePayout of a MANUAL_REVIEW payout: its FAILED transfers are queued again now
    (a new round of 1 + retries_max attempts; attempt numbers go on), except one whose
    send was blocked, which goes back UNKNOWN: its kept key is queried first (module
    docstring). The payout is SUBMITTED. Else FAILED_PRECONDITION PAYOUT_NOT_IN_REVIEW."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await retry_in(conn, payout_id, deps.clock.now())


async def retry_in(conn: asyncpg.Connection, payout_id: int, now: dt.datetime) -> None:
    """`retry_payout`, in the caller's transaction."""
    payout, transfers = await _lock_for_action(conn, payout_id)
    if payout["state"] != PayoutState.MANUAL_REVIEW:
        raise _not_in_review(payout_id, payout["state"])
    invariant(not any(t["state"] in IN_FLIGHT for t in transfers),
              f"payout {payout_id} in MANUAL_REVIEW with a transfer in flight")
    await conn.execute(_SQL_RESUME_ATTEMPTS, payout_id)
    await conn.execute(_SQL_REQUEUE_TRANSFERS, payout_id, now)
    await conn.execute(_SQL_RESUBMIT_PAYOUT, payout_id, now)
