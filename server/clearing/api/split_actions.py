"""ReleaseSplit and CancelSplit planning: from a stored split and a request, what each held
leg posts or voids, and the one ledger posting that does it.

Ledger mapping (one posting per request, all or nothing):
- a leg held by its release policy has a PENDING transfer (its first transfer, or the one a
  partial refund of its hold opened instead, see `split_refund`): a release
  posts part of it (POST_PENDING), a cancellation voids what it still holds (VOID_PENDING);
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

import datetime as dt
import re
from dataclasses import dataclass

from clearing.api import validate
from clearing.errors import FailedPrecondition, ResourceExhausted, Violations
from clearing.ledger.model import Claim, Leg, Mode, Posting
from clearing.ledger.status import can_move
from clearing.limits import (ACTIONS_PER_SPLIT_MAX, ACTION_REASON_LEN_MAX, EVENT_TIME_AHEAD_S_MAX,
                             MEMO_LEN_MAX, ORDER_ID_LEN_MAX, RELEASE_ACCOUNTS_MAX)
from clearing.money import BPS_ONE, allocate
from clearing.rules import runtime
from clearing.rules.model import HoldReason, SplitStatus
from clearing.v1 import split_pb2 as pb
from clearing.reasons import Reason

EVENT_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


@dataclass(frozen=True, slots=True)
class Change:
    """What one request does to one leg, in minor units."""

    leg: runtime.StoredLeg
    released_minor: int = 0
    voided_minor: int = 0


# ---- validation ---------------------------------------------------------------------------------

def release_violations(request: pb.ReleaseSplitRequest, now: dt.datetime) -> Violations:
    v = _common(request)
    which = request.WhichOneof("release")
    if which is None:
        v.add("event_name", "set exactly one of event_name and fraction_bps")
    elif which == "event_name" and EVENT_NAME_RE.fullmatch(request.event_name) is None:
        v.add("event_name", "1 to 32 characters, UPPER_SNAKE (e.g. SHIPPED)")
    elif which == "fraction_bps" and not 1 <= request.fraction_bps <= BPS_ONE:
        v.add("fraction_bps", f"must be 1 to {BPS_ONE} basis points")
    if len(request.account_ids) > RELEASE_ACCOUNTS_MAX:
        v.add("account_ids", f"more than {RELEASE_ACCOUNTS_MAX} accounts")
    for i, account_id in enumerate(request.account_ids):
        validate.object_id(v, account_id, f"account_ids[{i}]")
    validate.text(v, request.reason, "reason", length_max=ACTION_REASON_LEN_MAX)
    event_time = validate.timestamp(v, request, "event_time")
    if event_time is not None and (event_time - now).total_seconds() > EVENT_TIME_AHEAD_S_MAX:
        v.add("event_time", f"more than {EVENT_TIME_AHEAD_S_MAX} s in the future")
    return v


def cancel_violations(request: pb.CancelSplitRequest) -> Violations:
    v = _common(request)
    validate.text(v, request.reason, "reason", length_max=ACTION_REASON_LEN_MAX,
                  required=True)
    return v


def _common(request) -> Violations:
    v = Violations()
    validate.request_id(v, request.request_id)
    validate.text(v, request.order_id, "order_id", length_max=ORDER_ID_LEN_MAX, required=True)
    return v


# ---- planning -----------------------------------------------------------------------------------

def require_room(split: runtime.StoredSplit) -> None:
    """ResourceExhausted TOO_MANY_ACTIONS if the split already took ACTIONS_PER_SPLIT_MAX
    actions (the split itself not counted)."""
    if len(split.actions) >= ACTIONS_PER_SPLIT_MAX:
        raise ResourceExhausted(
            f"the split of order {split.order_id!r} already took {len(split.actions)}"
            f" actions, the most one split takes ({ACTIONS_PER_SPLIT_MAX})",
            reason=Reason.TOO_MANY_ACTIONS,
            metadata={"order_id": split.order_id,
                      "actions_max": str(ACTIONS_PER_SPLIT_MAX)})


def release_changes(split: runtime.StoredSplit, body: pb.Split,
                    request: pb.ReleaseSplitRequest, statuses: dict[int, int]) -> list[Change]:
    """What a release posts per leg; FailedPrecondition if nothing is due."""
    require_room(split)
    wanted = set(request.account_ids)
    released = _released_events(split)
    changes, already = [], False
    for leg in split.legs:
        if not leg.held_minor or (wanted and leg.account_id not in wanted):
            continue
        if not can_move(statuses.get(leg.account_id)):
            continue  # stays held until the receiver is active again
        if request.WhichOneof("release") == "fraction_bps":
            amount = _fraction(body.legs[leg.leg_index].held_minor, request.fraction_bps)
        else:
            steps = body.legs[leg.leg_index].release_steps
            done = released.get(leg.leg_index, set())
            already |= request.event_name in done and any(
                s.event_name == request.event_name for s in steps)
            amount = _event_amount(steps, done, request.event_name, leg.held_minor)
        if min(amount, leg.held_minor):
            changes.append(Change(leg, released_minor=min(amount, leg.held_minor)))
    if not changes:
        raise _nothing_due(split, request, already)
    return changes


def cancel_changes(split: runtime.StoredSplit) -> list[Change]:
    """Every held leg voids what it holds; FailedPrecondition NOTHING_HELD if none does."""
    require_room(split)
    changes = [Change(leg, voided_minor=leg.held_minor) for leg in split.legs if leg.held_minor]
    if not changes:
        raise FailedPrecondition(f"split of order {split.order_id!r} holds nothing",
                                 reason=Reason.NOTHING_HELD, metadata={"order_id": split.order_id})
    if all(_in_custody(c.leg) for c in changes):
        raise FailedPrecondition(
            "what this split holds is in the custodial hold only (its receivers are frozen"
            " or closed): release it once they are active", reason=Reason.CUSTODIAL_HOLD_ONLY,
            metadata={"order_id": split.order_id})
    return changes


def _fraction(held_at_split: int, fraction_bps: int) -> int:
    return allocate(held_at_split, [fraction_bps, BPS_ONE - fraction_bps])[0]


def _event_amount(steps, done: set[str], event_name: str, held_minor: int) -> int:
    due = [s for s in steps if s.event_name == event_name and event_name not in done]
    if not due:
        return 0
    left = [s for s in steps if s.event_name not in done and s.event_name != event_name]
    return held_minor if not left else sum(s.amount_minor for s in due)


def _released_events(split: runtime.StoredSplit) -> dict[int, set[str]]:
    """The events released so far, by leg index."""
    out: dict[int, set[str]] = {}
    for stored in split.actions:
        act = pb.SplitAction.FromString(stored.body)
        if act.kind == pb.SPLIT_ACTION_KIND_RELEASE and act.event_name:
            for change in act.leg_changes:
                out.setdefault(change.leg_index, set()).add(act.event_name)
    return out


def _nothing_due(split: runtime.StoredSplit, request: pb.ReleaseSplitRequest,
                 already: bool) -> FailedPrecondition:
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

def _in_custody(leg: runtime.StoredLeg) -> bool:
    return leg.hold_reason == int(HoldReason.RECEIVER_UNAVAILABLE)


def _ledger_leg(change: Change, currency_code: str, memo: str) -> Leg | None:
    leg = change.leg
    if change.voided_minor:
        if _in_custody(leg):
            return None
        return Leg(0, 0, change.voided_minor, currency_code, Mode.VOID_PENDING,
                   leg.pending_id, memo)
    if _in_custody(leg):
        return Leg(leg.debit_account_id, leg.account_id, change.released_minor, currency_code,
                   Mode.IMMEDIATE, 0, memo)
    return Leg(0, 0, change.released_minor, currency_code, Mode.POST_PENDING,
               leg.pending_id, memo)


def action_body(kind: int, request, changes: list[Change]) -> pb.SplitAction:
    """The action as recorded, without id, time and transfer ids (the commit gives them)."""
    act = pb.SplitAction(kind=kind, request_id=request.request_id, reason=request.reason)
    if kind == pb.SPLIT_ACTION_KIND_RELEASE:
        act.event_name = request.event_name
        act.fraction_bps = request.fraction_bps
        if request.HasField("event_time"):  # else the commit time (split_convert.action)
            act.event_time.CopyFrom(request.event_time)
    act.amount_minor = sum(c.released_minor + c.voided_minor for c in changes)
    act.leg_changes.extend(
        pb.LegChange(leg_index=c.leg.leg_index, account_id=c.leg.account_id,
                     released_minor=c.released_minor, voided_minor=c.voided_minor)
        for c in changes)
    return act


def posting(platform_id: int, split: runtime.StoredSplit, body: pb.Split, request, method: str,
            payload: bytes, kind: int, changes: list[Change]) -> Posting:
    """The one posting of a release or cancellation, with its record for the actions sink.
    It claims the split's next action number, so that two actions computed from the same
    state cannot both commit."""
    legs, deltas = [], []
    memo = f"{method} {split.order_id}"[:MEMO_LEN_MAX]
    for change in changes:
        leg = _ledger_leg(change, body.currency_code, memo)
        deltas.append(runtime.LegDelta(change.leg.leg_index, change.released_minor,
                                       change.voided_minor, len(legs) if leg else -1))
        if leg is not None:
            legs.append(leg)
    held_after = sum(leg.held_minor for leg in split.legs) - sum(
        c.released_minor + c.voided_minor for c in changes)
    status = (SplitStatus.CANCELLED if kind == pb.SPLIT_ACTION_KIND_CANCEL
              else SplitStatus.PARTLY_REFUNDED if split.refunded_minor
              else SplitStatus.HOLDING if held_after else SplitStatus.POSTED)
    record = runtime.ActionRecord(
        platform_id, split.split_id,
        request.request_id, payload,
        action_body(kind, request, changes).SerializeToString(deterministic=True), deltas,
        status)
    claim = Claim.of("split-action", f"{split.split_id}:{len(split.actions)}", Reason.SPLIT_CHANGED,
                     f"the split of order {split.order_id!r} changed while this request was"
                     " handled; retry with the same request_id")
    return Posting(platform_id, request.request_id, method, payload, tuple(legs),
                   (claim,), runtime.ACTION_SINK_NAME, record)
