"""ListSplits through the generated stubs: each filter alone and together (the expected ids
worked out here from what the test split), newest paid first with ties by split id, paging
with no duplicate and no gap (through the API and through the store with a tiny scan
maximum), tenancy, roles, invalid input and page tokens bound to platform and filters."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from clearing.splits.model import SplitStatus
from clearing.splits.store import SplitFilter, list_splits
from clearing.tenancy import create_platform
from clearing.v1 import split_pb2 as pb
from tests.split_support import HELD, Splits, new_key, open_accounts, order
from tests.support import Client, details, rid

REFS = ["CUSTODIAL", "PLAT_001", "SUP_2025001", "DIST_01", "LOGISTICS_B"]
RULE_SET = """
name: {name}
currency_code: CNY
rules:
  - rule_name: cut
    priority: 1
    shares:
      - {{label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {{account_ref: PLAT_001}}}}
      - {{label: rest, type: SHARE_TYPE_REMAINDER, receiver: {{account_ref: {ref}}}}}
"""
T0 = dt.datetime(2026, 1, 10, tzinfo=dt.timezone.utc)
HOUR_NS = 3600 * 10**9
# (rule set, amount, hours after T0, cancel it) in the order split; two share a paid time.
ORDERS = [("ls-a", 1_000, 0, False), ("ls-b", 2_000, 1, False), ("held", 1_114, 2, False),
          ("ls-a", 3_000, 3, False), ("held", 5_000, 4, True), ("ls-b", 4_000, 5, False),
          ("ls-a", 2_000, 6, False), ("ls-b", 500, 7, False), ("ls-a", 700, 7, False)]
CREDITED = {"ls-a": {"PLAT_001", "SUP_2025001"}, "ls-b": {"PLAT_001", "DIST_01"},
            "held": {"PLAT_001", "SUP_2025001"}}


@dataclass(frozen=True)
class Made:
    split_id: int
    paid_ns: int
    amount: int
    state: int
    refs: frozenset[str]


def ts(ns: int) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(ns)
    return t


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    ids = await open_accounts(client, REFS)
    gateway = Splits(channel, platform.key)
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    for text in (RULE_SET.format(name="ls-a", ref="SUP_2025001"),
                 RULE_SET.format(name="ls-b", ref="DIST_01"), HELD):
        published = await gateway.publish(text)
        await checker.activate(published.name, published.version)
    made = []
    t0 = int(T0.timestamp()) * 10**9
    for name, amount, hours, cancel in ORDERS:
        paid = t0 + hours * HOUR_NS
        split = await gateway.split(order(amount, rule_set_name=name, paid_time=ts(paid)))
        if cancel:
            split = (await gateway.call("CancelSplit", pb.CancelSplitRequest(
                request_id=rid(), order_id=split.order_id, reason="test"))).split
        made.append(Made(split.split_id, paid, amount, split.status,
                         frozenset(CREDITED[name])))
    made.sort(key=lambda m: (m.paid_ns, m.split_id), reverse=True)
    return gateway, checker, ids, made


async def _all(splits: Splits, **filters) -> list[int]:
    """Every page of a listing; asserts each page's size and no repeated split."""
    size = filters.pop("page_size", 0)
    seen: list[int] = []
    token = ""
    while True:
        page = await splits.call("ListSplits", pb.ListSplitsRequest(
            page_size=size, page_token=token, **filters))
        assert len(page.splits) <= (size or 100)
        seen += [s.split_id for s in page.splits]
        token = page.next_page_token
        if not token:
            break
        assert len(page.splits) == size  # a scan never ends a page early at this size
    assert len(seen) == len(set(seen))
    return seen


