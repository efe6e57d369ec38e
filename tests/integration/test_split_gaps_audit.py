"""Items of issue 3's test list that only the rules engine's unit tests covered, now through
the generated stubs: a 10-level chain of filed rule sets split to the minor unit; an 11th
level and a cycle rejected with their field paths; docs/splits.md's B2B example being exactly
the seed's file and splitting the 850,000.00 order to the fen; a Redis server stopped and
restarted while orders are being split; a broken invariant (a fault injected in the
in-process server's evaluator) posting nothing and recording an alert; the whole split held
until SIGNED_FOR, then released; a host's share rising on a live GMV counter."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clearing import server
from clearing.dev.embedded_redis import start_redis
from clearing.rules import evaluate as evaluation
from clearing.v1 import split_pb2 as pb
from tests.conftest import server_settings
from tests.integration.test_split_preview import B2B_TAGS, ENTERPRISE
from tests.integration.test_split_rule_sets import B2B, B2B_REFS
from tests.split_support import Splits, by_ref, file_examples, new_key, open_accounts, order
from tests.support import ROOT, Client, details, rid, wait_for

LEVELS_MAX = 10
CHAIN_AMOUNT_MINOR = 10**10  # each level keeps 10% of what reaches it, exactly


def _level(level: int, next_level: int | None) -> str:
    rest = (f"{{rule_set: {{rule_set_name: l{next_level}}}}}" if next_level is not None
            else "{account_ref: CHAIN_END}")
    return f"""
name: l{level}
currency_code: CNY
rules:
  - rule_name: keep
    priority: 1
    shares:
      - {{label: keep, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {{account_ref: CHAIN_{level}}}}}
      - {{label: rest, type: SHARE_TYPE_REMAINDER, receiver: {rest}}}
