"""The split's first response reuses the request's Order message (`api.split._SplitReply`)
while GetSplit builds it from the split's recorded order (`split_convert.order_message`):
the two are the same message for every valid order, so a replayed first response and a
later GetSplit never disagree on the order."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings, strategies as st

from clearing.api import convert, split_convert
from clearing.errors import InvalidArgument
from clearing.reasons import Reason
from clearing.v1 import split_pb2 as pb

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12)


@st.composite
def orders(draw) -> pb.Order:
    msg = pb.Order(
        order_id=draw(TEXT.filter(bool)), amount_minor=draw(st.integers(1, 10**15)),
        currency_code=draw(st.sampled_from(["CNY", "USD", "JPY"])), channel=draw(TEXT),
        channel_fee_minor=draw(st.integers(0, 10**6)), channel_transaction_id=draw(TEXT),
        tags=draw(st.lists(TEXT, max_size=4)),
        attributes=draw(st.dictionaries(TEXT.filter(bool), TEXT, max_size=3)),
        parties=draw(st.dictionaries(TEXT.filter(bool), TEXT.filter(bool), max_size=3)),
        rule_set_name=draw(st.sampled_from(["", "b2b", "held"])), memo=draw(TEXT))
    for i in range(draw(st.integers(0, 3))):
        msg.coupons.add(coupon_id=f"c{i}", amount_minor=draw(st.integers(1, 10**6)),
                        funding=draw(st.sampled_from([pb.COUPON_FUNDING_PLATFORM,
                                                      pb.COUPON_FUNDING_SELLER])))
    if draw(st.booleans()):
        msg.paid_time.FromNanoseconds(draw(st.integers(946_684_800 * 10**9, 4 * 10**18)))
    return msg


@settings(max_examples=300, deadline=None, derandomize=True)
@given(msg=orders())
def test_the_recorded_order_converts_back_to_the_request_s_message(msg):
    again = split_convert.order_message(split_convert.order(msg))
    assert again.SerializeToString(deterministic=True) == msg.SerializeToString(
        deterministic=True)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                    timezones=st.just(dt.timezone.utc)))
def test_a_received_time_in_nanoseconds_is_its_timestamp_s(at):
    """A Split's received time becomes its order's paid time (when the gateway did not say)
    in integer arithmetic (`convert.nanoseconds`), not through a Timestamp message: the
    same nanoseconds, before the epoch too."""
    assert convert.nanoseconds(at) == convert.timestamp(at).ToNanoseconds()
    msg = pb.Order(order_id="o1", amount_minor=100, currency_code="CNY", channel="c")
    assert split_convert.order(msg, at).paid_time_ns == convert.timestamp(at).ToNanoseconds()


def test_an_order_s_coupons_and_paid_time_convert_or_are_refused():
    """`order_from_proto` skips the problem list for an order without coupons or paid time
    (every Split's case); with them, it converts them or refuses them, paths named."""
    plain = pb.Order(order_id="o1", amount_minor=100, currency_code="CNY", channel="c")
    assert split_convert.order_from_proto(plain, paid_time_ns_default=7).paid_time_ns == 7
    assert split_convert.order_from_proto(plain).paid_time_ns is None
    assert split_convert.order_from_proto(plain).coupons == ()
    full = pb.Order(order_id="o1", amount_minor=100, currency_code="CNY", channel="c")
    full.paid_time.FromNanoseconds(1_700_000_000_123_456_789)
    full.coupons.add(coupon_id="c1", amount_minor=5, funding=pb.COUPON_FUNDING_SELLER)
    got = split_convert.order_from_proto(full, paid_time_ns_default=7)
    assert got.paid_time_ns == 1_700_000_000_123_456_789
    assert [(c.coupon_id, c.amount_minor, int(c.funding)) for c in got.coupons] == [
        ("c1", 5, pb.COUPON_FUNDING_SELLER)]
    bad = pb.Order(order_id="o1", amount_minor=100, currency_code="CNY", channel="c")
    bad.coupons.add(coupon_id="c1", amount_minor=5, funding=99)
    bad.paid_time.nanos = -1
    with pytest.raises(InvalidArgument) as err:
        split_convert.order_from_proto(bad)
    assert err.value.reason == Reason.INVALID_ORDER
    assert [v.field for v in err.value.violations] == ["order.coupons[0].funding",
                                                        "order.paid_time"]
