"""The fast import of a canonical statement: no line passes through Python's per-line
reader (docs/recon.md, "Scale"; measured by `make bench-recon`).

The file's chunks are inflated here; each block of whole lines is checked against the forms
of `CanonicalLayout._fast` in one regular-expression match (`Rows`: the common case, the
same rules, nothing looser), turned into the rows of recon_statement_lines (the channel and
day taken off, the type as its number, the line number and ids put before) and streamed as
it comes by one `COPY (FORMAT csv)` straight into recon_statement_lines: the server checks
a block while PostgreSQL writes the previous one, on the other core. PostgreSQL's casts of
the paid time and amounts, then one aggregate (SQL_CHECK), check what forms cannot (a 30
February, the amounts' relations, the paid time's minimum) and return the statement's
totals.

Anything this path does not take for certain (a quote, NUL or carriage return anywhere, a
header not exactly COLUMNS, a line not of the forms, a limit reached, a damaged gzip stream,
a COPY error, a line the check refuses, two currencies, fewer rows than lines) makes it give
way: the savepoint is rolled back and the chunks, replayed from a spool file (the upload as
received, so memory stays bounded) and then read on from the stream, go through the general
path (`service._stream_lines`, the Python reader) which imports the file or says exactly
what is wrong with it, line by line, as before. A valid file is imported identically either
way (tests/integration/test_recon_fast_import.py)."""

from __future__ import annotations

import hashlib
import re
import tempfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from clearing.limits import (AMOUNT_MINOR_MAX, CHANNEL_TRANSACTION_ID_LEN_MAX,
                             ORDER_ID_LEN_MAX, PAID_TIME_MIN, RECON_MATCH_TIMEOUT_S,
                             STATEMENT_AMOUNTS_MINOR_MAX, STATEMENT_UPLOAD_TIMEOUT_S)
from clearing.money import is_currency
from clearing.recon import lines as line_limits
from clearing.recon.canonical import COLUMNS
from clearing.recon.model import ImportHeader, LineType

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_BOM = b"\xef\xbb\xbf"
_HEADER_LINE = ",".join(COLUMNS).encode()
_REFUSED = (b'"', b"\0", b"\r")  # bytes only the general path reads (or refuses)
SPOOL_READ_BYTES = 1 << 20

# The columns the fast path COPYs into recon_statement_lines (payout_id takes its default),
# in the order `Rows` writes them.
LINE_COLUMNS = ("line_number", "statement_id", "platform_id", "channel_transaction_id",
                "order_id", "paid_at", "amount_minor", "channel_fee_minor", "settled_minor",
                "currency_code", "line_type")
# A line's forms (`CanonicalLayout._fast`, nothing looser): the import's channel and day as
# they are, ids of 1 to 64 and 1 to 128 bytes (never more characters than the general path
# takes), a paid time without fraction whose fields are in range, amounts without sign or
# leading zero, three capitals, the type. The Feeder has already refused every quote, NUL
# and carriage return. What the forms cannot say (a 30 February, the amounts' relations,
# the paid time's minimum, one currency) PostgreSQL says: the COPY's casts fail, or the
# check after it (SQL_CHECK) counts the line as refused.
_LINE = (rb"%s,[^,\n]{1,%d},[^,\n]{1,%d},"
         rb"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
         rb"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:Z|[+-](?:0[0-9]|1[0-5]):[0-5][0-9]),"
         rb"[1-9][0-9]{0,15},(?:0|[1-9][0-9]{0,15}),(?:0|[1-9][0-9]{0,15}),[A-Z]{3},"
         rb"%s,(?:payment|refund)\n")
_CHANNEL_REFUSED = re.compile(rb"[,\n\"\x00\r]")

# After the COPY: the statement's totals, and the lines whose values the forms could not
# check (CanonicalLayout._fast's comparisons).
SQL_CHECK = f"""/*recon:lines*/
SELECT count(*) AS line_count, min(l.currency_code COLLATE "C") AS currency_min,
       max(l.currency_code COLLATE "C") AS currency_max,
       coalesce(sum(l.amount_minor), 0) AS amounts_minor,
       coalesce(sum(CASE WHEN l.line_type = {int(LineType.REFUND)} THEN -l.settled_minor
                         ELSE l.settled_minor END), 0) AS settled_minor,
       count(*) FILTER (WHERE NOT (l.amount_minor <= {AMOUNT_MINOR_MAX}
                                   AND l.channel_fee_minor <= l.amount_minor
                                   AND l.settled_minor = l.amount_minor - l.channel_fee_minor
                                   AND l.paid_at >= $2)) AS refused
FROM recon_statement_lines l WHERE l.statement_id = $1
"""


