"""The tier counters on a Redis Cluster against one Redis, in the same run (issue 16, section 4).

    .venv/bin/python -m bench.redis_cluster [--seconds 3] [--callers 64] [--platforms 300]

Starts two private Redis setups from the same `redis-server` binary on free loopback ports:
one plain node, and a three-node cluster (clearing/dev/redis_cluster.py). On each, through
the server's own client (clearing.redisconn: the bounded pool, or the cluster client with
CLEARING_REDIS_CLUSTER=1), --callers coroutines in one process reserve tier counters
(rules/counters.py `Counters.reserve`: INCRBY and EXPIREAT in one pipeline) of orders of
--platforms platforms for --seconds, then do the same with a bare INCR per call (the
client's ceiling for one round trip). Phases alternate single, cluster, single, cluster;
the best window of each is kept, with the bench process's CPU time per operation in it (the
figure that holds on a loaded machine, where the rate depends on the CPU the process gets).
Every counter is then checked: the sum of all counters equals the reservations counted
(nothing lost, nothing counted twice).

What it shows: the cost of the cluster client per counter reservation on one machine (the
three nodes share its cores, so a cluster's gain in capacity does not show here; what does is
the client's own overhead). Stops by itself; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from clearing import redisconn
from clearing.dev.redis_cluster import redis_cluster, start_node
from clearing.rules.counters import CounterSpec, Counters, Period

PREFIX = "bench:"
AT = dt.datetime(2026, 11, 11, 15, 30, tzinfo=dt.timezone.utc)


async def _window(client: aioredis.Redis, seconds: float, callers: int, platforms: int,
                  bare: bool) -> int:
    counters = Counters(client, PREFIX, op_timeout_s=5.0)
    stop = time.monotonic() + seconds
    done = 0

    async def caller(i: int) -> None:
        nonlocal done
        n = i
        while time.monotonic() < stop:
            pid = n % platforms + 1
            if bare:
                await client.incr(f"{PREFIX}bare:{{p{pid}}}")
            else:
                readings = await counters.reserve([CounterSpec(
                    pid, "orders", "SUP", Period.MONTH, "Asia/Shanghai", 1, AT)])
                if readings[0].source.name != "LIVE":
                    raise RuntimeError("a counter reading fell back: Redis refused")
            done += 1
            n += callers

    await asyncio.gather(*[caller(i) for i in range(callers)])
    return done


async def _total(client: aioredis.Redis, platforms: int) -> int:
    counters = Counters(client, PREFIX, op_timeout_s=5.0)
    readings = await counters.peek([CounterSpec(pid, "orders", "SUP", Period.MONTH,
                                                "Asia/Shanghai", 0, AT)
                                    for pid in range(1, platforms + 1)])
    return sum(r.value for r in readings)


async def _run(args, single_url: str, cluster_url: str) -> dict[str, dict[str, float]]:
    clients = {"single": redisconn.connect(single_url),
               "cluster": redisconn.connect(cluster_url, cluster=True)}
    best: dict[str, dict[str, float]] = {
        k: {"reserve": 0.0, "bare": 0.0, "reserve_cpu_us": 0.0, "bare_cpu_us": 0.0}
        for k in clients}
    reserved = {k: 0 for k in clients}
    try:
        for _ in range(2):
            for name, client in clients.items():
                for bare in (False, True):
                    cpu = time.process_time()
                    n = await _window(client, args.seconds, args.callers, args.platforms, bare)
                    cpu_us = (time.process_time() - cpu) / max(n, 1) * 1e6
                    if not bare:
                        reserved[name] += n
                    kind = "bare" if bare else "reserve"
                    if n / args.seconds > best[name][kind]:
                        best[name][kind] = n / args.seconds
                        best[name][kind + "_cpu_us"] = cpu_us
        for name, client in clients.items():
            total = await _total(client, args.platforms)
            if total != reserved[name]:
                raise RuntimeError(f"{name}: counters sum to {total}, {reserved[name]} reserved")
    finally:
        for client in clients.values():
            await client.aclose()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--platforms", type=int, default=300)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the nodes keep their files (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 60 and 0 < args.callers <= 1000 and 0 < args.platforms):
        parser.error("--seconds 0..60, --callers 1..1000, --platforms >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-redis-", dir=args.work_dir) as tmp:
        with start_node(Path(tmp) / "single") as single_port, \
                redis_cluster(Path(tmp) / "cluster") as cluster:
            best = asyncio.run(_run(args, f"redis://127.0.0.1:{single_port}/0", cluster.url))
    print(f"tier counter reservations, {args.callers} callers, {args.platforms} platforms, "
          f"best of 2 windows of {args.seconds:g} s (ops/s)")
    print(f"{'':10} {'reserve':>10} {'bare INCR':>10} {'reserve/bare':>13} "
          f"{'CPU us/reserve':>15} {'CPU us/INCR':>12}")
    for name, b in best.items():
        print(f"{name:10} {b['reserve']:10,.0f} {b['bare']:10,.0f} "
              f"{b['reserve'] / b['bare']:13.2f} {b['reserve_cpu_us']:15.0f} "
              f"{b['bare_cpu_us']:12.0f}")
    ratio = best["cluster"]["reserve"] / best["single"]["reserve"]
    cpu = best["cluster"]["reserve_cpu_us"] / best["single"]["reserve_cpu_us"]
    print(f"cluster / single, reservations: {ratio:.2f}; client CPU per reservation: {cpu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
