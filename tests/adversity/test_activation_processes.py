"""An activation made through one server process is used by another within a second."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from clearing.v1 import ledger_pb2 as lpb
from tests.split_support import Splits, by_ref, new_key, open_accounts, order
from tests.support import Client, ServerProcess

ACTIVATION_SEEN_WITHIN_S = 1.0
RULES = """
name: two-processes
currency_code: CNY
rules:
  - rule_name: cut
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: @RATIO@,
         receiver: {account_ref: PLAT_001}}
      - {label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {account_ref: M_10086}}
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_activation_reaches_the_other_process_within_a_second(
        database_url, redis_url, redis_prefix, platform):
    env = {"CLEARING_REDIS_PREFIX": redis_prefix}
    a = ServerProcess(database_url, redis_url, extra_env=env).start()
    b = ServerProcess(database_url, redis_url, extra_env=env).start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for p in (a, b)]
    try:
        approver = await new_key(database_url, platform.platform_id, {"approver"})
        client_a = Client(channels[0], platform.key)
        await client_a.open("custodial", kind=lpb.ACCOUNT_KIND_CUSTODIAL)
        await open_accounts(client_a, refs=["PLAT_001", "M_10086"])
        maker_a = Splits(channels[0], platform.key)
        checker_a = Splits(channels[0], approver)
        gateway_b = Splits(channels[1], platform.key)

        def the_order():
            return order(10_000, rule_set_name="two-processes")

        v1 = await maker_a.publish(RULES.replace("@RATIO@", "1000"))
        await checker_a.activate("two-processes", v1.version)
        # B reads (and caches) version 1
        assert by_ref(await gateway_b.preview(the_order()))["PLAT_001"] == 1_000
        v2 = await maker_a.publish(RULES.replace("@RATIO@", "2000"))
        await checker_a.activate("two-processes", v2.version)
        activated = time.monotonic()
        while by_ref(await gateway_b.preview(the_order()))["PLAT_001"] != 2_000:
            assert time.monotonic() - activated < ACTIVATION_SEEN_WITHIN_S, \
                "process B still splits by version 1"
            await asyncio.sleep(0.02)
        # and B books by the new version
        booked = await gateway_b.split(the_order())
        assert booked.rule_set_version == v2.version
        assert by_ref(booked) == {"PLAT_001": 2_000, "M_10086": 8_000}
    finally:
        for ch in channels:
            await ch.close()
        for p in (a, b):
            p.terminate()
