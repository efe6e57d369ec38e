"""Helpers for the report tests: a platform with a day of B2B splits (two rule-set versions,
two channels), ExportReport through the generated stubs, and the files read back."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import openpyxl

from clearing.limits import DEFAULT_TIME_ZONE
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import report_pb2 as pb
from clearing.v1 import report_pb2_grpc
from clearing.v1 import split_pb2 as spb
from tests.split_support import Splits, new_key, order
from tests.support import CALL_TIMEOUT_S, Client

B2B = (Path(__file__).resolve().parents[1] / "server/clearing/rules/examples/b2b.yaml").read_text()
ZONE = ZoneInfo(DEFAULT_TIME_ZONE)


def today() -> dt.date:
    return dt.datetime.now(ZONE).date()


def day_bounds(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    lo = dt.datetime.combine(first, dt.time(0), ZONE)
    hi = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0), ZONE)
    return lo, hi


class Reports:
    """ReportService through the generated stubs, as one key."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.stub = report_pb2_grpc.ReportServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def export(self, name: str, first: dt.date | str, last: dt.date | str,
                     fmt: int = pb.REPORT_FORMAT_CSV) -> tuple[pb.ReportInfo, bytes, list]:
        request = pb.ExportReportRequest(report_name=name, from_date=str(first),
                                         to_date=str(last), format=fmt)
        messages = [m async for m in self.stub.ExportReport(request, metadata=self.metadata,
                                                            timeout=CALL_TIMEOUT_S)]
        data = b"".join(m.chunk for m in messages)
        return messages[0].info, data, messages

    async def rows(self, name: str, first, last, fmt: int = pb.REPORT_FORMAT_CSV) -> list[dict]:
        _, data, _ = await self.export(name, first, last, fmt)
        return read_csv(data) if fmt == pb.REPORT_FORMAT_CSV else read_xlsx(data)


def read_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def read_xlsx(data: bytes) -> list[dict]:
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    rows = list(book.active.iter_rows(values_only=True))
    head = rows[0]
    return [{k: ("" if v is None else str(v)) for k, v in zip(head, r)} for r in rows[1:]]


@dataclass
class World:
    """A platform's accounts (ids by ref), its SplitService view and ReportService view."""

    ids: dict[str, int]
    splits: Splits
    reports: Reports
    platform_id: int


REFS = (("custodial", lpb.ACCOUNT_KIND_CUSTODIAL, lpb.OWNER_TYPE_ENTERPRISE),
        ("PLAT_001", lpb.ACCOUNT_KIND_PLATFORM, lpb.OWNER_TYPE_ENTERPRISE),
        ("SUP_2025001", lpb.ACCOUNT_KIND_MERCHANT, lpb.OWNER_TYPE_ENTERPRISE),
        ("LOGISTICS_B", lpb.ACCOUNT_KIND_ORDINARY, lpb.OWNER_TYPE_INDIVIDUAL),
        ("GOV_ACCOUNT", lpb.ACCOUNT_KIND_FUNCTIONAL, lpb.OWNER_TYPE_ENTERPRISE))


async def b2b_world(channel, client: Client, database_url: str, platform) -> World:
    """Open the B2B accounts and file b2b version 1."""
    ids = {}
    for ref, kind, owner in REFS:
        extra = {"allow_negative": True} if kind == lpb.ACCOUNT_KIND_CUSTODIAL else {}
        ids[ref] = (await client.open(ref, kind=kind, owner=owner, **extra)).account_id
    maker = Splits(channel, platform.key)
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    published = await maker.publish(B2B)
    await checker.activate(published.name, published.version)
    world = World(ids, maker, Reports(channel, platform.key), platform.platform_id)
    world.checker = checker
    return world


async def file_v2(world: World) -> None:
    """b2b version 2 (the same rules, another description), activated."""
    published = await world.splits.publish(B2B.replace(
        "description: B2B building materials platform (seed 002)",
        "description: B2B building materials platform, version 2"))
    assert published.version == 2
    await world.checker.activate(published.name, published.version)


def order_a() -> spb.Order:
    """850,000.00, government purchase by an enterprise, WECHAT_PAY: GOV 17,000; then the
    promotion rule: platform 83,300, supplier 624,750, logistics 124,950."""
    return order(85_000_000, channel="WECHAT_PAY", rule_set_name="b2b",
                 tags=["enterprise purchase", "government purchase"],
                 attributes={"customer_type": "enterprise"})


def order_b() -> spb.Order:
    """1,000.00 with a channel fee of 6.00, ALIPAY: 994.00 by the base rule (10/70/20)."""
    return order(100_000, channel="ALIPAY", rule_set_name="b2b", channel_fee_minor=600,
                 order_id="ORD-B-" + str(dt.datetime.now().timestamp()))


def order_c() -> spb.Order:
    """2,000.00, WECHAT_PAY, base rule (10/70/20)."""
    return order(200_000, channel="WECHAT_PAY", rule_set_name="b2b")


# What the three orders make, per (account ref, rule-set version, rule): legs, amount.
EXPECTED_LEGS = {
    ("PLAT_001", 1, "base"): (1, 9_940),
    ("PLAT_001", 1, "promotion-enterprise"): (1, 8_330_000),
    ("PLAT_001", 2, "base"): (1, 20_000),
    ("SUP_2025001", 1, "base"): (1, 69_580),
    ("SUP_2025001", 1, "promotion-enterprise"): (1, 62_475_000),
    ("SUP_2025001", 2, "base"): (1, 140_000),
    ("LOGISTICS_B", 1, "base"): (1, 19_880),
    ("LOGISTICS_B", 1, "promotion-enterprise"): (1, 12_495_000),
    ("LOGISTICS_B", 2, "base"): (1, 40_000),
    ("GOV_ACCOUNT", 1, "special-government-purchase"): (1, 1_700_000),
}
SPLIT_TOTAL = 85_000_000 + 99_400 + 200_000


async def three_splits(world: World) -> list[spb.Split]:
    done = [await world.splits.split(order_a()), await world.splits.split(order_b())]
    await file_v2(world)
    done.append(await world.splits.split(order_c()))
    return done


def summary_rows(rows: list[dict]) -> dict:
    return {(r["external_ref"], int(r["rule_set_version"]), r["rule_name"]):
            (int(r["leg_count"]), int(r["amount_minor"])) for r in rows if r["line"] == "detail"}


def totals(rows: list[dict]) -> dict[str, dict]:
    return {r["currency_code"]: r for r in rows if r["line"] == "total"}
