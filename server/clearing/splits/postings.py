"""How an order becomes a ledger posting: its counters, its evaluation, the ledger legs of
the evaluation, the split record for the splits sink, and the first response made when the
posting commits (`prepare`). Pure: no I/O."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, NamedTuple

from clearing.errors import FailedPrecondition, invariant
from clearing.ledger.model import Claim, Leg, Mode, Posting, TransferRecord
from clearing.reasons import Reason
from clearing.risk.check import RiskNote
from clearing.rules.compile import Plan
from clearing.rules.counters import CounterSpec, Period, Reading, Source
from clearing.rules.evaluate import Evaluation, counter_requests, evaluate
from clearing.rules.model import HoldReason, Order
from clearing.splits import detail
from clearing.splits.accounts import STALE_ACCOUNT_REASONS
from clearing.splits.model import CounterValue, Split
from clearing.splits.records import SplitRecord
from clearing.splits.store import SINK_NAME

SPLIT_METHOD = "Split"
# Makes a split's first response (recorded bytes) from the committed split.
RespondSplit = Callable[[Split], bytes]


class SplitCommand(NamedTuple):
    """One order to split under a request id; `payload_hash`: the request's digest (what
    binds the request id, see `clearing.idempotency`). A named tuple: one per order."""

    request_id: str
    payload_hash: bytes
    order: Order


def counter_specs(platform_id: int, plan: Plan, order: Order) -> list[CounterSpec]:
    """The counters `order` raises (its paid time decides the period)."""
    invariant(order.paid_time_ns is not None, "the order's paid time is set before counting")
    at = dt.datetime.fromtimestamp(order.paid_time_ns / 1e9, dt.timezone.utc)
    return [CounterSpec(platform_id, r.counter_name, r.subject, Period(r.period), r.time_zone,
                        r.delta, at) for r in counter_requests(plan, order)]


def counter_inputs(readings: Sequence[Reading], overrides: Mapping[str, int]) -> dict[str, int]:
    """Counter values by name for the evaluator; overrides win."""
    values = {r.spec.name: r.value for r in readings}
    values.update(overrides)
    return values


def counter_values(ev: Evaluation, readings: Sequence[Reading],
                   overrides: Mapping[str, int]) -> tuple[CounterValue, ...]:
    """The counter values the evaluation used, each with its source and period start."""
    if not ev.counter_values:
        return ()
    by_name = {r.spec.name: r for r in readings}
    out = []
    for used in ev.counter_values:
        reading = by_name.get(used.counter_name)
        if used.counter_name in overrides:
            source, start = Source.OVERRIDE, None
        elif reading is not None:
            source, start = reading.source, reading.period_start
        else:
            source, start = Source.LIVE, None
        out.append(CounterValue(used.counter_name, used.subject, used.value, source, start))
    return tuple(out)


def counters_json(readings: Sequence[Reading]) -> str:
    """The counter readings of a split, for the splits row's counter_values column."""
    if not readings:
        return "[]"  # json.dumps([]), without its cost on every order of a plan with no tiers
    return json.dumps([{"name": r.spec.name, "subject": r.spec.subject, "value": r.value,
                        "source": int(r.source)} for r in readings], sort_keys=True)


