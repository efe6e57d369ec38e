"""The one way the server opens Redis: a bounded pool that makes callers wait briefly for a
free connection instead of failing when many ask at once."""

from __future__ import annotations

import redis.asyncio as aioredis

CONNECTIONS_MAX = 64
POOL_WAIT_S = 0.5
SOCKET_TIMEOUT_S = 2.0


def connect(url: str, *, connections_max: int = CONNECTIONS_MAX,
            socket_timeout_s: float = SOCKET_TIMEOUT_S) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=connections_max, timeout=POOL_WAIT_S,
        socket_connect_timeout=socket_timeout_s, socket_timeout=socket_timeout_s,
        health_check_interval=30)
    return aioredis.Redis(connection_pool=pool)
