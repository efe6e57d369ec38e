"""Backtesting a rule set (SimulateRuleSet) and the static ratio swing at activation,
through the generated stubs against the real server, PostgreSQL and Redis.

The worked backtest (rule set `bt`, CNY): version 1 (active) pays PLAT_001 10% and
SUP_2025001 90% (rule `base`), and 20% / 80% on orders tagged `vip` (rule `vip`, priority
1). Version 2 pays on `vip` or `gold` orders PLAT_001 20%, SUP_2025001 70%, LOGISTICS_B 10%,
and on other orders of at least 1000 PLAT_001 12% / SUP_2025001 88%; smaller orders match
no rule. Four orders split under version 1:

    order        v1 (recorded)             v2
    10000 vip    PLAT 2000  SUP 8000       PLAT 2000  SUP 7000  LOG 1000  (same rule)
    5000         PLAT  500  SUP 4500       PLAT  600  SUP 4400            (same rule)
    500          PLAT   50  SUP  450       refused: NO_MATCHING_RULE
    2000 gold    PLAT  200  SUP 1800       PLAT  400  SUP 1400  LOG  200  (base -> vip)

Totals: v1 PLAT 2750, SUP 14750 (17500); v2 PLAT 3000, SUP 12800, LOG 1200 (17000).
Swings: PLAT |3000x17500 - 2750x17000| / (2750x17000) = 5,750,000 / 46,750,000 = 12.29%
(1229 bps); SUP 26,750,000 / 250,750,000 = 10.66% (1066 bps); LOG is a new receiver.
"""

from __future__ import annotations

import datetime as dt
import json

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clearing.limits import RATIO_SWING_THRESHOLD_BPS
from clearing.risk import backtest
from clearing.rules import compile as plans
from clearing.v1 import rule_set_pb2
from clearing.v1 import split_pb2 as pb
from tests.integration.test_split_preview import CASES
from tests.split_support import Splits, file_examples, new_key, open_accounts, order
from tests.support import Client, details

BT_V1 = """
name: bt
currency_code: CNY
rules:
  - rule_name: vip
    priority: 1
    condition: {tags_any: [vip]}
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 2000, receiver: {account_ref: PLAT_001}}
      - {label: supplier, type: SHARE_TYPE_RATIO, ratio_bps: 8000, receiver: {account_ref: SUP_2025001}}
  - rule_name: base
    priority: 2
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000, receiver: {account_ref: PLAT_001}}
      - {label: supplier, type: SHARE_TYPE_RATIO, ratio_bps: 9000, receiver: {account_ref: SUP_2025001}}
"""
BT_V2 = """
name: bt
currency_code: CNY
rules:
  - rule_name: vip
    priority: 1
    condition: {tags_any: [vip, gold]}
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 2000, receiver: {account_ref: PLAT_001}}
      - {label: supplier, type: SHARE_TYPE_RATIO, ratio_bps: 7000, receiver: {account_ref: SUP_2025001}}
      - {label: logistics, type: SHARE_TYPE_RATIO, ratio_bps: 1000, receiver: {account_ref: LOGISTICS_B}}
  - rule_name: base
    priority: 2
    condition: {min_amount_minor: 1000}
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1200, receiver: {account_ref: PLAT_001}}
      - {label: supplier, type: SHARE_TYPE_RATIO, ratio_bps: 8800, receiver: {account_ref: SUP_2025001}}
"""
REFS = ["CUSTODIAL", "PLAT_001", "SUP_2025001", "LOGISTICS_B"]


def _flat(platform_bps: int) -> str:
    """Version 1's `base` alone with PLAT_001 at `platform_bps`."""
    return f"""
name: bt
currency_code: CNY
rules:
  - rule_name: base
    priority: 2
    shares:
      - {{label: platform, type: SHARE_TYPE_RATIO, ratio_bps: {platform_bps}, receiver: {{account_ref: PLAT_001}}}}
      - {{label: supplier, type: SHARE_TYPE_RATIO, ratio_bps: {10000 - platform_bps}, receiver: {{account_ref: SUP_2025001}}}}
"""


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    """The platform's operator+gateway view, two approvers, account ids by ref."""
    ids = await open_accounts(client, REFS)
    maker = Splits(channel, client.metadata[0][1].split(" ", 1)[1])
    first = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    second = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    return maker, first, second, ids


async def _v1_with_orders(maker: Splits, checker: Splits) -> list[pb.Split]:
    await maker.publish(BT_V1)
    await checker.activate("bt", 1)
    return [await maker.split(order(amount, rule_set_name="bt", tags=tags))
            for amount, tags in ((10_000, ["vip"]), (5_000, []), (500, []), (2_000, ["gold"]))]


