"""The generator of `make bench-recon` (bench/recon.py): a day of N splits and the channel's
canonical statement of it with a known number of discrepancies of every class, written in one
streaming pass (nothing of the day is kept in memory: the statement goes to a gzip file, the
splits to COPY rows handed out in batches), and the figures its run must find, worked out
item by item from what was injected, never by the code under test.

The classes are those of tests/recon_support.py (the API tests' generator), `per_class` of
each kind, the rest plain MATCHED payments:

- matched payments (MATCHED); `per_class` more that also get a refund line of half the amount
  (MATCHED twice);
- DUPLICATE: a matched payment's line repeated right after it (the first MATCHED);
- MISSING_SPLIT: lines of orders never split;
- MISSING_IN_STATEMENT: splits of the day with no line;
- AMOUNT_MISMATCH: a payment line AMOUNT_DELTA_MINOR above the split's amount, and a refund
  line REFUND_DELTA_MINOR above what the split refunded (a third; its payment MATCHED);
- FEE_MISMATCH: a payment line whose fee is one unit above the split's;
- CURRENCY_MISMATCH: a CNY line of a split made in USD;
- splits of no statement of the day (paid the second before the day, the day after, or on
  another channel): `per_class` of each, in neither the statement nor a class.

With M plain matched payments and K = per_class, the statement has M + 10 K lines and the
day M + 10 K splits: both are N = `lines`.

The splits' rows are copies of real splits (`Template`: one made through the API per amount
of AMOUNTS and currency), with what differs between orders replaced: split id, order id,
request id, payload hash, channel, channel transaction id, paid time, refunded amount and
status, created/updated time (bench/README.md says why and what is not in them).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

CHANNEL = "WECHAT_PAY"
OTHER_CHANNEL = "ALIPAY"
ZONE = ZoneInfo("Asia/Shanghai")
STATEMENT_COLUMNS = ("channel", "channel_transaction_id", "order_id", "paid_time",
                     "amount_minor", "channel_fee_minor", "settled_minor", "currency_code",
                     "settlement_date", "type")
AMOUNT_DELTA_MINOR = 100
REFUND_DELTA_MINOR = 50
FEE_PER_MILLE = 6
# Distinct order amounts per currency (each has a template split made through the API).
AMOUNTS_CNY_COUNT = 40
AMOUNTS_USD_COUNT = 8
AMOUNT_MINOR_MIN, AMOUNT_MINOR_MAX = 1_000, 1_000_000
# Split rows per batch handed to COPY.
COPY_ROWS_MAX = 5_000
GZIP_LEVEL = 1  # fast to write; the server inflates any level at about the same speed
# The classes (proto ReconciliationClass numbers; clearing.recon.model.MatchClass).
MATCHED, MISSING_SPLIT, MISSING_IN_STATEMENT = 1, 2, 3
AMOUNT_MISMATCH, FEE_MISMATCH, CURRENCY_MISMATCH, DUPLICATE = 4, 5, 6, 7
CLASS_NAMES = {MATCHED: "MATCHED", MISSING_SPLIT: "MISSING_SPLIT",
               MISSING_IN_STATEMENT: "MISSING_IN_STATEMENT", AMOUNT_MISMATCH: "AMOUNT_MISMATCH",
               FEE_MISMATCH: "FEE_MISMATCH", CURRENCY_MISMATCH: "CURRENCY_MISMATCH",
               DUPLICATE: "DUPLICATE"}
# The special kinds of order, in the round-robin order they are spread through the day.
SPECIAL_KINDS = ("refunded", "refund_over", "duplicate", "missing_in_statement", "amount",
                 "fee", "currency", "missing_split", "before", "after", "other_channel")
# Columns of the splits rows written (body stays NULL: rows since 0011 carry `detail`).
SPLIT_COLUMNS = ("split_id", "platform_id", "order_id", "request_id", "payload_hash", "status",
                 "rule_set_name", "rule_set_version", "currency_code", "amount_minor",
                 "channel_fee_minor", "distributed_minor", "subsidy_minor", "fee_minor",
                 "refunded_minor", "counter_values", "detail", "channel",
                 "channel_transaction_id", "paid_time_ns", "created_at", "updated_at")
# Placeholders in a template split's order (its detail names them once each).
CTID_MARK = "BENCHCTIDMARK"
PAID_NS_MARK = 946684800123456000  # 2000-01-01T00:00:00.123456Z, a paid time no order has
CHANNEL_MARK = "BENCHCHANNELMARK"
# Split ids of the generated rows: far above any the ledger gives (a split's id is its first
# transfer's, batch id x 65,536 + position; batch ids come from a sequence), so splits made
# later on the same database never collide with them; a range per platform.
SPLIT_ID_BASE = 1 << 62
SPLIT_IDS_PER_PLATFORM = 10**9
# Channel transaction ids look random, as a channel's do (and compress like them): i times an
# odd number not divisible by 5 is a bijection modulo 10**10.
CTID_SPREAD = 2_654_435_761
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def fee_of(amount_minor: int) -> int:
    return amount_minor * FEE_PER_MILLE // 1000


def amounts(seed: int, currency: str) -> list[int]:
    """The distinct order amounts of a currency."""
    rng = random.Random(f"{seed}-{currency}")
    n = AMOUNTS_CNY_COUNT if currency == "CNY" else AMOUNTS_USD_COUNT
    return sorted(rng.sample(range(AMOUNT_MINOR_MIN, AMOUNT_MINOR_MAX), n))


def _copy_text(value: str) -> str:
    """A value in COPY's text format."""
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


