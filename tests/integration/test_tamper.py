"""Tamper evidence: rows changed behind the server's back are caught by VerifyLedger.

Each test runs on a database of its own, since a tampered chain stays broken."""

from __future__ import annotations

import secrets

import asyncpg
import grpc
import pytest

from clearing import db, server
from clearing.limits import BATCH_SPAN
from clearing.tenancy import create_platform
from clearing.v1 import ledger_pb2 as pb
from tests.conftest import _replace_db, server_settings
from tests.support import AS_TAMPERING_SUPERUSER, Client



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
    await conn.execute(AS_TAMPERING_SUPERUSER)
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


# ---- each kind of tampering on its own (issue 9): the calling platform's own rows ----------

async def _batches(conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT seq, batch_id, rows_digest, hash FROM journal_batches"
                            " ORDER BY seq")


async def _only_the_chain_is_broken(client, first_bad_batch_seq: int) -> None:
    report = await client.verify()
    assert not report.ok and not report.chain_ok
    assert report.first_bad_batch_seq == first_bad_batch_seq
    assert list(report.mismatched_account_ids) == []
    assert all(t.balanced for t in report.totals)


async def test_edited_batch_hash_breaks_the_chain_at_that_batch(private):
    client, conn, _ = private
    batches = await _batches(conn)
    assert len(batches) >= 3
    middle = batches[1]["seq"]
    await conn.execute("UPDATE journal_batches SET hash = $1 WHERE seq = $2",
                       bytes(32), middle)
    # the edited batch no longer chains from its predecessor (and the next not from it)
    await _only_the_chain_is_broken(client, middle)


async def test_edited_rows_digest_breaks_the_chain_at_that_batch(private):
    client, conn, _ = private
    last = (await _batches(conn))[-1]
    await conn.execute("UPDATE journal_batches SET rows_digest = $1 WHERE seq = $2",
                       bytes(32), last["seq"])
    await _only_the_chain_is_broken(client, last["seq"])


async def test_edited_journal_head_hash_is_reported(private):
    client, conn, _ = private
    await conn.execute("UPDATE journal_head SET hash = $1", bytes(32))
    # every batch is sound: only the head disagrees with the chain's end
    await _only_the_chain_is_broken(client, 0)


async def test_edited_journal_head_seq_is_reported(private):
    client, conn, _ = private
    await conn.execute("UPDATE journal_head SET seq = seq + 1")
    await _only_the_chain_is_broken(client, 0)


async def test_truncated_chain_tail_is_reported(private):
    client, conn, _ = private
    last = (await _batches(conn))[-1]
    # the last batch's record removed, the head left pointing past the chain's new end
    await conn.execute("DELETE FROM journal_batches WHERE seq = $1", last["seq"])
    report = await client.verify()
    assert not report.ok and not report.chain_ok
    assert report.batch_count == last["seq"] - 1


async def test_truncated_tail_with_head_moved_back_is_reported(private):
    client, conn, _ = private
    batches = await _batches(conn)
    last, before = batches[-1], batches[-2]
    # a careful truncation: the batch record gone and the head moved to the one before;
    # the batch's journal rows remain outside any chained batch
    await conn.execute("DELETE FROM journal_batches WHERE seq = $1", last["seq"])
    await conn.execute("UPDATE journal_head SET seq = $1, hash = $2", before["seq"],
                       before["hash"])
    await _only_the_chain_is_broken(client, 0)


async def test_journal_rows_outside_any_chained_batch_are_reported(private):
    client, conn, merchant = private
    row = await conn.fetchrow("SELECT * FROM transfers ORDER BY transfer_id DESC LIMIT 1")
    batch_id = max(b["batch_id"] for b in await _batches(conn)) + 7
    # a row in a batch no chain record accounts for, with balances edited to match it, so
    # that the trial balance still holds: only the chain check can see it
    await conn.execute(
        "INSERT INTO transfers (transfer_id, platform_id, batch_id, request_id,"
        " debit_account_id, credit_account_id, amount, currency_code, mode, created_at)"
        " VALUES ($1, $2, $3, 'forged', $4, $5, 1, $6, 1, now())",
        batch_id * BATCH_SPAN, row["platform_id"], batch_id, row["debit_account_id"],
        row["credit_account_id"], row["currency_code"])
    await conn.execute("UPDATE accounts SET debits_posted = debits_posted + 1"
                       " WHERE account_id = $1", row["debit_account_id"])
    await conn.execute("UPDATE accounts SET credits_posted = credits_posted + 1"
                       " WHERE account_id = $1", row["credit_account_id"])
    await _only_the_chain_is_broken(client, 0)
    assert merchant.account_id == row["credit_account_id"]


async def test_pending_debits_and_credits_out_of_balance_are_reported(private):
    client, conn, merchant = private
    await conn.execute("UPDATE accounts SET debits_pending = debits_pending + 7"
                       " WHERE account_id = $1", merchant.account_id)
    report = await client.verify()
    assert not report.ok and report.chain_ok
    assert list(report.mismatched_account_ids) == [merchant.account_id]
    (totals,) = report.totals
    assert totals.debits_posted_minor == totals.credits_posted_minor
    assert totals.debits_pending_minor == totals.credits_pending_minor + 7
    assert not totals.balanced
