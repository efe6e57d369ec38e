"""The WeChat Pay style daily bill (docs/recon.md): CSV whose header names the columns in
Chinese, every data field prefixed with a backtick (`), amounts in major units (yuan),
times in China's local time without an offset, and at the end two summary rows (the
summary's header, starting with 总交易单数, then its values). Each data row is mapped to
the canonical texts and checked by `canonical.check_line`: adding a channel is a module
like this one."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from clearing.money import parse_major
from clearing.recon.canonical import check_line, split_record
from clearing.recon.lines import RawLine
from clearing.recon.model import ImportHeader, StatementLine
from clearing.recon.problems import Problems

# The columns read, by their names in the bill (a bill has more; they are ignored).
PAID_TIME = "交易时间"
TRANSACTION_ID = "微信订单号"
ORDER_ID = "商户订单号"
STATE = "交易状态"
CURRENCY = "货币种类"
REFUND_ID = "微信退款单号"
REFUND_AMOUNT = "退款金额"
FEE = "手续费"
ORDER_AMOUNT = "订单金额"
REQUIRED = (PAID_TIME, TRANSACTION_ID, ORDER_ID, STATE, CURRENCY, REFUND_ID, REFUND_AMOUNT,
            FEE, ORDER_AMOUNT)
# The first field of the summary's header row; it and every row after it are the summary.
SUMMARY_START = "总交易单数"
# The bill's states: a payment, a refund.
STATES = {"SUCCESS": "payment", "REFUND": "refund"}
# A bill's amount: yuan with at most two decimals ('-': a refund's returned fee).
_MAJOR = re.compile(r"-?[0-9]{1,16}(?:\.[0-9]{1,2})?")
# Bill times are China's local time.
BILL_TIME_ZONE = ZoneInfo("Asia/Shanghai")


def _unquote(fields: list[str]) -> list[str]:
    return [f[1:] if f.startswith("`") else f for f in (x.strip() for x in fields)]


def _minor_text(text: str, currency: str) -> str:
    """A major-unit amount ('12.34', '-0.06': a refund's returned fee) as minor units;
    the text itself when it does not parse (check_line reports it)."""
    if not _MAJOR.fullmatch(text):
        return text
    try:
        return str(parse_major(text.lstrip("-"), currency))
    except (ValueError, KeyError):
        return text


def _time_text(text: str) -> str:
    try:
        local = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return text
    return local.replace(tzinfo=BILL_TIME_ZONE).isoformat()


class WechatLayout:
    """Reads a WeChat Pay style bill into canonical StatementLines."""

    def __init__(self, header: ImportHeader) -> None:
        self._header = header
        self._columns: dict[str, int] | None = None
        self._in_summary = False
        self._data_count = 0
        self._summary_at = 0

    def line(self, raw: RawLine, problems: Problems) -> StatementLine | None:
        if self._in_summary:
            self._summary_row(raw, problems)
            return None
        fields = split_record(raw, problems)
        if fields is None:
            return None
        fields = _unquote(fields)
        if raw.number == 1:
            self._read_header(fields, problems)
            return None
        if fields and fields[0] == SUMMARY_START:
            self._in_summary, self._summary_at = True, raw.number
            return None
        if self._columns is None:
            return None
        self._data_count += 1
        if len(fields) <= max(self._columns.values()):
            problems.add(raw.number, "", f"has {len(fields)} fields, fewer than the header")
            return None
        return check_line(raw.number, self._canonical(fields), self._header, problems)

    def finish(self, problems: Problems) -> None:
        if self._columns is None:
            if not problems:
                problems.add(1, "", "an empty file: the header row is missing")
        elif not self._in_summary:
            problems.add_path("chunk", f"the bill has no summary rows ({SUMMARY_START}...)")

    def _read_header(self, fields: list[str], problems: Problems) -> None:
        columns = {name: i for i, name in enumerate(fields)}
        missing = [name for name in REQUIRED if name not in columns]
        if missing:
            problems.add(1, "", "the bill's header lacks the columns " + ",".join(missing))
            return
        self._columns = columns

    def _summary_row(self, raw: RawLine, problems: Problems) -> None:
        """The summary's values row: its first field, the count of data rows, is checked."""
        if raw.number != self._summary_at + 1:
            problems.add(raw.number, "", "a line after the summary")
            return
        fields = split_record(raw, problems)
        if fields is None:
            return
        count = _unquote(fields)[0] if fields else ""
        if count != str(self._data_count):
            problems.add(raw.number, SUMMARY_START,
                         f"says {count[:20]!r} rows; the bill has {self._data_count}")

    def _canonical(self, fields: list[str]) -> dict[str, str]:
        """A data row as the canonical format's texts."""
        col = self._columns

        def get(name: str) -> str:
            return fields[col[name]]

        line_type = STATES.get(get(STATE), get(STATE))
        currency = get(CURRENCY)
        refund = line_type == "refund"
        amount = _minor_text(get(REFUND_AMOUNT if refund else ORDER_AMOUNT), currency)
        fee = _minor_text(get(FEE), currency)
        settled = (str(int(amount) - int(fee)) if amount.isdigit() and fee.isdigit()
                   else "0")
        return {"channel": self._header.channel,
                "channel_transaction_id": get(REFUND_ID if refund else TRANSACTION_ID),
                "order_id": get(ORDER_ID), "paid_time": _time_text(get(PAID_TIME)),
                "amount_minor": amount, "channel_fee_minor": fee,
                "settled_minor": settled if not settled.startswith("-") else "0",
                "currency_code": currency,
                "settlement_date": self._header.settlement_date.isoformat(),
                "type": line_type}