@dataclass(frozen=True)
class Template:
    """A real split's row (made through the API, channel CHANNEL_MARK, channel transaction id
    CTID_MARK, paid at PAID_NS_MARK), cut where the order's values go."""

    currency_code: str
    amount_minor: int
    fee_minor: int
    status: int
    platform_id: int
    constant: str  # COPY text of rule_set_name .. fee_minor (tab-separated, no edges)
    counter_values: str  # COPY text
    detail_parts: tuple[str, ...]  # COPY text of the detail around the three marks
    detail_order: tuple[str, ...]  # which mark goes between consecutive parts

    @classmethod
    def of_row(cls, row: dict) -> "Template":
        """From a splits row as read back (a mapping of column -> value)."""
        detail = row["detail"]
        marks = {CHANNEL_MARK: "channel", CTID_MARK: "ctid", str(PAID_NS_MARK): "paid_ns"}
        for mark in marks:
            if detail.count(mark) != 1:
                raise ValueError(f"template split {row['split_id']}: {mark} appears "
                                 f"{detail.count(mark)} times in its detail")
        found = sorted((detail.index(m), m) for m in marks)
        parts, order, start = [], [], 0
        for at, mark in found:
            parts.append(_copy_text(detail[start:at]))
            order.append(marks[mark])
            start = at + len(mark)
        parts.append(_copy_text(detail[start:]))
        constant = "\t".join(_copy_text(str(row[c])) for c in (
            "rule_set_name", "rule_set_version", "currency_code", "amount_minor",
            "channel_fee_minor", "distributed_minor", "subsidy_minor", "fee_minor"))
        return cls(row["currency_code"], row["amount_minor"], row["channel_fee_minor"],
                   row["status"], row["platform_id"], constant,
                   _copy_text(row["counter_values"]), tuple(parts), tuple(order))

    def row(self, split_id: int, order_id: str, channel: str, ctid: str, paid_ns: int,
            paid_text: str, refunded_minor: int, status: int) -> str:
        """One COPY text line of SPLIT_COLUMNS (ids and channels are plain ASCII here)."""
        values = {"channel": channel, "ctid": ctid, "paid_ns": str(paid_ns)}
        detail = self.detail_parts[0] + "".join(
            values[name] + part for name, part in zip(self.detail_order, self.detail_parts[1:]))
        request_id = "req-" + order_id
        digest = hashlib.sha256(request_id.encode()).hexdigest()
        return (f"{split_id}\t{self.platform_id}\t{order_id}\t{request_id}\t\\\\x{digest}\t"
                f"{status}\t{self.constant}\t{refunded_minor}\t{self.counter_values}\t"
                f"{detail}\t{channel}\t{ctid}\t{paid_ns}\t{paid_text}\t{paid_text}\n")


