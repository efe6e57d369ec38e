"""The canonical statement format (docs/recon.md): CSV in UTF-8, one record per line (fields
may be quoted, but a record never spans lines), a header row naming the columns of COLUMNS
in that order, amounts in minor units. `check_line` turns a record's texts into a checked
StatementLine; every channel adapter (`wechat`) maps its rows to these texts and calls it,
so one set of rules applies to every format."""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Mapping

from clearing import values
from clearing.limits import (AMOUNT_MINOR_MAX, CHANNEL_TRANSACTION_ID_LEN_MAX,
                             ORDER_ID_LEN_MAX, PAID_TIME_MIN)
from clearing.money import is_currency
from clearing.recon.lines import RawLine
from clearing.recon.model import ImportHeader, LineType, StatementLine
from clearing.recon.problems import Problems

COLUMNS = ("channel", "channel_transaction_id", "order_id", "paid_time", "amount_minor",
           "channel_fee_minor", "settled_minor", "currency_code", "settlement_date", "type")
LINE_TYPES = {"payment": LineType.PAYMENT, "refund": LineType.REFUND}
_MINOR = re.compile(r"0|[1-9][0-9]{0,15}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The common case of a record, read in one match (CanonicalLayout._fast): ten unquoted fields
# without NUL or CR, the paid time without a fraction, amounts in their forms. Whatever else a
# line is, the general path reads it (and says what is wrong with it).
_FIELD = r'([^,"\x00\r]'
_FAST = re.compile(
    _FIELD + r'*),' + _FIELD + r'{1,%d}),' % CHANNEL_TRANSACTION_ID_LEN_MAX
    + _FIELD + r'{1,%d}),' % ORDER_ID_LEN_MAX
    + r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2}),"
    r"([1-9][0-9]{0,15}),(0|[1-9][0-9]{0,15}),(0|[1-9][0-9]{0,15}),([A-Z]{3}),"
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}),(payment|refund)")
# RFC 3339: a date, "T", a time with optional fraction, and "Z" or an offset.
_RFC3339 = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})"
                      r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def split_record(raw: RawLine, problems: Problems) -> list[str] | None:
    """The fields of a CSV line, or None (a problem recorded)."""
    if raw.data is None:
        problems.add(raw.number, "", "longer than the line limit (see docs/recon.md)")
        return None
    try:
        text = raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add(raw.number, "", f"not UTF-8 (byte {exc.start + 1})")
        return None
    if "\0" in text:
        problems.add(raw.number, "", "contains a NUL character")
        return None
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        problems.add(raw.number, "", f"not a CSV record: {exc}")
        return None
    return rows[0] if rows else []


