"""A statement file's bytes, fed chunk by chunk as they arrive, cut into numbered lines
under the limits: the size as sent and decompressed, the length of a line, the count of
lines. Owns gzip detection (the magic bytes 1f 8b; several members are read in turn, as
`gzip` does) and the SHA-256 of the content (the bytes decompressed: a file and its gzip
are the same statement). Memory stays bounded: one chunk, one
partial line."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from clearing.errors import FieldViolation, InvalidArgument
from clearing.limits import (STATEMENT_BYTES_MAX, STATEMENT_DECOMPRESSED_BYTES_MAX,
                             STATEMENT_INFLATE_STEP_BYTES, STATEMENT_LINE_BYTES_MAX,
                             STATEMENT_LINES_MAX)
from clearing.reasons import Reason

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_BOM = b"\xef\xbb\xbf"
CHUNK_FIELD = "chunk"


def too_large(description: str) -> InvalidArgument:
    """The error of a file beyond one of its limits (nothing is imported)."""
    return InvalidArgument([FieldViolation(CHUNK_FIELD, description)],
                           reason=Reason.STATEMENT_TOO_LARGE)


@dataclass(frozen=True, slots=True)
class RawLine:
    """A line of the file: its number (the first is 1), its bytes without the line break
    (and without a UTF-8 byte order mark on line 1), or None when it was longer than
    STATEMENT_LINE_BYTES_MAX (its bytes are dropped)."""

    number: int
    data: bytes | None


class LineReader:
    """Cuts fed chunks into RawLines; `finish` returns the last line and checks a gzip
    stream ended. Raises the STATEMENT_TOO_LARGE error beyond a size or count limit; a
    damaged gzip stream is a `problem` (the file is malformed)."""

    def __init__(self) -> None:
        self.size_bytes = 0
        self.decompressed_bytes = 0
        self.line_count = 0
        self.problem: str | None = None
        self._sha256 = hashlib.sha256()
        self._head = b""  # the first bytes, until gzip or not is known
        self._inflate: zlib._Decompress | None = None
        self._gzip: bool | None = None
        self._pending = bytearray()
        self._skipping = False  # inside a line beyond the length limit

    @property
    def content_sha256(self) -> bytes:
        return self._sha256.digest()

    def feed(self, chunk: bytes) -> list[RawLine]:
        """The lines completed by `chunk`."""
        self.size_bytes += len(chunk)
        if self.size_bytes > STATEMENT_BYTES_MAX:
            raise too_large(f"the file is larger than {STATEMENT_BYTES_MAX} bytes")
        if self._gzip is None:
            self._head += chunk
            if len(self._head) < len(_GZIP_MAGIC):
                return []
            chunk, self._head = self._head, b""
            self._gzip = chunk.startswith(_GZIP_MAGIC)
            if self._gzip:
                self._inflate = zlib.decompressobj(_GZIP_WBITS)
        out: list[RawLine] = []
        for data in (self._inflated(chunk) if self._gzip else (chunk,)):
            self._cut(data, out)
        return out

    def finish(self) -> list[RawLine]:
        """The last line (one without a line break at the end of the file)."""
        out: list[RawLine] = []
        if self._gzip is None and self._head:  # a file of one byte
            self._gzip = False
            self._cut(self._head, out)
        if self._gzip and self.problem is None and not self._inflate.eof:
            self.problem = "the gzip stream is truncated"
        if self._pending or self._skipping:
            self._line(bytes(self._pending), out)
        return out

    def _inflated(self, data: bytes):
        """The decompressed pieces of `data`, each at most STATEMENT_INFLATE_STEP_BYTES."""
        while data and self.problem is None:
            if self._inflate.eof:  # another gzip member follows
                self._inflate = zlib.decompressobj(_GZIP_WBITS)
            try:
                piece = self._inflate.decompress(data, STATEMENT_INFLATE_STEP_BYTES)
            except zlib.error as exc:
                self.problem = f"not a valid gzip stream ({exc})"
                return
            self.decompressed_bytes += len(piece)
            if self.decompressed_bytes > STATEMENT_DECOMPRESSED_BYTES_MAX:
                raise too_large(f"the file is larger than {STATEMENT_DECOMPRESSED_BYTES_MAX} "
                                f"bytes decompressed")
            if piece:
                yield piece
            data = (self._inflate.unused_data if self._inflate.eof
                    else self._inflate.unconsumed_tail)

    def _cut(self, data: bytes, out: list[RawLine]) -> None:
        self._sha256.update(data)
        end = data.find(b"\n")
        if end < 0:
            self._append(data)
            return
        self._append(data[:end])  # the line begun in earlier data ends here
        self._line(bytes(self._pending), out)
        self._pending.clear()
        self._skipping = False
        *whole, rest = data[end + 1:].split(b"\n")
        for line in whole:  # lines wholly in `data`: no copy through _pending
            if len(line) > STATEMENT_LINE_BYTES_MAX + 1:  # as _append would: skipped
                self._skipping = True
                self._line(b"", out)
                self._skipping = False
            else:
                self._line(line, out)
        self._append(rest)

    def _append(self, data: bytes) -> None:
        if self._skipping:
            return
        self._pending += data
        if len(self._pending) > STATEMENT_LINE_BYTES_MAX + 1:  # + 1: a "\r" before "\n"
            self._pending.clear()
            self._skipping = True

    def _line(self, data: bytes, out: list[RawLine]) -> None:
        self.line_count += 1
        if self.line_count > STATEMENT_LINES_MAX:
            raise too_large(f"the file has more than {STATEMENT_LINES_MAX} lines")
        if data.endswith(b"\r"):
            data = data[:-1]
        if self.line_count == 1 and data.startswith(_BOM):
            data = data[len(_BOM):]
        if self._skipping or len(data) > STATEMENT_LINE_BYTES_MAX:
            out.append(RawLine(self.line_count, None))
        else:
            out.append(RawLine(self.line_count, data))
