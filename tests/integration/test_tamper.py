"""Tamper evidence: rows changed behind the server's back are caught by VerifyLedger.

Each test runs on a database of its own, since a tampered chain stays broken."""

from __future__ import annotations

import secrets

import asyncpg
import grpc
import pytest

from clearing import db, server
from clearing.tenancy import create_platform
from clearing.v1 import ledger_pb2 as pb
from tests.conftest import _replace_db, server_settings
from tests.support import Client



@pytest.fixture
async def private(pg_admin_dsn, redis_url, redis_prefix):
    """A server on a database of its own, with a platform that has moved some money."""
    name = f"clearing_tamper_{secrets.token_hex(4)}"
    await db.ensure_database(pg_admin_dsn, name)
    dsn = _replace_db(pg_admin_dsn, name)
    srv = await server.start(server_settings(dsn, redis_url, redis_prefix))
    conn = await asyncpg.connect(dsn)
    _, key = await create_platform(conn, "tamper", frozenset({"operator"}))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    client = Client(channel, key)
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    for amount in (100, 200, 300):
        await client.transfer(custodial.account_id, merchant.account_id, amount, memo="sale")
    assert (await client.verify()).ok
    try:
        yield client, conn, merchant
    finally:
        await channel.close()
        await conn.close()
        await srv.stop()
        await db.drop_database(pg_admin_dsn, name)


async def test_changed_amount_breaks_chain_and_trial_balance(private):
    client, conn, merchant = private
    await conn.execute("UPDATE transfers SET amount = amount + 1 WHERE transfer_id ="
                       " (SELECT min(transfer_id) FROM transfers)")
    report = await client.verify()
    assert not report.ok
    assert not report.chain_ok and report.first_bad_batch_seq >= 1
    assert merchant.account_id in report.mismatched_account_ids


async def test_changed_memo_breaks_only_the_chain(private):
    client, conn, _ = private
    await conn.execute("UPDATE transfers SET memo = 'refund' WHERE transfer_id ="
                       " (SELECT max(transfer_id) FROM transfers)")
    report = await client.verify()
    assert not report.ok and not report.chain_ok
    assert list(report.mismatched_account_ids) == []
    assert all(t.balanced for t in report.totals)


async def test_deleted_row_breaks_the_chain(private):
    client, conn, _ = private
    await conn.execute("DELETE FROM transfers WHERE transfer_id ="
                       " (SELECT max(transfer_id) FROM transfers)")
    report = await client.verify()
    assert not report.ok and not report.chain_ok


async def test_inserted_row_outside_the_writer_breaks_the_chain(private):
    client, conn, merchant = private
    await conn.execute(
        "INSERT INTO transfers (transfer_id, platform_id, batch_id, request_id,"
        " debit_account_id, credit_account_id, amount, currency_code, mode, created_at)"
        " SELECT max(transfer_id) + 1, platform_id, 999999, 'forged', debit_account_id,"
        " credit_account_id, 1, currency_code, 1, now() FROM transfers"
        " GROUP BY platform_id, debit_account_id, credit_account_id, currency_code LIMIT 1")
    report = await client.verify()
    assert not report.chain_ok
    assert merchant.account_id in report.mismatched_account_ids


async def test_edited_balance_is_a_mismatch(private):
    client, conn, merchant = private
    await conn.execute("UPDATE accounts SET credits_posted = credits_posted + 5"
                       " WHERE account_id = $1", merchant.account_id)
    report = await client.verify()
    assert report.chain_ok and not report.ok
    assert list(report.mismatched_account_ids) == [merchant.account_id]
    assert not all(t.balanced for t in report.totals)


async def test_edited_pending_remainder_is_a_mismatch(private):
    client, conn, merchant = private
    other = await client.open("o")
    hold = await client.transfer(merchant.account_id, other.account_id, 50,
                                 mode=pb.TRANSFER_MODE_PENDING)
    assert (await client.verify()).ok
    await conn.execute("UPDATE transfers SET pending_remaining = 40 WHERE transfer_id = $1",
                       hold.transfer_id)
    report = await client.verify()
    assert not report.ok and report.chain_ok
    assert list(report.mismatched_account_ids) == [merchant.account_id]
