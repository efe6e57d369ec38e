"""The statement generator of the reconciliation tests: splits made through the API (SplitBatch,
RefundSplit) and a channel statement of their day with a known number of discrepancies of
every class. The expected counts and sums are worked out here, item by item from what was
injected, never by the code under test.

What a day holds (`per_class` of each kind, `matched` plain payments):
- matched payments (MATCHED), and as many again that also get a refund line (MATCHED twice);
- DUPLICATE: a matched payment's line repeated (the first MATCHED, the repeat DUPLICATE);
- MISSING_SPLIT: lines of orders never split;
- MISSING_IN_STATEMENT: splits of the day with no line;
- AMOUNT_MISMATCH: a payment line AMOUNT_DELTA_MINOR above the split's amount, and a refund
  line REFUND_DELTA_MINOR above what the split refunded (its payment line MATCHED);
- FEE_MISMATCH: a payment line whose fee is one unit above the split's;
- CURRENCY_MISMATCH: a CNY line of a split made in USD;
- splits that belong to no statement of the day: paid the day before / after (local time),
  or of another channel.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import grpc

from clearing.api import rules_proto
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import reconciliation_pb2 as rpb
from clearing.v1 import reconciliation_pb2_grpc
from clearing.v1 import split_pb2 as spb
from tests.split_support import Splits, new_key
from tests.support import CALL_TIMEOUT_S, Client, rid

CHANNEL = "WECHAT_PAY"
OTHER_CHANNEL = "ALIPAY"
ZONE = ZoneInfo("Asia/Shanghai")
COLUMNS = ("channel", "channel_transaction_id", "order_id", "paid_time", "amount_minor",
           "channel_fee_minor", "settled_minor", "currency_code", "settlement_date", "type")
AMOUNT_DELTA_MINOR = 100
REFUND_DELTA_MINOR = 50
FEE_PER_MILLE = 6
BATCH_MAX = 500
C = rpb  # the class constants: rpb.RECONCILIATION_CLASS_*

RULE_SETS = """
name: recon-{lower}
currency_code: {currency}
rules:
  - rule_name: all
    priority: 1
    shares:
      - label: platform
        type: SHARE_TYPE_RATIO
        ratio_bps: 1000
        receiver: {{account_ref: platform-{currency}}}
      - label: seller
        type: SHARE_TYPE_REMAINDER
        receiver: {{account_ref: seller-{currency}}}