# SQL_CHECK reads every line of the statement once: in parallel workers beside the server's
# backend (they see this transaction's lines), whatever the planner's cost of starting them.
SQL_CHECK_PARALLEL = "SET LOCAL parallel_setup_cost = 0"


class Rows:
    """The Feeder's pieces (the header line first) as the CSV rows COPY writes into
    recon_statement_lines (LINE_COLUMNS): every line checked against the forms in one
    regular-expression match per block of whole lines (C speed, in the server's process
    while PostgreSQL COPYs the previous block on the other core), the channel and day
    taken off, the type as its number, the line number and the ids put before. `ok` false:
    a line not of the forms (the general path reads it)."""

    def __init__(self, statement_id: int, platform_id: int, channel: str, day: str) -> None:
        raw = channel.encode()
        self.ok = not _CHANNEL_REFUSED.search(raw) and 0 < len(raw) <= 64
        self._lines = re.compile(rb"(?:" + _LINE % (re.escape(raw),
                                                    CHANNEL_TRANSACTION_ID_LEN_MAX,
                                                    ORDER_ID_LEN_MAX, re.escape(day.encode()))
                                 + rb")*")
        self._start = b"\n" + raw + b","
        self._types = ((b",%s,payment\n" % day.encode(), b",%d\n" % int(LineType.PAYMENT)),
                       (b",%s,refund\n" % day.encode(), b",%d\n" % int(LineType.REFUND)))
        self._row = b"%d," + b"%d,%d," % (statement_id, platform_id) + b"%b\n"
        self._number = 2  # the next data line's; the header is 1
        self._header = True
        self._tail = b""

    def feed(self, piece: bytes) -> bytes:
        data = self._tail + piece
        end = data.rfind(b"\n") + 1
        self._tail = data[end:]
        if len(self._tail) > line_limits.STATEMENT_LINE_BYTES_MAX:  # no line of the forms
            self.ok = False  # (and no copying of an ever longer tail)
            return b""
        return self._block(data[:end])

    def finish(self) -> bytes:
        """The last line, if the file does not end with a line break."""
        tail, self._tail = self._tail, b""
        return self._block(tail + b"\n") if tail else b""

    def _block(self, block: bytes) -> bytes:
        if self._header and block:
            block = block[block.index(b"\n") + 1:]
            self._header = False
        if not block or not self.ok:
            return b""
        if self._lines.fullmatch(block) is None:
            self.ok = False
            return b""
        block = (b"\n" + block).replace(self._start, b"\n")
        for text, number in self._types:
            block = block.replace(text, number)
        lines = block[1:].split(b"\n")
        lines.pop()
        first, self._number = self._number, self._number + len(lines)
        return b"".join(map(self._row.__mod__, zip(range(first, self._number), lines)))


class Spool:
    """The upload's chunks as received, in a temporary file (deleted when closed)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="clearing-statement-")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    async def replay(self, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """What was written, then what `rest` still yields."""
        self._file.seek(0)
        while data := self._file.read(SPOOL_READ_BYTES):
            yield data
        async for chunk in rest:
            yield chunk

    def close(self) -> None:
        self._file.close()


class Feeder:
    """Inflates the chunks, hashes the content and counts its lines, and says whether the
    fast path may still take the file (`ok`); the pieces to COPY."""

    def __init__(self) -> None:
        self.ok = True
        self.size_bytes = 0
        self.decompressed_bytes = 0
        self.newlines = 0
        self._sha256 = hashlib.sha256()
        self._gzip: bool | None = None
        self._inflate = None
        self._first = b""  # until gzip or not is known
        self._head = b""  # until the header line is whole
        self._header_done = False
        self._last = b"\n"  # the last byte of the content so far

    @property
    def content_sha256(self) -> bytes:
        return self._sha256.digest()

    def line_count(self) -> int:
        return self.newlines + (0 if self._last == b"\n" else 1)

    def feed(self, chunk: bytes) -> list[bytes]:
        self.size_bytes += len(chunk)
        if self.size_bytes > line_limits.STATEMENT_BYTES_MAX:
            self.ok = False
            return []
        if self._gzip is None:  # known from the first two bytes
            self._first += chunk
            if len(self._first) < len(_GZIP_MAGIC):
                return []
            chunk, self._first = self._first, b""
            self._gzip = chunk.startswith(_GZIP_MAGIC)
            if self._gzip:
                self._inflate = zlib.decompressobj(_GZIP_WBITS)
        pieces = self._inflated(chunk) if self._gzip else [chunk]
        return [p for p in (self._checked(p) for p in pieces if self.ok) if p]

    def finish(self) -> None:
        if self._gzip is None:  # a file of one byte
            self.ok = False
        if self._gzip and not self._inflate.eof:
            self.ok = False  # truncated
        if not self._header_done or self.size_bytes == 0:
            self.ok = False

    def _inflated(self, data: bytes) -> list[bytes]:
        out = []
        while data and self.ok:
            if self._inflate.eof:
                self._inflate = zlib.decompressobj(_GZIP_WBITS)
            try:
                piece = self._inflate.decompress(data, line_limits.STATEMENT_INFLATE_STEP_BYTES)
            except zlib.error:
                self.ok = False
                break
            self.decompressed_bytes += len(piece)
            if self.decompressed_bytes > line_limits.STATEMENT_DECOMPRESSED_BYTES_MAX:
                self.ok = False
                break
            if piece:
                out.append(piece)
            data = (self._inflate.unused_data if self._inflate.eof
                    else self._inflate.unconsumed_tail)
        return out

    def _checked(self, piece: bytes) -> bytes:
        self._sha256.update(piece)
        if any(b in piece for b in _REFUSED):
            self.ok = False
            return b""
        self.newlines += piece.count(b"\n")
        self._last = piece[-1:]
        if self.line_count() > line_limits.STATEMENT_LINES_MAX:
            self.ok = False
            return b""
        if not self._header_done:
            self._head += piece
            end = self._head.find(b"\n")
            if end < 0:
                if len(self._head) > len(_BOM) + len(_HEADER_LINE):
                    self.ok = False
                return b""
            head = self._head[len(_BOM):] if self._head.startswith(_BOM) else self._head
            self._header_done = True
            self._head = b""
            if not head.startswith(_HEADER_LINE + b"\n"):
                self.ok = False
                return b""
            return head
        return piece


@dataclass(frozen=True, slots=True)
class Imported:
    """What the fast path wrote: the file's hash and size, the totals of its lines."""

    content_sha256: bytes
    size_bytes: int
    line_count: int
    currency_code: str
    settled_minor: int


