"""RefundSplit planning: from a stored split and a refund request, what each leg gives back,
and the one ledger posting that does it (all or nothing, like ReleaseSplit and CancelSplit:
the `split_actions` sink writes the legs' amounts and the action in the same transaction,
and the posting claims the split's next action number, so that two actions computed from
the same state cannot both commit).

The rule:
- A refund of R minor units (at most the order's amount_minor minus what was refunded
  before, else FAILED_PRECONDITION, reason REFUND_EXCEEDS_SPLIT) reverses
  T = `allocate(left, [R, rest - R])[0]` of what the legs still have, where `left` is what
  the legs still have (held, or posted and not refunded) and `rest` what the order has
  left to refund. Without a channel fee, subsidies or cancellation, `left == rest` and
  T == R; a full refund (R == rest) always reverses everything the legs still have.
- T is divided over the legs in proportion to what each still has, by `money.allocate`
  (the one rounding rule), so the parts sum exactly to T. Each leg's part is taken first
  from what it still holds, then from what was posted to it.
- Held part: the leg's pending transfer is voided (VOID_PENDING, the ledger voids whole
  pending transfers only); if some of the hold stays, a new PENDING transfer for it is
  opened in the same posting and becomes the leg's pending transfer (later releases post
  it). A leg in the custodial hold (receiver frozen or closed at split time) has no
  transfer: its held part is only recorded (the money never left its debit account).
- Posted part: an IMMEDIATE transfer from the leg's account back to the account the leg
  debited (the custodial account, or for a subsidy its marketing source).
- A receiver whose available balance cannot cover its posted parts (all its legs in this
  refund together): with `shortfall_account_ref`, the receiver gives back what it has and
  that account pays the rest to the leg's debit account (recorded per leg as
  `shortfall_minor`); without it, the refund fails with FAILED_PRECONDITION, reason
  INSUFFICIENT_FUNDS (metadata `account_ids`: the accounts short) and nothing is reversed.
  The ledger writer checks the funds again at commit: a balance spent in between fails
  the refund the same way.
- A receiver frozen or closed since the split cannot give money back (nor be credited):
  - what a refund takes from its hold is voided as for any receiver (voiding a pending
    credit takes nothing from the account), so a refund that touches only held money of
    such a receiver goes through, as long as it voids the leg's whole hold;
  - what a refund takes from money posted to it is a shortfall in full: with
    `shortfall_account_ref` that account pays it (the receiver is left untouched), without
    it the whole refund fails with FAILED_PRECONDITION, reason ACCOUNT_FROZEN (or
    ACCOUNT_CLOSED when none of the accounts concerned is frozen), metadata `account_ids`:
    those accounts; nothing is reversed;
  - a refund that takes only part of its hold would open a new pending credit to it: the
    refund fails the same way, whatever `shortfall_account_ref` says (refund the leg's
    whole hold, or reactivate the account first).
  A custodial-hold leg (receiver frozen or closed at split time) has no transfer, so its
  held part is only recorded, whatever the receiver's status. A receiver frozen between
  this plan and the commit fails the refund at the ledger writer with the same reasons.
- The split becomes PARTLY_REFUNDED, or REFUNDED once R's add up to the order's amount.
A refund's ledger transfers are listed per leg change in its SplitAction (void, new
pending, reversal, shortfall, in that order, those that exist).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from clearing.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from clearing.ledger.model import AccountStatus, Leg, Mode, Posting
from clearing.ledger.status import can_move
from clearing.limits import LEGS_PER_POSTING_MAX, MEMO_LEN_MAX
from clearing.money import allocate
from clearing.reasons import Reason
from clearing.splits.accounts import AccountState, accounts_by_ref
from clearing.splits.model import ActionKind, LegChange, LegState, RefundRequest, Split, SplitStatus
from clearing.splits.records import ActionRecord, LegDelta, pending_action
from clearing.splits.release import action_claim, require_room
from clearing.splits.store import ACTION_SINK_NAME

METHOD = "RefundSplit"


@dataclass(frozen=True, slots=True)
class Part:
    """What a refund takes back from one leg, in minor units: `held_minor` from its hold,
    `posted_minor` from what was posted, of which the shortfall account pays
    `shortfall_minor`."""

    leg: LegState
    held_minor: int
    posted_minor: int
    shortfall_minor: int = 0


async def shortfall_account(conn: asyncpg.Connection, platform_id: int,
                            request: RefundRequest, currency_code: str) -> int:
    """The account id of `shortfall_account_ref`, 0 if none is named."""
    ref = request.shortfall_account_ref
    if not ref:
        return 0
    found = (await accounts_by_ref(conn, platform_id, [ref])).get(ref)
    if found is None:
        raise NotFound(f"no account with external_ref {ref!r}", reason=Reason.ACCOUNT_NOT_FOUND,
                       metadata={"field": "shortfall_account_ref"})
    if found.currency_code != currency_code:
        raise InvalidArgument([FieldViolation(
            "shortfall_account_ref", f"the account holds {found.currency_code}, the split"
            f" {currency_code}")], reason=Reason.CURRENCY_MISMATCH)
    return found.account_id


def refund_parts(split: Split, request: RefundRequest, states: Mapping[int, AccountState],
                 shortfall_id: int) -> list[Part]:
    """What each leg gives back (see the module docstring). `states`: each receiver's
    status and available balance (missing: active, may go negative)."""
    require_room(split)
    meta = {"order_id": split.order_id}
    inactive = {account_id: st.status for account_id, st in states.items()
                if not can_move(st.status)}
    if request.currency_code != split.currency_code:
        raise InvalidArgument([FieldViolation(
            "currency_code", f"the split is in {split.currency_code}")],
            reason=Reason.CURRENCY_MISMATCH)
    rest = split.amount_minor - split.refunded_minor
    if request.amount_minor > rest:
        raise FailedPrecondition(
            f"the refund of {request.amount_minor} exceeds the {rest} the order has left"
            " to refund", reason=Reason.REFUND_EXCEEDS_SPLIT,
            metadata={**meta, "refundable_minor": str(rest)})
    left = [leg.left_minor for leg in split.legs]
    reverse = allocate(sum(left), [request.amount_minor, rest - request.amount_minor])[0]
    if not reverse:
        raise FailedPrecondition("the legs of this split have nothing left to reverse",
                                 reason=Reason.NOTHING_TO_REFUND, metadata=meta)
    available = {account_id: st.spendable_minor for account_id, st in states.items()}
    parts: list[Part] = []
    for leg, share in zip(split.legs, allocate(reverse, left)):
        if not share:
            continue
        held = min(share, leg.held_minor)
        posted = share - held
        short = 0
        if leg.account_id in inactive:
            short = posted  # it cannot give back: the shortfall account, or no refund
        elif posted and available.get(leg.account_id) is not None:
            have = available[leg.account_id]
            covered = max(0, min(posted, have))
            available[leg.account_id] = have - covered
            short = posted - covered
        parts.append(Part(leg, held, posted, short))
    _refuse_inactive(split, parts, inactive, shortfall_id)
    short_ids = sorted({p.leg.account_id for p in parts if p.shortfall_minor})
    if short_ids and not shortfall_id:
        raise FailedPrecondition(
            "a receiver's available balance cannot cover its part of the refund, and no"
            " shortfall_account_ref was given: nothing was reversed",
            reason=Reason.INSUFFICIENT_FUNDS,
            metadata={**meta, "account_ids": ",".join(map(str, short_ids))})
    return parts


def _refuse_inactive(split: Split, parts: list[Part], inactive: dict[int, int],
                     shortfall_id: int) -> None:
    """FailedPrecondition ACCOUNT_FROZEN / ACCOUNT_CLOSED if the refund must move money from
    or to a receiver that is not active (see the module docstring)."""
    blocked = {p.leg.account_id for p in parts if p.leg.account_id in inactive and (
        (p.shortfall_minor and not shortfall_id)
        or (0 < p.held_minor < p.leg.held_minor and not p.leg.in_custody))}
    if not blocked:
        return
    frozen = any(inactive[a] == AccountStatus.FROZEN for a in blocked)
    raise FailedPrecondition(
        "a receiver of this split is frozen or closed and cannot give back or be credited"
        " its part of the refund: nothing was reversed", reason=(
            Reason.ACCOUNT_FROZEN if frozen else Reason.ACCOUNT_CLOSED),
        metadata={"order_id": split.order_id,
                  "account_ids": ",".join(map(str, sorted(blocked)))})


def _ledger_legs(part: Part, currency: str, shortfall_id: int,
                 memo: str) -> tuple[list[Leg], int]:
    """The transfers of one part and the offset of its new pending transfer among them
    (-1: none)."""
    leg, out, pending_at = part.leg, [], -1
    if part.held_minor and not leg.in_custody:
        out.append(Leg(0, 0, leg.held_minor, currency, Mode.VOID_PENDING, leg.pending_id,
                       memo))
        if leg.held_minor > part.held_minor:
            pending_at = len(out)
            out.append(Leg(leg.debit_account_id, leg.account_id,
                           leg.held_minor - part.held_minor, currency, Mode.PENDING, 0, memo))
    back = part.posted_minor - part.shortfall_minor
    if back:
        out.append(Leg(leg.account_id, leg.debit_account_id, back, currency, Mode.IMMEDIATE,
                       0, memo))
    if part.shortfall_minor and shortfall_id != leg.debit_account_id:
        out.append(Leg(shortfall_id, leg.debit_account_id, part.shortfall_minor, currency,
                       Mode.IMMEDIATE, 0, memo))
    return out, pending_at


def _change(part: Part, shortfall_id: int) -> LegChange:
    return LegChange(part.leg.leg_index, part.leg.account_id,
                     refunded_held_minor=part.held_minor, refunded_posted_minor=part.posted_minor,
                     shortfall_minor=part.shortfall_minor,
                     shortfall_account_id=shortfall_id if part.shortfall_minor else 0)


def posting(platform_id: int, split: Split, request: RefundRequest, payload: bytes,
            parts: list[Part], shortfall_id: int) -> Posting:
    """The one posting of a refund, with its record for the actions sink."""
    memo = f"{METHOD} {split.order_id}"[:MEMO_LEN_MAX]
    legs: list[Leg] = []
    deltas: list[LegDelta] = []
    for part in parts:
        more, pending_at = _ledger_legs(part, split.currency_code, shortfall_id, memo)
        deltas.append(LegDelta(_change(part, shortfall_id),
                               tuple(range(len(legs), len(legs) + len(more))),
                               len(legs) + pending_at if pending_at >= 0 else -1))
        legs += more
    if not legs:
        raise FailedPrecondition(
            "this refund would take back only money in the custodial hold (its receivers"
            " are frozen or closed): release or cancel it first",
            reason=Reason.CUSTODIAL_HOLD_ONLY, metadata={"order_id": split.order_id})
    if len(legs) > LEGS_PER_POSTING_MAX:
        raise FailedPrecondition(
            f"this refund needs {len(legs)} ledger transfers, more than the"
            f" {LEGS_PER_POSTING_MAX} of one posting", reason=Reason.REFUND_TOO_LARGE,
            metadata={"order_id": split.order_id})
    refunded = split.refunded_minor + request.amount_minor
    status = (SplitStatus.REFUNDED if refunded == split.amount_minor
              else SplitStatus.PARTLY_REFUNDED)
    action = pending_action(ActionKind.REFUND, request.request_id, payload,
                            request.amount_minor, refund_ref=request.refund_ref,
                            reason_text=request.reason_text)
    record = ActionRecord(platform_id, split.split_id, action, tuple(deltas), status,
                          request.amount_minor, before=split)
    return Posting(platform_id, request.request_id, METHOD, payload, tuple(legs),
                   (action_claim(split),), ACTION_SINK_NAME, record)
