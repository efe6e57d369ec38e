"""recon.lines: cutting a statement's bytes into lines under the limits, whatever the
chunks, gzip or not."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from clearing.errors import InvalidArgument
from clearing.limits import STATEMENT_LINE_BYTES_MAX
from clearing.recon import lines as module
from clearing.recon.lines import LineReader, RawLine


def read(data: bytes, cuts: list[int] = ()) -> tuple[list[RawLine], LineReader]:
    reader = LineReader()
    out: list[RawLine] = []
    start = 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        out += reader.feed(data[start:cut])
        start = cut
    out += reader.finish()
    return out, reader


def test_lines_numbers_and_breaks():
    out, reader = read(b"\xef\xbb\xbfa,b\r\nc\n\nd")
    assert out == [RawLine(1, b"a,b"), RawLine(2, b"c"), RawLine(3, b""), RawLine(4, b"d")]
    assert (reader.line_count, reader.size_bytes) == (4, 12)
    assert read(b"a\n")[0] == [RawLine(1, b"a")]  # a final break ends the last line
    assert read(b"")[0] == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b",", b"\n", b"\r\n", "é".encode(), b"xyz"]),
                max_size=60),
       st.lists(st.integers(0, 200), max_size=10), st.booleans())
def test_any_chunking_gives_the_same_lines_and_hash(parts, cuts, gzipped):
    content = b"".join(parts)
    data = gzip.compress(content) if gzipped else content
    whole, _ = read(data)
    cut, reader = read(data, cuts)
    assert cut == whole
    assert reader.content_sha256 == hashlib.sha256(content).digest()
    assert reader.problem is None


def test_gzip_members_in_turn_and_the_same_hash():
    content = b"h\n1\n2\n"
    plain = read(content)[1].content_sha256
    out, reader = read(gzip.compress(b"h\n1\n") + gzip.compress(b"2\n"), [3, 25])
    assert [x.data for x in out] == [b"h", b"1", b"2"]
    assert reader.content_sha256 == plain


@pytest.mark.parametrize("data, problem", [
    (gzip.compress(b"h\n1\n", mtime=0)[:-4], "truncated"),
    (b"\x1f\x8b" + b"\x00" * 20, "not a valid gzip stream"),
    (gzip.compress(b"h\n", mtime=0) + b"trailing", "not a valid gzip stream"),
])
def test_broken_gzip_is_a_problem(data, problem):
    _, reader = read(data)
    assert problem in reader.problem


def test_a_long_line_is_dropped_and_marked():
    long = b"x" * (STATEMENT_LINE_BYTES_MAX + 1)
    exact = b"y" * STATEMENT_LINE_BYTES_MAX
    out, _ = read(b"a\n" + long + b"\n" + exact + b"\r\nb", [5, 100, 3000])
    assert out == [RawLine(1, b"a"), RawLine(2, None), RawLine(3, exact), RawLine(4, b"b")]
    assert read(long)[0] == [RawLine(1, None)]


@pytest.mark.parametrize("limit, data", [
    ("STATEMENT_BYTES_MAX", b"a\n" * 60),
    ("STATEMENT_LINES_MAX", b"a\n" * 60),
    ("STATEMENT_DECOMPRESSED_BYTES_MAX", gzip.compress(b"a" * 10_000, mtime=0)),
])
def test_limits_raise_too_large(monkeypatch, limit, data):
    monkeypatch.setattr(module, limit, 100 if limit != "STATEMENT_LINES_MAX" else 10)
    with pytest.raises(InvalidArgument) as err:
        read(data, [7])
    assert err.value.reason == "STATEMENT_TOO_LARGE"
    assert [v.field for v in err.value.violations] == ["chunk"]