async def _simulate(who: Splits, version: int, **extra) -> pb.SimulateRuleSetResponse:
    return await who.call("SimulateRuleSet", pb.SimulateRuleSetRequest(
        rule_set_name="bt", rule_set_version=version, **extra))


async def _ledger(client: Client, ids: dict[str, int], database_url: str) -> tuple:
    balances = [await client.balance(ids[ref]) for ref in REFS]
    conn = await asyncpg.connect(database_url)
    try:
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM transfers) AS transfers,"
            " (SELECT count(*) FROM splits) AS splits,"
            " (SELECT count(*) FROM requests) AS requests")
    finally:
        await conn.close()
    return balances, dict(counts)


async def test_backtest_totals_swings_changes_and_refusals(world, client: Client,
                                                           database_url):
    maker, checker, _, ids = world
    recorded = await _v1_with_orders(maker, checker)
    await maker.publish(BT_V2)
    before = await _ledger(client, ids, database_url)
    r = await _simulate(checker, 2, days=7)
    assert await _ledger(client, ids, database_url) == before  # nothing written

    assert (r.rule_set_name, r.active_version, r.candidate_version, r.currency_code) == (
        "bt", 1, 2, "CNY")
    assert (r.order_count, r.truncated, r.candidate_split_count, r.candidate_refused_count,
            r.active_refused_count, r.changed_rule_count) == (4, False, 3, 1, 0, 1)
    assert (r.active_total_minor, r.candidate_total_minor) == (17_500, 17_000)
    got = {x.external_ref: (x.account_id, x.active_minor, x.candidate_minor,
                            x.active_share_bps, x.candidate_share_bps, x.swing_bps,
                            x.new_receiver, x.swing_exceeded) for x in r.receivers}
    assert got == {
        "LOGISTICS_B": (ids["LOGISTICS_B"], 0, 1_200, 0, 705, 0, True, True),
        "PLAT_001": (ids["PLAT_001"], 2_750, 3_000, 1571, 1764, 1229, False, False),
        "SUP_2025001": (ids["SUP_2025001"], 14_750, 12_800, 8428, 7529, 1066, False, False)}
    assert [x.external_ref for x in r.receivers] == ["LOGISTICS_B", "PLAT_001", "SUP_2025001"]
    assert (r.receiver_count, r.max_swing_bps, r.swing_threshold_bps, r.swing_exceeded) == (
        3, 1229, RATIO_SWING_THRESHOLD_BPS, True)
    end = r.period_end_time.ToDatetime(dt.timezone.utc)
    assert end - r.period_start_time.ToDatetime(dt.timezone.utc) == dt.timedelta(days=7)

    assert dict(r.refused_count_by_reason) == {"NO_MATCHING_RULE": 1}
    [refused] = r.refused_orders
    assert refused.order_id == recorded[2].order_id
    assert (refused.error.reason, refused.error.code) == ("NO_MATCHING_RULE", 9)

    [changed] = r.changed_orders
    gold = recorded[3]
    assert changed.order_id == gold.order_id == changed.active.order_id
    assert [m.rule_name for m in changed.active.matched_rules] == ["base"]
    assert [m.rule_name for m in changed.candidate.matched_rules] == ["vip"]
    assert [(leg.external_ref, leg.amount_minor) for leg in changed.active.legs] == [
        (leg.external_ref, leg.amount_minor) for leg in gold.legs]  # as recorded
    assert [(leg.external_ref, leg.amount_minor) for leg in changed.candidate.legs] == [
        ("PLAT_001", 400), ("SUP_2025001", 1_400), ("LOGISTICS_B", 200)]
    assert changed.candidate.status == pb.SPLIT_STATUS_PREVIEW
    assert changed.candidate.rule_set_version == 2


async def test_backtest_sample_and_period(world):
    maker, checker, _, _ = world
    await _v1_with_orders(maker, checker)
    await maker.publish(BT_V2)
    latest = await _simulate(maker, 2, order_count_max=2)  # the two most recent orders
    assert (latest.order_count, latest.truncated) == (2, True)
    assert (latest.active_total_minor, latest.candidate_total_minor) == (500 + 2_000, 2_000)
    assert (latest.candidate_refused_count, latest.changed_rule_count) == (1, 1)
    whole = await _simulate(maker, 2, order_count_max=4, days=31)
    assert (whole.order_count, whole.truncated) == (4, False)


