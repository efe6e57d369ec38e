"""recon.canonical: the rules of a statement line, one per field, and the header."""

from __future__ import annotations

import datetime as dt

import pytest

from clearing.recon.canonical import COLUMNS, CanonicalLayout, check_line, parse_time
from clearing.recon.lines import RawLine
from clearing.recon.model import ImportHeader, LineType, StatementFormat
from clearing.recon.problems import Problems

DAY = dt.date(2026, 12, 6)
HEADER = ImportHeader("r", "WECHAT_PAY", DAY, StatementFormat.CANONICAL)
GOOD = {"channel": "WECHAT_PAY", "channel_transaction_id": "wx1", "order_id": "o1",
        "paid_time": "2026-12-06T10:00:00.123456789+08:00", "amount_minor": "1000",
        "channel_fee_minor": "6", "settled_minor": "994", "currency_code": "CNY",
        "settlement_date": "2026-12-06", "type": "refund"}


def check(**changes):
    problems = Problems()
    line = check_line(7, {**GOOD, **changes}, HEADER, problems)
    return line, [v.field for v in problems.items]


def test_a_good_line():
    line, fields = check()
    assert fields == []
    assert (line.line_number, line.line_type, line.amount_minor, line.channel_fee_minor,
            line.settled_minor, line.signed_settled_minor()) == (7, LineType.REFUND, 1000, 6,
                                                                 994, -994)
    assert line.paid_at == dt.datetime(2026, 12, 6, 2, 0, 0, 123456, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("changes, field", [
    ({"channel": "ALIPAY"}, "channel"),
    ({"settlement_date": "2026-12-07"}, "settlement_date"),
    ({"settlement_date": "2026-02-30"}, "settlement_date"),
    ({"channel_transaction_id": ""}, "channel_transaction_id"),
    ({"channel_transaction_id": "x" * 65}, "channel_transaction_id"),
    ({"order_id": "x" * 129}, "order_id"),
    ({"order_id": "a\0b"}, "order_id"),
    ({"paid_time": "2026-12-06T10:00:00"}, "paid_time"),          # no offset
    ({"paid_time": "2026-12-06 10:00:00+08:00"}, "paid_time"),
    ({"paid_time": "1999-12-31T23:59:59Z"}, "paid_time"),
    ({"paid_time": "2026-12-06T24:00:00Z"}, "paid_time"),
    ({"amount_minor": "0", "channel_fee_minor": "0", "settled_minor": "0"}, "amount_minor"),
    ({"amount_minor": "-5"}, "amount_minor"),
    ({"amount_minor": "01000"}, "amount_minor"),
    ({"amount_minor": "1" + "0" * 15 + "1"}, "amount_minor"),
    ({"amount_minor": "１０００"}, "amount_minor"),                    # full-width digits
    ({"channel_fee_minor": "1001"}, "channel_fee_minor"),
    ({"settled_minor": "1000"}, "settled_minor"),
    ({"currency_code": "cny"}, "currency_code"),
    ({"type": "PAYMENT"}, "type"),
])
def test_each_rule(changes, field):
    line, fields = check(**changes)
    assert line is None and fields == [f"lines[7].{field}"]


def test_rfc3339_times():
    assert parse_time("2026-12-06T10:00:00Z") == dt.datetime(2026, 12, 6, 10,
                                                             tzinfo=dt.timezone.utc)
    assert parse_time("2026-12-06t10:00:00.5-05:00").utcoffset() == dt.timedelta(hours=-5)
    for bad in ("2026-12-06", "2026-12-06T10:00Z", "2026-12-06T10:00:00+0800", "", "x"):
        assert parse_time(bad) is None, bad


def test_the_header_and_field_counts():
    layout, problems = CanonicalLayout(HEADER), Problems()
    assert layout.line(RawLine(1, ",".join(COLUMNS).encode()), problems) is None
    assert layout.line(RawLine(2, b"a,b"), problems) is None
    assert layout.line(RawLine(3, b""), problems) is None
    assert [v.field for v in problems.items] == ["lines[2]", "lines[3]"]
    other, problems = CanonicalLayout(HEADER), Problems()
    other.line(RawLine(1, b"order_id,amount"), problems)
    other.finish(problems)
    assert [v.field for v in problems.items] == ["lines[1]"]
    empty, problems = CanonicalLayout(HEADER), Problems()
    empty.finish(problems)
    assert [v.field for v in problems.items] == ["lines[1]"]
