"""Redis unreachable: rule sets are published and activated, and orders are split, with
plans from PostgreSQL and tier counters in their documented fallback (source FALLBACK)."""

from __future__ import annotations

import grpc
import pytest

from clearing import server
from clearing.v1 import split_pb2 as pb
from tests.conftest import server_settings
from tests.split_support import file_examples, order
from tests.support import Client, free_port

NO_REDIS_URL_TEMPLATE = "redis://127.0.0.1:{port}/0"


@pytest.fixture
async def no_redis_channel(database_url, redis_prefix):
    url = NO_REDIS_URL_TEMPLATE.format(port=free_port())  # nothing listens there
    srv = await server.start(server_settings(database_url, url, redis_prefix), migrate=False)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    yield ch
    await ch.close()
    await srv.stop()


async def test_splits_go_on_without_redis(no_redis_channel, database_url, platform):
    client = Client(no_redis_channel, platform.key)
    splits, ids = await file_examples(no_redis_channel, client, database_url,
                                      platform.platform_id)
    baby = await splits.split(order(100_000, rule_set_name="baby"))
    assert [leg.amount_minor for leg in baby.legs] == [15_000, 75_000, 10_000]
    tiered = await splits.split(order(100_000, rule_set_name="supplier-tiers"))
    assert [(c.value, c.source) for c in tiered.counter_values] == [
        (1, pb.COUNTER_SOURCE_FALLBACK)]
    assert (await client.balance(ids["SUP_2025001"])).posted_minor == 75_000 + 70_000
    assert (await client.verify()).ok
