"""ReleaseSplit and CancelSplit planning: from a stored split and a request, what each held
leg posts or voids, and the one ledger posting that does it.

Ledger mapping (one posting per request, all or nothing):
- a leg held by its release policy has a PENDING transfer (its first transfer, or the one a
  partial refund of its hold opened instead, see `refund`): a release posts part of it
  (POST_PENDING), a cancellation voids what it still holds (VOID_PENDING);
- a leg in the custodial hold (receiver frozen or closed at split time) has no pending
  transfer: a release pays it by an IMMEDIATE transfer from its debit account once the
  receiver is active; a cancellation only records the void (the money never left the
  custodial account).
A leg whose receiver is not active stays held by a release.

A split takes at most ACTIONS_PER_SPLIT_MAX actions after the split itself (releases, the
cancellation, refunds; split.proto): one more answers RESOURCE_EXHAUSTED with reason
TOO_MANY_ACTIONS before anything is planned, and changes nothing. A retry of a request id
already recorded still answers its first result.

Amounts: a fraction release posts `money.allocate(held at split, [f, 10000 - f])[0]` of
each leg, at most what it still holds; an event release posts the amounts of the leg's
steps for that event, and the leg's last step takes whatever it still holds. So the parts
of a leg always sum to the leg.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from clearing.errors import FailedPrecondition, ResourceExhausted
from clearing.ledger.model import Claim, Leg, Mode, Posting
from clearing.ledger.status import can_move
from clearing.limits import ACTIONS_PER_SPLIT_MAX, MEMO_LEN_MAX
from clearing.money import BPS_ONE, allocate
from clearing.reasons import Reason
from clearing.rules.evaluate import StepAmount
from clearing.rules.model import HoldReason
from clearing.splits.accounts import AccountState
from clearing.splits.model import (ActionKind, CancelRequest, LegChange, ReleaseRequest, Split,
                                   SplitStatus)
from clearing.splits.records import ActionRecord, LegDelta, pending_action
from clearing.splits.store import ACTION_SINK_NAME


def require_room(split: Split) -> None:
    """ResourceExhausted TOO_MANY_ACTIONS if the split already took ACTIONS_PER_SPLIT_MAX
    actions (the split itself not counted)."""
    if len(split.actions) >= ACTIONS_PER_SPLIT_MAX:
        raise ResourceExhausted(
            f"the split of order {split.order_id!r} already took {len(split.actions)}"
            f" actions, the most one split takes ({ACTIONS_PER_SPLIT_MAX})",
            reason=Reason.TOO_MANY_ACTIONS,
            metadata={"order_id": split.order_id,
                      "actions_max": str(ACTIONS_PER_SPLIT_MAX)})


def action_claim(split: Split) -> Claim:
    """The split's next action number: two actions planned from the same state cannot both
    commit (the second fails SPLIT_CHANGED, and its retry plans afresh)."""
    return Claim.of("split-action", f"{split.split_id}:{len(split.actions)}",
                    Reason.SPLIT_CHANGED,
                    f"the split of order {split.order_id!r} changed while this request was"
                    " handled; retry with the same request_id")


def release_changes(split: Split, request: ReleaseRequest,
                    states: Mapping[int, AccountState]) -> list[LegChange]:
    """What a release posts per leg; FailedPrecondition if nothing is due."""
    require_room(split)
    released = split.released_events()
    changes, already = [], False
    for leg in split.legs:
        if not leg.held_minor or (request.account_ids and leg.account_id not in request.account_ids):
            continue
        if leg.hold_reason == HoldReason.RISK_REVIEW:
            continue  # a reviewer releases it (ResolveRiskEvent)
        state = states.get(leg.account_id)
        if not can_move(state.status if state else None):
            continue  # stays held until the receiver is active again
        evaluated = split.evaluation.legs[leg.leg_index]
        if not request.event_name:
            amount = _fraction(evaluated.held_minor, request.fraction_bps)
        else:
            steps = evaluated.release_steps
            done = released.get(leg.leg_index, set())
            already |= request.event_name in done and any(
                s.event_name == request.event_name for s in steps)
            amount = _event_amount(steps, done, request.event_name, leg.held_minor)
        if min(amount, leg.held_minor):
            changes.append(LegChange(leg.leg_index, leg.account_id,
                                     released_minor=min(amount, leg.held_minor)))
    if not changes:
        raise _nothing_due(split, request, already)
    return changes


def cancel_changes(split: Split) -> list[LegChange]:
    """Every held leg voids what it holds; FailedPrecondition NOTHING_HELD if none does."""
    require_room(split)
    if any(leg.held_minor and leg.hold_reason == HoldReason.RISK_REVIEW for leg in split.legs):
        # a risk review decides that share (release or reject): a cancelled split must not
        # keep a share that a later release would pay (found in review)
        raise FailedPrecondition(
            f"split of order {split.order_id!r} has a share under risk review: resolve its "
            "risk event first (ResolveRiskEvent)", reason=Reason.RISK_REVIEW_PENDING,
            metadata={"order_id": split.order_id})
    held = [leg for leg in split.legs if leg.held_minor]
    if not held:
        raise FailedPrecondition(f"split of order {split.order_id!r} holds nothing",
                                 reason=Reason.NOTHING_HELD, metadata={"order_id": split.order_id})
    if all(leg.in_custody for leg in held):
        raise FailedPrecondition(
            "what this split holds is in the custodial hold only (its receivers are frozen"
            " or closed): release it once they are active", reason=Reason.CUSTODIAL_HOLD_ONLY,
            metadata={"order_id": split.order_id})
    return [LegChange(leg.leg_index, leg.account_id, voided_minor=leg.held_minor)
            for leg in held]


def _fraction(held_at_split: int, fraction_bps: int) -> int:
    return allocate(held_at_split, [fraction_bps, BPS_ONE - fraction_bps])[0]


def _event_amount(steps: Sequence[StepAmount], done: set[str], event_name: str,
                  held_minor: int) -> int:
    due = [s for s in steps if s.event_name == event_name and event_name not in done]
    if not due:
        return 0
    left = [s for s in steps if s.event_name not in done and s.event_name != event_name]
    return held_minor if not left else sum(s.amount_minor for s in due)


def _nothing_due(split: Split, request: ReleaseRequest, already: bool) -> FailedPrecondition:
    meta = {"order_id": split.order_id}
    if already:
        return FailedPrecondition(f"event {request.event_name} was already released",
                                  reason=Reason.EVENT_ALREADY_RELEASED,
                                  metadata={**meta, "event_name": request.event_name})
    if not any(leg.held_minor for leg in split.legs):
        return FailedPrecondition(f"split of order {split.order_id!r} holds nothing",
                                  reason=Reason.NOTHING_HELD, metadata=meta)
    return FailedPrecondition("nothing is due for this release (no held leg waits for it,"
                              " or its receivers are not active)", reason=Reason.NOTHING_DUE,
                              metadata=meta)


# ---- the posting --------------------------------------------------------------------------------

def _ledger_leg(split: Split, change: LegChange, memo: str) -> Leg | None:
    leg = split.legs[change.leg_index]
    currency = split.currency_code
    if change.voided_minor:
        if leg.in_custody:
            return None
        return Leg(0, 0, change.voided_minor, currency, Mode.VOID_PENDING, leg.pending_id, memo)
    if leg.in_custody:
        return Leg(leg.debit_account_id, leg.account_id, change.released_minor, currency,
                   Mode.IMMEDIATE, 0, memo)
    return Leg(0, 0, change.released_minor, currency, Mode.POST_PENDING, leg.pending_id, memo)


def posting(platform_id: int, split: Split, request: ReleaseRequest | CancelRequest,
            method: str, payload: bytes, changes: list[LegChange]) -> Posting:
    """The one posting of a release or cancellation, with its record for the actions sink."""
    legs: list[Leg] = []
    deltas: list[LegDelta] = []
    memo = f"{method} {split.order_id}"[:MEMO_LEN_MAX]
    for change in changes:
        leg = _ledger_leg(split, change, memo)
        deltas.append(LegDelta(change, (len(legs),) if leg else ()))
        if leg is not None:
            legs.append(leg)
    amount = sum(c.released_minor + c.voided_minor for c in changes)
    held_after = sum(leg.held_minor for leg in split.legs) - amount
    if isinstance(request, CancelRequest):
        kind, status, fields = ActionKind.CANCEL, SplitStatus.CANCELLED, {}
    else:
        kind = ActionKind.RELEASE
        status = (SplitStatus.PARTLY_REFUNDED if split.refunded_minor
                  else SplitStatus.HOLDING if held_after else SplitStatus.POSTED)
        fields = {"event_name": request.event_name, "fraction_bps": request.fraction_bps,
                  "event_time_ns": request.event_time_ns}
    action = pending_action(kind, request.request_id, payload, amount, reason_text=request.reason_text,
                            **fields)
    record = ActionRecord(platform_id, split.split_id, action, tuple(deltas), status,
                          before=split)
    return Posting(platform_id, request.request_id, method, payload, tuple(legs),
                   (action_claim(split),), ACTION_SINK_NAME, record)
