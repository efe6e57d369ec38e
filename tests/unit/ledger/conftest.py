"""Fixtures of the ledger unit tests: a pool on the session's test database, a fresh
platform with a custodial and three merchant accounts, and a one-leg posting."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import pytest

from clearing import db
from clearing.ledger import store
from clearing.ledger.model import AccountKind, Leg, Mode, OwnerType, Posting
from clearing.ledger.writer import LedgerWriter

STOP_TIMEOUT_S = 10.0


@pytest.fixture
async def pool(database_url):
    p = await db.create_pool(database_url, min_size=2, max_size=6, command_timeout_s=30)
    yield p
    await p.close()


@pytest.fixture
async def started(pool):
    """`started(writer)` starts a writer and stops it when the test ends, passed or failed,
    before the pool closes: a failing writer test fails and does not hang the run on a
    flusher that still holds a connection. A writer that does not drain in time is
    cancelled (its queued postings are not committed)."""
    writers: list[LedgerWriter] = []

    def start(writer: LedgerWriter) -> LedgerWriter:
        writer.start()
        writers.append(writer)
        return writer

    try:
        yield start
    finally:
        for writer in writers:
            try:
                await asyncio.wait_for(writer.drain_and_stop(), STOP_TIMEOUT_S)
            except TimeoutError:
                task = writer._task
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    writer._task = None


@pytest.fixture
async def accounts(pool):
    """(platform_id, custodial id, merchant ids) in a fresh platform."""
    async with pool.acquire() as conn:
        pid = await conn.fetchval("INSERT INTO platforms (name) VALUES ($1) RETURNING platform_id",
                                  f"w_{secrets.token_hex(5)}")
        custodial = await store.insert_account(conn, pid, "c", AccountKind.CUSTODIAL,
                                               OwnerType.ENTERPRISE, "CNY", True, "")
        merchants = [await store.insert_account(conn, pid, f"m{i}", AccountKind.MERCHANT,
                                                OwnerType.ENTERPRISE, "CNY", False, "")
                     for i in range(3)]
    return pid, custodial, merchants


def posting(pid: int, debit: int, credit: int, amount: int, request_id: str | None = None):
    rid = request_id or secrets.token_hex(8)
    return Posting(pid, rid, "Transfer", hashlib.sha256(f"{rid}{amount}".encode()).digest(),
                   (Leg(debit, credit, amount, "CNY", Mode.IMMEDIATE),))
