"""The risk counters across server processes and a Redis restart: two server processes
count one receiver's splits in a private redis-server (its own port, never the machine's),
which is restarted in the middle; the count goes on from PostgreSQL (the truth) and the
frequency rule hits on exactly the split it must."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time

import grpc
import pytest
import redis

from clearing.v1 import risk_pb2 as rpb
from tests.risk_support import World, limits, make_world
from tests.split_support import Splits, order
from tests.support import ServerProcess, free_port

REDIS_START_S = 10.0


class PrivateRedis:
    """A redis-server of this test only, without persistence (a restart loses every key)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="risk-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + REDIS_START_S
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def keys(self) -> list[bytes]:
        return redis.Redis(port=self.port).keys("*risk:*")


@pytest.fixture
def private_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary")
    r = PrivateRedis().start()
    yield r
    r.stop()
    shutil.rmtree(r.dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_two_processes_count_one_receiver_across_a_redis_restart(
        channel, client, database_url, platform, private_redis):
    world: World = await make_world(channel, client, database_url, platform.platform_id)
    await world.file_policy(limits=[limits(frequency_amount_minor=10_000)],
                            frequency_count_max=4, frequency_window_s=3600)
    env = {"CLEARING_REDIS_PREFIX": "risk-processes:"}
    a = ServerProcess(database_url, private_redis.url, extra_env=env).start()
    b = ServerProcess(database_url, private_redis.url, extra_env=env).start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for p in (a, b)]
    key = platform.key
    gateways = [Splits(ch, key) for ch in channels]
    try:
        held = []
        for i in range(3):  # counts 1, 2, 3 alternately through A and B
            split = await gateways[i % 2].split(order(11_001, rule_set_name="to-m"))
            held.append(sum(leg.held_minor for leg in split.legs))
        assert private_redis.keys(), "the processes count in the private Redis"
        private_redis.stop()
        private_redis.start()  # every key is gone
        assert private_redis.keys() == []
        for i in range(3):  # counts 4 (not above 4), 5 and 6 (held), rebuilt from PostgreSQL
            split = await gateways[(i + 1) % 2].split(order(11_001, rule_set_name="to-m"))
            held.append(sum(leg.held_minor for leg in split.legs))
        assert held == [0, 0, 0, 0, 10_001, 10_001]
        events = await world.approver_a.events(rule=rpb.RISK_RULE_FREQUENCY)
        assert sorted(e.observed for e in events) == [5, 6]
        # concurrent splits through both processes: each gets its own count (7..12)
        results = await asyncio.gather(*(
            gateways[i % 2].split(order(11_001, rule_set_name="to-m")) for i in range(6)))
        assert all(sum(leg.held_minor for leg in s.legs) == 10_001 for s in results)
        events = await world.approver_a.events(rule=rpb.RISK_RULE_FREQUENCY)
        assert sorted(e.observed for e in events) == [5, 6, 7, 8, 9, 10, 11, 12]
        assert (await world.client.verify()).ok
    finally:
        for ch in channels:
            await ch.close()
        a.terminate()
        b.terminate()