class _Source:
    """The COPY's data: the stream's chunks, spooled, fed, and passed on as rows while the
    fast path holds; the stream's own error (a bad chunk) is kept to be raised after the
    COPY."""

    def __init__(self, chunks: AsyncIterator[bytes], spool: Spool, feeder: Feeder,
                 rows: Rows) -> None:
        self.chunks, self.spool, self.feeder, self.rows = chunks, spool, feeder, rows
        self.error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.feeder.ok and self.rows.ok

    async def __aiter__(self):
        while self.ok:
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self.feeder.finish()
                if self.ok and (last := self.rows.finish()):
                    yield last
                return
            except Exception as exc:  # noqa: BLE001 - raised by the caller after the COPY
                self.error = exc
                return
            self.spool.write(chunk)
            for piece in self.feeder.feed(chunk):
                if self.ok and (data := self.rows.feed(piece)):
                    yield data


async def import_lines(conn: asyncpg.Connection, statement_id: int, platform_id: int,
                       header: ImportHeader, chunks: AsyncIterator[bytes], spool: Spool,
                       ) -> Imported | None:
    """The statement's lines written by the fast path, or None: nothing of it kept, the
    chunks read so far in `spool` (the general path replays them, then reads on)."""
    feeder = Feeder()
    rows = Rows(statement_id, platform_id, header.channel, header.settlement_date.isoformat())
    source = _Source(chunks, spool, feeder, rows)
    tx = conn.transaction()  # a savepoint in the import's transaction
    await tx.start()
    try:
        status = await conn.copy_to_table("recon_statement_lines", source=source.__aiter__(),
                                          columns=LINE_COLUMNS, format="csv",
                                          timeout=STATEMENT_UPLOAD_TIMEOUT_S)
        if source.error is not None:
            raise source.error
        if not source.ok or int(status.split()[-1]) != feeder.line_count() - 1:
            await tx.rollback()
            return None
        await conn.execute(SQL_CHECK_PARALLEL)
        row = await conn.fetchrow(SQL_CHECK, statement_id, PAID_TIME_MIN,
                                  timeout=RECON_MATCH_TIMEOUT_S)
    except asyncpg.PostgresError:
        await tx.rollback()
        if source.error is not None:
            raise source.error from None
        return None
    except BaseException:
        await tx.rollback()
        raise
    currency = row["currency_min"] or ""
    if (row["line_count"] != feeder.line_count() - 1 or row["refused"]
            or currency != (row["currency_max"] or "")
            or (currency and not is_currency(currency))
            or row["amounts_minor"] > STATEMENT_AMOUNTS_MINOR_MAX):
        await tx.rollback()
        return None
    await tx.commit()
    return Imported(feeder.content_sha256, feeder.size_bytes, row["line_count"], currency,
                    int(row["settled_minor"]))