async def _refused(splits: Splits, **fields) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await splits.call("ListSplits", pb.ListSplitsRequest(**fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return details(err.value)[1]


async def test_newest_paid_first_and_each_filter(world):
    gateway, _, ids, made = world
    assert await _all(gateway) == [m.split_id for m in made]
    # ties: the two splits paid at T0+7h come by decreasing split id
    assert made[0].paid_ns == made[1].paid_ns and made[0].split_id > made[1].split_id

    def expect(keep) -> list[int]:
        return [m.split_id for m in made if keep(m)]

    for state in (pb.SPLIT_STATUS_POSTED, pb.SPLIT_STATUS_HOLDING, pb.SPLIT_STATUS_CANCELLED,
                  pb.SPLIT_STATUS_REFUNDED):
        assert await _all(gateway, state=state) == expect(lambda m: m.state == state)
    assert expect(lambda m: m.state == pb.SPLIT_STATUS_CANCELLED)  # the test has one

    start, end = made[-1].paid_ns + 2 * HOUR_NS, made[-1].paid_ns + 6 * HOUR_NS
    got = await _all(gateway, paid_time_start=ts(start), paid_time_end=ts(end))
    assert got == expect(lambda m: start <= m.paid_ns < end) and len(got) == 4
    assert await _all(gateway, paid_time_start=ts(start)) == expect(lambda m: m.paid_ns >= start)
    assert await _all(gateway, paid_time_end=ts(end)) == expect(lambda m: m.paid_ns < end)

    for ref in ("DIST_01", "SUP_2025001", "PLAT_001", "LOGISTICS_B"):
        assert await _all(gateway, account_id=ids[ref]) == expect(lambda m: ref in m.refs)

    assert await _all(gateway, amount_min_minor=2_000) == expect(lambda m: m.amount >= 2_000)
    assert await _all(gateway, amount_max_minor=2_000) == expect(lambda m: m.amount <= 2_000)
    got = await _all(gateway, amount_min_minor=1_000, amount_max_minor=2_000)
    assert got == expect(lambda m: 1_000 <= m.amount <= 2_000) and len(got) == 4

    assert await _all(gateway, currency_code="CNY") == [m.split_id for m in made]
    assert await _all(gateway, currency_code="USD") == []

    # all together
    got = await _all(gateway, state=pb.SPLIT_STATUS_POSTED, account_id=ids["SUP_2025001"],
                     amount_min_minor=1_000, paid_time_end=ts(made[0].paid_ns),
                     currency_code="CNY")
    assert got == expect(lambda m: m.state == pb.SPLIT_STATUS_POSTED
                         and "SUP_2025001" in m.refs and m.amount >= 1_000
                         and m.paid_ns < made[0].paid_ns)
    assert got


async def test_pages_have_no_duplicate_or_gap(world):
    gateway, _, ids, made = world
    for size in (1, 2, 4, len(made), len(made) + 1):
        assert await _all(gateway, page_size=size) == [m.split_id for m in made], size
    assert await _all(gateway, page_size=2, account_id=ids["SUP_2025001"]) == [
        m.split_id for m in made if "SUP_2025001" in m.refs]
    # a page carries the splits whole: legs and history
    page = await gateway.call("ListSplits", pb.ListSplitsRequest(
        page_size=1, state=pb.SPLIT_STATUS_CANCELLED))
    got = (await gateway.call("GetSplit", pb.GetSplitRequest(
        split_id=page.splits[0].split_id))).split
    assert page.splits[0] == got and got.actions


async def test_a_scan_limited_page_may_be_short_but_pages_go_on(world, database_url, platform):
    """The store walks at most `scan_max` splits per page: with a filter most of them miss,
    pages come short (even empty) with a position, and together they are the listing."""
    _, _, ids, made = world
    want = [m.split_id for m in made if "DIST_01" in m.refs]
    conn = await asyncpg.connect(database_url)
    try:
        flt = SplitFilter(account_id=ids["DIST_01"])
        seen, after, pages = [], None, 0
        while True:
            page = await list_splits(conn, platform.platform_id, flt, after=after, limit=2,
                                     scan_max=2)
            pages += 1
            seen += [s.split_id for s in page.splits]
            if page.after is None:
                break
            after = page.after
        assert seen == want and pages >= len(made) // 2
        page = await list_splits(conn, platform.platform_id,
                                 SplitFilter(status=SplitStatus.HOLDING), after=None, limit=5,
                                 scan_max=len(made) + 1)
        assert [s.split_id for s in page.splits] == [
            m.split_id for m in made if m.state == pb.SPLIT_STATUS_HOLDING]
        assert page.after is None
        # a walk that reaches its maximum cannot know it was the last: one more, empty page
        page = await list_splits(conn, platform.platform_id,
                                 SplitFilter(status=SplitStatus.HOLDING), after=None, limit=5,
                                 scan_max=len(made))
        assert page.after == (made[-1].paid_ns, made[-1].split_id)
        page = await list_splits(conn, platform.platform_id,
                                 SplitFilter(status=SplitStatus.HOLDING), after=page.after,
                                 limit=5, scan_max=len(made))
        assert page.splits == () and page.after is None
    finally:
        await conn.close()


async def test_tenancy_and_roles(world, channel, database_url):
    gateway, approver, _, made = world
    assert await _all(approver) == [m.split_id for m in made]
    conn = await asyncpg.connect(database_url)
    try:
        _, other_key = await create_platform(conn, f"p_{rid()[:12]}",
                                             frozenset({"gateway", "operator"}))
    finally:
        await conn.close()
    other = Splits(channel, other_key)
    assert await _all(other) == []
    page = await gateway.call("ListSplits", pb.ListSplitsRequest(page_size=2))
    assert page.next_page_token
    assert await _refused(other, page_size=2, page_token=page.next_page_token) == [
        "page_token"]


async def test_invalid_input_names_the_field(world):
    gateway, _, ids, _ = world
    cases = [
        (dict(page_size=-1), "page_size"), (dict(page_size=1001), "page_size"),
        (dict(state=pb.SPLIT_STATUS_PREVIEW), "state"), (dict(state=99), "state"),
        (dict(paid_time_start=ts(HOUR_NS), paid_time_end=ts(HOUR_NS)), "paid_time_end"),
        (dict(paid_time_start=Timestamp(seconds=0, nanos=-1)), "paid_time_start"),
        (dict(paid_time_end=Timestamp(seconds=10**12)), "paid_time_end"),
        (dict(account_id=-1), "account_id"),
        (dict(amount_min_minor=-1), "amount_min_minor"),
        (dict(amount_min_minor=10, amount_max_minor=9), "amount_max_minor"),
        (dict(currency_code="XYZ"), "currency_code"),
        (dict(page_token="garbage"), "page_token"),
    ]
    for fields, field in cases:
        assert await _refused(gateway, **fields) == [field], fields
    page = await gateway.call("ListSplits", pb.ListSplitsRequest(
        page_size=1, account_id=ids["PLAT_001"]))
    token = page.next_page_token
    assert token
    # the same filters take it; any other filter refuses it
    await gateway.call("ListSplits", pb.ListSplitsRequest(
        page_size=1, account_id=ids["PLAT_001"], page_token=token))
    for other in (dict(), dict(account_id=ids["DIST_01"]),
                  dict(account_id=ids["PLAT_001"], state=pb.SPLIT_STATUS_POSTED),
                  dict(account_id=ids["PLAT_001"], amount_max_minor=5_000),
                  dict(account_id=ids["PLAT_001"], currency_code="CNY")):
        assert await _refused(gateway, page_token=token, **other) == ["page_token"], other


async def test_cli_split_list(world, running, platform):
    """`clearing split list`: dates in the platform's time zone (Asia/Shanghai: T0 is 08:00
    on 2026-01-10 there), ISO times, major units, a state, paging with the token."""
    from tests.integration.test_split_cli import cli, ok

    _, _, ids, made = world
    key = platform.key

    async def listed(*argv: str) -> list[int]:
        return [int(s["split_id"]) for s in (await ok(running, key, "split", "list",
                                                       *argv)).get("splits", [])]

    every = [m.split_id for m in made]
    assert await listed("--from", "2026-01-10", "--to", "2026-01-10") == every
    assert await listed("--to", "2026-01-09") == []
    assert await listed("--from", "2026-01-11") == []
    assert await listed("--from", "2026-01-10", "--time-zone", "UTC") == every
    assert await listed("--from", "2026-01-11", "--time-zone", "America/Los_Angeles") == []
    start = made[-1].paid_ns + 2 * HOUR_NS  # 2026-01-10T02:00Z, 10:00 in Shanghai
    assert await listed("--from", "2026-01-10T10:00:00+08:00") == [
        m.split_id for m in made if m.paid_ns >= start]
    assert await listed("--to", "2026-01-10T02:00:00Z") == [
        m.split_id for m in made if m.paid_ns < start]
    assert await listed("--min-amount", "10.00", "--max-amount", "20") == [
        m.split_id for m in made if 1_000 <= m.amount <= 2_000]
    assert await listed("--state", "cancelled") == [
        m.split_id for m in made if m.state == pb.SPLIT_STATUS_CANCELLED]
    seen, token = [], ""
    while True:
        page = await ok(running, key, "split", "list", "--account", str(ids["DIST_01"]),
                        "--page-size", "2", *(("--page-token", token) if token else ()))
        seen += [int(s["split_id"]) for s in page.get("splits", [])]
        if not (token := page.get("next_page_token", "")):
            break
    assert seen == [m.split_id for m in made if "DIST_01" in m.refs]

    code, _, err = await cli(running, key, "split", "list", "--min-amount", "1.234")
    assert code == 1 and "--min-amount" in err and "Traceback" not in err
    code, _, err = await cli(running, key, "split", "list", "--from", "2026-13-01")
    assert code == 1 and "--from" in err and "Traceback" not in err
    code, _, err = await cli(running, key, "split", "list", "--time-zone", "Mars/Base")
    assert code == 1 and "--time-zone" in err
    code, _, err = await cli(running, key, "split", "list", "--min-amount", "2",
                             "--max-amount", "1")
    assert code == 1 and "amount_max_minor" in err and "Traceback" not in err


async def test_python_client_list_splits(world, channel, platform):
    from clearing_client import ClearingClient

    _, _, ids, made = world
    c = ClearingClient("", platform.key, channel=channel)
    start = T0 + dt.timedelta(hours=2)
    page = await c.list_splits(paid_time_start=start, paid_time_end=T0 + dt.timedelta(hours=6),
                               account_id=ids["SUP_2025001"], page_size=2)
    want = [m.split_id for m in made
            if start.timestamp() * 10**9 <= m.paid_ns < (start.timestamp() + 4 * 3600) * 10**9
            and "SUP_2025001" in m.refs]
    got = [s.split_id for s in page.splits]
    while page.next_page_token:
        page = await c.list_splits(paid_time_start=start,
                                   paid_time_end=T0 + dt.timedelta(hours=6),
                                   account_id=ids["SUP_2025001"], page_size=2,
                                   page_token=page.next_page_token)
        got += [s.split_id for s in page.splits]
    assert got == want and len(want) == 3
    page = await c.list_splits(state=pb.SPLIT_STATUS_HOLDING, currency_code="CNY",
                               amount_min_minor=1_114, amount_max_minor=1_114)
    assert [s.split_id for s in page.splits] == [
        m.split_id for m in made if m.state == pb.SPLIT_STATUS_HOLDING and m.amount == 1_114]
