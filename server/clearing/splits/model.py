"""The split domain's own types: a split as stored and answered (`Split`), its legs' live
amounts (`LegState`), what was done to it (`Action`, `LegChange`), and the counter values
it used (`CounterValue`). Plain frozen dataclasses; `clearing.api.split_convert` turns them
into messages, `store` and `detail` into rows.

A split keeps the rules engine's `Evaluation` as it was made (legs as evaluated: labels,
rules, release steps; matched rules; alerts) and the `Order` as recorded; the amounts that
change afterwards (per leg: held, released, voided, refunded) live in `legs`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from clearing.rules.counters import Source
from clearing.rules.evaluate import Evaluation
from clearing.rules.model import HoldReason, Order


class SplitStatus(IntEnum):
    """A split's status, stored in splits.status (PREVIEW only answers PreviewSplit).
    Equal to proto SplitStatus."""

    UNSPECIFIED = 0
    POSTED = 1
    HOLDING = 2
    CANCELLED = 3
    PARTLY_REFUNDED = 4
    REFUNDED = 5
    PREVIEW = 6


class ActionKind(IntEnum):
    """What an action on a split was. Equal to proto SplitActionKind."""

    UNSPECIFIED = 0
    SPLIT = 1
    RELEASE = 2
    CANCEL = 3
    REFUND = 4


class ReleaseState(IntEnum):
    """Where a leg's money is. Equal to proto ReleaseState."""

    UNSPECIFIED = 0
    RELEASED = 1
    HELD = 2
    PARTLY_RELEASED = 3
    VOIDED = 4


@dataclass(frozen=True, slots=True)
class CounterValue:
    """A counter value a split's evaluation used, where it came from and the start of its
    period (None: LIFETIME, or not read from the counter store)."""

    counter_name: str
    subject: str
    value: int
    source: Source
    period_start: dt.datetime | None = None


class LegState(NamedTuple):
    """One leg's accounts and live amounts (a row of split_legs). `transfer_ids`: its
    ledger transfers, oldest first (none for a custodial hold). A named tuple: the split
    path makes one per leg of every order."""

    leg_index: int
    account_id: int
    debit_account_id: int
    amount_minor: int
    held_minor: int
    released_minor: int
    voided_minor: int
    refunded_minor: int
    hold_reason: HoldReason
    transfer_ids: tuple[int, ...]
    refunded_posted_minor: int = 0
    pending_transfer_id: int = 0

    @property
    def pending_id(self) -> int:
        """The leg's open pending transfer while it holds money (0: a custodial hold)."""
        return self.pending_transfer_id or (self.transfer_ids[0] if self.transfer_ids else 0)

    @property
    def left_minor(self) -> int:
        """What the leg still has: held, or posted and not refunded."""
        return self.held_minor + self.released_minor - self.refunded_posted_minor

    @property
    def in_custody(self) -> bool:
        """Held in the custodial account: its receiver was frozen or closed at split time
        (no transfer was made)."""
        return self.hold_reason == HoldReason.RECEIVER_UNAVAILABLE

    @property
    def release_state(self) -> ReleaseState:
        if self.held_minor == self.amount_minor:
            return ReleaseState.HELD
        if self.held_minor:
            return ReleaseState.PARTLY_RELEASED
        if self.voided_minor:
            return ReleaseState.VOIDED
        return ReleaseState.RELEASED


@dataclass(frozen=True, slots=True)
class LegChange:
    """What one action did to one leg, in minor units, and the transfers that did it."""

    leg_index: int
    account_id: int
    held_minor: int = 0  # the split itself: what it held at once
    released_minor: int = 0
    voided_minor: int = 0
    refunded_held_minor: int = 0
    refunded_posted_minor: int = 0
    shortfall_minor: int = 0
    shortfall_account_id: int = 0
    transfer_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Action:
    """A release, cancellation or refund of a split (the split itself is derived, not
    stored as an action). `action_id` is the id of its first transfer; `event_time_ns` of
    a release is the request's event time in nanoseconds since the epoch (None: the
    request said "now", i.e. its commit time)."""

    action_id: int
    kind: ActionKind
    request_id: str
    payload_hash: bytes
    amount_minor: int
    leg_changes: tuple[LegChange, ...]
    created_at: dt.datetime
    event_name: str = ""
    fraction_bps: int = 0
    event_time_ns: int | None = None
    refund_ref: str = ""
    reason_text: str = ""  # the caller's free text


@dataclass(slots=True)
class Split:
    """A committed split: the order as recorded, its evaluation, the counter values it
    used, its legs' live amounts and the actions taken on it since. Not changed in place
    (`dataclasses.replace` makes the next state); not frozen because the split path makes
    one per order and a frozen dataclass's construction costs twice as much."""

    split_id: int
    request_id: str
    payload_hash: bytes
    status: SplitStatus
    order: Order
    evaluation: Evaluation
    counter_values: tuple[CounterValue, ...]
    legs: tuple[LegState, ...]
    refunded_minor: int
    created_at: dt.datetime
    updated_at: dt.datetime
    actions: tuple[Action, ...] = ()

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def currency_code(self) -> str:
        return self.evaluation.currency_code

    @property
    def amount_minor(self) -> int:
        return self.evaluation.amount_minor

    def released_events(self) -> dict[int, set[str]]:
        """The events released so far, by leg index."""
        out: dict[int, set[str]] = {}
        for act in self.actions:
            if act.kind == ActionKind.RELEASE and act.event_name:
                for change in act.leg_changes:
                    out.setdefault(change.leg_index, set()).add(act.event_name)
        return out


@dataclass(frozen=True, slots=True)
class Preview:
    """A dry run: the evaluation of an order as recorded, the counter values it used and
    the custodial account it would debit (0: the platform has none)."""

    order: Order
    evaluation: Evaluation
    counter_values: tuple[CounterValue, ...]
    custodial_id: int


# ---- what callers ask of a split ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """Post held money of an order's split: the steps of `event_name`, or `fraction_bps` of
    what each leg held at split time; only `account_ids`' legs if any are named."""

    request_id: str
    order_id: str
    event_name: str = ""
    fraction_bps: int = 0
    account_ids: frozenset[int] = frozenset()
    reason_text: str = ""
    event_time_ns: int | None = None


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Void what an order's split still holds."""

    request_id: str
    order_id: str
    reason_text: str


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Reverse `amount_minor` of an order's split (see `clearing.splits.refund`)."""

    request_id: str
    order_id: str
    amount_minor: int
    currency_code: str
    reason_text: str
    refund_ref: str = ""
    shortfall_account_ref: str = ""
