"""The plan cache and the tier counters on a three-node Redis Cluster (CLEARING_REDIS_CLUSTER=1):
a server splits orders of platforms whose keys land on different nodes; the ledger is exact,
each platform's counters ranked its own orders 1..4 (the tier applying from the third), the
keys are on the node their platform's hash tag names, a plan is read back from the cluster,
and an activation's invalidation reaches a listener through the cluster's pub/sub."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets

import asyncpg
import grpc
import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import MovedError

from clearing import db, rediskeys, redisconn, server
from clearing.dev.redis_cluster import Cluster, redis_cluster
from clearing.risk.counting import RiskCounters
from clearing.risk.model import CurrencyLimits, Policy
from clearing.rules.cache import LOOKUPS, PlanCache
from clearing.rules.counters import CounterSpec, Counters, Period, Source
from clearing.rules import store
from clearing.rules.store import PgSource
from clearing.tenancy import create_platform
from clearing.v1 import split_pb2 as pb
from tests.conftest import server_settings
from tests.split_support import Splits, new_key, open_accounts, order
from tests.support import Client
from tests.unit.rules.test_examples import SUPPLIER_TIERS

ORDER_MINOR = 100_000
ORDERS = 4
# The engine test's supplier tiers, its tier reached at the 3rd order of the month
RULE_SET = SUPPLIER_TIERS.replace("name: supplier-tiers", "name: cluster-tiers").replace(
    "min_counter_value: 1000", "min_counter_value: 3")
AT_MOVE = dt.datetime(2026, 11, 11, 15, 30, tzinfo=dt.timezone.utc)
REFS = ["CUSTODIAL", "SUP_2025001", "LOGISTICS_B", "PLAT_001"]
# by hand: orders 1-2 give the supplier 70% (70,000), orders 3-4 75% (75,000); logistics
# 10% each; the platform the rest (20,000, then 15,000); the custodial account pays it all
EXPECTED = {"SUP_2025001": 2 * 70_000 + 2 * 75_000, "LOGISTICS_B": 4 * 10_000,
            "PLAT_001": 2 * 20_000 + 2 * 15_000, "CUSTODIAL": -4 * ORDER_MINOR}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as c:
        yield c


@pytest.fixture
async def cluster_server(database_url, cluster: Cluster, redis_prefix):
    prefix = f"{redis_prefix}cl{secrets.token_hex(3)}:"
    srv = await server.start(server_settings(database_url, cluster.url, prefix,
                                             redis_cluster=True), migrate=False)
    yield srv, prefix
    await srv.stop()


async def _platforms_on_every_node(database_url: str, cluster: Cluster, prefix: str
                                   ) -> list[tuple[int, str]]:
    """New platforms until one's keys are on each node: (platform id, key), one per node."""
    found: dict[int, tuple[int, str]] = {}
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(64):
            pid, key = await create_platform(conn, f"c_{secrets.token_hex(6)}",
                                             frozenset({"gateway", "operator"}))
            node = cluster.node_of_slot(key_slot(rediskeys.platform_base(prefix, pid).encode()))
            found.setdefault(node, (pid, key))
            if len(found) == len(cluster.ports):
                break
    finally:
        await conn.close()
    assert len(found) == len(cluster.ports)
    return [found[n] for n in sorted(found)]