"""


def statement_day() -> dt.date:
    """A day safely in the past (paid times may not be in the future)."""
    return dt.datetime.now(ZONE).date() - dt.timedelta(days=3)


def local(day: dt.date, seconds: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), ZONE) + dt.timedelta(seconds=seconds)


@dataclass
class Expected:
    """What a run of a generated statement must find."""

    counts: Counter = field(default_factory=Counter)
    amounts: Counter = field(default_factory=Counter)
    differences: Counter = field(default_factory=Counter)
    statement_settled_minor: int = 0
    split_settled_minor: int = 0

    def item(self, cls: int, amount_minor: int, stated_minor: int, info_minor: int) -> None:
        self.counts[cls] += 1
        self.amounts[cls] += amount_minor
        self.differences[cls] += stated_minor - info_minor
        self.statement_settled_minor += stated_minor
        self.split_settled_minor += info_minor

    @property
    def discrepancy_count(self) -> int:
        return sum(n for cls, n in self.counts.items() if cls != C.RECONCILIATION_CLASS_MATCHED)


@dataclass
class Line:
    """A canonical statement line."""

    ctid: str
    order_id: str
    paid_at: dt.datetime
    amount_minor: int
    fee_minor: int
    currency_code: str = "CNY"
    line_type: str = "payment"

    def row(self, channel: str, day: dt.date) -> list[str]:
        return [channel, self.ctid, self.order_id, self.paid_at.isoformat(),
                str(self.amount_minor), str(self.fee_minor),
                str(self.amount_minor - self.fee_minor), self.currency_code, day.isoformat(),
                self.line_type]


def canonical_csv(lines: list[Line], channel: str, day: dt.date) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for line in lines:
        writer.writerow(line.row(channel, day))
    return out.getvalue().encode()


class ReconWorld:
    """A platform ready to split in CNY and USD, with views of SplitService and
    ReconciliationService as its gateway+operator key."""

    def __init__(self, channel: grpc.aio.Channel, client: Client, key: str) -> None:
        self.channel = channel
        self.client = client
        self.key = key
        self.splits = Splits(channel, key)
        self.recon = reconciliation_pb2_grpc.ReconciliationServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.serial = 0

    @classmethod
    async def make(cls, channel, client: Client, database_url: str,
                   platform_id: int, key: str) -> "ReconWorld":
        world = cls(channel, client, key)
        checker = Splits(channel, await new_key(database_url, platform_id, {"approver"}))
        for currency in ("CNY", "USD"):
            await client.open(f"custodial-{currency}", kind=lpb.ACCOUNT_KIND_CUSTODIAL,
                              currency=currency, allow_negative=True)
            await client.open(f"platform-{currency}", kind=lpb.ACCOUNT_KIND_PLATFORM,
                              currency=currency)
            await client.open(f"seller-{currency}", currency=currency)
            published = await world.splits.publish(
                textwrap.dedent(RULE_SETS.format(currency=currency, lower=currency.lower())))
            await checker.activate(published.name, published.version)
        return world

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial:06d}-{rid()[:8]}"

    async def split_all(self, orders: list[spb.Order]) -> None:
        for start in range(0, len(orders), BATCH_MAX):
            response = await self.splits.call("SplitBatch", spb.SplitBatchRequest(
                request_id=rid(), requests=[spb.SplitRequest(request_id=rid(), order=o)
                                            for o in orders[start:start + BATCH_MAX]]))
            errors = [o.error for o in response.outcomes if o.HasField("error")]
            assert not errors, errors[:3]

    async def refund(self, order: spb.Order, amount_minor: int) -> None:
        await self.splits.call("RefundSplit", spb.RefundSplitRequest(
            request_id=rid(), order_id=order.order_id, amount_minor=amount_minor,
            currency_code=order.currency_code, reason="returned", refund_ref="RF"))

    def order(self, paid_at: dt.datetime, amount_minor: int, *, currency: str = "CNY",
              channel: str = CHANNEL) -> spb.Order:
        order = spb.Order(order_id=self.next_id("ord"), amount_minor=amount_minor,
                          currency_code=currency, channel=channel,
                          channel_fee_minor=amount_minor * FEE_PER_MILLE // 1000,
                          channel_transaction_id=self.next_id("wx"),
                          rule_set_name=f"recon-{currency.lower()}")
        order.paid_time.FromDatetime(paid_at.astimezone(dt.timezone.utc))
        return order

    # ---- the API ----------------------------------------------------------------------------

    async def import_file(self, data: bytes, *, day: dt.date, channel: str = CHANNEL,
                          fmt: int = rpb.STATEMENT_FORMAT_CANONICAL,
                          request_id: str | None = None, chunk_bytes: int = 64 * 1024,
                          metadata=None) -> rpb.ImportStatementResponse:
        header = rpb.StatementHeader(request_id=request_id or rid(), channel=channel,
                                     settlement_date=day.isoformat(), format=fmt)
        messages = [rpb.ImportStatementRequest(header=header)] + [
            rpb.ImportStatementRequest(chunk=data[i:i + chunk_bytes])
            for i in range(0, len(data), chunk_bytes)]
        return await self.recon.ImportStatement(iter(messages),
                                                metadata=metadata or self.metadata,
                                                timeout=CALL_TIMEOUT_S)

    async def call(self, method: str, request, metadata=None):
        return await getattr(self.recon, method)(request, metadata=metadata or self.metadata,
                                                 timeout=CALL_TIMEOUT_S)

    async def discrepancies(self, **filters) -> list[rpb.Discrepancy]:
        out: list[rpb.Discrepancy] = []
        token = ""
        while True:
            page = await self.call("ListDiscrepancies", rpb.ListDiscrepanciesRequest(
                page_size=7, page_token=token, **filters))
            out += page.discrepancies
            token = page.next_page_token
            if not token:
                return out


@dataclass
class Day:
    """A generated day: the statement's lines and what its run must find."""

    day: dt.date
    lines: list[Line]
    expected: Expected
    orders: dict[str, spb.Order]

    def csv(self, channel: str = CHANNEL) -> bytes:
        return canonical_csv(self.lines, channel, self.day)


