"""recon.payout_file: a bank's payout result file read into PAYOUT lines (the status kept
as the paid amount), its totals, and its problems by line and field."""

from __future__ import annotations

import datetime as dt

from clearing.recon.model import ImportHeader, LineType, StatementFormat
from clearing.recon.parse import StatementParser

DAY = dt.date(2026, 12, 6)
HEADER = ImportHeader("r", "BANKSIM", DAY, StatementFormat.BANK_PAYOUTS)
HEAD = "bank,bank_reference,end_to_end_id,payout_id,amount_minor,currency_code,status,value_date\n"


def parse(text: str):
    parser = StatementParser(HEADER)
    return parser.feed(text.encode()) + parser.finish(), parser


def row(ref="SIM1", key="po7-t1-a1", payout="7", amount="500", currency="CNY",
        status="SUCCEEDED", day="2026-12-06", bank="BANKSIM") -> str:
    return f"{bank},{ref},{key},{payout},{amount},{currency},{status},{day}\n"


def test_lines_and_totals():
    out, parser = parse(HEAD + row() + row("SIM2", "po8-t2-a3", "8", "300", status="FAILED"))
    assert not parser.problems
    first, second = out
    assert (first.line_type, first.channel_transaction_id, first.order_id, first.payout_id,
            first.amount_minor, first.channel_fee_minor, first.settled_minor) == (
        LineType.PAYOUT, "SIM1", "po7-t1-a1", 7, 500, 0, 500)
    assert (second.payout_id, second.amount_minor, second.settled_minor) == (8, 300, 0)
    assert first.paid_at == dt.datetime(2026, 12, 5, 16, tzinfo=dt.timezone.utc)
    t = parser.totals
    assert (t.line_count, t.currency_code, t.settled_minor) == (2, "CNY", 500)


def test_problems_by_line_and_field():
    out, parser = parse(HEAD + row(bank="OTHER") + row(amount="0", status="paid")
                        + row(payout="x", day="2026-12-07") + row(ref="", key="")
                        + "BANKSIM,SIM1\n")
    assert out == []
    assert [v.field for v in parser.problems.items] == [
        "lines[2].bank", "lines[3].amount_minor", "lines[3].status", "lines[4].value_date",
        "lines[4].payout_id", "lines[5].bank_reference", "lines[5].end_to_end_id", "lines[6]"]


def test_the_header_is_checked():
    out, parser = parse("bank,reference\n" + row())
    assert [v.field for v in parser.problems.items] == ["lines[1]"]
    out, parser = parse("")
    assert [v.field for v in parser.problems.items] == ["lines[1]"]