async def test_splits_of_platforms_on_three_nodes(cluster_server, cluster: Cluster,
                                                  database_url):
    running, prefix = cluster_server
    await asyncio.wait_for(running.plans.subscribed.wait(), 10)  # pub/sub on the cluster
    platforms = await _platforms_on_every_node(database_url, cluster, prefix)
    # the server's client has a connection to each node before the first reservation (which
    # has 0.2 s before it falls back; a first connection on a loaded machine can take that)
    for pid, _ in platforms:
        await running.redis.exists(rediskeys.platform_base(prefix, pid) + "warm")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        async def one_platform(pid: int, key: str) -> tuple[list[int], list[int], dict]:
            client = Client(channel, key)
            ids = await open_accounts(client, REFS)
            maker = Splits(channel, key)
            published = await maker.publish(RULE_SET)
            checker = Splits(channel, await new_key(database_url, pid, {"approver"}))
            await checker.activate(published.name, published.version)
            ranks, supplier = [], []
            for _ in range(ORDERS):  # one after another: each order's rank is known
                split = await maker.split(order(ORDER_MINOR, rule_set_name="cluster-tiers"))
                assert split.status == pb.SPLIT_STATUS_POSTED
                assert [c.source for c in split.counter_values] == [pb.COUNTER_SOURCE_LIVE]
                ranks.append(split.counter_values[0].value)
                supplier += [leg.amount_minor for leg in split.legs
                             if leg.external_ref == "SUP_2025001"]
            balances = {ref: (await client.balance(ids[ref])).posted_minor for ref in REFS}
            report = await client.verify()
            assert report.ok and report.chain_ok
            return ranks, supplier, balances

        # the three platforms at once: their counters and plans are on different nodes
        results = await asyncio.gather(*[one_platform(pid, key) for pid, key in platforms])
    finally:
        await channel.close()
    for ranks, supplier, balances in results:
        assert ranks == [1, 2, 3, 4]
        assert supplier == [70_000, 70_000, 75_000, 75_000]
        assert balances == EXPECTED

    # each platform's counter and plan are on the node its tag names
    for node, (pid, _) in enumerate(platforms):
        base = rediskeys.platform_base(prefix, pid)
        direct = redis.Redis(port=cluster.ports[node])
        try:
            counter_keys = direct.keys(base + "ctr:*")
            assert [direct.get(k) for k in counter_keys] == [b"4"]
            assert counter_keys[0].decode().startswith(base + "ctr:supplier_orders_month:")
            assert direct.exists(rediskeys.plan(prefix, pid, "cluster-tiers", 1)) == 1
        finally:
            direct.close()


async def test_plans_read_back_and_invalidation_over_the_cluster(cluster: Cluster,
                                                                database_url, redis_prefix):
    prefix = f"{redis_prefix}cp{secrets.token_hex(3)}:"
    pool = await db.create_pool(database_url, min_size=1, max_size=4, command_timeout_s=30)
    writer_client = redisconn.connect(cluster.url, cluster=True)
    reader_client = redisconn.connect(cluster.url, cluster=True)
    try:
        pid = await _platform_with_rule_set(pool)
        writer = PlanCache(PgSource(pool), json.loads, writer_client, prefix)
        reader = PlanCache(PgSource(pool), json.loads, reader_client, prefix)
        reader.start()
        await asyncio.wait_for(reader.subscribed.wait(), 10)
        postgres_before = LOOKUPS.labels("postgres")._value.get()
        assert (await writer.active(pid, "b2b")).plan == {"format": 1, "version": 1}
        assert LOOKUPS.labels("postgres")._value.get() == postgres_before + 1
        redis_before = LOOKUPS.labels("redis")._value.get()
        assert (await reader.active(pid, "b2b")).plan == {"format": 1, "version": 1}
        assert LOOKUPS.labels("redis")._value.get() == redis_before + 1  # from the cluster
        assert (pid, "b2b") in reader._pointers
        await writer.activated(pid, "b2b", 2)  # PUBLISH on one node reaches every node
        for _ in range(1000):
            if (pid, "b2b") not in reader._pointers:
                break
            await asyncio.sleep(0.01)
        assert (pid, "b2b") not in reader._pointers
        await reader.stop()
    finally:
        await writer_client.aclose()
        await reader_client.aclose()
        await pool.close()


async def _platform_with_rule_set(pool) -> int:
    async with pool.acquire() as conn:
        pid = await conn.fetchval("INSERT INTO platforms (name) VALUES ($1) RETURNING platform_id",
                                  f"cp_{secrets.token_hex(5)}")
        for v in (1, 2):
            blob = json.dumps({"format": 1, "version": v}).encode()
            assert await store.insert_version(conn, pid, "b2b", b"rule set", b"h", blob, 1) == v
        await store.activate(conn, pid, "b2b", 1, 2)
    return pid


