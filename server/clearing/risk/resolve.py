"""ResolveRiskEvent, maker-checker: the first call proposes a decision (OPEN ->
RESOLUTION_PROPOSED), a second call with the same decision by another key with the approver
role carries it out (-> RELEASED or REJECTED). Each call once per request id
(`clearing.idempotency`); each step an audit row; nothing deleted.

Money (an event whose split still holds the receiver's share, HOLD_REASON_RISK_REVIEW):
- RELEASE: the leg's pending transfer is posted (POST_PENDING), as a ReleaseSplit would;
- REJECT: the pending transfer is voided (the money returns to the leg's debit account, the
  custodial account for a top-level share) and moved on, in the same posting, to the
  platform's risk suspense account of the currency (`risk:suspense:CUR`, AccountKind.SUSPENSE,
  opened on first use). A refund of the order instead goes through RefundSplit, which voids
  the hold like any other; the event is then closed by either decision with nothing to move.
The posting is one action on the split (recorded in its actions, status updated) under a
request id of its own (the event and the split's action number), so a confirmation retried
after a crash moves nothing twice: the writer answers what it committed. Then the event's
state and step are written with the caller's request id.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from clearing import audit, idempotency
from clearing.errors import FailedPrecondition, PermissionDenied, invariant
from clearing.ledger.model import (AccountKind, Claim, Leg, Mode, Posting, Principal, Role)
from clearing.ledger.writer import LedgerWriter
from clearing.limits import MEMO_LEN_MAX
from clearing.reasons import Reason
from clearing.recon import accounts as recon_accounts
from clearing.risk import events
from clearing.risk.model import RiskDecision, RiskEvent, RiskEventState
from clearing.rules.model import HoldReason
from clearing.splits import release as releases
from clearing.splits.model import ActionKind, LegChange, ReleaseRequest, Split, SplitStatus
from clearing.splits.records import ActionRecord, LegDelta, pending_action
from clearing.splits.store import ACTION_SINK_NAME, load_split

_ALL_REASONS = frozenset(Reason)
METHOD = "ResolveRiskEvent"
POSTING_METHOD = "RiskResolution"
Encode = Callable[[RiskEvent], bytes]


@dataclass(frozen=True, slots=True)
class ResolveDeps:
    pool: asyncpg.Pool
    writer: LedgerWriter


def suspense_ref(currency_code: str) -> str:
    return f"risk:suspense:{currency_code}"


def _not_open(event: RiskEvent, why: str) -> FailedPrecondition:
    return FailedPrecondition(f"risk event {event.event_id} is {event.state.name}: {why}",
                              reason=Reason.RISK_EVENT_NOT_OPEN,
                              metadata={"event_id": str(event.event_id),
                                        "state": event.state.name})


async def resolve(deps: ResolveDeps, who: Principal, request_id: str, payload_hash: bytes,
                  event_id: int, decision: RiskDecision, note: str, encode: Encode) -> bytes:
    """Propose or confirm a decision (see the module docstring); the first response."""
    pid = who.platform_id
    prior = await idempotency.lookup(deps.pool, pid, request_id)
    if prior is not None:
        first = prior.answer(METHOD, payload_hash)
        if first is not None:
            return first
    async with deps.pool.acquire() as conn:
        event = await events.get(conn, pid, event_id)
    if event.state == RiskEventState.OPEN:
        return await _propose(deps, who, request_id, payload_hash, event_id, decision, note,
                              encode)
    if event.state != RiskEventState.RESOLUTION_PROPOSED:
        raise _not_open(event, "it is resolved already")
    if Role.APPROVER not in who.roles:
        raise PermissionDenied("confirming a proposed resolution needs the approver role",
                               reason=Reason.ROLE_REQUIRED, metadata={"role": Role.APPROVER})
    if who.key_id == event.proposed_by:
        raise PermissionDenied(
            "the key that proposed this resolution may not confirm it: another approver"
            " must (maker-checker)", reason=Reason.MAKER_CHECKER,
            metadata={"proposed_by": str(event.proposed_by)})
    if decision != event.decision:
        raise _not_open(event, f"{event.decision.name} is proposed, not {decision.name}")
    if event.held_minor and event.split_id:
        await _move(deps, pid, event)
    return await idempotency.run(deps.pool, pid, request_id, METHOD, payload_hash,
                                 _confirm_op(who, request_id, event_id, decision, note, encode))


async def _propose(deps: ResolveDeps, who: Principal, request_id: str, payload_hash: bytes,
                   event_id: int, decision: RiskDecision, note: str, encode: Encode) -> bytes:
    async def op(conn: asyncpg.Connection) -> bytes:
        event = await events.get(conn, who.platform_id, event_id, lock=True)
        if event.state != RiskEventState.OPEN:
            raise _not_open(event, "a resolution is proposed already")
        await conn.execute(
            "UPDATE risk_events SET state = $2, decision = $3, proposed_by = $4,"
            " updated_at = now() WHERE event_id = $1", event_id,
            int(RiskEventState.RESOLUTION_PROPOSED), int(decision), who.key_id)
        await events.add_step(conn, event_id, events.STEP_PROPOSED, who.key_id, note,
                              decision, request_id)
        return await _recorded(conn, who, event, decision, note, encode)

    return await idempotency.run(deps.pool, who.platform_id, request_id, METHOD,
                                 payload_hash, op)


def _confirm_op(who: Principal, request_id: str, event_id: int, decision: RiskDecision,
                note: str, encode: Encode):
    async def op(conn: asyncpg.Connection) -> bytes:
        event = await events.get(conn, who.platform_id, event_id, lock=True)
        if event.state != RiskEventState.RESOLUTION_PROPOSED or event.decision != decision:
            raise _not_open(event, "another approver resolved it meanwhile")
        released = decision == RiskDecision.RELEASE
        state = RiskEventState.RELEASED if released else RiskEventState.REJECTED
        await conn.execute("UPDATE risk_events SET state = $2, updated_at = now()"
                           " WHERE event_id = $1", event_id, int(state))
        await events.add_step(conn, event_id,
                              events.STEP_RELEASED if released else events.STEP_REJECTED,
                              who.key_id, note, decision, request_id)
        return await _recorded(conn, who, event, decision, note, encode)
    return op


async def _move(deps: ResolveDeps, platform_id: int, event: RiskEvent) -> None:
    """Post (RELEASE) or void and move to suspense (REJECT) what the split still holds for
    the event's receiver; nothing if it holds nothing any more (refunded)."""
    async with deps.pool.acquire() as conn:
        split = await load_split(conn, platform_id, "split_id", event.split_id)
    invariant(split is not None, f"risk event {event.event_id} names a missing split")
    held = [leg for leg in split.legs if leg.account_id == event.account_id
            and leg.hold_reason == HoldReason.RISK_REVIEW and leg.held_minor]
    if not held:
        return
    posting_id = f"{Claim.PREFIX}risk-event:{event.event_id}:{len(split.actions)}"
    payload = hashlib.sha256(f"{posting_id}:{event.decision.name}".encode()).digest()
    if event.decision == RiskDecision.RELEASE:
        posting = _release_posting(platform_id, split, held, posting_id, payload)
    else:
        suspense = await recon_accounts.ensure(
            deps.pool, platform_id, suspense_ref(split.currency_code), AccountKind.SUSPENSE,
            split.currency_code, f"risk suspense ({split.currency_code})")
        posting = _reject_posting(platform_id, split, held, posting_id, payload, suspense)
    # Records: committed now; a Replay: committed before (a retried confirmation). A refusal
    # (a frozen receiver...) is not recorded under the posting's request id, so a later
    # confirmation tries afresh; the action claim keeps two from both moving the money.
    await deps.writer.submit(dataclasses.replace(posting, unrecorded_reasons=_ALL_REASONS))


