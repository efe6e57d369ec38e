"""A day of the seed's B2B platform for the README's reconciliation example:
`python -m clearing.dev.recon_day` splits yesterday's (Asia/Shanghai) WECHAT_PAY orders of
the platform whose key is var/demo.key and writes the channel's statement of that day, with
one discrepancy of each class. It prints shell assignments (`eval` them): DAY, STATEMENT (the
file), ORDER (a JSON file of the order the channel was paid for and nobody split, for a
SPLIT_NOW resolution), SPLIT (the split id of the day's first order) and TODAY (the day the
splits were made, in the same time zone).

Needs the README's quick start first (the b2b rule set active, its CNY accounts open); it
opens what the USD order needs (a USD custodial account, two receivers, the rule set
b2b-usd, activated with var/demo-approver.key). Every call has a request id derived from the
day, so running it again the same day changes nothing and writes the same statement.

The day (amounts in fen; the channel's fee 0.6%):

| order | split | statement line | class |
|---|---|---|---|
| RD01 | 120,000.00 | as split | MATCHED |
| RD02 | 560,000.00 | as split, twice | MATCHED, DUPLICATE |
| RD03 | 80,000.00 | amount 80,001.00 | AMOUNT_MISMATCH |
| RD04 | 30,000.00 | fee one fen more | FEE_MISMATCH |
| RD05 | 45,000.00 | none | MISSING_IN_STATEMENT |
| RD06 | none | 9,800.00 | MISSING_SPLIT |
| RD07 | 2,000.00 USD | 2,000.00 CNY | CURRENCY_MISMATCH |
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import shlex
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from google.protobuf import json_format

from clearing.config import Settings
from clearing.limits import DEFAULT_TIME_ZONE

CHANNEL = "WECHAT_PAY"
FEE_PER_MILLE = 6
COLUMNS = ("channel", "channel_transaction_id", "order_id", "paid_time", "amount_minor",
           "channel_fee_minor", "settled_minor", "currency_code", "settlement_date", "type")
# (order suffix, amount, currency, split?, statement lines: (amount delta, fee delta) each)
ORDERS = (
    ("01", 12_000_000, "CNY", True, ((0, 0),)),
    ("02", 56_000_000, "CNY", True, ((0, 0), (0, 0))),
    ("03", 8_000_000, "CNY", True, ((100, 0),)),
    ("04", 3_000_000, "CNY", True, ((0, 1),)),
    ("05", 4_500_000, "CNY", True, ()),
    ("06", 980_000, "CNY", False, ((0, 0),)),
    ("07", 200_000, "USD", True, ((0, 0),)),
)
USD_RULE_SET = """
name: b2b-usd
currency_code: USD
description: the B2B platform's export orders
rules:
  - rule_name: base
    priority: 1
    shares:
      - label: platform
        type: SHARE_TYPE_RATIO
        ratio_bps: 1000
        receiver: {account_ref: PLAT_001_USD}
      - label: supplier
        type: SHARE_TYPE_REMAINDER
        receiver: {account_ref: SUP_2025001_USD}
"""


def order_message(day: dt.date, suffix: str, amount_minor: int, currency: str, seconds: int):
    from clearing_client.v1 import split_pb2

    paid = dt.datetime.combine(day, dt.time(9), ZoneInfo(DEFAULT_TIME_ZONE)) + dt.timedelta(
        seconds=seconds)
    order = split_pb2.Order(
        order_id=f"RD{day:%Y%m%d}{suffix}", amount_minor=amount_minor, currency_code=currency,
        channel=CHANNEL, channel_fee_minor=amount_minor * FEE_PER_MILLE // 1000,
        channel_transaction_id=f"42{day:%Y%m%d}{suffix}",
        rule_set_name="b2b" if currency == "CNY" else "b2b-usd",
        tags=["enterprise purchase"], attributes={"customer_type": "enterprise"})
    order.paid_time.FromDatetime(paid.astimezone(dt.timezone.utc))
    return order


def statement(day: dt.date, orders: list) -> str:
    """The channel's canonical statement of the day (all lines in CNY)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for (_, _, _, _, lines), order in zip(ORDERS, orders):
        for amount_delta, fee_delta in lines:
            amount = order.amount_minor + amount_delta
            fee = order.channel_fee_minor + fee_delta
            writer.writerow((CHANNEL, order.channel_transaction_id, order.order_id,
                             order.paid_time.ToDatetime(dt.timezone.utc).isoformat(),
                             amount, fee, amount - fee, "CNY", day.isoformat(), "payment"))
    return out.getvalue()


