"""The one way the server opens Redis: a bounded pool that makes callers wait briefly for a
free connection instead of failing when many ask at once; or, with CLEARING_REDIS_CLUSTER=1,
redis-py's cluster client, which finds the cluster's nodes from the URL's node and sends each
command to the node holding its key's slot (keys are hash-tagged per platform:
clearing/rediskeys.py)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any, AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

CONNECTIONS_MAX = 64
POOL_WAIT_S = 0.5
SOCKET_TIMEOUT_S = 2.0


def connect(url: str, *, connections_max: int = CONNECTIONS_MAX,
            socket_timeout_s: float = SOCKET_TIMEOUT_S, pool_wait_s: float = POOL_WAIT_S,
            cluster: bool = False) -> aioredis.Redis:
    """A client of the Redis at `url`; with `cluster`, of the Redis Cluster it is a node
    of (`connections_max` then bounds the commands in flight, so each node's
    connections)."""
    if cluster:
        client = GatedCluster.from_url(  # headroom for a pipeline's redirected commands
            url, max_connections=2 * connections_max, socket_connect_timeout=socket_timeout_s,
            socket_timeout=socket_timeout_s)
        client.gate = asyncio.Semaphore(connections_max)
        client.gate_wait_s = pool_wait_s
        return client  # type: ignore[return-value] - the same command API
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=connections_max, timeout=pool_wait_s,
        socket_connect_timeout=socket_timeout_s, socket_timeout=socket_timeout_s,
        health_check_interval=30)
    return aioredis.Redis(connection_pool=pool)


# Set while a task holds a place: a pipeline's retry of a redirected command (MOVED/ASK)
# runs inside the pipeline's place and takes no second one.
_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("redis_place", default=False)


@contextlib.asynccontextmanager
async def _place(gate: asyncio.Semaphore, wait_s: float) -> AsyncIterator[None]:
    if _HOLDING.get():
        yield
        return
    try:
        await asyncio.wait_for(gate.acquire(), wait_s)
    except asyncio.TimeoutError:
        raise RedisConnectionError("No connection available.") from None
    token = _HOLDING.set(True)
    try:
        yield
    finally:
        _HOLDING.reset(token)
        gate.release()


class GatedCluster(RedisCluster):
    """The cluster client, whose callers wait (up to `pool_wait_s`) for one of
    `connections_max` places the way the single-node pool makes them wait for a connection:
    redis-py's cluster node pool fails at once (MaxConnectionsError) when all its
    connections are busy. A command or pipeline holds one place and at most one connection
    per node (a pipeline's redirected commands, retried one by one, a second), so no
    node's pool runs out."""

    gate: asyncio.Semaphore
    gate_wait_s: float

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with _place(self.gate, self.gate_wait_s):
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        return _GatedPipeline(self, transaction)


class _GatedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        async with _place(client.gate, client.gate_wait_s):  # type: ignore[attr-defined]
            return await super().execute(raise_on_error, allow_redirections)