def _release_posting(platform_id: int, split: Split, held, posting_id: str,
                     payload: bytes) -> Posting:
    changes = [LegChange(leg.leg_index, leg.account_id, released_minor=leg.held_minor)
               for leg in held]
    request = ReleaseRequest(posting_id, split.order_id, fraction_bps=10_000,
                             account_ids=frozenset({held[0].account_id}),
                             reason_text="risk event released")
    return releases.posting(platform_id, split, request, POSTING_METHOD, payload, changes)


def _reject_posting(platform_id: int, split: Split, held, posting_id: str, payload: bytes,
                    suspense_id: int) -> Posting:
    legs: list[Leg] = []
    deltas: list[LegDelta] = []
    memo = f"{POSTING_METHOD} {split.order_id}"[:MEMO_LEN_MAX]
    for leg in held:
        deltas.append(LegDelta(LegChange(leg.leg_index, leg.account_id,
                                         voided_minor=leg.held_minor), (len(legs),)))
        legs.append(Leg(0, 0, leg.held_minor, split.currency_code, Mode.VOID_PENDING,
                        leg.pending_id, memo))
        legs.append(Leg(leg.debit_account_id, suspense_id, leg.held_minor,
                        split.currency_code, Mode.IMMEDIATE, 0, memo))
    amount = sum(leg.held_minor for leg in held)
    held_after = sum(leg.held_minor for leg in split.legs) - amount
    status = (SplitStatus.HOLDING if held_after else SplitStatus.PARTLY_REFUNDED
              if split.refunded_minor else SplitStatus.POSTED)
    action = pending_action(ActionKind.CANCEL, posting_id, payload, amount,
                            reason_text="risk event rejected: moved to risk suspense")
    record = ActionRecord(platform_id, split.split_id, action, tuple(deltas), status,
                          before=split)
    return Posting(platform_id, posting_id, POSTING_METHOD, payload, tuple(legs),
                   (releases.action_claim(split),), ACTION_SINK_NAME, record)


async def _recorded(conn: asyncpg.Connection, who: Principal, before: RiskEvent,
                    decision: RiskDecision, note: str, encode: Encode) -> bytes:
    """The step's audit record (in its transaction) and its response."""
    after = await events.get(conn, who.platform_id, before.event_id)
    await audit.record(conn, audit.Actor.of(who), METHOD, f"risk_event:{before.event_id}",
                       before={"state": before.state.name},
                       after={"state": after.state.name, "decision": decision.name,
                              "note": note, "account_id": after.account_id,
                              "held_minor": after.held_minor})
    return encode(after)
