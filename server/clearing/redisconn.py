"""The one way the server opens Redis: a bounded pool that makes callers wait briefly for a
free connection instead of failing when many ask at once; or, with CLEARING_REDIS_CLUSTER=1,
redis-py's cluster client, which finds the cluster's nodes from the URL's node and sends each
command to the node holding its key's slot (keys are hash-tagged per platform:
clearing/rediskeys.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

CONNECTIONS_MAX = 64
POOL_WAIT_S = 0.5
SOCKET_TIMEOUT_S = 2.0


def connect(url: str, *, connections_max: int = CONNECTIONS_MAX,
            socket_timeout_s: float = SOCKET_TIMEOUT_S,
            cluster: bool = False) -> aioredis.Redis:
    """A client of the Redis at `url`; with `cluster`, of the Redis Cluster it is a node
    of (`connections_max` then bounds the commands in flight, so each node's
    connections)."""
    if cluster:
        client = GatedCluster.from_url(
            url, max_connections=connections_max, socket_connect_timeout=socket_timeout_s,
            socket_timeout=socket_timeout_s)
        client.gate = asyncio.Semaphore(connections_max)
        return client  # type: ignore[return-value] - the same command API
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=connections_max, timeout=POOL_WAIT_S,
        socket_connect_timeout=socket_timeout_s, socket_timeout=socket_timeout_s,
        health_check_interval=30)
    return aioredis.Redis(connection_pool=pool)


async def _enter(gate: asyncio.Semaphore) -> None:
    try:
        await asyncio.wait_for(gate.acquire(), POOL_WAIT_S)
    except asyncio.TimeoutError:
        raise RedisConnectionError("No connection available.") from None


class GatedCluster(RedisCluster):
    """The cluster client, whose callers wait (up to POOL_WAIT_S) for one of
    `connections_max` places the way the single-node pool makes them wait for a connection:
    redis-py's cluster node pool fails at once (MaxConnectionsError) when all its
    connections are busy. A command or pipeline holds one place and at most one connection
    per node, so no node's pool runs out."""

    gate: asyncio.Semaphore

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await _enter(self.gate)
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self.gate.release()

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        return _GatedPipeline(self, transaction)


class _GatedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        gate = self.cluster_client.gate  # type: ignore[attr-defined]
        await _enter(gate)
        try:
            return await super().execute(raise_on_error, allow_redirections)
        finally:
            gate.release()