async def test_backtest_of_the_recorded_version_gives_the_recorded_totals(world):
    """Version 2 active (a second approver: it adds a receiver); version 1, which split
    the orders, backtested against it gives every receiver exactly its recorded total,
    and so does version 3, the same rules published again."""
    maker, first, second, _ = world
    recorded = await _v1_with_orders(maker, first)
    await maker.publish(BT_V2)
    with pytest.raises(grpc.aio.AioRpcError):
        await first.activate("bt", 2)
    await second.activate("bt", 2)
    await maker.publish(BT_V1)
    totals: dict[str, int] = {}
    for split in recorded:
        for leg in split.legs:
            totals[leg.external_ref] = totals.get(leg.external_ref, 0) + leg.amount_minor
    for version in (1, 3):
        r = await _simulate(maker, version)
        assert (r.active_version, r.candidate_version) == (2, version)
        assert {x.external_ref: x.candidate_minor for x in r.receivers
                if x.candidate_minor} == totals
        # version 2 evaluated again: it refuses the order of 500, the gold order changes
        assert {x.external_ref: x.active_minor for x in r.receivers} == {
            "PLAT_001": 3_000, "SUP_2025001": 12_800, "LOGISTICS_B": 1_200}
        assert (r.active_refused_count, r.candidate_refused_count, r.changed_rule_count) == (
            1, 0, 1)


async def test_reevaluating_recorded_orders_gives_their_recorded_legs(
        channel, client: Client, database_url, platform):
    """Every worked example (fees, party roles, coupons, subsidies, levels, top-slice)
    and a tier reached by a live counter, split through the server, then re-evaluated
    from what the split stores by the backtest's own reading: the same legs, exactly."""
    splits, ids = await file_examples(channel, client, database_url, platform.platform_id)
    await client.transfer(ids["CUSTODIAL"], ids["MKT"], 1_000_000)
    for name, fields, _ in CASES:
        await splits.split(order(rule_set_name=name, **fields))
    hosts = [await splits.split(order(300_000_000, rule_set_name="live",
                                      parties={"host": "HOST_01"},
                                      attributes={"host_level": "new"})) for _ in range(2)]
    assert [leg.ratio_bps for leg in hosts[1].legs][0] == 3000  # the tier applied
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT h.name, h.active_version, r.plan FROM rule_set_heads h JOIN rule_sets r"
            " ON r.platform_id = h.platform_id AND r.name = h.name"
            " AND r.version = h.active_version WHERE h.platform_id = $1",
            platform.platform_id)
        checked = 0
        for row in rows:
            plan = plans.from_bytes(row["plan"])
            pairs = await backtest.recorded_and_again(conn, platform.platform_id, plan,
                                                      start_ns=0, end_ns=2**62)
            for recorded, again in pairs:
                assert backtest.reproduces(recorded, again), (row["name"], recorded, again)
                assert recorded.legs == again.legs and recorded.matched_rules == \
                    again.matched_rules
            checked += len(pairs)
    finally:
        await conn.close()
    assert checked == len(CASES) + 2


async def test_backtest_roles_and_invalid_input(world, channel, database_url, platform):
    maker, checker, _, _ = world
    await _v1_with_orders(maker, checker)
    await maker.publish(BT_V2)
    gateway = Splits(channel, await new_key(database_url, platform.platform_id, {"gateway"}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _simulate(gateway, 2)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    cases = [
        (dict(rule_set_version=1), grpc.StatusCode.INVALID_ARGUMENT, ["rule_set_version"]),
        (dict(rule_set_version=2, days=32), grpc.StatusCode.INVALID_ARGUMENT, ["days"]),
        (dict(rule_set_version=2, days=-1), grpc.StatusCode.INVALID_ARGUMENT, ["days"]),
        (dict(rule_set_version=2, order_count_max=-1), grpc.StatusCode.INVALID_ARGUMENT,
         ["order_count_max"]),
        (dict(rule_set_version=0), grpc.StatusCode.INVALID_ARGUMENT, ["rule_set_version"]),
        (dict(rule_set_version=9), grpc.StatusCode.NOT_FOUND, []),
    ]
    for fields, code, paths in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await maker.call("SimulateRuleSet", pb.SimulateRuleSetRequest(
                rule_set_name="bt", **fields))
        assert err.value.code() == code, fields
        assert details(err.value)[1] == paths, fields
        if code == grpc.StatusCode.NOT_FOUND:
            assert details(err.value)[0] == "RULE_SET_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await maker.call("SimulateRuleSet", pb.SimulateRuleSetRequest(
            rule_set_name="nope", rule_set_version=1))
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.NOT_FOUND,
                                                         "RULE_SET_NOT_FOUND")


