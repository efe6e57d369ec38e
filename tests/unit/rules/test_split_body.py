"""The split path builds a split's committed form with less work
(`split_convert.fresh_split`); it must be exactly `split_convert.split` of the legs as
stored (what GetSplit answers right after the commit), for every kind of evaluation the property tests draw
(fees, shares, top slices, tiers and their counter values, subsidies, holds and release
steps, sub-rule-sets), and with receivers frozen (alerts, custodial holds)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import event, given, strategies as st

from clearing.api import split_convert
from clearing.errors import FailedPrecondition
from clearing.ledger.model import AccountStatus
from clearing.rules import runtime
from clearing.rules.evaluate import evaluate
from clearing.rules.model import SplitStatus
from clearing.v1 import split_pb2 as pb

from tests.unit.rules.helpers import ACCOUNTS
from tests.unit.rules.test_properties import SETTINGS, _compile, _evaluate, orders, rule_sets

FROZEN = {ref: dataclasses.replace(info, status=AccountStatus.FROZEN) if ref.endswith(("1", "3"))
          else info for ref, info in ACCOUNTS.items()}


def _message(order) -> pb.Order:
    return pb.Order(order_id=order.order_id, amount_minor=order.amount_minor,
                    currency_code=order.currency_code, channel="UNIONPAY",
                    tags=list(order.tags), attributes=dict(order.attributes))


CUSTODIAL = 999
AT = dt.datetime(2026, 11, 11, 0, 0, 1, 250_000, tzinfo=dt.timezone.utc)


def _same(ev, order) -> None:
    msg = _message(order)
    _same_committed(split_convert.split_body(ev, msg, [], {}), ev)


def _same_committed(body, ev) -> None:
    try:
        _, positions = runtime.ledger_legs(ev, CUSTODIAL, "")
    except FailedPrecondition:  # every receiver held: nothing is booked
        return
    transfer_ids = [7 * 65536 + p if p >= 0 else 0 for p in positions]
    event(f"custodial hold: {0 in transfer_ids}, held: {bool(ev.held_minor)}")
    stored = [runtime.StoredLeg(
        leg.leg_index, leg.account_id or CUSTODIAL, leg.debit_account_id or CUSTODIAL,
        leg.amount_minor, leg.held_minor, leg.amount_minor - leg.held_minor, 0, 0,
        int(leg.hold_reason), (t,) if t else ()) for leg, t in zip(ev.legs, transfer_ids)]
    status = SplitStatus.HOLDING if ev.held_minor else SplitStatus.POSTED
    expected = split_convert.split(body, split_id=transfer_ids[positions.index(0)],
                                   request_id="r1", status=status, legs=stored,
                                   created_at=AT, updated_at=AT)
    fresh = split_convert.fresh_split(body, split_id=transfer_ids[positions.index(0)],
                                      request_id="r1", status=status, custodial_id=CUSTODIAL,
                                      transfer_ids=transfer_ids, created_at=AT,
                                      into=pb.SplitOutcome().split)
    assert fresh == expected
    assert fresh.SerializeToString(deterministic=True) == \
        expected.SerializeToString(deterministic=True)


@SETTINGS
@given(case=rule_sets(), order=orders(), count=st.integers(0, 2_000))
def test_fresh_split_equals_the_split_as_stored(case, order, count):
    ev = _evaluate(_compile(case), order, {"orders": count})
    if isinstance(ev, str):  # refused: nothing to build
        return
    _same(ev, order)


@SETTINGS
@given(case=rule_sets(), order=orders())
def test_fresh_split_equals_the_split_as_stored_with_frozen_receivers(case, order):
    try:
        ev = evaluate(_compile(case), order, {}, accounts=FROZEN)
    except Exception:  # noqa: BLE001 - refusals are the property tests' business
        return
    _same(ev, order)
