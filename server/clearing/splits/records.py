"""What a split's or an action's posting carries to the ledger writer's sinks (its
attachment), and what the commit makes of it in memory: the committed split
(`SplitRecord.committed`), the committed action and the split as the action left it
(`ActionRecord.committed`, `apply`). The sinks (`store`) write the same changes in SQL;
the in-memory form is the first response, made in the writer's batch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from clearing.errors import invariant
from clearing.ledger.model import TransferRecord
from clearing.risk.check import RiskNote
from clearing.rules.evaluate import Evaluation
from clearing.rules.model import Order
from clearing.splits.model import (Action, ActionKind, CounterValue, LegChange, LegState,
                                   Split, SplitStatus)


@dataclass(slots=True)
class SplitRecord:
    """What the splits sink stores for one committed split. `transfer_positions[i]`: the
    position of leg i's transfer in the posting, -1 if none (a custodial hold);
    `counters_json`: the counter readings for the splits row's counter_values column;
    `detail`: its stored form (`detail.encode_split`), made before the posting is queued
    so that the writer's flush only copies it. `response`: the split's first response once
    its posting committed (`postings._FirstResponse`, in the writer's batch): the
    serialized Split message, which is also its event's payload (the sink does not build
    it twice)."""

    platform_id: int
    request_id: str
    payload_hash: bytes
    order: Order
    evaluation: Evaluation
    counter_values: tuple[CounterValue, ...]
    counters_json: str
    transfer_positions: list[int]
    custodial_id: int
    detail: str
    risk: RiskNote | None = None  # a platform with an active risk policy: inflows, flags
    response: bytes | None = None

    @property
    def status(self) -> SplitStatus:
        return SplitStatus.HOLDING if self.evaluation.held_minor else SplitStatus.POSTED

    def leg_states(self, sent: Sequence[TransferRecord]) -> tuple[LegState, ...]:
        """The legs as committed: as evaluated, a 0 account being the custodial account."""
        custodial = self.custodial_id
        return tuple(
            LegState(leg.leg_index, leg.account_id or custodial,
                     leg.debit_account_id or custodial, leg.amount_minor, leg.held_minor,
                     leg.amount_minor - leg.held_minor, 0, 0, leg.hold_reason,
                     (sent[p].transfer_id,) if p >= 0 else ())
            for leg, p in zip(self.evaluation.legs, self.transfer_positions))

    def committed(self, sent: Sequence[TransferRecord]) -> Split:
        """The split as its posting committed as `sent` (its id: the first transfer's)."""
        at = sent[0].created_at
        return Split(sent[0].transfer_id, self.request_id, self.payload_hash, self.status,
                     self.order, self.evaluation, self.counter_values, self.leg_states(sent),
                     0, at, at)


@dataclass(frozen=True, slots=True)
class LegDelta:
    """What an action does to one leg (`change`, without its transfer ids), the positions
    of its transfers in the posting, and of the new pending transfer that holds what
    stays held after a partial refund of the hold (-1: none)."""

    change: LegChange
    positions: tuple[int, ...] = ()
    pending_position: int = -1


@dataclass(slots=True)
class ActionRecord:
    """What the actions sink stores for one committed release, cancellation or refund:
    `action` without its id, time and transfer ids (the commit gives them), the leg
    deltas, the split's status after it and what it adds to the split's refunded amount."""

    platform_id: int
    split_id: int
    action: Action
    deltas: tuple[LegDelta, ...]
    status: SplitStatus
    refunded_minor: int = 0
    before: Split | None = None  # the split planned from (its event's state: `apply`)

    def committed(self, sent: Sequence[TransferRecord]) -> Action:
        """The action as committed: id and time of its first transfer, transfer ids."""
        changes = tuple(dataclasses.replace(
            d.change, transfer_ids=tuple(sent[p].transfer_id for p in d.positions))
            for d in self.deltas)
        return dataclasses.replace(self.action, action_id=sent[0].transfer_id,
                                   leg_changes=changes, created_at=sent[0].created_at)

    def pending_ids(self, sent: Sequence[TransferRecord]) -> list[int]:
        """Per delta, the leg's new pending transfer id (0: unchanged)."""
        return [sent[d.pending_position].transfer_id if d.pending_position >= 0 else 0
                for d in self.deltas]


def apply_change(leg: LegState, change: LegChange, pending_id: int) -> LegState:
    """A leg after one action's change (the same arithmetic as the actions sink's SQL)."""
    refunded_held = change.refunded_held_minor
    return leg._replace(
        held_minor=leg.held_minor - change.released_minor - change.voided_minor - refunded_held,
        released_minor=leg.released_minor + change.released_minor,
        voided_minor=leg.voided_minor + change.voided_minor + refunded_held,
        refunded_minor=leg.refunded_minor + refunded_held + change.refunded_posted_minor,
        refunded_posted_minor=leg.refunded_posted_minor + change.refunded_posted_minor,
        transfer_ids=leg.transfer_ids + change.transfer_ids,
        pending_transfer_id=pending_id or leg.pending_transfer_id)


def apply(split: Split, rec: ActionRecord, sent: Sequence[TransferRecord]) -> tuple[Split, Action]:
    """The split as the actions sink leaves it once `rec` committed as `sent`, and the
    action it records, computed in memory: the first response of a release, cancellation or
    refund, made in the writer's batch. `split` is the state the action was planned from
    (its claim makes sure nothing changed since)."""
    action = rec.committed(sent)
    legs = {leg.leg_index: leg for leg in split.legs}
    for change, pending_id in zip(action.leg_changes, rec.pending_ids(sent)):
        legs[change.leg_index] = apply_change(legs[change.leg_index], change, pending_id)
    after = dataclasses.replace(
        split, status=rec.status, refunded_minor=split.refunded_minor + rec.refunded_minor,
        updated_at=action.created_at, legs=tuple(legs[leg.leg_index] for leg in split.legs),
        actions=split.actions + (action,))
    invariant(all(leg.held_minor >= 0 for leg in after.legs), "an action left a leg negative")
    return after, action


def pending_action(kind: ActionKind, request_id: str, payload_hash: bytes, amount_minor: int,
                   **fields) -> Action:
    """An action before its commit (no id, time or transfers yet)."""
    return Action(0, kind, request_id, payload_hash, amount_minor, (), _NOT_YET, **fields)


_NOT_YET = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