async def _usd_setup(client, approver, day: dt.date) -> None:
    from clearing_client import ClearingRpcError
    from clearing_client.v1 import ledger_pb2, rule_set_pb2

    from clearing.api.rules_proto import rule_set_proto_from_yaml

    for ref, kind in (("custodial-USD", ledger_pb2.ACCOUNT_KIND_CUSTODIAL),
                      ("PLAT_001_USD", ledger_pb2.ACCOUNT_KIND_PLATFORM),
                      ("SUP_2025001_USD", ledger_pb2.ACCOUNT_KIND_MERCHANT)):
        try:
            await client.get_account(external_ref=ref)
        except ClearingRpcError:
            await client.create_account(ref, kind=kind, currency_code="USD",
                                        request_id=f"recon-day-{ref}")
    active = await client.list_rule_sets(rule_set_name="b2b-usd",
                                         status=rule_set_pb2.RULE_SET_STATUS_ACTIVE)
    if not active.rule_sets:
        published = await client.publish_rule_set(
            rule_set_proto_from_yaml(USD_RULE_SET.encode()), request_id="recon-day-b2b-usd")
        await approver.activate_rule_set("b2b-usd", published.version,
                                         request_id="recon-day-b2b-usd-activate")


async def make_day(addr: str, key: str, approver_key: str, day: dt.date,
                   out_dir: Path, credentials=None) -> dict[str, str]:
    from clearing_client import ClearingClient
    from clearing_client.v1 import split_pb2

    orders = [order_message(day, suffix, amount, currency, 600 * n)
              for n, (suffix, amount, currency, _, _) in enumerate(ORDERS)]
    async with ClearingClient(addr, key, credentials=credentials) as client, \
            ClearingClient(addr, approver_key, credentials=credentials) as ok:
        await _usd_setup(client, ok, day)
        split_ids = []
        for (_, _, _, split, _), order in zip(ORDERS, orders):
            if split:
                done = await client.call(client.split.Split, split_pb2.SplitRequest(
                    request_id=f"recon-day-{order.order_id}", order=order))
                split_ids.append(done.split.split_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"statement-{CHANNEL}-{day}.csv"
    path.write_text(statement(day, orders), "utf-8")
    [missing] = [o for (_, _, _, split, _), o in zip(ORDERS, orders) if not split]
    order_path = out_dir / f"order-{missing.order_id}.json"
    order_path.write_text(json.dumps(json_format.MessageToDict(
        missing, preserving_proto_field_name=True), indent=2) + "\n", "utf-8")
    return {"DAY": day.isoformat(), "STATEMENT": str(path), "ORDER": str(order_path),
            "SPLIT": str(split_ids[0]),
            "TODAY": dt.datetime.now(ZoneInfo(DEFAULT_TIME_ZONE)).date().isoformat()}


def main() -> int:
    settings = Settings.from_env()
    var = settings.data_dir
    key = (var / "demo.key").read_text().strip()
    approver = (var / "demo-approver.key").read_text().strip()
    day = dt.datetime.now(ZoneInfo(DEFAULT_TIME_ZONE)).date() - dt.timedelta(days=1)
    from clearing.cli.client import credentials_for  # TLS as the `clearing` commands

    credentials = credentials_for(None, settings, settings.grpc_addr)
    found = asyncio.run(make_day(settings.grpc_addr, key, approver, day, var, credentials))
    for name, value in found.items():
        print(f"{name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
