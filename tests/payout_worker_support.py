"""Helpers for the payout worker tests (no tests here).

The worker claims due transfers of EVERY platform, so these tests run on a database of
their own (`worker_db`): the session server's worker (default settings, a fault-free bank)
never sees their transfers. Each test starts its own in-process server with the worker and
bank simulator settings it needs, and talks to it through generated stubs."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, replace

import asyncpg
import grpc

from clearing import db, server
from clearing.clock import Clock
from clearing.dev.bank_sim import (BankSimSettings, BankSimulator, BankState, BookEntry,
                                  CallFaults, TimeoutKind, decide)
from clearing.payout.worker import WorkerSettings
from clearing.v1 import payout_pb2 as pb
from tests.conftest import RUN_ID, _replace_db, server_settings
from tests import payout_support
from tests.payout_support import Payouts, party, set_config
from tests.support import Client

# Short timings: a retry round of 4 attempts takes well under a second.
FAST = WorkerSettings(poll_interval_ms=20, claim_batch_max=64, submit_timeout_ms=1_000,
                      stuck_after_ms=1_500, retry_backoff_ms=20, retries_max=3,
                      concurrency_max=16)
# Connections per test server: the machine's PostgreSQL is shared (max_connections).
POOL_MAX = 8
FINAL = (pb.PAYOUT_STATE_SUCCEEDED, pb.PAYOUT_STATE_FAILED, pb.PAYOUT_STATE_MANUAL_REVIEW)


def worker_database(pg_admin_dsn, database_url):
    """A migrated database only this module's servers use (dropped at the end; the name
    carries the run's pid, so conftest's sweep drops it after a killed run). A module
    fixture: `worker_db = pytest.fixture(scope="module", name="worker_db")(worker_database)`."""
    name = f"clearing_test_{RUN_ID}_pw{secrets.token_hex(3)}"

    async def create() -> None:
        await db.ensure_database(pg_admin_dsn, name)
        conn = await asyncpg.connect(_replace_db(pg_admin_dsn, name))
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(create())
    yield _replace_db(pg_admin_dsn, name)
    asyncio.run(db.drop_database(pg_admin_dsn, name))


@dataclass
class Stack:
    """A running server (worker + bank simulator) and two keys of one fresh platform:
    `ops` (gateway + operator: requests payouts) and `approver` (reviews them)."""

    running: server.Running
    channel: grpc.aio.Channel
    platform_id: int
    client: Client
    ops: Payouts
    approver: Payouts
    dsn: str
    keys: tuple[str, str]

    @property
    def pool(self) -> asyncpg.Pool:
        return self.running.pool

    @property
    def bank(self):
        return self.running.bank


@contextlib.asynccontextmanager
async def stack(dsn: str, redis_url: str, redis_prefix: str, *,
                worker: WorkerSettings = FAST, bank: BankSimSettings = BankSimSettings(),
                run_worker: bool = True, platform_id: int = 0, keys: tuple[str, str] = ("", "")):
    """Start a server on `dsn` with this worker and bank; a fresh platform unless one is
    given (with its keys)."""
    settings = server_settings(dsn, redis_url, redis_prefix, db_pool_max=POOL_MAX,
                               bank=bank, worker_limits=worker, run_worker=run_worker)
    running = await server.start(settings, migrate=False)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        if not platform_id:
            platform_id, ops_key, approver_key = await payout_support.keys(dsn)
            keys = (ops_key, approver_key)
        yield Stack(running, channel, platform_id, Client(channel, keys[0]),
                    Payouts(channel, keys[0]), Payouts(channel, keys[1]), dsn, keys)
    finally:
        await channel.close()
        await running.stop()


async def funded(s: Stack, funds: int, *, fee_fixed_minor: int = 0,
                 review_threshold_minor: int = 10**12, bank_transfer_max_minor: int = 50_000_000,
                 prefix: str = ""):
    """A funded sub-account with a bound bank account, and the platform's payout config."""
    p = await party(s.client, s.ops, funds=funds, prefix=prefix)
    await set_config(s.dsn, s.platform_id, fee_fixed_minor=fee_fixed_minor,
                     fee_account_id=p.fee if fee_fixed_minor else 0,
                     review_threshold_minor=review_threshold_minor,
                     bank_transfer_max_minor=bank_transfer_max_minor)
    return p


async def books(pool: asyncpg.Pool, payout_id: int | None = None) -> list[BookEntry]:
    """The simulator's own record (of one payout's keys, or all)."""
    sim = BankSimulator(pool, BankSimSettings(), Clock())
    return await sim.books(f"po{payout_id}-" if payout_id is not None else "po")


async def paid_at_bank(pool: asyncpg.Pool, payout_id: int) -> list[BookEntry]:
    """The simulator's paid records of a payout."""
    return [b for b in await books(pool, payout_id) if b.paid]


def seed_where(base: BankSimSettings, wanted: dict[str, BankState],
               calls: tuple[tuple[str, TimeoutKind], ...] = (), tries_max: int = 100_000) -> int:
    """A seed under which each key's fate is `wanted` and the simulator's first calls (in
    order: ("submit" | "query", timeout kind)) time out as given: the bank's randomness,
    chosen, so a test is deterministic."""
    for seed in range(tries_max):
        settings = replace(base, seed=seed)
        if any(decide(settings, k).final_state is not st for k, st in wanted.items()):
            continue
        faults = CallFaults(settings)
        if all(getattr(faults, what)().timeout is kind for what, kind in calls):
            return seed
    raise AssertionError("no seed found")


async def balances(s: Stack, *account_ids: int) -> list[tuple[int, int, int]]:
    """(posted, available, pending debit) of each account."""
    out = []
    for a in account_ids:
        b = await s.client.balance(a)
        out.append((b.posted_minor, b.available_minor, b.pending_debit_minor))
    return out