async def test_risk_counters_of_one_split_in_one_script_call(cluster: Cluster, database_url,
                                                             redis_prefix):
    """One split's receivers are counted by one Lua script call: on a cluster its keys must
    share a slot, which the platform's tag gives them."""
    prefix = f"{redis_prefix}cr{secrets.token_hex(3)}:"
    pool = await db.create_pool(database_url, min_size=1, max_size=4, command_timeout_s=30)
    client = redisconn.connect(cluster.url, cluster=True)
    try:
        pid = await _platform_with_rule_set(pool)
        counters = RiskCounters(pool, client, prefix, op_timeout_s=5.0)
        policy = Policy((CurrencyLimits("CNY", frequency_amount_minor=10_000,
                                        daily_inflow_cap_minor=10**9),),
                        frequency_count_max=5, frequency_window_s=3_600)
        at = dt.datetime.now(dt.timezone.utc)
        first, _ = await counters.reserve(pid, policy, "o1", "CNY", at, {7: 20_000, 8: 5_000})
        second, _ = await counters.reserve(pid, policy, "o2", "CNY", at, {7: 30_000, 8: 6_000})
        # receiver 7's shares are above 10,000 (counted), receiver 8's are not
        assert [(c.frequency_count, c.day_inflow_minor, c.source)
                for c in (first[7], first[8])] == [(1, 20_000, "redis"), (0, 5_000, "redis")]
        assert [(c.frequency_count, c.day_inflow_minor, c.frequency_orders)
                for c in (second[7], second[8])] == [(2, 50_000, ("o1", "o2")),
                                                     (0, 11_000, ())]
    finally:
        await client.aclose()
        await pool.close()


async def test_more_callers_than_connections_wait_for_one(cluster: Cluster):
    """redis-py's cluster client fails a command at once (MaxConnectionsError) when all of a
    node's connections are busy; the server's waits for one, like the single-node pool."""
    # a long wait: the test is about waiting rather than failing, not about how long
    client = redisconn.connect(cluster.url, cluster=True, connections_max=4, pool_wait_s=60)
    key = f"{rediskeys.platform_base('gate:', 1)}n"
    try:
        await client.delete(key)
        results = await asyncio.gather(*[client.incr(key) for _ in range(200)],
                                       return_exceptions=True)
        assert [r for r in results if isinstance(r, Exception)] == []
        assert sorted(results) == list(range(1, 201))
        pipe_results = await asyncio.gather(*[client.pipeline().incr(key).execute()
                                              for _ in range(50)], return_exceptions=True)
        assert sorted(r[0] for r in pipe_results) == list(range(201, 251))
    finally:
        await client.aclose()


async def test_counters_follow_a_slot_moved_to_another_node(cluster: Cluster, redis_prefix):
    """The client learned the slots, then a platform's (still empty) slot moves to another
    node: its next reservation (a pipeline) is redirected (MOVED), retried inside the
    pipeline's place, and counted on the new node."""
    prefix = f"{redis_prefix}mv{secrets.token_hex(3)}:"
    client = redisconn.connect(cluster.url, cluster=True, connections_max=2, pool_wait_s=60)
    counters = Counters(client, prefix, op_timeout_s=30.0)
    try:
        await client.ping()  # the slot map is learned now
        nodes = [redis.Redis(port=port) for port in cluster.ports]
        try:
            # a platform id no other test uses, on node 0, its slot empty (a slot with keys
            # moves only with its keys: MIGRATE; not what this test is about)
            pid = next(p for p in range(2_000_000_000, 2_000_001_000)
                       if cluster.node_of_slot(_slot_of(prefix, p)) == 0
                       and nodes[0].execute_command("CLUSTER", "COUNTKEYSINSLOT",
                                                    _slot_of(prefix, p)) == 0)
            slot = _slot_of(prefix, pid)
            target = nodes[1].execute_command("CLUSTER", "MYID")
            for node in nodes:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)
            spec = CounterSpec(pid, "orders", "SUP", Period.LIFETIME, "UTC", 1, AT_MOVE)
            readings = await asyncio.gather(*[counters.reserve([spec]) for _ in range(5)])
            assert sorted(r[0].value for r in readings) == [1, 2, 3, 4, 5]
            assert {r[0].source for r in readings} == {Source.LIVE}
            key = readings[0][0].key
            assert nodes[1].get(key) == b"5"
            with pytest.raises(MovedError, match=f"127.0.0.1:{cluster.ports[1]}"):
                nodes[0].get(key)  # the old node sends callers to the new one
        finally:
            for node in nodes:
                node.close()
    finally:
        await client.aclose()


def _slot_of(prefix: str, platform_id: int) -> int:
    return key_slot(rediskeys.platform_base(prefix, platform_id).encode())
