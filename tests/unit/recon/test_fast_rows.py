"""recon.fast_import.Rows, the fast path's lines as recon_statement_lines rows: whatever the
pieces, the same rows (line numbers from 2, the header taken off, the channel and day taken
off, the type as its number), and it gives way (`ok` false) on every line not of
`CanonicalLayout._fast`'s forms, so that the general path reads it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.recon.canonical import COLUMNS
from clearing.recon.fast_import import Rows

HEADER = ",".join(COLUMNS).encode() + b"\n"
PAY = b"WECHAT_PAY,wx1,o1,2026-12-06T10:00:00+08:00,1000,6,994,CNY,2026-12-06,payment"
REFUND = b"WECHAT_PAY,wx2,o1,2026-12-06T23:59:59Z,100,0,100,CNY,2026-12-06,refund"


def _rows(data: bytes, cuts: list[int]) -> tuple[Rows, bytes]:
    rows = Rows(7, 3, "WECHAT_PAY", "2026-12-06")
    out, start = b"", 0
    for cut in sorted(cuts) + [len(data)]:
        out += rows.feed(data[start:cut])
        start = cut
    return rows, out + rows.finish()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 20), st.lists(st.integers(0, 2000), max_size=8), st.booleans())
def test_the_rows_are_the_same_whatever_the_pieces(count, cuts, final_break):
    lines = [PAY if i % 3 else REFUND for i in range(count)]
    data = HEADER + b"\n".join(lines) + (b"\n" if final_break and lines else b"")
    rows, out = _rows(data, [c for c in cuts if c <= len(data)])
    assert rows.ok
    assert out == b"".join(
        b"%d,7,3,%s\n" % (i + 2, b"wx1,o1,2026-12-06T10:00:00+08:00,1000,6,994,CNY,1"
                          if i % 3 else b"wx2,o1,2026-12-06T23:59:59Z,100,0,100,CNY,2")
        for i in range(count))


@pytest.mark.parametrize("index, value", [
    (0, b"ALIPAY"),                          # another channel
    (8, b"2026-12-07"),                      # another day
    (9, b"Payment"),                         # another type
    (1, b""), (2, b""),                      # an empty id
    (1, b"x" * 65), (2, b"x" * 129),         # an id too long
    (3, b"2026-12-06T10:00:00.5+08:00"),     # a fraction of a second
    (3, b"2026-12-06 10:00:00+08:00"),       # no T
    (3, b"2026-12-06T24:00:00+08:00"),       # hour 24 (PostgreSQL would read it)
    (3, b"2026-13-06T10:00:00+08:00"),       # month 13
    (3, b"2026-12-06T10:00:00+16:00"),       # an offset PostgreSQL refuses
    (3, b"2026-12-06T10:00:00+0800"),
    (4, b"0"), (4, b"01000"), (4, b"+1000"), (4, b" 1000"), (4, b"1_000"), (4, b"0x10"),
    (4, b"12345678901234567"),               # 17 digits
    (5, b"-6"), (6, b"0994"),
    (7, b"cny"), (7, b"CNYY"),
])
def test_a_line_not_of_the_forms_makes_it_give_way(index, value):
    fields = PAY.split(b",")
    fields[index] = value
    rows, out = _rows(HEADER + PAY + b"\n" + b",".join(fields) + b"\n" + PAY, [60])
    assert not rows.ok and b"\n3," not in out


@pytest.mark.parametrize("data", [
    HEADER + PAY + b"\n\n" + PAY,            # an empty line
    HEADER + PAY + b",x\n",                  # an eleventh field
    HEADER + PAY.rsplit(b",", 1)[0] + b"\n",  # nine fields
])
def test_a_line_of_another_shape_makes_it_give_way(data):
    assert not _rows(data, [])[0].ok


@pytest.mark.parametrize("channel", ["A,B", "", "x" * 65])
def test_a_channel_it_cannot_match_makes_it_give_way(channel):
    assert not Rows(7, 3, channel, "2026-12-06").ok


def test_a_line_longer_than_the_line_limit_makes_it_give_way(monkeypatch):
    from clearing.recon import lines as recon_lines
    monkeypatch.setattr(recon_lines, "STATEMENT_LINE_BYTES_MAX", 50)
    rows, out = _rows(HEADER + PAY + b"\n" + PAY, [len(HEADER) + 60])
    assert not rows.ok and out == b""
