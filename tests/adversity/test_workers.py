"""Several server processes share one port (SO_REUSEPORT): both serve, SIGTERM stops all."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request

import grpc
import pytest

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, ServerProcess, free_port_run

CONNECTIONS = 24


def _ok_calls(metrics_port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=5).read().decode()
    except urllib.error.URLError:  # a worker still starting: no metrics server yet
        return 0.0
    return sum(float(v) for v in re.findall(
        r'clearing_rpc_calls_total\{code="OK",method="[A-Za-z]+"\} ([0-9.e+]+)', text))


# Rounds of fresh connections at most before a worker that served nothing fails the test.
ROUNDS_MAX = 10


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_two_workers_share_the_port(database_url, redis_url, platform):
    metrics_port = free_port_run(2)
    proc = ServerProcess(database_url, redis_url, workers=2, extra_env={
        "CLEARING_METRICS_ADDR": f"127.0.0.1:{metrics_port}"}).start()
    channels = []
    try:
        # each channel is its own TCP connection; the kernel spreads them over the workers
        channels = [grpc.aio.insecure_channel(
            f"127.0.0.1:{proc.port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CONNECTIONS)]
        clients = [Client(ch, platform.key) for ch in channels]
        custodial = await clients[0].open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
        merchant = await clients[0].open("m")
        await asyncio.gather(*[c.transfer(custodial.account_id, merchant.account_id, 1)
                               for c in clients for _ in range(5)])
        assert (await clients[0].balance(merchant.account_id)).posted_minor == 5 * CONNECTIONS
        served = [_ok_calls(metrics_port), _ok_calls(metrics_port + 1)]
        for _ in range(ROUNDS_MAX):  # a worker still starting on a loaded machine: new
            if all(n > 0 for n in served):  # connections until the kernel spreads some to it
                break
            await asyncio.sleep(0.5)
            more = [grpc.aio.insecure_channel(
                f"127.0.0.1:{proc.port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CONNECTIONS)]
            channels += more
            await asyncio.gather(*[Client(ch, platform.key).balance(merchant.account_id)
                                   for ch in more])
            served = [_ok_calls(metrics_port), _ok_calls(metrics_port + 1)]
        assert all(n > 0 for n in served), served
        assert (await clients[0].verify()).ok
    finally:
        for ch in channels:
            await ch.close()
        code = proc.terminate(timeout_s=60)
    assert code == 0
