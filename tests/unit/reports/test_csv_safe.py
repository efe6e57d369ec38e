"""CSV exports never hand a spreadsheet a formula (review): a text cell starting with = + - @
or a tab/carriage return gets a leading apostrophe; numbers, amounts in major units
(negative ones too) and ordinary text are written as they are."""

from __future__ import annotations

import csv
import io

from clearing.reports.encode import CsvEncoder, csv_safe


def test_formula_like_text_is_quoted_numbers_are_not():
    assert csv_safe("=HYPERLINK(\"http://x\",\"y\")") == "'=HYPERLINK(\"http://x\",\"y\")"
    assert csv_safe("+1+2") == "'+1+2"
    assert csv_safe("@SUM(A1)") == "'@SUM(A1)"
    assert csv_safe("-5 off") == "'-5 off"
    assert csv_safe("\tcmd") == "'\tcmd"
    assert csv_safe("\r=1") == "'\r=1"
    for kept in ("-14.70", "14.70", "-3", "0", "SUP_2025001", "a=b", "", "2026-01-20"):
        assert csv_safe(kept) == kept
    assert csv_safe(-1470) == -1470


def test_the_encoder_writes_safe_cells():
    encoder = CsvEncoder()
    encoder.write_rows([["detail", "=1+1", "-14.70", -1470, "memo"]])
    rows = list(csv.reader(io.StringIO(encoder.take().decode())))
    assert rows == [["detail", "'=1+1", "-14.70", "-1470", "memo"]]
