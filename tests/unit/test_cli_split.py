"""`clearing split batch`'s reading of files, request ids and calls, without a server: CSV
columns and line numbers, exact major-unit amounts, stable request ids, calls cut by count
and by bytes."""

from __future__ import annotations

from clearing.cli.split_batch import Item, assign_request_ids, chunks, parse_csv, parse_jsonl
from clearing.limits import (REQUEST_ID_LEN_MAX, SPLIT_BATCH_ID_LEN_MAX,
                             SPLIT_BATCH_REQUEST_BYTES_MAX)
from clearing_client.v1 import split_pb2 as pb


def test_csv_columns_amounts_and_line_numbers():
    text = ("order_id,amount,currency,channel,rule_set,tags,coupons,memo,paid_time,"
            "attributes.customer_type,parties.merchant\n"
            "\n"
            'A-1,850000.00,,BANK_TRANSFER,b2b,enterprise purchase; government purchase,,'
            '"two\nlines",2026-01-20T12:00:00+08:00,enterprise,\n'
            "A-2,1500,JPY,ALIPAY,,,C1:20:platform;C2:5:seller,,,,M_10086\n")
    items, errors = parse_csv(text, "f.csv", "CNY")
    assert errors == []
    assert [i.line for i in items] == [3, 5]  # the blank line 2; A-1's memo spans 3 and 4
    a1, a2 = (i.order for i in items)
    assert (a1.amount_minor, a1.currency_code, list(a1.tags), a1.memo) == (
        85_000_000, "CNY", ["enterprise purchase", "government purchase"], "two\nlines")
    assert (dict(a1.attributes), dict(a1.parties)) == ({"customer_type": "enterprise"}, {})
    assert a1.paid_time.ToJsonString() == "2026-01-20T04:00:00Z"
    assert (a2.amount_minor, a2.currency_code, dict(a2.parties)) == (1_500, "JPY",
                                                                    {"merchant": "M_10086"})
    assert [(c.coupon_id, c.amount_minor, c.funding) for c in a2.coupons] == [
        ("C1", 20, pb.COUPON_FUNDING_PLATFORM), ("C2", 5, pb.COUPON_FUNDING_SELLER)]


def test_csv_problems_are_listed_with_their_lines():
    text = ("order_id,amount,currency\n"
            "B-1,1.5,JPY\n"
            "B-2\n"
            "B-3,1.00,CNY,extra\n"
            "B-4,,CNY\n")
    items, errors = parse_csv(text, "f.csv", "CNY")
    assert [i.line for i in items] == []
    assert errors == [
        "f.csv:2: column amount: '1.5' has more decimals than JPY allows",
        "f.csv:3: 1 values, the header has 3 columns (missing: amount, currency)",
        "f.csv:4: 4 values, the header has 3 columns",
        "f.csv:5: column amount: not a number: ''",
    ]
    assert parse_csv("order_id,order_id,parties.\n", "f.csv", "CNY")[1] == [
        "f.csv:1: column 'order_id' given 2 times",
        "f.csv:1: unknown column 'parties.' (columns: order_id, amount, currency, channel, "
        "channel_fee, channel_transaction_id, rule_set, paid_time, memo, tags, coupons, "
        "attributes.KEY, parties.ROLE)",
        "f.csv:1: missing column 'amount'",
    ]
    assert parse_csv("\n\n", "f.csv", "CNY") == ([], ["f.csv: no header row"])


def test_json_lines():
    items, errors = parse_jsonl('{"order_id": "J-1", "amountMinor": 5}\n\n{"orderId": 1}\n',
                                "f.jsonl")
    assert [(i.line, i.order.order_id, i.order.amount_minor) for i in items] == [(1, "J-1", 5)]
    assert errors == ["f.jsonl:3: Failed to parse orderId field: expected string or "
                      "bytes-like object, got 'int'."]


def test_request_ids_follow_the_order_not_its_line():
    orders = [pb.Order(order_id=f"R-{i}", amount_minor=100) for i in range(3)]
    items = [Item(i + 2, o) for i, o in enumerate(orders + [orders[0]])]
    assign_request_ids(items, "batch")
    moved = [Item(10, orders[2]), Item(11, orders[0])]
    assign_request_ids(moved, "batch")
    assert moved[0].request_id == items[2].request_id
    assert moved[1].request_id == items[0].request_id
    assert items[3].request_id == items[0].request_id + ":2"  # a repeated order
    assert len({i.request_id for i in items}) == 4
    other = [Item(2, orders[0])]
    assign_request_ids(other, "b" * SPLIT_BATCH_ID_LEN_MAX)
    assert other[0].request_id != items[0].request_id
    assert len(other[0].request_id) <= REQUEST_ID_LEN_MAX


def test_calls_are_cut_by_count_and_by_bytes():
    small = [Item(i, pb.Order(order_id=f"S-{i}", amount_minor=1)) for i in range(250)]
    assign_request_ids(small, "batch")
    assert [len(c) for c in chunks(small, 100)] == [100, 100, 50]
    attributes = {f"k{a:02}": "v" * 256 for a in range(32)}
    big = [Item(i, pb.Order(order_id=f"B-{i}", amount_minor=1, attributes=attributes))
           for i in range(500)]
    assign_request_ids(big, "batch")
    calls = chunks(big, 1000)
    assert sum(len(c) for c in calls) == 500 and len(calls) > 1
    for call in calls:
        size = pb.SplitBatchRequest(request_id="x" * REQUEST_ID_LEN_MAX, requests=[
            pb.SplitRequest(request_id=i.request_id, order=i.order) for i in call]).ByteSize()
        assert size <= SPLIT_BATCH_REQUEST_BYTES_MAX + REQUEST_ID_LEN_MAX + 8
