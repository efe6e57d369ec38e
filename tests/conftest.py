"""Shared fixtures: real PostgreSQL and Redis (configured, else the local services on
127.0.0.1, else embedded ones), one fresh database per test run, and a real gRPC server on
a loopback port. Each test works in a platform of its own."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis

from clearing import db, server
from clearing.dev.embedded_postgres import postgres_answers, start_postgres
from clearing.dev.embedded_redis import redis_answers, start_redis
from clearing.tenancy import create_platform
from clearing.config import (BANK_CONNECTOR_SIMULATOR, BankSettings, BankSimSettings,
                             EventSettings, ReconSettings, ReportSettings,
                             SchedulerSettings, Settings, TlsSettings, WorkerSettings,
                             WriterSettings)
from tests.support import Client, Platform, ServerProcess

# Under `make mutation` (tests/mutation.py) a failing property need not be shrunk: the
# first counterexample kills the mutant.
if os.environ.get("CLEARING_MUTATION"):
    from hypothesis import Phase, settings as _hypothesis_settings
    _hypothesis_settings.register_profile(
        "mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None)
    _hypothesis_settings.load_profile("mutation")

# The tests never read what `make run` left in the checkout's var/ (its keys, its development
# CA, which the `clearing` commands would otherwise use to reach the plaintext test servers
# over TLS): their data folder is one of their own. Tests that need one set their own.
TEST_DATA_DIR = tempfile.mkdtemp(prefix="clearing-test-data-")
os.environ["CLEARING_DATA_DIR"] = TEST_DATA_DIR

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(TEST_DATA_DIR, ignore_errors=True)


def pytest_addoption(parser):
    group = parser.getgroup("clearing", "clearing core tests")
    group.addoption("--fuzz-seed", type=int, default=None,
                    help="seed of the API fuzz test (tests/integration/test_fuzz.py); "
                         "default: its fixed FUZZ_SEED")
    group.addoption("--fuzz-calls", type=int, default=None,
                    help="calls the API fuzz test makes; default: its FUZZ_CALLS")


def _replace_db(dsn: str, name: str) -> str:
    head, sep, tail = dsn.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{tail}"


@pytest.fixture(scope="session")
def embedded_dir():
    with tempfile.TemporaryDirectory(prefix="clearing-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def pg_admin_dsn(embedded_dir):
    configured = os.environ.get("CLEARING_TEST_DATABASE_URL") or os.environ.get(
        "CLEARING_DATABASE_URL")
    if configured:
        yield configured
        return
    if asyncio.run(postgres_answers(LOCAL_PG)):
        yield LOCAL_PG
        return
    pg = start_postgres(embedded_dir / "postgres")
    try:
        yield pg.dsn
    finally:
        pg.stop()


@pytest.fixture(scope="session", autouse=True)
def no_server_process_left():
    """Server processes a test started and could not stop (it failed before its finally)
    are killed when the session ends: never left serving after the run."""
    yield
    ServerProcess.kill_leftovers()


@pytest.fixture(scope="session")
def redis_url(embedded_dir):
    configured = os.environ.get("CLEARING_TEST_REDIS_URL") or os.environ.get(
        "CLEARING_REDIS_URL")
    if configured:
        yield configured
        return
    if asyncio.run(redis_answers(LOCAL_REDIS)):
        yield LOCAL_REDIS
        return
    rd = start_redis(embedded_dir / "redis")
    try:
        yield rd.url
    finally:
        rd.stop()


@pytest.fixture(scope="session")
def redis_prefix(redis_url):
    prefix = f"clearing-test:{RUN_ID}:"
    yield prefix

    async def clean() -> None:
        client = aioredis.from_url(redis_url)
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            await client.delete(key)
        await client.aclose()

    asyncio.run(clean())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _sweep_dead_runs(admin_dsn: str, redis_url: str) -> None:
    """Drop what earlier runs on this machine left when they were killed before their own
    clean-up (their database and Redis keys carry their pid)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        names = [r[0] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'clearing_test_%'")]
    finally:
        await conn.close()
    for name in names:
        pid = name.split("_")[2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            await db.drop_database(admin_dsn, name)
    client = aioredis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match="clearing-test:*", count=1000):
            pid = key.decode().split(":")[1].split("_")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def database_url(pg_admin_dsn, redis_url):
    asyncio.run(_sweep_dead_runs(pg_admin_dsn, redis_url))
    name = f"clearing_test_{RUN_ID}"
    asyncio.run(db.ensure_database(pg_admin_dsn, name))
    dsn = _replace_db(pg_admin_dsn, name)

    async def migrate() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    yield dsn
    asyncio.run(db.drop_database(pg_admin_dsn, name))


def server_settings(database_url: str, redis_url: str, redis_prefix: str, *,
                    bank: BankSimSettings | None = None,
                    worker_limits: WorkerSettings | None = None,
                    scheduler: SchedulerSettings | None = None, run_worker: bool = True,
                    connector: str = BANK_CONNECTOR_SIMULATOR,
                    recon: ReconSettings | None = None, **changes) -> Settings:
    """A test server's settings. Its bank is the simulator, chosen explicitly (a plain
    `clearing serve` has none), with the fault injection `bank`. The reconciliation sweep
    is off unless `recon` turns it on: it checks every platform's splits and payouts, so the
    tests of the sweep run it on databases of their own. The reports' roll-up job is off too
    (a server on a moved clock would roll every platform's days): the roll-up tests roll
    days themselves."""
    base = Settings(grpc_addr="127.0.0.1:0", database_url=database_url, redis_url=redis_url,
                    redis_prefix=redis_prefix, metrics_addr="", db_pool_max=20,
                    writer=WriterSettings(batch_size_max=1000, flush_ms_max=2,
                                          queue_max=20_000), grace_s=5,
                    tls=TlsSettings(allow_plaintext=True))  # TLS: tests/integration/test_tls.py
    payout = replace(base.payout, worker=run_worker,
                     bank=BankSettings(connector, bank or BankSimSettings()),
                     worker_limits=worker_limits or base.payout.worker_limits,
                     scheduler=scheduler or base.payout.scheduler)
    changes.setdefault("report", ReportSettings(rollup=False))
    # the webhook worker delivers every platform's endpoints: its tests run their own
    changes.setdefault("events", EventSettings(webhooks=False))
    return base.with_(payout=payout, recon=recon or ReconSettings(sweep=False), **changes)


@pytest.fixture(scope="session")
async def running(database_url, redis_url, redis_prefix):
    srv = await server.start(server_settings(database_url, redis_url, redis_prefix),
                             migrate=False)
    yield srv
    await srv.stop()


@pytest.fixture(scope="session")
async def channel(running):
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield ch
    await ch.close()


@pytest.fixture
async def platform(database_url) -> Platform:
    """A fresh platform (tenant) with a gateway+operator key."""
    name = f"p_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(database_url)
    try:
        pid, key = await create_platform(conn, name, frozenset({"gateway", "operator"}))
    finally:
        await conn.close()
    return Platform(pid, key, name)


@pytest.fixture
async def client(channel, platform) -> Client:
    return Client(channel, platform.key)
