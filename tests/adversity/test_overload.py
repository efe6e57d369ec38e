"""Overload: calls beyond CLEARING_MAX_CONCURRENT_RPCS answer RESOURCE_EXHAUSTED (retry
later), never CANCELLED, and the server serves again once the load is gone."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing import server
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import ledger_pb2_grpc
from clearing.v1 import split_pb2_grpc
from tests.conftest import server_settings

LIMIT = 4
EXTRA_CALLS = 200


@pytest.mark.timeout(60)
async def test_calls_beyond_the_limit_answer_resource_exhausted(database_url, redis_url,
                                                                redis_prefix, platform):
    srv = await server.start(server_settings(database_url, redis_url, redis_prefix,
                                             max_concurrent_rpcs=LIMIT), migrate=False)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    meta = (("authorization", f"Bearer {platform.key}"),)
    streams = []
    try:
        # LIMIT open streams take every slot (a stream is one RPC until it ends)
        splits = split_pb2_grpc.SplitServiceStub(channel)
        for _ in range(LIMIT):
            streams.append(splits.SplitStream(metadata=meta))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)

        async def one() -> grpc.StatusCode:
            try:
                await ledger.ListAccounts(lpb.ListAccountsRequest(), metadata=meta, timeout=10)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                return err.code()

        codes = await asyncio.gather(*(one() for _ in range(EXTRA_CALLS)))
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}, {c.name for c in codes}
        for stream in streams:
            await stream.done_writing()
            async for _ in stream:
                pass
        streams.clear()
        await asyncio.sleep(0.2)
        assert await one() == grpc.StatusCode.OK
    finally:
        for stream in streams:
            stream.cancel()
        await channel.close()
        await srv.stop()