"""


def _violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    out = []
    for d in status.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            d.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


@pytest.fixture
async def chain(channel, client: Client, database_url, platform) -> tuple[Splits, Splits]:
    """l1 -> l2 -> ... -> l10 filed and active (the deepest first); (maker, checker)."""
    await open_accounts(client, ["CUSTODIAL"])
    for ref in ["CHAIN_END"] + [f"CHAIN_{i}" for i in range(0, LEVELS_MAX + 1)]:
        await client.open(ref)
    maker = Splits(channel, client.metadata[0][1].split(" ", 1)[1])
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    for level in range(LEVELS_MAX, 0, -1):
        published = await maker.publish(_level(level, level + 1 if level < LEVELS_MAX
                                               else None))
        await checker.activate(published.name, published.version)
    return maker, checker


async def test_a_10_level_chain_is_split_to_the_minor_unit(chain, client: Client):
    maker, _ = chain
    got = await maker.call("GetRuleSet", pb.GetRuleSetRequest(rule_set_name="l1"))
    assert got.rule_set.level_count == LEVELS_MAX
    split = await maker.split(order(CHAIN_AMOUNT_MINOR, rule_set_name="l1"))
    keeps = [CHAIN_AMOUNT_MINOR * 9 ** (i - 1) // 10 ** i for i in range(1, LEVELS_MAX + 1)]
    assert keeps[:3] == [1_000_000_000, 900_000_000, 810_000_000]
    assert [(leg.external_ref, leg.amount_minor, leg.level) for leg in split.legs] == [
        (f"CHAIN_{i}", keeps[i - 1], i) for i in range(1, LEVELS_MAX + 1)] + [
        ("CHAIN_END", 9**10, LEVELS_MAX)]
    assert sum(leg.amount_minor for leg in split.legs) == CHAIN_AMOUNT_MINOR
    assert [m.parent_match_index for m in split.matched_rules] == [-1] + list(range(9))
    assert (await client.verify()).ok


async def test_an_11th_level_and_a_cycle_are_rejected_with_field_paths(chain):
    maker, _ = chain
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await maker.publish(_level(0, 1))  # l0 -> l1 -> ... -> l10: 11 levels
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = _violations(err.value)
    assert field == "rule_set.rules[0].shares[1].receiver.rule_set"
    assert "11 levels" in description
    # a new version of l3 sending the rest back to l1: l3 -> l1 -> l2 -> l3
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await maker.publish(_level(3, 1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = _violations(err.value)
    assert ("rule_set.rules[0].shares[1].receiver.rule_set", "cycle: l3 -> l1 -> l2 -> l3") \
        in found, found
    listed = await maker.call("ListRuleSets", pb.ListRuleSetsRequest(rule_set_name="l3"))
    assert [r.version for r in listed.rule_sets] == [1]  # nothing was filed


async def test_the_docs_show_the_seeds_b2b_example_in_full(channel, client: Client,
                                                           database_url, platform):
    doc = (ROOT / "docs" / "splits.md").read_text()
    at = doc.index("The seed's B2B example in full")
    block = re.search(r"```yaml\n(.*?)```", doc[at:], re.S)
    assert block is not None and block.group(1) == B2B
    await open_accounts(client, B2B_REFS)
    maker = Splits(channel, client.metadata[0][1].split(" ", 1)[1])
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    published = await maker.publish(block.group(1))
    await checker.activate(published.name, published.version)
    split = await maker.split(order(85_000_000, order_id="ORD202601200001",
                                    rule_set_name="b2b", tags=B2B_TAGS,
                                    attributes=ENTERPRISE))
    assert [(leg.external_ref, leg.amount_minor) for leg in split.legs] == [
        ("GOV_ACCOUNT", 1_700_000), ("PLAT_001", 8_330_000), ("SUP_2025001", 62_475_000),
        ("LOGISTICS_B", 12_495_000)]


# ---- Redis stopped during splits ----------------------------------------------------------------

SPLITS_PER_PHASE = 10


@pytest.fixture
async def own_redis(tmp_path):
    """A Redis server of this test only (the machine's is never touched)."""
    redis = start_redis(tmp_path / "redis")
    yield redis
    redis.stop()


@pytest.fixture
async def own_channel(own_redis, database_url, redis_prefix):
    srv = await server.start(server_settings(database_url, own_redis.url, redis_prefix),
                             migrate=False)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    yield ch
    await ch.close()
    await srv.stop()


@pytest.mark.slow
async def test_redis_stopped_and_restarted_during_splits(own_redis, own_channel, database_url,
                                                         platform, tmp_path):
    client = Client(own_channel, platform.key)
    splits, ids = await file_examples(own_channel, client, database_url, platform.platform_id)

    async def phase() -> list[pb.Split]:
        return list(await asyncio.gather(*(
            splits.split(order(100_000, rule_set_name="baby"))
            for _ in range(SPLITS_PER_PHASE))))

    before = await phase()
    tier_up = await splits.split(order(100_000, rule_set_name="supplier-tiers"))
    assert [(c.value, c.source) for c in tier_up.counter_values] == [
        (1, pb.COUNTER_SOURCE_LIVE)]
    # stop Redis while orders are in flight: every one of them is split all the same
    in_flight = asyncio.create_task(phase())
    own_redis.stop()
    during = await in_flight + await phase()
    tier_down = await splits.split(order(100_000, rule_set_name="supplier-tiers"))
    # the last value this server knew (1), plus this order
    assert [(c.value, c.source) for c in tier_down.counter_values] == [
        (2, pb.COUNTER_SOURCE_FALLBACK)]
    # Redis back on the same port: live counters again
    again = start_redis(tmp_path / "redis", port=own_redis.port)
    probes: list[pb.Split] = []
    try:
        async def live_again() -> bool:
            probes.append(await splits.split(order(100_000, rule_set_name="supplier-tiers")))
            return probes[-1].counter_values[0].source == pb.COUNTER_SOURCE_LIVE

        await wait_for(live_again, timeout_s=20, interval_s=0.2)
        after = await phase()
    finally:
        again.stop()
    babies = before + during + after
    assert len(babies) == 4 * SPLITS_PER_PHASE
    for split in babies:
        assert [leg.amount_minor for leg in split.legs] == [15_000, 75_000, 10_000]
    report = await client.verify()
    assert report.ok and report.chain_ok
    every = babies + [tier_up, tier_down] + probes
    for ref in ("SUP_2025001", "DIST_01", "PLAT_001"):
        credited = sum(leg.amount_minor for s in every for leg in s.legs
                       if leg.external_ref == ref)
        assert (await client.balance(ids[ref])).posted_minor == credited, ref
    assert (await client.balance(ids["CUSTODIAL"])).posted_minor == -100_000 * len(every)


# ---- a broken invariant: nothing posted, a clear error, an alert --------------------------------

async def test_a_broken_invariant_posts_nothing_and_records_an_alert(
        channel, client: Client, database_url, platform, monkeypatch):
    splits, ids = await file_examples(channel, client, database_url, platform.platform_id)
    # a fault in the evaluator (the in-process server's): every share one unit too many
    real = evaluation.allocate
    monkeypatch.setattr(evaluation, "allocate",
                        lambda amount, weights: [p + 1 for p in real(amount, weights)])
    broken = order(100_000, rule_set_name="sharing")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await splits.split(broken)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert details(err.value)[0] == "SPLIT_INVARIANT_BROKEN"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await splits.call("GetSplit", pb.GetSplitRequest(order_id=broken.order_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for ref in ("OWNER_01", "PLAT_001", "SERVICE_01", "CHANNEL_01", "CUSTODIAL"):
        b = await client.balance(ids[ref])
        assert (b.posted_minor, b.pending_credit_minor, b.pending_debit_minor) == (0, 0, 0)
    conn = await asyncpg.connect(database_url)
    try:
        alerts = await conn.fetch("SELECT split_id, reason, message FROM split_alerts"
                                  " WHERE platform_id = $1", platform.platform_id)
    finally:
        await conn.close()
    assert [(a["split_id"], a["reason"]) for a in alerts] == [(0, "SPLIT_INVARIANT_BROKEN")]
    assert broken.order_id in alerts[0]["message"]
    # the fault gone, the same order is split normally
    monkeypatch.undo()
    split = await splits.split(broken)
    assert [leg.amount_minor for leg in split.legs] == [50_000, 30_000, 15_000, 5_000]


# ---- the whole split held until the signed-for event --------------------------------------------

WHOLE_SPLIT_SIGNED_FOR = """
name: baby-signed-for
currency_code: CNY
rules:
  - rule_name: baby-products
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1500,
         receiver: {account_ref: PLAT_001},
         release: {steps: [{event_name: SIGNED_FOR, fraction_bps: 10000}]}}
      - {label: supplier, type: SHARE_TYPE_RATIO, ratio_bps: 7500,
         receiver: {account_ref: SUP_2025001},
         release: {steps: [{event_name: SIGNED_FOR, fraction_bps: 10000}]}}
      - {label: distributor, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: DIST_01},
         release: {steps: [{event_name: SIGNED_FOR, fraction_bps: 10000}]}}
"""


async def test_the_whole_split_is_held_until_signed_for(channel, client: Client, database_url,
                                                       platform):
    splits, ids = await file_examples(channel, client, database_url, platform.platform_id)
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    published = await splits.publish(WHOLE_SPLIT_SIGNED_FOR)
    await checker.activate(published.name, published.version)
    split = await splits.split(order(99_999, rule_set_name="baby-signed-for"))
    assert [(leg.amount_minor, leg.held_minor) for leg in split.legs] == [
        (15_000, 15_000), (74_999, 74_999), (10_000, 10_000)]
    assert (split.status, split.held_minor) == (pb.SPLIT_STATUS_HOLDING, 99_999)
    custodial = await client.balance(ids["CUSTODIAL"])
    assert (custodial.posted_minor, custodial.pending_debit_minor) == (0, 99_999)
    done = await splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=split.order_id, event_name="SIGNED_FOR"))
    assert done.action.amount_minor == 99_999
    assert (done.split.status, done.split.held_minor) == (pb.SPLIT_STATUS_POSTED, 0)
    for ref, amount in (("PLAT_001", 15_000), ("SUP_2025001", 74_999), ("DIST_01", 10_000)):
        b = await client.balance(ids[ref])
        assert (b.posted_minor, b.pending_credit_minor) == (amount, 0), ref
    custodial = await client.balance(ids["CUSTODIAL"])
    assert (custodial.posted_minor, custodial.pending_debit_minor) == (-99_999, 0)
    assert (await client.verify()).ok


# ---- a tier on a live counter: a host's GMV passing 5,000,000.00 --------------------------------

async def test_a_hosts_share_rises_once_its_gmv_passes_5_million(channel, client: Client,
                                                                 database_url, platform):
    splits, ids = await file_examples(channel, client, database_url, platform.platform_id)
    host = {"host": "HOST_01"}
    # (host level, amount, counter value recorded (GMV including this order), host's leg)
    cases = [("new", 500_000_000, 500_000_000, 125_000_000),  # 25%: exactly 5,000,000.00
             ("new", 10_000, 500_010_000, 3_000),  # past it: 25% + 5%
             ("top", 10_001, 500_020_001, 3_500)]  # 30% + 5% = 3_500.35, floored
    for level, amount, gmv, host_minor in cases:
        split = await splits.split(order(amount, rule_set_name="live", parties=host,
                                         attributes={"host_level": level}))
        assert by_ref(split) == {"HOST_01": host_minor, "PLAT_001": amount - host_minor}
        assert [(c.counter_name, c.subject, c.value, c.source)
                for c in split.counter_values] == [
            ("host_gmv_lifetime", "HOST_01", gmv, pb.COUNTER_SOURCE_LIVE)]
    assert (await client.balance(ids["HOST_01"])).posted_minor == 125_000_000 + 3_000 + 3_500
