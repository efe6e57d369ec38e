"""VerifyLedger per platform: a platform's figures count only its own rows, an edit of
another platform's row is not reported to it (but is to the operator's whole-system
`clearing verify --all`), an edit of its own rows is.

Each test runs on a database of its own, since a tampered chain stays broken."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys

import asyncpg
import grpc
import pytest

from clearing import db, server
from clearing.tenancy import create_platform
from clearing.v1 import ledger_pb2 as pb
from tests.conftest import _replace_db, server_settings
from tests.support import AS_TAMPERING_SUPERUSER, ROOT, Client

A_AMOUNTS = (100, 200, 300)
B_AMOUNTS = (7_000, 11_000)


async def _platform(conn, channel, name: str, amounts: tuple[int, ...]):
    _, key = await create_platform(conn, name, frozenset({"operator"}))
    client = Client(channel, key)
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    transfers = []
    for amount in amounts:  # one at a time: each transfer commits in a batch of its own
        transfers.append(await client.transfer(custodial.account_id, merchant.account_id,
                                               amount, memo="sale"))
    return client, merchant, transfers


@pytest.fixture
async def two(pg_admin_dsn, redis_url, redis_prefix):
    """Platforms A and B on a private database, each having moved some money."""
    name = f"clearing_tenancy_{secrets.token_hex(4)}"
    await db.ensure_database(pg_admin_dsn, name)
    dsn = _replace_db(pg_admin_dsn, name)
    srv = await server.start(server_settings(dsn, redis_url, redis_prefix))
    conn = await asyncpg.connect(dsn)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    try:
        a = await _platform(conn, channel, "a", A_AMOUNTS)
        b = await _platform(conn, channel, "b", B_AMOUNTS)
        await conn.execute(AS_TAMPERING_SUPERUSER)
        yield dsn, conn, a, b
    finally:
        await channel.close()
        await conn.close()
        await srv.stop()
        await db.drop_database(pg_admin_dsn, name)


async def _verify_all(dsn: str) -> tuple[int, dict]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clearing.cli", "verify", "--all",
        env={**os.environ, "CLEARING_DATABASE_URL": dsn}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out, err.decode()
    return proc.returncode, json.loads(out)


async def test_each_platform_sees_only_its_own_figures(two):
    dsn, _, (a, _, _), (b, _, _) = two
    ra, rb = await a.verify(), await b.verify()
    assert ra.ok and rb.ok
    assert (ra.transfer_count, ra.batch_count, ra.account_count) == (3, 3, 2)
    assert (rb.transfer_count, rb.batch_count, rb.account_count) == (2, 2, 2)
    [ta] = ra.totals
    assert (ta.debits_posted_minor, ta.credits_posted_minor) == (600, 600)
    [tb] = rb.totals
    assert (tb.debits_posted_minor, tb.credits_posted_minor) == (18_000, 18_000)
    code, doc = await _verify_all(dsn)  # the operator sees the whole system
    assert code == 0 and doc["ok"] and doc["chain_ok"]
    assert (doc["transfer_count"], doc["batch_count"], doc["account_count"]) == (5, 5, 4)
    assert [(t["debits_posted"], t["credits_posted"]) for t in doc["totals"]] == [
        (18_600, 18_600)]


async def test_edit_of_another_platforms_row_is_not_reported(two):
    dsn, conn, (a, _, a_rows), (b, b_merchant, b_rows) = two
    target = b_rows[0].transfer_id
    # the precondition of "not reported": B's row shares no batch with a row of A's
    assert {t.transfer_id // 65_536 for t in a_rows}.isdisjoint({target // 65_536})
    await conn.execute("UPDATE transfers SET amount = amount + 1 WHERE transfer_id = $1",
                       target)
    ra = await a.verify()
    assert ra.ok and ra.chain_ok and list(ra.mismatched_account_ids) == []
    assert (ra.transfer_count, ra.batch_count) == (3, 3)
    rb = await b.verify()
    assert not rb.ok and not rb.chain_ok and b_merchant.account_id in rb.mismatched_account_ids
    code, doc = await _verify_all(dsn)
    assert code == 1 and not doc["ok"] and not doc["chain_ok"]
    assert b_merchant.account_id in doc["mismatched_account_ids"]
    seq = await conn.fetchval("SELECT seq FROM journal_batches WHERE batch_id = $1",
                              target // 65_536)
    assert doc["first_bad_batch_seq"] == seq == rb.first_bad_batch_seq


async def test_edit_of_another_platforms_memo_is_not_reported(two):
    dsn, conn, (a, _, _), (b, _, b_rows) = two
    await conn.execute("UPDATE transfers SET memo = 'refund' WHERE transfer_id = $1",
                       b_rows[-1].transfer_id)
    assert (await a.verify()).ok
    rb = await b.verify()
    assert not rb.chain_ok and list(rb.mismatched_account_ids) == []
    code, doc = await _verify_all(dsn)
    assert code == 1 and not doc["chain_ok"]


async def test_edit_of_own_row_is_reported(two):
    dsn, conn, (a, a_merchant, a_rows), (b, _, _) = two
    target = a_rows[1].transfer_id
    await conn.execute("UPDATE transfers SET amount = amount + 1 WHERE transfer_id = $1",
                       target)
    ra = await a.verify()
    seq = await conn.fetchval("SELECT seq FROM journal_batches WHERE batch_id = $1",
                              target // 65_536)
    assert not ra.ok and not ra.chain_ok and ra.first_bad_batch_seq == seq
    assert a_merchant.account_id in ra.mismatched_account_ids
    assert (await b.verify()).ok  # and not to B
    code, _ = await _verify_all(dsn)
    assert code == 1


async def test_edit_of_own_balance_is_reported_to_its_platform_only(two):
    _, conn, (a, _, _), (b, b_merchant, _) = two
    await conn.execute("UPDATE accounts SET credits_posted = credits_posted + 5"
                       " WHERE account_id = $1", b_merchant.account_id)
    assert (await a.verify()).ok
    rb = await b.verify()
    assert rb.chain_ok and not rb.ok and list(rb.mismatched_account_ids) == [
        b_merchant.account_id]


async def test_a_deleted_row_is_reported_to_every_platform(two):
    """A row gone from the journal could have been anyone's: every platform is told its
    rows are no longer proven (the chain's row counts), without whose it was."""
    _, conn, (a, _, _), (b, _, b_rows) = two
    await conn.execute("DELETE FROM transfers WHERE transfer_id = $1", b_rows[0].transfer_id)
    ra = await a.verify()
    assert not ra.chain_ok and list(ra.mismatched_account_ids) == []
    assert (ra.transfer_count, ra.batch_count) == (3, 3)