async def test_backtest_without_an_active_version(world):
    maker, _, _, _ = world
    await maker.publish(BT_V1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _simulate(maker, 1)
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                         "NO_ACTIVE_RULE_SET")


# ---- the static ratio swing at activation -------------------------------------------------------

def _metadata(err: grpc.aio.AioRpcError) -> dict[str, str]:
    for d in rpc_status.from_call(err).details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return dict(info.metadata)
    return {}


async def _one_order_v1(maker: Splits, checker: Splits) -> None:
    """Version 1 PLAT_001 10% / SUP_2025001 90%, and one order of 10000 split by it."""
    await maker.publish(_flat(1000))
    await checker.activate("bt", 1)
    await maker.split(order(10_000, rule_set_name="bt"))


async def test_a_swing_of_exactly_30_percent_needs_one_approver(world):
    """PLAT_001 1000 -> 1300 of 10000: (1300 - 1000) / 1000 = 30% exactly."""
    maker, first, _, _ = world
    await _one_order_v1(maker, first)
    await maker.publish(_flat(1300))
    activated = await first.activate("bt", 2)
    assert activated.rule_set.status == rule_set_pb2.RULE_SET_STATUS_ACTIVE
    s = activated.ratio_swing
    assert (s.swing_threshold_bps, s.max_swing_bps, s.receiver_external_ref, s.swing_exceeded,
            s.order_count, s.first_approver_key_id, s.period_days) == (
        3000, 3000, "PLAT_001", False, 1, 0, 7)


