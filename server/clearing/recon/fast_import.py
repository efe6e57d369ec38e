"""The fast import of a canonical statement: PostgreSQL parses and checks the lines, no line
passes through Python (docs/recon.md, "Scale"; measured by `make bench-recon`).

The file's chunks are inflated here and streamed as they come by one `COPY (FORMAT csv)`
into a temporary staging table of text columns, whose identity column numbers the lines;
one `INSERT ... SELECT` then checks every line in SQL as `CanonicalLayout._fast` does
(the common case: the same rules, nothing looser) and writes the typed lines into
recon_statement_lines, and returns the statement's totals.

Anything this path does not take for certain (a quote, NUL or carriage return anywhere, a
header not exactly COLUMNS, a limit reached, a damaged gzip stream, a COPY error, a line
its checks refuse, two currencies, fewer rows than lines) makes it give way: the savepoint
is rolled back and the chunks, replayed from a spool file (the upload as received, so
memory stays bounded) and then read on from the stream, go through the general path
(`service._stream_lines`, the Python reader) which imports the file or says exactly what
is wrong with it, line by line, as before. A valid file is imported identically either way
(tests/integration/test_recon_fast_import.py)."""

from __future__ import annotations

import hashlib
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
STAGE = "recon_stage"

_SQL_STAGE = (f"CREATE TEMPORARY TABLE {STAGE} (n bigint GENERATED ALWAYS AS IDENTITY, "
              + ", ".join(f"{c} text" for c in COLUMNS) + ") ON COMMIT DROP")
# `CanonicalLayout._fast` in SQL: a line is written only if that path would read it (its
# currency is checked in Python: the statement has one). Plain string functions, no regular
# expressions (PostgreSQL's took about 8 us a field). The casts come after the forms are
# checked (OFFSET 0 keeps the filter below them); a cast that fails anyway (30 February)
# fails the statement, which gives way to the general path.
_DIGITS = "'0123456789'"
_PAID_FORMS = ("'9999-99-99T99:99:99Z'", "'9999-99-99T99:99:99+99:99'",
               "'9999-99-99T99:99:99-99:99'")


def _minor(column: str) -> str:
    """`column` is 0 or a whole number without leading zeros, of at most 16 digits."""
    return (f"translate(s.{column}, {_DIGITS}, '') = '' AND length(s.{column}) BETWEEN 1 AND 16"
            f" AND (left(s.{column}, 1) <> '0' OR s.{column} = '0')")


SQL_LINES = f"""/*recon:lines*/
WITH ins AS (
  INSERT INTO recon_statement_lines (statement_id, line_number, platform_id, line_type,
      channel_transaction_id, order_id, paid_at, amount_minor, channel_fee_minor,
      settled_minor, currency_code)
  SELECT $1, t.n + 1, $2, t.line_type, t.channel_transaction_id, t.order_id, t.paid_at,
         t.amount_minor, t.channel_fee_minor, t.settled_minor, t.currency_code
  FROM (
    SELECT s.n, CASE s.type WHEN 'payment' THEN {int(LineType.PAYMENT)}
                            ELSE {int(LineType.REFUND)} END AS line_type,
           s.channel_transaction_id, s.order_id, s.paid_time::timestamptz AS paid_at,
           s.amount_minor::bigint AS amount_minor,
           s.channel_fee_minor::bigint AS channel_fee_minor,
           s.settled_minor::bigint AS settled_minor, s.currency_code
    FROM {STAGE} s
    WHERE s.channel = $3 AND s.settlement_date = $4 AND s.type IN ('payment', 'refund')
      AND length(s.channel_transaction_id) BETWEEN 1 AND {CHANNEL_TRANSACTION_ID_LEN_MAX}
      AND length(s.order_id) BETWEEN 1 AND {ORDER_ID_LEN_MAX}
      AND translate(s.paid_time, {_DIGITS}, '9999999999') IN ({", ".join(_PAID_FORMS)})
      AND substr(s.paid_time, 12, 2) COLLATE "C" < '24'
      AND substr(s.paid_time, 18, 2) COLLATE "C" < '60'
      AND {_minor("amount_minor")} AND s.amount_minor <> '0'
      AND {_minor("channel_fee_minor")} AND {_minor("settled_minor")}
    OFFSET 0
  ) t
  WHERE t.amount_minor <= {AMOUNT_MINOR_MAX} AND t.channel_fee_minor <= t.amount_minor
    AND t.settled_minor = t.amount_minor - t.channel_fee_minor AND t.paid_at >= $5
  RETURNING line_type, amount_minor, settled_minor, currency_code
)
SELECT count(*) AS line_count, min(currency_code COLLATE "C") AS currency_min,
       max(currency_code COLLATE "C") AS currency_max, coalesce(sum(amount_minor), 0) AS amounts_minor,
       coalesce(sum(CASE WHEN line_type = {int(LineType.REFUND)} THEN -settled_minor
                         ELSE settled_minor END), 0) AS settled_minor
FROM ins
"""


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
    """The COPY's data: the stream's chunks, spooled, fed, and passed on while the fast
    path holds; the stream's own error (a bad chunk) is kept to be raised after the COPY."""

    def __init__(self, chunks: AsyncIterator[bytes], spool: Spool, feeder: Feeder) -> None:
        self.chunks, self.spool, self.feeder = chunks, spool, feeder
        self.error: BaseException | None = None

    async def __aiter__(self):
        while self.feeder.ok:
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self.feeder.finish()
                return
            except Exception as exc:  # noqa: BLE001 - raised by the caller after the COPY
                self.error = exc
                return
            self.spool.write(chunk)
            for piece in self.feeder.feed(chunk):
                yield piece


async def import_lines(conn: asyncpg.Connection, statement_id: int, platform_id: int,
                       header: ImportHeader, chunks: AsyncIterator[bytes], spool: Spool,
                       ) -> Imported | None:
    """The statement's lines written by the fast path, or None: nothing of it kept, the
    chunks read so far in `spool` (the general path replays them, then reads on)."""
    feeder = Feeder()
    source = _Source(chunks, spool, feeder)
    tx = conn.transaction()  # a savepoint in the import's transaction
    await tx.start()
    try:
        await conn.execute(_SQL_STAGE)
        status = await conn.copy_to_table(STAGE, source=source.__aiter__(), columns=COLUMNS,
                                          format="csv", header=True,
                                          timeout=STATEMENT_UPLOAD_TIMEOUT_S)
        if source.error is not None:
            raise source.error
        if not feeder.ok or int(status.split()[-1]) != feeder.line_count() - 1:
            await tx.rollback()
            return None
        row = await conn.fetchrow(SQL_LINES, statement_id, platform_id, header.channel,
                                  header.settlement_date.isoformat(), PAID_TIME_MIN,
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
    if (row["line_count"] != feeder.line_count() - 1 or currency != (row["currency_max"] or "")
            or (currency and not is_currency(currency))
            or row["amounts_minor"] > STATEMENT_AMOUNTS_MINOR_MAX):
        await tx.rollback()
        return None
    await conn.execute(f"DROP TABLE {STAGE}")
    await tx.commit()
    return Imported(feeder.content_sha256, feeder.size_bytes, row["line_count"], currency,
                    int(row["settled_minor"]))
