"""The review of a payout: ApprovePayout and RejectPayout, each once per request id
(`clearing.idempotency`), with maker-checker (the key that requested a payout cannot
review it) and the worker's lock order (a payout's transfers, then the payout). What a
decision does to the payout and its transfers (retry_in, fail_in, release_holds) is
`clearing.payout.lifecycle`'s; a payout's way into review is `clearing.payout.service`'s
(PENDING_REVIEW) and the worker's (MANUAL_REVIEW)."""

from __future__ import annotations

from collections.abc import Callable

from clearing import audit, idempotency
from clearing.events.model import EventType
from clearing.payout import events as payout_events
from clearing.errors import FailedPrecondition, NotFound, PermissionDenied
from clearing.ledger import status
from clearing.payout import lifecycle, store
from clearing.payout.model import Payout, PayoutState, TransferState
from clearing.payout.service import PayoutDeps
from clearing.reasons import Reason

# A payout's transfers, then the payout: the worker's lock order.
_SQL_LOCK_TRANSFERS = """
SELECT bank_transfer_id FROM bank_transfers WHERE payout_id = $1 AND platform_id = $2
ORDER BY bank_transfer_id FOR UPDATE
"""
_SQL_LOCK_PAYOUT = """
SELECT payout_id, state, requested_key_id, account_id FROM payouts
WHERE payout_id = $1 AND platform_id = $2 FOR UPDATE
"""


async def _lock_payout(conn, payout_id: int, platform_id: int):
    await conn.fetch(_SQL_LOCK_TRANSFERS, payout_id, platform_id)
    return await conn.fetchrow(_SQL_LOCK_PAYOUT, payout_id, platform_id)


def _check_reviewable(row, payout_id: int, reviewer_key_id: int) -> PayoutState:
    if row is None:
        raise NotFound(f"payout {payout_id} not found", reason=Reason.PAYOUT_NOT_FOUND,
                       metadata={"field": "payout_id"})
    if row["requested_key_id"] and row["requested_key_id"] == reviewer_key_id:
        raise PermissionDenied("the key that requested a payout cannot review it",
                               reason=Reason.MAKER_CHECKER)
    state = PayoutState(row["state"])
    if state not in (PayoutState.PENDING_REVIEW, PayoutState.MANUAL_REVIEW):
        raise FailedPrecondition(f"payout {payout_id} is {state.name}, not under review",
                                 reason=Reason.PAYOUT_NOT_IN_REVIEW,
                                 metadata={"state": state.name})
    return state


async def _check_can_send(conn, account_id: int) -> None:
    """FAILED_PRECONDITION ACCOUNT_FROZEN / ACCOUNT_CLOSED unless the payout's account may
    send money now."""
    account_status = await conn.fetchval("SELECT status FROM accounts WHERE account_id = $1",
                                         account_id)
    status.check_can_move(account_id, account_status)


_SQL_REVIEWED = """
UPDATE payouts SET reviewed_by = $3, review_reason = $4, review_at = $5, updated_at = $5
WHERE payout_id = $1 AND platform_id = $2
"""


async def approve_payout(deps: PayoutDeps, platform_id: int, reviewer_key_id: int,
                         request_id: str, payload_hash: bytes, payout_id: int,
                         reason: str, encode: Callable[[Payout], bytes], *,
                         actor: audit.Actor) -> bytes:
    """PENDING_REVIEW -> QUEUED (its transfers due now); MANUAL_REVIEW: the lifecycle's
    retry_payout (its transfers queued again, a blocked send's kept key queried first, the
    payout SUBMITTED); in one transaction with the idempotency record. Answers the first
    response: `encode` of the payout as the approval left it. Maker-checker: the
    requesting key cannot approve. The account the money leaves must be able to send
    (`clearing.ledger.status`): a frozen or closed one answers FAILED_PRECONDITION
    ACCOUNT_FROZEN / ACCOUNT_CLOSED and the payout stays in review (the worker checks again
    before every bank call)."""
    async def op(conn) -> bytes:
        row = await _lock_payout(conn, payout_id, platform_id)
        state = _check_reviewable(row, payout_id, reviewer_key_id)
        await _check_can_send(conn, row["account_id"])
        now = deps.clock.now()
        await conn.execute(_SQL_REVIEWED, payout_id, platform_id,
                           str(reviewer_key_id), reason, now)
        if state is PayoutState.PENDING_REVIEW:
            await conn.execute("UPDATE payouts SET state = $2 WHERE payout_id = $1",
                               payout_id, int(PayoutState.QUEUED))
            await conn.execute(
                "UPDATE bank_transfers SET next_attempt_at = $2 WHERE payout_id = $1"
                " AND state = $3", payout_id, now, int(TransferState.QUEUED))
        else:
            await lifecycle.retry_in(conn, payout_id, now)
        await payout_events.record(conn, [payout_id], EventType.PAYOUT_APPROVED, request_id)
        return await _recorded(conn, actor, "ApprovePayout", platform_id, payout_id, state,
                               reason, encode)

    return await idempotency.run(deps.pool, platform_id, request_id, "ApprovePayout",
                                 payload_hash, op)


async def reject_payout(deps: PayoutDeps, platform_id: int, reviewer_key_id: int,
                        request_id: str, payload_hash: bytes, payout_id: int,
                        reason: str, encode: Callable[[Payout], bytes], *,
                        actor: audit.Actor) -> bytes:
    """PENDING_REVIEW or MANUAL_REVIEW -> FAILED (REJECTED) in one transaction with the
    idempotency record (the lifecycle's fail_payout), then what was not paid is voided
    (`release_holds`: idempotent, also run on a replay to finish what a crash cut short).
    Answers the first response: `encode` of the payout as the rejection left it.
    Maker-checker: the requesting key cannot reject."""
    async def op(conn) -> bytes:
        row = await _lock_payout(conn, payout_id, platform_id)
        state = _check_reviewable(row, payout_id, reviewer_key_id)
        now = deps.clock.now()
        await conn.execute(_SQL_REVIEWED, payout_id, platform_id, str(reviewer_key_id),
                           reason, now)
        await lifecycle.fail_in(conn, payout_id, Reason.REJECTED, reason, now,
                                event=EventType.PAYOUT_REJECTED, request_id=request_id)
        return await _recorded(conn, actor, "RejectPayout", platform_id, payout_id, state,
                               reason, encode)

    first = await idempotency.run(deps.pool, platform_id, request_id, "RejectPayout",
                                  payload_hash, op)
    await lifecycle.release_holds(deps, payout_id)
    return first


async def _recorded(conn, actor: audit.Actor, method: str, platform_id: int, payout_id: int,
                    before: PayoutState, reason: str, encode: Callable[[Payout], bytes]) -> bytes:
    """The review decision's audit record (in its transaction) and its response."""
    after = await store.get_payout(conn, platform_id, payout_id)
    await audit.record(conn, actor, method, f"payout:{payout_id}",
                       before={"state": before.name},
                       after={"state": after.state.name, "reason": reason,
                              "amount_minor": after.amount_minor,
                              "currency_code": after.currency_code})
    return encode(after)
