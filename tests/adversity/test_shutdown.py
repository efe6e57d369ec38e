"""Graceful shutdown: SIGTERM while transfers are in flight.

The process exits 0 within its grace period; every call answered OK is committed exactly
once; the calls cut short fail with UNAVAILABLE or CANCELLED, never INTERNAL; retrying
them after a restart commits each exactly once, and VerifyLedger is ok. Health answers
SERVING while the server runs. The load is either steady (callers one call after another)
or a burst of 2,000 calls at once; the grace is 5 s, or 0 s (in-flight calls are cut at
once, and what the writer had queued is still committed)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, ServerProcess

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(120)]

CALLERS = 32
MERCHANTS = 4
TERM_AFTER_S = 1.0  # at the earliest, and once ACKED_BEFORE_TERM calls were answered OK
ACKED_BEFORE_TERM = 200
ACKED_WAIT_S_MAX = 15.0  # the machine may be busy: wait that long for them
CALLS_PER_CALLER_MAX = 20_000  # bounds each caller's loop...
LOAD_S_MAX = 30.0  # ...in count and in time
CALL_TIMEOUT_S = 10.0
BURST = 2_000
ACKED_BEFORE_BURST_TERM = 50
RETRY_CONCURRENCY = 64
EXIT_SLACK_S = 3.0  # beyond the grace: draining the writer, closing Redis and the pool
# What a call cut short by a shutdown may answer: retry it, with the same request id.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


@dataclass
class Attempt:
    request: pb.TransferRequest
    transfer_id: int = 0  # set when acknowledged OK
    code: grpc.StatusCode | None = None  # set when the call failed
    details: str = ""


async def _call(client: Client, attempt: Attempt) -> None:
    try:
        response = await client.call("Transfer", attempt.request, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        attempt.code, attempt.details = err.code(), err.details() or ""
    else:
        attempt.transfer_id = response.transfer.transfer_id


def _transfer(index: int, n: int, custodial: int, merchant: int,
              amount: int) -> pb.TransferRequest:
    return pb.TransferRequest(
        request_id=f"term-{index}-{n}-{uuid.uuid4().hex[:8]}", debit_account_id=custodial,
        credit_account_id=merchant, amount_minor=amount, currency_code="CNY",
        mode=pb.TRANSFER_MODE_IMMEDIATE)


async def _caller(client: Client, custodial: int, merchants: list[int], index: int,
                  attempts: list[Attempt]) -> None:
    """Transfers one after another, each with its own request id, until a call fails."""
    rng = random.Random(index)
    deadline = time.monotonic() + LOAD_S_MAX
    for n in range(CALLS_PER_CALLER_MAX):
        if time.monotonic() > deadline:
            return
        attempt = Attempt(_transfer(index, n, custodial, rng.choice(merchants),
                                    rng.randint(1, 100_000)))
        attempts.append(attempt)
        await _call(client, attempt)
        if attempt.code is not None:
            return


async def _health(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
    return response.status


async def _until_acked(attempts: list[Attempt], count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sum(1 for a in attempts if a.transfer_id) < count:
        await asyncio.sleep(0.05)


async def _rows_by_request(database_url: str, platform_id: int) -> dict[str, list[int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT request_id, array_agg(transfer_id ORDER BY transfer_id) AS ids"
            " FROM transfers WHERE platform_id = $1 GROUP BY request_id", platform_id)
    finally:
        await conn.close()
    return {r["request_id"]: list(r["ids"]) for r in rows}


async def _open_accounts(client: Client) -> tuple[int, list[int]]:
    custodial = await client.open("custodial", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchants = [await client.open(f"merchant-{i}") for i in range(MERCHANTS)]
    return custodial.account_id, [m.account_id for m in merchants]


async def _terminate(proc: ServerProcess, grace_s: int) -> tuple[int, float]:
    """SIGTERM; (exit code, seconds until the process exited)."""
    started = time.monotonic()
    code = await asyncio.to_thread(proc.terminate, grace_s + EXIT_SLACK_S + 10)
    return code, time.monotonic() - started


async def _check_after_shutdown(attempts: list[Attempt], exit_code: int, took: float,
                                grace_s: int, restarted: ServerProcess, platform,
                                database_url: str, custodial: int) -> None:
    assert exit_code == 0
    assert took <= grace_s + EXIT_SLACK_S, f"shutdown took {took:.1f}s"
    acked = [a for a in attempts if a.transfer_id]
    failed = [a for a in attempts if a.code is not None]
    assert len(acked) + len(failed) == len(attempts), "a call neither succeeded nor failed"
    wrong = [(a.code, a.details) for a in failed if a.code not in RETRYABLE]
    assert not wrong, wrong[:5]

    # Every call answered OK is committed, exactly once.
    by_request = await _rows_by_request(database_url, platform.platform_id)
    for a in acked:
        assert by_request.get(a.request.request_id) == [a.transfer_id], a.request
    assert all(len(ids) == 1 for ids in by_request.values())

    # After a restart the ledger verifies, and the failed calls can be retried safely.
    await asyncio.to_thread(restarted.start)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
        client = Client(channel, platform.key)
        report = await client.verify()
        assert report.ok and report.chain_ok and not report.mismatched_account_ids, report
        limit = asyncio.Semaphore(RETRY_CONCURRENCY)

        async def retry(a: Attempt) -> pb.Transfer:
            async with limit:
                return (await client.call("Transfer", a.request,
                                          timeout=CALL_TIMEOUT_S)).transfer

        for a, t in zip(failed, await asyncio.gather(*(retry(a) for a in failed))):
            assert (t.request_id, t.amount_minor) == (a.request.request_id,
                                                      a.request.amount_minor)
            if a.request.request_id in by_request:  # committed, though not answered
                assert by_request[a.request.request_id] == [t.transfer_id]
        by_request = await _rows_by_request(database_url, platform.platform_id)
        assert set(by_request) == {a.request.request_id for a in attempts}
        assert all(len(ids) == 1 for ids in by_request.values())
        total = sum(a.request.amount_minor for a in attempts)
        assert (await client.balance(custodial)).posted_minor == -total
        report = await client.verify()
        assert report.ok and report.chain_ok, report
    assert await asyncio.to_thread(restarted.terminate, 30.0) == 0


def _servers(database_url: str, redis_url: str, redis_prefix: str,
             grace_s: int) -> tuple[ServerProcess, ServerProcess]:
    """A server, and the one that restarts it on the same port."""
    env = {"CLEARING_REDIS_PREFIX": redis_prefix, "CLEARING_GRACE_S": str(grace_s)}
    first = ServerProcess(database_url, redis_url, extra_env=env)
    return first, ServerProcess(database_url, redis_url, port=first.port, extra_env=env)


@pytest.mark.parametrize("grace_s", [5, 0], ids=["grace5s", "grace0s"])
async def test_sigterm_mid_load_drains_and_exits_zero(grace_s, platform, database_url,
                                                      redis_url, redis_prefix):
    first, second = _servers(database_url, redis_url, redis_prefix, grace_s)
    attempts: list[Attempt] = []
    try:
        await asyncio.to_thread(first.start)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            client = Client(channel, platform.key)
            custodial, merchants = await _open_accounts(client)
            callers = [asyncio.create_task(_caller(client, custodial, merchants, i, attempts))
                       for i in range(CALLERS)]
            await asyncio.sleep(TERM_AFTER_S)
            await _until_acked(attempts, ACKED_BEFORE_TERM, ACKED_WAIT_S_MAX)
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            exit_code, took = await _terminate(first, grace_s)
            await asyncio.wait_for(asyncio.gather(*callers), CALL_TIMEOUT_S + 5)

        acked = sum(1 for a in attempts if a.transfer_id)
        assert acked >= ACKED_BEFORE_TERM, f"too little load before SIGTERM: {acked}"
        stopped = sum(a.code is not None for a in attempts)
        assert stopped == CALLERS, "every caller stops at SIGTERM"
        await _check_after_shutdown(attempts, exit_code, took, grace_s, second, platform,
                                    database_url, custodial)
    finally:
        first.kill()
        second.kill()


@pytest.mark.parametrize("grace_s", [5, 0], ids=["grace5s", "grace0s"])
async def test_sigterm_during_burst_of_2000_calls(grace_s, platform, database_url, redis_url,
                                                 redis_prefix):
    first, second = _servers(database_url, redis_url, redis_prefix, grace_s)
    try:
        await asyncio.to_thread(first.start)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
            client = Client(channel, platform.key)
            custodial, merchants = await _open_accounts(client)
            attempts = [Attempt(_transfer(0, n, custodial, merchants[n % MERCHANTS], n + 1))
                        for n in range(BURST)]
            calls = [asyncio.create_task(_call(client, a)) for a in attempts]
            await _until_acked(attempts, ACKED_BEFORE_BURST_TERM, ACKED_WAIT_S_MAX)
            exit_code, took = await _terminate(first, grace_s)
            await asyncio.wait_for(asyncio.gather(*calls), CALL_TIMEOUT_S + 5)

        acked = sum(1 for a in attempts if a.transfer_id)
        assert acked >= ACKED_BEFORE_BURST_TERM, f"too little load before SIGTERM: {acked}"
        await _check_after_shutdown(attempts, exit_code, took, grace_s, second, platform,
                                    database_url, custodial)
    finally:
        first.kill()
        second.kill()
