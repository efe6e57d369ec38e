"""recon.canonical's fast path (one match for the common line) reads every line exactly as the
general path does: the same StatementLine, or nothing and the general path says what is wrong;
and recon.lines cuts the same lines whatever the chunks (lines wholly inside a chunk skip the
partial-line buffer)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.limits import STATEMENT_LINE_BYTES_MAX
from clearing.recon.canonical import CanonicalLayout
from clearing.recon.lines import LineReader, RawLine
from clearing.recon.model import ImportHeader, StatementFormat
from clearing.recon.problems import Problems

HEADER = ImportHeader("r", "WECHAT_PAY", dt.date(2026, 12, 6), StatementFormat.CANONICAL)
GOOD = ["WECHAT_PAY", "4200001", "ORD1", "2026-12-06T10:15:00+08:00", "85000000", "510000",
        "84490000", "CNY", "2026-12-06", "payment"]
# Values that are right, wrong, or right in a form only the general path reads, per field.
VARIANTS = [
    ["WECHAT_PAY", "ALIPAY", "", "WECHAT_PAY ", '"WECHAT_PAY"'],
    ["4200001", "", "x" * 64, "x" * 65, "a\x00b", '"a,b"', "支付1", "a\rb", " 42"],
    ["ORD1", "", "o" * 128, "o" * 129, "订单", "o\"1"],
    ["2026-12-06T10:15:00+08:00", "2026-12-06T02:15:00Z", "2026-12-06t02:15:00z",
     "2026-12-06T10:15:00.5+08:00", "2026-02-30T10:15:00+08:00", "1999-12-31T23:59:59Z",
     "2026-12-06T10:15:00+24:00", "2026-12-06T25:15:00+08:00", "2026-12-06 10:15:00+08:00",
     "2026-12-06T10:15:00"],
    ["85000000", "0", "01", "1000000000000000", "1000000000000001", "-1", "1e3"],
    ["510000", "0", "85000001", "00", "x"],
    ["84490000", "84490001", "0", "85000000"],
    ["CNY", "cny", "XXX", "ZZZ", "USD", "CN"],
    ["2026-12-06", "2026-12-07", "2026-12-6", "2026-02-30"],
    ["payment", "refund", "Payment", ""],
]


def _both(number: int, data: bytes | None):
    layout = CanonicalLayout(HEADER)
    fast = layout._fast(RawLine(number, data)) if data is not None else None
    problems = Problems()
    general = layout._general(RawLine(number, data), problems)
    return fast, general, problems


@settings(max_examples=600, deadline=None)
@given(st.tuples(*(st.sampled_from(v) for v in VARIANTS)),
       st.sampled_from([",", ",,", ";"]))
def test_the_fast_path_reads_as_the_general_path(fields, separator):
    data = separator.join(fields).encode()
    fast, general, problems = _both(5, data)
    if fast is not None:
        assert not problems and fast == general
        assert fast.paid_at.utcoffset() == general.paid_at.utcoffset()
    layout = CanonicalLayout(HEADER)
    problems_line = Problems()
    assert layout.line(RawLine(5, data), problems_line) == general
    assert [(v.field, v.description) for v in problems_line.items] == \
           [(v.field, v.description) for v in problems.items]


def test_the_common_line_takes_the_fast_path():
    fast, general, problems = _both(2, ",".join(GOOD).encode())
    assert fast is not None and fast == general and not problems
    assert _both(2, b"\xff" + ",".join(GOOD).encode())[0] is None  # not UTF-8
    assert _both(1, ",".join(GOOD).encode())[1] is None  # line 1 is the header


def _cut(data: bytes, step: int) -> list[RawLine]:
    reader = LineReader()
    out: list[RawLine] = []
    for i in range(0, len(data), step):
        out += reader.feed(data[i:i + step])
    return out + reader.finish()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"", b"a,b", b"x\r", b"\xef\xbb\xbfh",
                                 b"y" * STATEMENT_LINE_BYTES_MAX,
                                 b"y" * STATEMENT_LINE_BYTES_MAX + b"\r",
                                 b"z" * (STATEMENT_LINE_BYTES_MAX + 1),
                                 b"w" * (STATEMENT_LINE_BYTES_MAX + 2)]), max_size=8),
       st.integers(1, 9000), st.booleans())
def test_lines_are_the_same_whatever_the_chunks(lines, step, final_break):
    data = b"\n".join(lines) + (b"\n" if final_break else b"")
    assert _cut(data, step) == _cut(data, 1)