async def generate_day(world: ReconWorld, day: dt.date, *, matched: int, per_class: int,
                       seed: int) -> Day:
    """Split the day's orders through the API and write its statement (see the module)."""
    rng = random.Random(seed)
    exp = Expected()
    lines: list[Line] = []
    amount = lambda: rng.randrange(1_000, 1_000_000)  # noqa: E731
    second = iter(range(0, 86_400, 7))

    def paid() -> dt.datetime:
        return local(day, next(second))

    kinds = {"matched": matched, "refunded": per_class, "refund_over": per_class,
             "duplicate": per_class, "missing_in_statement": per_class,
             "amount": per_class, "fee": per_class}
    cny = {kind: [world.order(paid(), amount()) for _ in range(n)] for kind, n in kinds.items()}
    usd = [world.order(paid(), amount(), currency="USD") for _ in range(per_class)]
    noise = [world.order(local(day, -1), amount()),              # the day before, local time
             world.order(local(day, 86_400), amount()),          # the day after
             world.order(paid(), amount(), channel=OTHER_CHANNEL)]
    # the first split of the day is paid at its first instant
    cny["missing_in_statement"][0].paid_time.FromDatetime(local(day, 0).astimezone(dt.timezone.utc))
    await world.split_all([o for group in cny.values() for o in group] + usd + noise)
    for o in cny["refunded"]:
        await world.refund(o, o.amount_minor // 2)
    for o in cny["refund_over"]:
        await world.refund(o, o.amount_minor // 3)

    def pay_line(o: spb.Order, *, amount_minor: int | None = None, fee_minor: int | None = None,
                 currency: str = "CNY") -> Line:
        return Line(o.channel_transaction_id, o.order_id, o.paid_time.ToDatetime(dt.timezone.utc),
                    o.amount_minor if amount_minor is None else amount_minor,
                    o.channel_fee_minor if fee_minor is None else fee_minor, currency)

    def net(o: spb.Order) -> int:
        return o.amount_minor - o.channel_fee_minor

    MATCHED = C.RECONCILIATION_CLASS_MATCHED
    for o in cny["matched"] + cny["refunded"] + cny["refund_over"] + cny["duplicate"]:
        lines.append(pay_line(o))
        exp.item(MATCHED, o.amount_minor, net(o), net(o))
    for o in cny["duplicate"]:
        lines.append(pay_line(o))
        exp.item(C.RECONCILIATION_CLASS_DUPLICATE, o.amount_minor, net(o), 0)
    for o in cny["refunded"]:
        r = o.amount_minor // 2
        lines.append(Line(world.next_id("rf"), o.order_id, local(day, 80_000), r, 0,
                          line_type="refund"))
        exp.item(MATCHED, r, -r, -r)
    for o in cny["refund_over"]:
        r = o.amount_minor // 3 + REFUND_DELTA_MINOR
        lines.append(Line(world.next_id("rf"), o.order_id, local(day, 80_000), r, 0,
                          line_type="refund"))
        exp.item(C.RECONCILIATION_CLASS_AMOUNT_MISMATCH, r, -r, 0)
    for o in cny["amount"]:
        a = o.amount_minor + AMOUNT_DELTA_MINOR
        lines.append(pay_line(o, amount_minor=a))
        exp.item(C.RECONCILIATION_CLASS_AMOUNT_MISMATCH, a, a - o.channel_fee_minor, net(o))
    for o in cny["fee"]:
        lines.append(pay_line(o, fee_minor=o.channel_fee_minor + 1))
        exp.item(C.RECONCILIATION_CLASS_FEE_MISMATCH, o.amount_minor, net(o) - 1, net(o))
    for o in usd:
        lines.append(pay_line(o, currency="CNY"))
        exp.item(C.RECONCILIATION_CLASS_CURRENCY_MISMATCH, o.amount_minor, net(o), 0)
    for _ in range(per_class):
        ghost = world.order(paid(), amount())  # never split
        lines.append(pay_line(ghost))
        exp.item(C.RECONCILIATION_CLASS_MISSING_SPLIT, ghost.amount_minor, net(ghost), 0)
    for o in cny["missing_in_statement"]:
        exp.item(C.RECONCILIATION_CLASS_MISSING_IN_STATEMENT, o.amount_minor, 0, net(o))
    rng.shuffle(lines)
    orders = {o.order_id: o for group in (*cny.values(), usd, noise) for o in group}
    return Day(day, lines, exp, orders)


def class_totals(run: rpb.ReconciliationRun) -> dict[int, tuple[int, int, int]]:
    """(count, amount, difference) per class of a run."""
    return {t.reconciliation_class: (t.item_count, t.amount_minor, t.difference_minor)
            for t in run.class_totals}


def expected_totals(exp: Expected) -> dict[int, tuple[int, int, int]]:
    return {cls: (exp.counts[cls], exp.amounts[cls], exp.differences[cls])
            for cls in exp.counts}


# ---- the WeChat Pay style bill ---------------------------------------------------------------

WECHAT_COLUMNS = ("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,"
                  "交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,"
                  "商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
                  "手续费,费率,订单金额,申请退款金额,费率备注").split(",")
WECHAT_SUMMARY = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"


def _yuan(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def wechat_bill(lines: list[Line]) -> bytes:
    """The lines as a WeChat Pay style daily bill (every field after a backtick, yuan, local
    times, a refund's fee shown negative, two summary rows)."""
    rows = [",".join(WECHAT_COLUMNS)]
    for x in lines:
        refund = x.line_type == "refund"
        values = dict.fromkeys(WECHAT_COLUMNS, "")
        values.update({
            "交易时间": x.paid_at.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S"),
            "公众账号ID": "wx2421b1c4370ec43b", "商户号": "10000100",
            "微信订单号": x.ctid if not refund else "4200000001",
            "商户订单号": x.order_id, "交易类型": "JSAPI",
            "交易状态": "REFUND" if refund else "SUCCESS", "货币种类": x.currency_code,
            "应结订单金额": _yuan(x.amount_minor), "代金券金额": "0.00",
            "微信退款单号": x.ctid if refund else "0", "退款金额": _yuan(x.amount_minor if refund else 0),
            "手续费": ("-" if refund and x.fee_minor else "") + _yuan(x.fee_minor),
            "费率": "0.60%", "订单金额": _yuan(x.amount_minor)})
        rows.append(",".join("`" + values[c] for c in WECHAT_COLUMNS))
    rows.append(WECHAT_SUMMARY)
    rows.append(",".join("`" + v for v in (str(len(lines)), "0.00", "0.00", "0.00", "0.00",
                                           "0.00", "0.00")))
    return ("\n".join(rows) + "\n").encode()


# ---- a small day worked out by hand (settlement and resolution tests) ------------------------

@dataclass
class HandDay:
    """Four CNY orders of WECHAT_PAY (fees FEE_PER_MILLE: 6 per mille) and a statement:

    | order | amount  | fee | split | line                      | class               | difference |
    |-------|---------|-----|-------|---------------------------|---------------------|------------|
    | a     | 100,000 | 600 | yes   | 100,000 fee 600 (99,400)  | MATCHED             | 0          |
    | b     |  50,000 | 300 | yes   |  50,000 fee 301 (49,699)  | FEE_MISMATCH        | -1         |
    | m     |  30,000 | 180 | yes   | none                      | MISSING_IN_STATEMENT| -29,820    |
    | g     |  20,000 | 120 | no    |  20,000 fee 120 (19,880)  | MISSING_SPLIT       | +19,880    |

    Statement settled 99,400 + 49,699 + 19,880 = 168,979; splits' 99,400 + 49,700 + 29,820
    = 178,920; difference -9,941 = -1 - 29,820 + 19,880."""

    day: dt.date
    a: spb.Order
    b: spb.Order
    m: spb.Order
    g: spb.Order
    lines: list[Line]
    run: rpb.ReconciliationRun

    def csv(self, lines: list[Line] | None = None) -> bytes:
        return canonical_csv(self.lines if lines is None else lines, CHANNEL, self.day)


async def hand_day(world: ReconWorld) -> HandDay:
    day = statement_day()
    a, b, m, g = (world.order(local(day, 3_600 * (i + 1)), amount)
                  for i, amount in enumerate((100_000, 50_000, 30_000, 20_000)))
    await world.split_all([a, b, m])

    def line(o: spb.Order, fee_minor: int) -> Line:
        return Line(o.channel_transaction_id, o.order_id,
                    o.paid_time.ToDatetime(dt.timezone.utc), o.amount_minor, fee_minor)

    lines = [line(a, 600), line(b, 301), line(g, 120)]
    run = (await world.import_file(canonical_csv(lines, CHANNEL, day), day=day)).run
    return HandDay(day, a, b, m, g, lines, run)
