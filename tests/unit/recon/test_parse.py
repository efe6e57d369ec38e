"""recon.parse and recon.wechat: a statement's totals and its cross-line rules, the WeChat Pay
style bill read into the same lines as the canonical file, the service's day bounds."""

from __future__ import annotations

import datetime as dt

from clearing.limits import STATEMENT_PROBLEMS_MAX
from clearing.recon.model import ImportHeader, LineType, StatementFormat
from clearing.recon.parse import StatementParser
from clearing.recon.service import day_bounds

DAY = dt.date(2026, 12, 6)
CANONICAL = ImportHeader("r", "WECHAT_PAY", DAY, StatementFormat.CANONICAL)
WECHAT = ImportHeader("r", "WECHAT_PAY", DAY, StatementFormat.WECHAT)
HEAD = ("channel,channel_transaction_id,order_id,paid_time,amount_minor,channel_fee_minor,"
        "settled_minor,currency_code,settlement_date,type\n")


def parse(header: ImportHeader, text: str):
    parser = StatementParser(header)
    out = parser.feed(text.encode()) + parser.finish()
    return out, parser


def row(ctid="wx1", order="o1", amount=1000, fee=6, currency="CNY", kind="payment"):
    return (f"WECHAT_PAY,{ctid},{order},2026-12-06T10:00:00+08:00,{amount},{fee},"
            f"{amount - fee},{currency},2026-12-06,{kind}\n")


def test_totals():
    out, parser = parse(CANONICAL, HEAD + row() + row("rf1", amount=300, fee=0, kind="refund"))
    assert [x.line_number for x in out] == [2, 3]
    t = parser.totals
    assert (t.line_count, t.currency_code, t.settled_minor) == (2, "CNY", 994 - 300)


def test_one_currency_per_statement():
    out, parser = parse(CANONICAL, HEAD + row() + row("wx2", currency="USD") + row("wx3"))
    assert out == [] and [v.field for v in parser.problems.items] == ["lines[3].currency_code"]


def test_problems_are_capped_and_counted():
    _, parser = parse(CANONICAL, HEAD + row(kind="x") * 50)
    assert parser.problems.count == 50 and len(parser.problems.items) == STATEMENT_PROBLEMS_MAX
    assert parser.problems.error().metadata["problems_count"] == "50"


BILL = """交易时间,公众账号ID,微信订单号,商户订单号,交易状态,货币种类,微信退款单号,退款金额,手续费,订单金额,费率
`2026-12-06 10:00:00,`wx2421,`wx1,`o1,`SUCCESS,`CNY,`0,`0.00,`0.06,`10.00,`0.60%
`2026-12-06 18:00:00,`wx2421,`wx1,`o1,`REFUND,`CNY,`rf1,`3.00,`-0.00,`10.00,`0.60%
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
`2,`10.00,`3.00,`0.00,`0.06,`10.00,`3.00
"""


def test_the_wechat_bill():
    out, parser = parse(WECHAT, BILL)
    assert parser.problems.items == []
    pay, refund = out
    assert (pay.line_type, pay.channel_transaction_id, pay.order_id, pay.amount_minor,
            pay.channel_fee_minor, pay.settled_minor) == (LineType.PAYMENT, "wx1", "o1", 1000,
                                                          6, 994)
    assert pay.paid_at == dt.datetime(2026, 12, 6, 2, tzinfo=dt.timezone.utc)
    assert (refund.line_type, refund.channel_transaction_id, refund.amount_minor,
            refund.settled_minor) == (LineType.REFUND, "rf1", 300, 300)


def test_wechat_problems():
    bad = BILL.replace("`10.00,`0.60%\n`2026-12-06 18", "`10.001,`0.60%\n`2026-12-06 18")
    _, parser = parse(WECHAT, bad.replace("`2,`10.00", "`3,`10.00"))
    assert [v.field for v in parser.problems.items] == ["lines[2].amount_minor",
                                                        "lines[5].总交易单数"]
    _, parser = parse(WECHAT, BILL.split("总交易单数")[0])
    assert [v.field for v in parser.problems.items] == ["chunk"]  # no summary
    _, parser = parse(WECHAT, "交易时间,商户订单号\n")
    assert [v.field for v in parser.problems.items] == ["lines[1]"]
    _, parser = parse(WECHAT, BILL + "`one more\n")
    assert [v.field for v in parser.problems.items] == ["lines[6]"]


def test_day_bounds_in_a_time_zone():
    start, end = day_bounds(DAY, "Asia/Shanghai")
    assert (start.isoformat(), end.isoformat()) == ("2026-12-05T16:00:00+00:00",
                                                    "2026-12-06T16:00:00+00:00")
    start, end = day_bounds(dt.date(2026, 3, 8), "America/New_York")  # a 23-hour day
    assert end - start == dt.timedelta(hours=23)
