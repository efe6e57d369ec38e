"""recon.fast_import.Feeder, what the fast path hands PostgreSQL's COPY: whatever the chunks
and gzip members, the same content hash, size and line count as recon.lines.LineReader
(the general path's), the data lines exactly (the header and a byte order mark taken off),
and it gives way (`ok` false) on every byte and form only the general path reads."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.recon import lines as recon_lines
from clearing.recon.canonical import COLUMNS
from clearing.recon.fast_import import Feeder
from clearing.recon.lines import LineReader

HEADER = ",".join(COLUMNS).encode()
ROW = b"WECHAT_PAY,wx1,o1,2026-12-06T10:00:00+08:00,1000,6,994,CNY,2026-12-06,payment"


def _feed(data: bytes, step: int) -> tuple[Feeder, bytes]:
    feeder = Feeder()
    out = b""
    for i in range(0, len(data), step):
        out += b"".join(feeder.feed(data[i:i + step]))
    feeder.finish()
    return feeder, out


def _reader(data: bytes) -> LineReader:
    reader = LineReader()
    reader.feed(data)
    reader.finish()
    return reader


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 30), st.integers(1, 300), st.booleans(), st.booleans(),
       st.integers(1, 3), st.booleans())
def test_the_feeder_counts_and_hashes_as_the_line_reader(rows, step, bom, final_break,
                                                          members, gzipped):
    content = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join([HEADER] + [ROW] * rows) + (
        b"\n" if final_break else b"")
    data = content
    if gzipped:
        size = len(content) // members + 1
        data = b"".join(gzip.compress(content[i:i + size])
                        for i in range(0, len(content), size))
    feeder, out = _feed(data, step)
    reader = _reader(data)
    assert feeder.ok == (rows > 0 or final_break)  # a header must end with a line break
    assert feeder.content_sha256 == reader.content_sha256
    assert feeder.size_bytes == reader.size_bytes == len(data)
    assert feeder.line_count() == reader.line_count == rows + 1
    assert not feeder.ok or out == HEADER + b"\n" + b"\n".join([ROW] * rows) + (
        b"\n" if final_break and rows else b"")


@pytest.mark.parametrize("data", [
    b"",                                                  # no header
    HEADER,                                               # a header without a line break
    HEADER + b"\n" + ROW.replace(b"wx1", b'"wx1"'),       # a quote
    HEADER + b"\r\n" + ROW,                               # a carriage return
    HEADER + b"\n" + ROW.replace(b"wx1", b"w\0x"),        # NUL
    HEADER.replace(b"order_id", b" order_id") + b"\n" + ROW,  # not exactly the header
    b"order_id,amount\n" + ROW,                            # another header
    HEADER + b"x" * 100,                                   # a first line longer than it
    gzip.compress(HEADER + b"\n" + ROW)[:-9],              # a truncated gzip stream
    b"\x1f\x8b" + b"not gzip",                             # a damaged one
])
def test_the_feeder_gives_way(data):
    assert not _feed(data, 5)[0].ok


@pytest.mark.parametrize("limit, value", [("STATEMENT_BYTES_MAX", 100),
                                          ("STATEMENT_DECOMPRESSED_BYTES_MAX", 100),
                                          ("STATEMENT_LINES_MAX", 3)])
def test_the_feeder_gives_way_at_a_limit(monkeypatch, limit, value):
    data = b"\n".join([HEADER] + [ROW] * 3)
    assert _feed(data, 50)[0].ok
    monkeypatch.setattr(recon_lines, limit, value)
    assert not _feed(gzip.compress(data) if "DECOMPRESSED" in limit else data, 50)[0].ok
