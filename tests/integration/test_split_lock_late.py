"""SplitBatch through two server processes at once on one platform (issue 16): every split
debits the platform's custodial account, whose balance row each process's writer locks only
for its last statement (CLEARING_WRITER_LOCK_LATE=1, the default). The balances are exact,
every order is booked once, VerifyLedger is ok."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing.v1 import split_pb2 as pb
from tests.split_support import Splits, file_examples, order
from tests.support import Client, ServerProcess, rid

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(120)]

CALLS = 12  # SplitBatch calls, alternating between the two processes, all at once
ORDERS = 50  # orders per call
AMOUNT_MINOR = 100_000  # baby: 15% PLAT_001, 75% SUP_2025001, 10% DIST_01
BABY_LEGS = {"PLAT_001": 15_000, "SUP_2025001": 75_000, "DIST_01": 10_000}


async def test_two_processes_book_concurrent_batches_on_one_custodial_account(
        channel, client: Client, database_url, redis_url, redis_prefix, platform):
    maker, ids = await file_examples(channel, client, database_url, platform.platform_id)
    key = maker.metadata[0][1].split(" ", 1)[1]
    procs = [ServerProcess(database_url, redis_url,
                           extra_env={"CLEARING_REDIS_PREFIX": redis_prefix,
                                      "CLEARING_WRITER_LOCK_LATE": "1"})
             for _ in range(2)]
    channels: list[grpc.aio.Channel] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs))
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for p in procs]
        remotes = [Splits(ch, key) for ch in channels]
        calls = [pb.SplitBatchRequest(request_id=rid(), requests=[
            pb.SplitRequest(request_id=rid(), order=order(AMOUNT_MINOR, rule_set_name="baby"))
            for _ in range(ORDERS)]) for _ in range(CALLS)]
        responses = await asyncio.gather(*(remotes[i % 2].call("SplitBatch", c)
                                           for i, c in enumerate(calls)))
    finally:
        for ch in channels:
            await ch.close()
        codes = []
        for p in procs:
            if p.proc is not None:
                try:
                    codes.append(await asyncio.to_thread(p.terminate, 30.0))
                finally:
                    p.kill()
    assert codes == [0, 0], f"server exit codes {codes}"
    outcomes = [o for r in responses for o in r.outcomes]
    assert [o.WhichOneof("result") for o in outcomes] == ["split"] * (CALLS * ORDERS)
    assert len({o.split.split_id for o in outcomes}) == CALLS * ORDERS
    booked = CALLS * ORDERS
    for ref, amount in BABY_LEGS.items():
        assert (await client.balance(ids[ref])).posted_minor == amount * booked, ref
    custodial = await client.balance(ids["CUSTODIAL"])
    assert custodial.posted_minor == -AMOUNT_MINOR * booked
    assert custodial.debits_posted_minor == AMOUNT_MINOR * booked
    report = await client.verify()
    assert report.ok and report.chain_ok, report
    assert not report.mismatched_account_ids
