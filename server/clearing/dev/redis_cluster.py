"""A Redis Cluster on loopback for tests and benchmarks: `redis-server` children with
`--cluster-enabled yes` on free ports (each also needs its port + 10000, the cluster bus),
the 16,384 slots split in three ranges (CLUSTER ADDSLOTSRANGE), the nodes introduced by
CLUSTER MEET, and the whole stopped at the end. No replicas: the tests are about where keys
go, not about failover. Not for production: no persistence, no password."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import redis

from clearing.dev.embedded_redis import _redis_server_path

SLOTS = 16_384
BUS_OFFSET = 10_000
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Cluster:
    ports: tuple[int, ...]
    ranges: tuple[tuple[int, int], ...]  # the slots node i serves, first..last

    @property
    def url(self) -> str:
        """The URL the server is given: any one node."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node_of_slot(self, slot: int) -> int:
        return next(i for i, (lo, hi) in enumerate(self.ranges) if lo <= slot <= hi)


def _free_with_bus() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + BUS_OFFSET >= 65_536:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + BUS_OFFSET))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _ranges(n: int) -> tuple[tuple[int, int], ...]:
    step = SLOTS // n
    return tuple((i * step, SLOTS - 1 if i == n - 1 else (i + 1) * step - 1)
                 for i in range(n))


def _spawn(node_dir: Path, port: int, cluster: bool) -> subprocess.Popen[bytes]:
    node_dir.mkdir(parents=True)
    extra = ["--cluster-enabled", "yes", "--cluster-config-file",
             str(node_dir / "nodes.conf")] if cluster else []
    return subprocess.Popen(
        [str(_redis_server_path()), "--port", str(port), "--bind", "127.0.0.1", *extra,
         "--dir", str(node_dir), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def start_node(data_dir: Path) -> Iterator[int]:
    """One plain (not cluster) node started the same way, for comparisons: its port."""
    port = _free_with_bus()
    process = _spawn(data_dir, port, cluster=False)
    try:
        client = redis.Redis(port=port, socket_timeout=2)
        _wait(lambda: _pings(client), "the node to answer")
        client.close()
        yield port
    finally:
        _stop([process])


@contextlib.contextmanager
def redis_cluster(data_dir: Path, nodes: int = 3) -> Iterator[Cluster]:
    """A cluster of `nodes` primaries, each serving an equal range of the slots."""
    processes: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for i in range(nodes):
            port = _free_with_bus()
            processes.append(_spawn(data_dir / f"node{i}", port, cluster=True))
            ports.append(port)
        clients = [redis.Redis(port=p, socket_timeout=2) for p in ports]
        _wait(lambda: all(_pings(c) for c in clients), "the nodes to answer")
        ranges = _ranges(nodes)
        for client, (lo, hi) in zip(clients, ranges):
            client.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
        for port in ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
        _wait(lambda: all(c.execute_command("CLUSTER", "INFO").decode().count(
            "cluster_state:ok") and _known(c) == nodes for c in clients), "the cluster state ok")
        for c in clients:
            c.close()
        yield Cluster(tuple(ports), ranges)
    finally:
        _stop(processes)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _known(client: redis.Redis) -> int:
    info = client.execute_command("CLUSTER", "INFO").decode()
    return int(info.split("cluster_known_nodes:")[1].split()[0])


def _wait(ready, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis cluster: timed out waiting for {what}")
        time.sleep(0.05)