@dataclass
class Expected:
    """What the run of a generated statement must find, per class: (count, amount,
    difference), and the totals of both flows."""

    counts: Counter = field(default_factory=Counter)
    amounts: Counter = field(default_factory=Counter)
    differences: Counter = field(default_factory=Counter)
    statement_settled_minor: int = 0
    split_settled_minor: int = 0
    line_count: int = 0
    split_count: int = 0

    def item(self, cls: int, amount_minor: int, stated_minor: int, info_minor: int) -> None:
        self.counts[cls] += 1
        self.amounts[cls] += amount_minor
        self.differences[cls] += stated_minor - info_minor
        self.statement_settled_minor += stated_minor
        self.split_settled_minor += info_minor

    def totals(self) -> dict[int, tuple[int, int, int]]:
        return {c: (self.counts[c], self.amounts[c], self.differences[c]) for c in self.counts}

    @property
    def discrepancy_count(self) -> int:
        return sum(n for c, n in self.counts.items() if c != MATCHED)


@dataclass(frozen=True)
class Plan:
    """A day to generate: `lines` statement lines (and as many splits), `per_class` of each
    special kind, the rest matched; the day; split ids from `split_id_base`."""

    lines: int
    per_class: int
    day: dt.date
    split_id_base: int
    seed: int = 11

    def __post_init__(self) -> None:
        if self.lines > SPLIT_IDS_PER_PLATFORM:
            raise ValueError(f"at most {SPLIT_IDS_PER_PLATFORM} lines")
        if self.per_class < 1 or self.lines < 10 * self.per_class + 1:
            raise ValueError(f"{self.lines} lines cannot hold {self.per_class} of each class "
                             f"(at least {10 * self.per_class + 1})")

    @property
    def matched(self) -> int:
        return self.lines - 10 * self.per_class

    @property
    def orders(self) -> int:
        """Orders of the day (with or without a split): every kind but refunds and repeats
        is one order; missing_split orders have no split."""
        return self.matched + len(SPECIAL_KINDS) * self.per_class


def local(day: dt.date, seconds: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), ZONE) + dt.timedelta(seconds=seconds)


def _kinds(plan: Plan) -> Iterator[str]:
    """The kind of each order of the day, the special ones spread evenly among the matched."""
    specials = [k for _ in range(plan.per_class) for k in SPECIAL_KINDS]
    total = plan.orders
    step = total / len(specials)
    next_at, s = 0.0, 0
    for i in range(total):
        if s < len(specials) and i >= next_at:
            yield specials[s]
            s += 1
            next_at += step
        else:
            yield "matched"


class Writer:
    """Writes the statement (gzip, canonical CSV) and counts what it holds."""

    def __init__(self, path: Path, plan: Plan, exp: Expected) -> None:
        self._out = gzip.open(path, "wt", compresslevel=GZIP_LEVEL, newline="\n",
                              encoding="utf-8")
        self._day = plan.day.isoformat()
        self._exp = exp
        self._out.write(",".join(STATEMENT_COLUMNS) + "\n")

    def line(self, ctid: str, order_id: str, paid_text: str, amount_minor: int,
             fee_minor: int, currency: str = "CNY", line_type: str = "payment") -> None:
        self._exp.line_count += 1
        self._out.write(f"{CHANNEL},{ctid},{order_id},{paid_text},{amount_minor},{fee_minor},"
                        f"{amount_minor - fee_minor},{currency},{self._day},{line_type}\n")

    def close(self) -> None:
        self._out.close()


