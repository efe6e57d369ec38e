"""An operator action deadlocked with the writer's late order (issue 16 review).

FreezeAccount locks the account, then writes its outbox event and its audit record (the
platform's audit_head row). The ledger writer's late order takes audit_head first (the
Transfers sink's audit record) and the balance rows last. The two wait on each other and
PostgreSQL aborts one of them. Here a raw connection plays the writer's part, its own
deadlock_timeout long, so the freeze is the one aborted: the client must not see
INTERNAL; the freeze is redone and booked once (one account event, one audit record)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, rid

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def _waiting_on_lock(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")


async def test_freeze_deadlocked_with_the_late_order_is_redone_not_internal(
        client: Client, platform, database_url):
    account = await client.open(f"M_{rid()[:8]}")
    writer = await asyncpg.connect(database_url)
    watcher = await asyncpg.connect(database_url)
    try:
        await writer.execute("SET deadlock_timeout = '20s'")  # the freeze detects it
        tx = writer.transaction()
        await tx.start()
        # the late order: the sink's audit_head row first ...
        await writer.execute(
            "INSERT INTO audit_head (platform_id, seq, hash) VALUES ($1, 0, $2)"
            " ON CONFLICT (platform_id) DO UPDATE SET seq = audit_head.seq",
            platform.platform_id, bytes(32))
        freeze = asyncio.create_task(client.call("FreezeAccount", pb.FreezeAccountRequest(
            request_id=rid(), account_id=account.account_id, reason="court order")))
        for _ in range(200):  # the freeze holds the account and waits for audit_head
            if await _waiting_on_lock(watcher) or freeze.done():
                break
            await asyncio.sleep(0.05)
        assert not freeze.done()
        # ... then the balance row: a deadlock, which the freeze's backend detects
        await writer.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE",
                             account.account_id)
        await tx.rollback()
        frozen = await freeze
    finally:
        await writer.close()
    try:
        assert frozen.account.status == pb.ACCOUNT_STATUS_FROZEN
        assert await watcher.fetchval(
            "SELECT count(*) FROM account_events WHERE account_id = $1",
            account.account_id) == 1
        assert await watcher.fetchval(
            "SELECT count(*) FROM audit_events WHERE platform_id = $1 AND resource = $2",
            platform.platform_id, f"account:{account.account_id}") == 1
    finally:
        await watcher.close()
