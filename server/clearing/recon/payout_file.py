"""A bank's daily payout result file (docs/recon.md, "The bank's payout result file"): CSV in
UTF-8, a header row naming COLUMNS in that order, one line per bank transfer (one attempt,
one bank-side idempotency key) the bank finished on the file's day. Its lines become
StatementLines of type PAYOUT:

- `channel_transaction_id`: the bank's reference; `order_id`: the end-to-end id (the
  attempt's idempotency key, `po{payout}-t{sequence}-a{attempt}`);
- `amount_minor`: the transfer's amount, `channel_fee_minor` 0, and `settled_minor` what the
  bank paid: the amount if SUCCEEDED, 0 if FAILED (the status is kept this way);
- `paid_at`: the start of the value date in the reconciliation time zone;
- `payout_id`: the payout the bank names (shown on an unknown line's discrepancy).

The same limits and problems as a statement apply (`parse.StatementParser`): one currency
per file (a bank sends one file per account), the bank named as the import's channel."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from clearing.limits import (AMOUNT_MINOR_MAX, DEFAULT_TIME_ZONE, CHANNEL_TRANSACTION_ID_LEN_MAX,
                             ORDER_ID_LEN_MAX)
from clearing.money import is_currency
from clearing import values
from clearing.recon.canonical import parse_date, split_record
from clearing.recon.lines import RawLine
from clearing.recon.model import ImportHeader, LineType, StatementLine
from clearing.recon.problems import Problems

COLUMNS = ("bank", "bank_reference", "end_to_end_id", "payout_id", "amount_minor",
           "currency_code", "status", "value_date")
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
STATUSES = (SUCCEEDED, FAILED)
_NUMBER = re.compile(r"[1-9][0-9]{0,17}")


def _text(fields: dict[str, str], name: str, length_max: int, number: int,
          problems: Problems) -> str | None:
    text = fields[name]
    problem = "required" if not text else values.text_problem(text, length_max)
    if problem is not None:
        problems.add(number, name, problem)
        return None
    return text


def _positive(fields: dict[str, str], name: str, high: int, number: int,
              problems: Problems) -> int | None:
    text = fields[name]
    if not _NUMBER.fullmatch(text) or int(text) > high:
        problems.add(number, name, f"must be a whole number from 1 to {high}: {text[:32]!r}")
        return None
    return int(text)


class PayoutFileLayout:
    """Reads a payout result file: line 1 is the header, every other line a record."""

    def __init__(self, header: ImportHeader) -> None:
        self._header = header
        # the value date's first instant in the reconciliation time zone
        self._day_start = dt.datetime.combine(header.settlement_date, dt.time(),
                                              ZoneInfo(DEFAULT_TIME_ZONE))
        self._header_seen = False

    def line(self, raw: RawLine, problems: Problems) -> StatementLine | None:
        fields = split_record(raw, problems)
        if fields is None:
            return None
        if raw.number == 1:
            self._header_seen = True
            if tuple(f.strip() for f in fields) != COLUMNS:
                problems.add(1, "", "the header must be: " + ",".join(COLUMNS))
            return None
        if len(fields) != len(COLUMNS):
            problems.add(raw.number, "", f"has {len(fields)} fields, not {len(COLUMNS)}")
            return None
        return self._check(raw.number, dict(zip(COLUMNS, fields)), problems)

    def _check(self, n: int, f: dict[str, str], problems: Problems) -> StatementLine | None:
        h = self._header
        ok = True
        if f["bank"] != h.channel:
            problems.add(n, "bank", f"must be the import's channel {h.channel!r}")
            ok = False
        if parse_date(f["value_date"]) != h.settlement_date:
            problems.add(n, "value_date", f"must be the file's day {h.settlement_date}")
            ok = False
        reference = _text(f, "bank_reference", CHANNEL_TRANSACTION_ID_LEN_MAX, n, problems)
        end_to_end = _text(f, "end_to_end_id", ORDER_ID_LEN_MAX, n, problems)
        payout_id = _positive(f, "payout_id", 2**63 - 1, n, problems)
        amount = _positive(f, "amount_minor", AMOUNT_MINOR_MAX, n, problems)
        if not is_currency(f["currency_code"]):
            problems.add(n, "currency_code", "must be an ISO 4217 code such as CNY")
            ok = False
        if f["status"] not in STATUSES:
            problems.add(n, "status", "must be SUCCEEDED or FAILED")
            ok = False
        if not (ok and reference and end_to_end and payout_id and amount):
            return None
        paid = amount if f["status"] == SUCCEEDED else 0
        return StatementLine(n, LineType.PAYOUT, reference, end_to_end, self._day_start,
                             amount, 0, paid, f["currency_code"], payout_id)

    def finish(self, problems: Problems) -> None:
        if not self._header_seen:
            problems.add(1, "", "an empty file: the header row is missing")