def generate(plan: Plan, templates: dict[tuple[str, int], Template], refunded_status: int,
             statement_path: Path, exp: Expected) -> Iterator[bytes]:
    """Write the statement to `statement_path` while yielding the day's split rows in COPY
    text batches; `exp` holds the expected figures once the iterator is exhausted."""
    rng = random.Random(plan.seed)
    pool = {cur: amounts(plan.seed, cur) for cur in ("CNY", "USD")}
    out = Writer(statement_path, plan, exp)
    rows: list[str] = []
    day_tag = plan.day.strftime("%Y%m%d")
    for i, kind in enumerate(_kinds(plan)):
        currency = "USD" if kind == "currency" else "CNY"
        amount = rng.choice(pool[currency])
        fee = fee_of(amount)
        net = amount - fee
        order_id = f"ORD{day_tag}{i:09d}"
        ctid = f"42{day_tag}{i * CTID_SPREAD % 10**10:010d}"  # unique, not sequential
        seconds = i * 86_400 / plan.orders
        if kind == "before":
            seconds = -1.0
        elif kind == "after":
            seconds = 86_400.0
        paid = local(plan.day, seconds).astimezone(dt.timezone.utc).replace(microsecond=0)
        paid_text = paid.isoformat()
        paid_ns = (paid - _EPOCH) // dt.timedelta(microseconds=1) * 1000
        refunded = {"refunded": amount // 2, "refund_over": amount // 3}.get(kind, 0)
        if kind != "missing_split":
            t = templates[(currency, amount)]
            exp.split_count += 1
            rows.append(t.row(plan.split_id_base + i, order_id,
                              OTHER_CHANNEL if kind == "other_channel" else CHANNEL, ctid,
                              paid_ns, paid_text, refunded,
                              refunded_status if refunded else t.status))
        _lines(out, exp, kind, order_id, ctid, paid_text, amount, fee, net, plan.day)
        if len(rows) >= COPY_ROWS_MAX:
            yield "".join(rows).encode()
            rows = []
    out.close()
    if rows:
        yield "".join(rows).encode()


def _lines(out: Writer, exp: Expected, kind: str, order_id: str, ctid: str, paid_text: str,
           amount: int, fee: int, net: int, day: dt.date) -> None:
    """The statement lines of one order and their expected classes."""
    if kind in ("before", "after", "other_channel"):
        return
    if kind == "missing_in_statement":
        exp.item(MISSING_IN_STATEMENT, amount, 0, net)
        return
    if kind == "missing_split":
        out.line(ctid, order_id, paid_text, amount, fee)
        exp.item(MISSING_SPLIT, amount, net, 0)
        return
    if kind == "currency":
        out.line(ctid, order_id, paid_text, amount, fee, "CNY")
        exp.item(CURRENCY_MISMATCH, amount, net, 0)
        return
    if kind == "amount":
        a = amount + AMOUNT_DELTA_MINOR
        out.line(ctid, order_id, paid_text, a, fee)
        exp.item(AMOUNT_MISMATCH, a, a - fee, net)
        return
    if kind == "fee":
        out.line(ctid, order_id, paid_text, amount, fee + 1)
        exp.item(FEE_MISMATCH, amount, net - 1, net)
        return
    out.line(ctid, order_id, paid_text, amount, fee)  # matched, refunded, refund_over, duplicate
    exp.item(MATCHED, amount, net, net)
    refund_at = local(day, 86_399).astimezone(dt.timezone.utc).isoformat()
    if kind == "duplicate":
        out.line(ctid, order_id, paid_text, amount, fee)
        exp.item(DUPLICATE, amount, net, 0)
    elif kind == "refunded":
        r = amount // 2
        out.line("R" + ctid, order_id, refund_at, r, 0, line_type="refund")
        exp.item(MATCHED, r, -r, -r)
    elif kind == "refund_over":
        r = amount // 3 + REFUND_DELTA_MINOR
        out.line("R" + ctid, order_id, refund_at, r, 0, line_type="refund")
        exp.item(AMOUNT_MISMATCH, r, -r, 0)