def ledger_legs(ev: Evaluation, custodial_id: int, memo: str) -> tuple[list[Leg], list[int]]:
    """The ledger legs of an evaluation and, per split leg, its position among them (-1:
    held in the custodial account, no transfer).

    - a leg credited at once: an IMMEDIATE transfer from its debit account (0 in the
      Evaluation: the custodial account) to its account (0: the custodial account, for a
      subsidy into the split base);
    - a leg held by its release policy: a PENDING transfer (a release posts it);
    - a leg whose receiver is frozen or closed (RECEIVER_UNAVAILABLE): no transfer. The
      money stays in the custodial account (the ledger refuses even a pending credit to a
      frozen account), the split records what it holds and an alert; a release pays it once
      the account is active. A split whose every leg is held this way is refused
      (RECEIVERS_UNAVAILABLE): a posting needs a transfer to take the order's claim.
    """
    legs: list[Leg] = []
    positions: list[int] = []
    kept_minor = 0
    for leg in ev.legs:
        if leg.hold_reason == HoldReason.RECEIVER_UNAVAILABLE:
            positions.append(-1)
            kept_minor += leg.amount_minor
            continue
        mode = Mode.PENDING if leg.held_minor else Mode.IMMEDIATE
        positions.append(len(legs))
        legs.append(Leg(leg.debit_account_id or custodial_id, leg.account_id or custodial_id,
                        leg.amount_minor, ev.currency_code, mode, 0, memo))
    invariant(sum(leg.amount_minor for leg in legs) + kept_minor
              == ev.distributed_minor + ev.subsidy_minor,
              "ledger legs do not carry the split's legs")
    if not legs:
        raise FailedPrecondition(
            "every receiver of this split is frozen or closed: nothing can be booked yet",
            reason=Reason.RECEIVERS_UNAVAILABLE)
    return legs, positions


class _FirstResponse:
    """A split posting's `respond`: in the writer's batch, makes the committed split from
    the records and its first response. It holds the split record and the caller's respond,
    not the `Prepared` that holds the posting: a posting whose respond refers back to it
    is a reference cycle, so every order's objects (the order, its evaluation, its
    messages: about 20 of them) would wait for the cyclic collector instead of being freed
    when the call is answered (tests/unit/splits/test_postings.py)."""

    __slots__ = ("record", "respond", "split")

    def __init__(self, record: SplitRecord, respond: RespondSplit) -> None:
        self.record, self.respond = record, respond
        self.split: Split | None = None

    def __call__(self, sent: list[TransferRecord]) -> bytes:
        self.split = self.record.committed(sent)
        self.record.response = self.respond(self.split)
        return self.record.response


@dataclass(slots=True)
class Prepared:
    """One evaluated order on its way to the writer: its posting, whose respond makes the
    committed split (`split`) and its first response in the writer's batch."""

    command: SplitCommand
    order: Order
    plan: Plan
    readings: list[Reading]
    record: SplitRecord
    posting: Posting
    made: _FirstResponse

    @property
    def split(self) -> Split | None:
        """The committed split, once the posting's respond made it."""
        return self.made.split

    def committed(self, sent: object) -> bool:
        """Whether `sent` (the writer's answer) is this posting committed, not an error
        nor the records of another posting with the same request id."""
        split = self.made.split
        return (isinstance(sent, list) and split is not None
                and split.split_id == sent[0].transfer_id)


def prepare(platform_id: int, command: SplitCommand, order: Order, plan: Plan,
            custodial_id: int, accounts: Mapping, readings: list[Reading],
            respond: RespondSplit, *, evaluated: Evaluation | None = None,
            risk: RiskNote | None = None) -> Prepared:
    """Evaluate an order (unless `evaluated` is given: the evaluation as the risk check
    left it, with its `risk` note) and build its posting (raises what evaluation
    raises)."""
    ev = evaluated or evaluate(plan, order, counter_inputs(readings, {}), accounts=accounts)
    legs, positions = ledger_legs(ev, custodial_id, order.memo)
    used = counter_values(ev, readings, {})
    record = SplitRecord(platform_id, command.request_id, command.payload_hash, order, ev,
                         used, counters_json(readings), positions, custodial_id,
                         detail.encode_split(order, ev, used), risk)
    claim = Claim.of("order", order.order_id, Reason.ORDER_ALREADY_SPLIT,
                     f"order {order.order_id!r} is already split")
    made = _FirstResponse(record, respond)
    posting = Posting(platform_id, command.request_id, SPLIT_METHOD, command.payload_hash,
                      tuple(legs), (claim,), SINK_NAME, record,
                      unrecorded_reasons=STALE_ACCOUNT_REASONS, respond=made)
    return Prepared(command, order, plan, readings, record, posting, made)
