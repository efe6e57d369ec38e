"""A split's stored form (`clearing.splits.detail`) gives back exactly what was stored: the
order as recorded, the evaluation and the counter values, for every kind of evaluation the
property tests draw (fees, shares, top slices, tiers and their counter values, subsidies,
holds and release steps, sub-rule-sets), with receivers frozen (alerts, custodial holds);
and the Split message of a split read back from its stored form is byte for byte the one
answered when it committed (what GetSplit answers right after the commit). Actions too.
The format's field names are pinned to the row types they store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from hypothesis import event, given, strategies as st

from clearing.api import split_convert
from clearing.errors import FailedPrecondition
from clearing.ledger.model import AccountStatus
from clearing.rules.counters import Source
from clearing.rules.evaluate import Alert, Leg, MatchedRule, StepAmount, evaluate
from clearing.rules.model import Coupon, CouponFunding, Order
from clearing.splits import detail
from clearing.splits.model import Action, ActionKind, CounterValue, LegChange
from clearing.splits.postings import ledger_legs
from clearing.splits.records import SplitRecord

from tests.unit.rules.helpers import ACCOUNTS
from tests.unit.rules.test_properties import SETTINGS, _compile, _evaluate, orders, rule_sets

FROZEN = {ref: dataclasses.replace(info, status=AccountStatus.FROZEN) if ref.endswith(("1", "3"))
          else info for ref, info in ACCOUNTS.items()}
CUSTODIAL = 999
AT = dt.datetime(2026, 11, 11, 0, 0, 1, 250_000, tzinfo=dt.timezone.utc)
PAID_NS = 1_762_819_201_123_456_789  # nanoseconds kept exactly


def _recorded(order: Order) -> Order:
    return dataclasses.replace(order, paid_time_ns=PAID_NS, channel_transaction_id="TX-9",
                               memo="memo ✓", attributes={"k": "v"},
                               parties={**order.parties, "seller": "SUP_2025001"})


@dataclasses.dataclass
class _Sent:
    """A committed transfer's record, as far as a split reads it."""

    transfer_id: int
    created_at: dt.datetime = AT


def _sent(positions: list[int]) -> list[_Sent]:
    return [_Sent(7 * 65536 + p) for p in range(max(positions) + 1)]


def _same(ev, order) -> None:
    order = _recorded(order)
    try:
        _, positions = ledger_legs(ev, CUSTODIAL, "")
    except FailedPrecondition:  # every receiver held: nothing is booked
        return
    event(f"custodial hold: {-1 in positions}, held: {bool(ev.held_minor)}")
    counters = tuple(CounterValue(c.counter_name, c.subject, c.value, Source.LIVE, AT)
                     for c in ev.counter_values)
    text = detail.encode_split(order, ev, counters)
    record = SplitRecord(1, "r1", b"h", order, ev, counters, "[]", positions, CUSTODIAL, text)
    committed = record.committed(_sent(positions))
    json.loads(text)  # valid JSON, as the column requires
    got_order, got_ev, got_counters = detail.decode_split(text, order_id=order.order_id)
    assert (got_order, got_ev, got_counters) == (order, ev, counters)
    read = dataclasses.replace(committed, order=got_order, evaluation=got_ev,
                               counter_values=got_counters)
    assert split_convert.split(read).SerializeToString(deterministic=True) == \
        split_convert.split(committed).SerializeToString(deterministic=True)


@SETTINGS
@given(case=rule_sets(), order=orders(), count=st.integers(0, 2_000))
def test_a_split_reads_back_as_stored(case, order, count):
    ev = _evaluate(_compile(case), order, {"orders": count})
    if isinstance(ev, str):  # refused: nothing to build
        return
    _same(ev, order)


@SETTINGS
@given(case=rule_sets(), order=orders())
def test_a_split_reads_back_as_stored_with_frozen_receivers(case, order):
    try:
        ev = evaluate(_compile(case), order, {}, accounts=FROZEN)
    except Exception:  # noqa: BLE001 - refusals are the property tests' business
        return
    _same(ev, order)


def test_the_format_names_the_fields_of_the_row_types_it_stores():
    """A row type that gains, loses or reorders a field needs a new format number (old rows
    are read by the field names of their own format)."""
    fields = detail.FORMATS[detail.FORMAT]
    assert fields["legs"] == Leg._fields
    assert fields["release_steps"] == StepAmount._fields
    assert fields["matched_rules"] == MatchedRule._fields
    assert fields["alerts"] == Alert._fields
    assert fields["counter_values"] == ("counter_name", "subject", "value", "source",
                                        "period_start_ns")
    assert [f.name for f in dataclasses.fields(CounterValue)] == [
        "counter_name", "subject", "value", "source", "period_start"]


def test_an_unknown_format_is_refused_loudly():
    text = json.dumps({"format": 99})
    with pytest.raises(Exception, match="unknown split detail format 99"):
        detail.decode_split(text, order_id="O")


def test_a_row_of_another_length_than_its_format_is_refused():
    order = Order("O", 100, "CNY", paid_time_ns=PAID_NS)
    ev = evaluate(_compile_simple(), order, {}, accounts=ACCOUNTS)
    doc = json.loads(detail.encode_split(order, ev, ()))
    doc["legs"][0].append("extra")
    with pytest.raises(Exception, match="a legs row of 17 values"):
        detail.decode_split(json.dumps(doc), order_id="O")


def _compile_simple():
    from tests.unit.rules.helpers import plan_of
    return plan_of("""
        name: simple
        currency_code: CNY
        rules:
          - rule_name: all
            priority: 1
            shares:
              - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
                 receiver: {account_ref: PLAT_001}}
              - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
    """)


def test_coupons_and_enum_values_read_back_as_their_types():
    order = Order("O", 10_000, "CNY", coupons=(Coupon("c1", 300, CouponFunding.SELLER),),
                  paid_time_ns=PAID_NS)
    ev = evaluate(_compile_simple(), order, {}, accounts=ACCOUNTS)
    got_order, got_ev, _ = detail.decode_split(detail.encode_split(order, ev, ()),
                                               order_id="O")
    assert got_order.coupons[0].funding is CouponFunding.SELLER
    assert [type(leg.kind).__name__ for leg in got_ev.legs] == ["LegKind"] * len(ev.legs)
    assert [leg.amount_minor for leg in got_ev.legs] == [1_000, 9_000]


@pytest.mark.parametrize("action", [
    Action(5, ActionKind.RELEASE, "rel-1", b"\x01", 300,
           (LegChange(0, 11, released_minor=300, transfer_ids=(8,)),), AT,
           event_name="SHIPPED", event_time_ns=PAID_NS, reason_text="shipped"),
    Action(6, ActionKind.RELEASE, "rel-2", b"\x02", 1, (LegChange(1, 12, released_minor=1),),
           AT, fraction_bps=2500),
    Action(7, ActionKind.CANCEL, "can-1", b"\x03", 900,
           (LegChange(0, 11, voided_minor=900, transfer_ids=(9,)),), AT, reason_text="no stock"),
    Action(8, ActionKind.REFUND, "ref-1", b"\x04", 1_000,
           (LegChange(0, 11, refunded_held_minor=100, refunded_posted_minor=400,
                      shortfall_minor=50, shortfall_account_id=77,
                      transfer_ids=(10, 11, 12, 13)),), AT, refund_ref="RF-1",
           reason_text="returned"),
])
def test_an_action_reads_back_as_stored(action):
    text = detail.encode_action(action)
    assert detail.decode_action(text, action_id=action.action_id,
                                request_id=action.request_id,
                                payload_hash=action.payload_hash,
                                created_at=action.created_at) == action
