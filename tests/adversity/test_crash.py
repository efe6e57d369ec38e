"""Crash: the server is SIGKILLed in the middle of a load of transfers.

Nothing acknowledged is lost or doubled: every acknowledged transfer is in the ledger
exactly once (read straight from PostgreSQL while the server is down); after a restart,
retrying every attempted request id with the same payload succeeds without creating
duplicates, the balances add up to exactly the attempted amounts, and VerifyLedger is ok."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass

import asyncpg
import grpc
import pytest

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, ServerProcess

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(120)]

CALLERS = 16
MERCHANTS = 4
KILL_AFTER_S = 1.0  # at the earliest, and once ACKED_BEFORE_KILL calls were answered OK
ACKED_BEFORE_KILL = 200
ACKED_WAIT_S_MAX = 15.0  # the machine may be busy: wait that long for them
CALLS_PER_CALLER_MAX = 20_000  # bounds each caller's loop...
LOAD_S_MAX = 30.0  # ...in count and in time
CALL_TIMEOUT_S = 10.0
RETRY_CONCURRENCY = 64


@dataclass
class Attempt:
    request: pb.TransferRequest
    transfer_id: int = 0  # set when acknowledged OK
    code: grpc.StatusCode | None = None  # set when the call failed


async def _caller(client: Client, custodial: int, merchants: list[int], index: int,
                  attempts: list[Attempt]) -> None:
    """Transfers one after another, each with its own request id, until a call fails."""
    rng = random.Random(index)
    deadline = time.monotonic() + LOAD_S_MAX
    for n in range(CALLS_PER_CALLER_MAX):
        if time.monotonic() > deadline:
            return
        attempt = Attempt(pb.TransferRequest(
            request_id=f"crash-{index}-{n}-{uuid.uuid4().hex[:8]}",
            debit_account_id=custodial, credit_account_id=rng.choice(merchants),
            amount_minor=rng.randint(1, 100_000), currency_code="CNY",
            mode=pb.TRANSFER_MODE_IMMEDIATE))
        attempts.append(attempt)
        try:
            response = await client.call("Transfer", attempt.request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            attempt.code = err.code()
            return
        attempt.transfer_id = response.transfer.transfer_id


async def _until_acked(attempts: list[Attempt], count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sum(1 for a in attempts if a.transfer_id) < count:
        await asyncio.sleep(0.05)


async def _rows_by_request(database_url: str, platform_id: int) -> dict[str, list[int]]:
    """transfer ids per request id of the platform, read straight from the database."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT request_id, array_agg(transfer_id ORDER BY transfer_id) AS ids"
            " FROM transfers WHERE platform_id = $1 GROUP BY request_id", platform_id)
        recorded = await conn.fetchval(
            "SELECT count(*) FROM requests WHERE platform_id = $1 AND method = 'Transfer'"
            " AND ok", platform_id)
    finally:
        await conn.close()
    by_request = {r["request_id"]: list(r["ids"]) for r in rows}
    assert recorded == len(by_request), "idempotency records and journal disagree"
    return by_request


async def _start(proc: ServerProcess) -> ServerProcess:
    return await asyncio.to_thread(proc.start)


async def test_sigkill_mid_load_loses_and_doubles_nothing(platform, database_url, redis_url,
                                                         redis_prefix):
    env = {"CLEARING_REDIS_PREFIX": redis_prefix}
    first = ServerProcess(database_url, redis_url, extra_env=env)
    second = ServerProcess(database_url, redis_url, port=first.port, extra_env=env)
    attempts: list[Attempt] = []
    try:
        await _start(first)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            client = Client(channel, platform.key)
            custodial = (await client.open("custodial",
                                           kind=pb.ACCOUNT_KIND_CUSTODIAL)).account_id
            merchants = [(await client.open(f"merchant-{i}")).account_id
                         for i in range(MERCHANTS)]
            callers = [asyncio.create_task(_caller(client, custodial, merchants, i, attempts))
                       for i in range(CALLERS)]
            await asyncio.sleep(KILL_AFTER_S)
            await _until_acked(attempts, ACKED_BEFORE_KILL, ACKED_WAIT_S_MAX)
            await asyncio.to_thread(first.kill)
            await asyncio.wait_for(asyncio.gather(*callers), CALL_TIMEOUT_S + 5)

        acked = [a for a in attempts if a.transfer_id]
        failed = [a for a in attempts if a.code is not None]
        assert len(acked) >= ACKED_BEFORE_KILL, f"too little load before the kill: {len(acked)}"
        assert len(failed) == CALLERS, "every caller stops at the kill"
        assert {a.code for a in failed} == {grpc.StatusCode.UNAVAILABLE}
        assert len(acked) + len(failed) == len(attempts)

        # (a) with the server down: every acknowledged transfer is there, exactly once.
        by_request = await _rows_by_request(database_url, platform.platform_id)
        for a in acked:
            assert by_request.get(a.request.request_id) == [a.transfer_id], a.request
        assert all(len(ids) == 1 for ids in by_request.values())
        attempted = {a.request.request_id for a in attempts}
        assert set(by_request) <= attempted

        # (b) restart on the same port; retry everything attempted with the same payload.
        await _start(second)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            client = Client(channel, platform.key)
            limit = asyncio.Semaphore(RETRY_CONCURRENCY)

            async def retry(a: Attempt) -> pb.Transfer:
                async with limit:
                    return (await client.call("Transfer", a.request,
                                              timeout=CALL_TIMEOUT_S)).transfer

            retried = await asyncio.gather(*(retry(a) for a in attempts))
            for a, t in zip(attempts, retried):
                assert (t.request_id, t.amount_minor, t.credit_account_id) == (
                    a.request.request_id, a.request.amount_minor, a.request.credit_account_id)
                if a.transfer_id:
                    assert t.transfer_id == a.transfer_id  # the first result, replayed

            by_request = await _rows_by_request(database_url, platform.platform_id)
            assert set(by_request) == attempted
            assert all(len(ids) == 1 for ids in by_request.values())
            for a, t in zip(attempts, retried):
                assert by_request[a.request.request_id] == [t.transfer_id]

            expected = {m: 0 for m in merchants}
            for a in attempts:
                expected[a.request.credit_account_id] += a.request.amount_minor
            for m, amount in expected.items():
                b = await client.balance(m)
                assert (b.posted_minor, b.credits_posted_minor, b.debits_posted_minor) == (
                    amount, amount, 0)
            c = await client.balance(custodial)
            assert c.posted_minor == -sum(expected.values())

            # (c) the ledger balances and the hash chain is intact.
            report = await client.verify()
            assert report.ok and report.chain_ok and not report.mismatched_account_ids, report
        assert await asyncio.to_thread(second.terminate, 30.0) == 0
    finally:
        first.kill()
        second.kill()