def parse_date(text: str) -> dt.date | None:
    """A YYYY-MM-DD date, or None."""
    if not _DATE.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def parse_time(text: str) -> dt.datetime | None:
    """An RFC 3339 time with its offset (fractions beyond microseconds dropped), or None."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    day, clock, fraction, offset = m.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    micros = f".{(fraction or '0')[:6]:0<6}"
    try:
        return dt.datetime.fromisoformat(f"{day}T{clock}{micros}{offset}")
    except ValueError:
        return None


def _minor(values_: Mapping[str, str], name: str, number: int,
           problems: Problems) -> int | None:
    text = values_[name]
    if not _MINOR.fullmatch(text) or int(text) > AMOUNT_MINOR_MAX:
        problems.add(number, name, f"must be a whole number of minor units, 0 to "
                                   f"{AMOUNT_MINOR_MAX}: {text[:32]!r}")
        return None
    return int(text)


def _text(values_: Mapping[str, str], name: str, length_max: int, number: int,
          problems: Problems) -> str | None:
    text = values_[name]
    problem = "required" if not text else values.text_problem(text, length_max)
    if problem is not None:
        problems.add(number, name, problem)
        return None
    return text


def _amounts(values_: Mapping[str, str], number: int,
             problems: Problems) -> tuple[int, int, int] | None:
    amount = _minor(values_, "amount_minor", number, problems)
    fee = _minor(values_, "channel_fee_minor", number, problems)
    settled = _minor(values_, "settled_minor", number, problems)
    if amount is None or fee is None or settled is None:
        return None
    if amount == 0:
        problems.add(number, "amount_minor", "must be positive")
    elif fee > amount:
        problems.add(number, "channel_fee_minor", "exceeds amount_minor")
    elif settled != amount - fee:
        problems.add(number, "settled_minor",
                     f"must be amount_minor - channel_fee_minor = {amount - fee}")
    else:
        return amount, fee, settled
    return None


def _context(values_: Mapping[str, str], header: ImportHeader, number: int,
             problems: Problems) -> bool:
    """The line's channel and day are the statement's."""
    ok = True
    if values_["channel"] != header.channel:
        problems.add(number, "channel", f"must be the statement's channel {header.channel!r}")
        ok = False
    day = parse_date(values_["settlement_date"])
    if day is None:
        problems.add(number, "settlement_date", "must be a date YYYY-MM-DD")
        ok = False
    elif day != header.settlement_date:
        problems.add(number, "settlement_date",
                     f"must be the statement's day {header.settlement_date.isoformat()}")
        ok = False
    return ok


def check_line(number: int, values_: Mapping[str, str], header: ImportHeader,
               problems: Problems) -> StatementLine | None:
    """A record's texts (by the names of COLUMNS) as a StatementLine, or None with its
    problems recorded."""
    ok = _context(values_, header, number, problems)
    ctid = _text(values_, "channel_transaction_id", CHANNEL_TRANSACTION_ID_LEN_MAX, number,
                 problems)
    order_id = _text(values_, "order_id", ORDER_ID_LEN_MAX, number, problems)
    paid_at = parse_time(values_["paid_time"])
    if paid_at is None or paid_at < PAID_TIME_MIN:
        problems.add(number, "paid_time", "must be an RFC 3339 time with its offset, from "
                                          "2000-01-01 (e.g. 2026-12-06T10:15:00+08:00)")
    amounts = _amounts(values_, number, problems)
    currency = values_["currency_code"]
    if not is_currency(currency):
        problems.add(number, "currency_code", "must be an ISO 4217 code such as CNY")
    line_type = LINE_TYPES.get(values_["type"])
    if line_type is None:
        problems.add(number, "type", "must be payment or refund")
    if not (ok and ctid and order_id and paid_at and amounts and is_currency(currency)
            and line_type and paid_at >= PAID_TIME_MIN):
        return None
    return StatementLine(number, line_type, ctid, order_id, paid_at, *amounts, currency)


class CanonicalLayout:
    """Reads the canonical format: line 1 is the header, every other line a record."""

    def __init__(self, header: ImportHeader) -> None:
        self._header = header
        self._header_seen = False
        self._day = header.settlement_date.isoformat()

    def line(self, raw: RawLine, problems: Problems) -> StatementLine | None:
        if raw.number > 1 and raw.data is not None:
            line = self._fast(raw)
            if line is not None:
                return line
        return self._general(raw, problems)

    def _fast(self, raw: RawLine) -> StatementLine | None:
        """The line read in one match when it is the common case with nothing wrong (the
        StatementLine `_general` would give); None when `_general` must read it. Statements
        are millions of lines: this path is about 4x faster (bench/README.md, bench-recon)."""
        try:
            m = _FAST.fullmatch(raw.data.decode("utf-8"))
        except UnicodeDecodeError:
            return None
        if m is None:
            return None
        (channel, ctid, order_id, clock, offset, amount_text, fee_text, settled_text,
         currency, day, line_type) = m.groups()
        if channel != self._header.channel or day != self._day or not is_currency(currency):
            return None
        amount, fee, settled = int(amount_text), int(fee_text), int(settled_text)
        if (amount > AMOUNT_MINOR_MAX or fee > amount or settled != amount - fee):
            return None
        try:
            paid_at = dt.datetime.fromisoformat(
                clock + ("+00:00" if offset == "Z" else offset))
        except ValueError:
            return None
        if paid_at < PAID_TIME_MIN:
            return None
        return StatementLine(raw.number, LINE_TYPES[line_type], ctid, order_id, paid_at,
                             amount, fee, settled, currency)

    def _general(self, raw: RawLine, problems: Problems) -> StatementLine | None:
        fields = split_record(raw, problems)
        if fields is None:
            return None
        if raw.number == 1:
            self._header_seen = True
            if tuple(f.strip() for f in fields) != COLUMNS:
                problems.add(1, "", "the header must be: " + ",".join(COLUMNS))
            return None
        if fields == [] or fields == [""]:
            problems.add(raw.number, "", "an empty line")
            return None
        if len(fields) != len(COLUMNS):
            problems.add(raw.number, "", f"has {len(fields)} fields, not {len(COLUMNS)}")
            return None
        return check_line(raw.number, dict(zip(COLUMNS, fields)), self._header, problems)

    def finish(self, problems: Problems) -> None:
        if not self._header_seen:
            problems.add(1, "", "an empty file: the header row is missing")