async def test_a_swing_over_30_percent_needs_a_second_approver(world, channel, database_url,
                                                                platform):
    """PLAT_001 1000 -> 1301 of 10000: 30.1%."""
    maker, first, second, ids = world
    await _one_order_v1(maker, first)
    published = await maker.publish(_flat(1301))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first.activate("bt", 2, comment="looks right")
    assert (err.value.code(), details(err.value)[0]) == (
        grpc.StatusCode.FAILED_PRECONDITION, "RATIO_SWING_NEEDS_SECOND_APPROVER")
    meta = _metadata(err.value)
    assert {k: meta[k] for k in ("swing_threshold_bps", "max_swing_bps",
                                 "receiver_external_ref", "receiver_account_id",
                                 "active_share_bps", "candidate_share_bps",
                                 "receivers_over_threshold", "order_count",
                                 "active_version", "period_days")} == {
        "swing_threshold_bps": "3000", "max_swing_bps": "3010",
        "receiver_external_ref": "PLAT_001", "receiver_account_id": str(ids["PLAT_001"]),
        "active_share_bps": "1000", "candidate_share_bps": "1301",
        "receivers_over_threshold": "1", "order_count": "1", "active_version": "1",
        "period_days": "7"}
    first_key = int(meta["first_approver_key_id"])
    got = (await maker.call("GetRuleSet", pb.GetRuleSetRequest(
        rule_set_name="bt", rule_set_version=2))).rule_set
    assert got.status == rule_set_pb2.RULE_SET_STATUS_PUBLISHED
    # the first approver again (another request id): still refused
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first.activate("bt", 2)
    assert details(err.value)[0] == "RATIO_SWING_NEEDS_SECOND_APPROVER"
    # the publisher, were it an approver, may not be the second one (maker-checker)
    both = Splits(channel, await new_key(database_url, platform.platform_id,
                                         {"operator", "approver"}))
    mine = await both.publish(_flat(1301).replace("name: bt", "name: bt\ndescription: x"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await both.activate("bt", mine.version)
    assert details(err.value)[0] == "MAKER_CHECKER"
    # a different approver activates, and the answer shows the figures
    activated = await second.activate("bt", 2, content_sha256=published.content_sha256)
    assert activated.rule_set.status == rule_set_pb2.RULE_SET_STATUS_ACTIVE
    assert activated.previous_active_version == 1
    s = activated.ratio_swing
    assert (s.max_swing_bps, s.swing_exceeded, s.first_approver_key_id,
            s.receiver_external_ref) == (3010, True, first_key, "PLAT_001")
    assert activated.rule_set.activated_by != first_key


async def test_a_new_receiver_needs_a_second_approver_and_replays_answer_the_same(world):
    maker, first, second, _ = world
    await _v1_with_orders(maker, first)
    await maker.publish(BT_V2)
    request_id = "activate-bt-2"
    for _ in range(2):  # a retry answers the recorded refusal
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await first.activate("bt", 2, request_id=request_id)
        assert details(err.value)[0] == "RATIO_SWING_NEEDS_SECOND_APPROVER"
        meta = _metadata(err.value)
        assert (meta["receiver_external_ref"], meta["receiver_new"]) == ("LOGISTICS_B", "true")
    activated = await second.activate("bt", 2)
    assert activated.ratio_swing.swing_exceeded
    again = await second.activate("bt", 2, request_id=request_id + "-x")  # already active
    assert not again.HasField("ratio_swing")


async def test_first_activation_and_unchanged_shares_need_no_backtest_approver(world):
    maker, first, _, _ = world
    await _one_order_v1(maker, first)
    await maker.publish(_flat(1000))
    activated = await first.activate("bt", 2)
    assert (activated.ratio_swing.max_swing_bps, activated.ratio_swing.swing_exceeded,
            activated.ratio_swing.order_count) == (0, False, 1)


async def test_the_cli_backtests(running, world, platform):
    from tests.support import cli

    maker, first, _, _ = world
    await _v1_with_orders(maker, first)
    await maker.publish(BT_V2)
    code, out, err = await cli(running, platform.key, "rules", "backtest", "bt", "2",
                               "--days", "7")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["changed_rule_count"], doc["candidate_refused_count"]) == ("1", "1")
    assert doc["receivers"][0]["external_ref"] == "LOGISTICS_B"


async def test_one_backtest_at_a_time_per_process():
    from clearing.api.rule_set_backtest import Backtests
    from clearing.clock import Clock
    from clearing.errors import ResourceExhausted

    runs = Backtests(None, None, Clock())  # type: ignore[arg-type]
    async with runs._slots:  # another backtest is running
        with pytest.raises(ResourceExhausted) as err:
            await runs.run(1, None, None, days=7, order_count_max=1)  # type: ignore[arg-type]
    assert err.value.reason == "BACKTEST_BUSY"


def _tiers(counter: str, min_value: int) -> str:
    """SUP_2025001 90%, +5 points from the `min_value`-th order it receives (counter
    `counter`, lifetime); PLAT_001 the rest."""
    return f"""
name: tiers
currency_code: CNY
counters:
  - {{name: {counter}, metric: COUNTER_METRIC_ORDER_COUNT, period: COUNTER_PERIOD_LIFETIME,
     account_ref: SUP_2025001}}
rules:
  - rule_name: all
    priority: 1
    shares:
      - label: supplier
        type: SHARE_TYPE_RATIO
        ratio_bps: 9000
        receiver: {{account_ref: SUP_2025001}}
        tiers:
          counter_name: {counter}
          effect: TIER_EFFECT_ADD
          tiers: [{{min_counter_value: {min_value}, ratio_bps: 500}}]
      - {{label: platform, type: SHARE_TYPE_REMAINDER, receiver: {{account_ref: PLAT_001}}}}
"""


async def test_counters_are_the_values_the_orders_recorded(world):
    """Three orders of 10000 split by version 1 (tier from the 1000th order: 90% each)
    recorded the counter at 1, 2, 3. Version 2 (tier from the 2nd order, same counter)
    reads those values: 9000 + 9500 + 9500. Version 3's counter is one the orders never
    raised: it reads 0 (no tier) and each order counts as unrecorded."""
    maker, first, second, _ = world
    await maker.publish(_tiers("sup_orders", 1000))
    await first.activate("tiers", 1)
    for _ in range(3):
        await maker.split(order(10_000, rule_set_name="tiers"))
    await maker.publish(_tiers("sup_orders", 2))
    await maker.publish(_tiers("sup_orders_new", 1))
    call = maker.call
    same = await call("SimulateRuleSet", pb.SimulateRuleSetRequest(rule_set_name="tiers",
                                                                   rule_set_version=2))
    assert {x.external_ref: (x.active_minor, x.candidate_minor) for x in same.receivers} == {
        "SUP_2025001": (27_000, 28_000), "PLAT_001": (3_000, 2_000)}
    assert same.counter_unrecorded_count == 0
    new = await call("SimulateRuleSet", pb.SimulateRuleSetRequest(rule_set_name="tiers",
                                                                  rule_set_version=3))
    assert {x.external_ref: (x.active_minor, x.candidate_minor) for x in new.receivers} == {
        "SUP_2025001": (27_000, 27_000), "PLAT_001": (3_000, 3_000)}
    assert new.counter_unrecorded_count == 3
