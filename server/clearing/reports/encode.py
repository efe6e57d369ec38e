"""Encoding a report's rows as they come: CSV into a buffer handed out in chunks, XLSX with
XlsxWriter's constant_memory mode (each row is written to a temporary file as it comes, so
memory does not grow with the report; the workbook is zipped at the end and its file then
streamed)."""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import xlsxwriter

CSV = "csv"
XLSX = "xlsx"
CONTENT_TYPES = {CSV: "text/csv; charset=utf-8",
                 XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
Cell = str | int

# A text cell a spreadsheet would read as a formula (CSV injection: `=HYPERLINK(...)` in a
# memo or a reference) is written with a leading apostrophe, which spreadsheets show as text;
# a plain decimal number ("-14.70", an amount in major units) is left as it is.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def csv_safe(cell: Cell) -> Cell:
    """`cell`, or a text cell that starts like a formula with an apostrophe before it."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_START) and \
            not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


class CsvEncoder:
    """RFC 4180 CSV (UTF-8, CRLF line ends), buffered until taken."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def write_rows(self, rows: Sequence[Sequence[Cell]]) -> None:
        self._writer.writerows([csv_safe(c) for c in row] for row in rows)

    def buffered(self) -> int:
        return self._buffer.tell()

    def take(self) -> bytes:
        data = self._buffer.getvalue().encode()
        self._buffer.seek(0)
        self._buffer.truncate()
        return data

    def finish(self, chunk_bytes: int) -> Iterator[bytes]:
        data = self.take()
        for i in range(0, len(data), chunk_bytes):
            yield data[i:i + chunk_bytes]


class XlsxEncoder:
    """One sheet, written row by row in constant memory to a temporary file."""

    def __init__(self, sheet_name: str) -> None:
        fd, self._path = tempfile.mkstemp(prefix="clearing-report-", suffix=".xlsx")
        os.close(fd)
        self._book = xlsxwriter.Workbook(self._path, {"constant_memory": True,
                                                      "strings_to_numbers": False,
                                                      "strings_to_formulas": False,
                                                      "strings_to_urls": False})
        self._sheet = self._book.add_worksheet(sheet_name[:31])
        self._row = 0

    def write_rows(self, rows: Sequence[Sequence[Cell]]) -> None:
        for cells in rows:
            for col, value in enumerate(cells):
                if isinstance(value, int):
                    self._sheet.write_number(self._row, col, value)
                else:
                    self._sheet.write_string(self._row, col, value)
            self._row += 1

    def buffered(self) -> int:
        return 0  # nothing can be handed out before the workbook is closed

    def take(self) -> bytes:
        return b""

    def close(self) -> BinaryIO:
        """Close the workbook; its file, open for reading (the caller closes it)."""
        self._book.close()
        return open(self._path, "rb")

    def discard(self) -> None:
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass
