"""ledger.verify on a database of its own, against the rules of its docstring: per currency,
posted debits = posted credits and pending debits = pending credits over the platform's
accounts; every stored balance (and every pending transfer's remainder) equals what its
journal rows say; every batch's digest recomputes from its rows and chains from the genesis
hash, seq 1, 2, 3... with no gap, to the journal head; no journal row outside a chained
batch. Each test tampers one thing and the fixture restores the tables afterwards."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from clearing import db
from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.ledger import store, verify
from clearing.ledger.model import AccountKind, Leg, Mode, OwnerType, Posting
from clearing.ledger.writer import LedgerWriter
from clearing.limits import BATCH_SPAN
from tests.conftest import _replace_db
from tests.support import AS_TAMPERING_SUPERUSER_LOCAL

TABLES = ("accounts", "transfers", "journal_batches", "journal_head")
_E = OwnerType.ENTERPRISE


@pytest.fixture(scope="module")
async def ledger(pg_admin_dsn):
    """(pool, ids) after a known history of platform a, on a private database (the chain is
    the whole journal's: only a's postings are in it). Platform b has accounts, no postings."""
    name = f"clearing_verify_{secrets.token_hex(4)}"
    await db.ensure_database(pg_admin_dsn, name)
    dsn = _replace_db(pg_admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    pool = await db.create_pool(dsn, min_size=1, max_size=4, command_timeout_s=30)
    writer = LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock())
    writer.start()
    try:
        ids = await _history(pool, writer)
    finally:
        await writer.drain_and_stop()
    try:
        yield pool, ids
    finally:
        await pool.close()
        await db.drop_database(pg_admin_dsn, name)


async def _history(pool, writer) -> dict[str, int]:
    ids: dict[str, int] = {}
    async with pool.acquire() as conn:
        for p in ("a", "b"):
            ids[p] = await conn.fetchval(
                "INSERT INTO platforms (name) VALUES ($1) RETURNING platform_id",
                f"v{p}_{secrets.token_hex(4)}")
        a, b = ids["a"], ids["b"]
        for ref, pid, kind, cur in (("c", a, AccountKind.CUSTODIAL, "CNY"),
                                    ("m0", a, AccountKind.MERCHANT, "CNY"),
                                    ("m1", a, AccountKind.MERCHANT, "CNY"),
                                    ("m2", a, AccountKind.MERCHANT, "CNY"),
                                    ("cu", a, AccountKind.CUSTODIAL, "USD"),
                                    ("u0", a, AccountKind.MERCHANT, "USD"),
                                    ("bc", b, AccountKind.CUSTODIAL, "CNY"),
                                    ("b0", b, AccountKind.MERCHANT, "CNY")):
            ids[ref] = await store.insert_account(conn, pid, ref, kind, _E, cur,
                                                  kind == AccountKind.CUSTODIAL, "")

    async def post(pid: int, *legs: Leg):
        rid = secrets.token_hex(6)
        return await writer.submit(Posting(pid, rid, "Transfer", rid.encode(), legs))

    await post(a, Leg(ids["c"], ids["m0"], 1_000, "CNY", Mode.IMMEDIATE))
    await post(a, Leg(ids["c"], ids["m1"], 500, "CNY", Mode.IMMEDIATE))
    (hold,) = await post(a, Leg(ids["m0"], ids["m2"], 300, "CNY", Mode.PENDING))
    await post(a, Leg(0, 0, 100, "", Mode.POST_PENDING, pending_id=hold.transfer_id))
    (small,) = await post(a, Leg(ids["m1"], ids["m2"], 50, "CNY", Mode.PENDING))
    await post(a, Leg(0, 0, 50, "", Mode.VOID_PENDING, pending_id=small.transfer_id))
    await post(a, Leg(ids["cu"], ids["u0"], 777, "USD", Mode.IMMEDIATE))
    ids["hold"] = hold.transfer_id
    return ids


@pytest.fixture
async def env(ledger):
    """The ledger, restored after the test's tampering."""
    pool, ids = ledger
    async with pool.acquire() as conn:
        for t in TABLES:
            await conn.execute(f"DROP TABLE IF EXISTS snap_{t}; "
                               f"CREATE TABLE snap_{t} AS SELECT * FROM {t}")
    try:
        yield pool, ids
    finally:
        async with pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(AS_TAMPERING_SUPERUSER_LOCAL)
                for t in TABLES:
                    await conn.execute(f"DELETE FROM {t}; INSERT INTO {t} SELECT * FROM snap_{t}")


async def sql(pool, query: str, *args) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(AS_TAMPERING_SUPERUSER_LOCAL)
        await conn.execute(query, *args)


async def batches(pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT seq, batch_id, hash FROM journal_batches ORDER BY seq")


async def test_a_clean_ledger(env):
    pool, ids = env
    report = await verify.verify(pool, ids["a"])
    assert report.ok and report.chain_ok and report.first_bad_batch_seq == 0
    assert report.mismatched_account_ids == []
    # CNY: custodial debited 1500, m0 100 (the post); m0 credited 1000, m1 500, m2 100.
    # pending: 200 of the hold still open (300 - 100 posted); the 50 voided.
    assert [(t.currency_code, t.debits_posted, t.credits_posted, t.debits_pending,
             t.credits_pending, t.balanced) for t in report.totals] == [
        ("CNY", 1_600, 1_600, 200, 200, True), ("USD", 777, 777, 0, 0, True)]
    assert report.account_count == 6
    # one batch per posting (each awaited alone), 7 postings, 7 journal rows
    assert (report.batch_count, report.transfer_count) == (7, 7)
    other = await verify.verify(pool, ids["b"])
    assert other.ok and [(t.currency_code, t.debits_posted, t.credits_posted)
                         for t in other.totals] == [("CNY", 0, 0)]
    assert other.account_count == 2
    assert (other.batch_count, other.transfer_count) == (0, 0)  # b has no rows of its own


async def test_a_clean_ledger_for_the_whole_system(env):
    pool, ids = env
    report = await verify.verify(pool, None)
    assert report.ok and report.chain_ok and report.first_bad_batch_seq == 0
    assert report.mismatched_account_ids == []
    # both platforms' accounts; b's have no postings, so the totals are a's
    assert [(t.currency_code, t.debits_posted, t.credits_posted, t.debits_pending,
             t.credits_pending, t.balanced) for t in report.totals] == [
        ("CNY", 1_600, 1_600, 200, 200, True), ("USD", 777, 777, 0, 0, True)]
    assert report.account_count == 8
    assert (report.batch_count, report.transfer_count) == (7, 7)


async def test_the_whole_system_sees_a_pending_remainder_edited(env):
    pool, ids = env
    await sql(pool, "UPDATE transfers SET pending_remaining = pending_remaining + 1"
                    " WHERE transfer_id = $1", ids["hold"])
    system = await verify.verify(pool, None)
    assert not system.ok and system.chain_ok
    assert system.mismatched_account_ids == [ids["m0"]]  # the hold's debit account


@pytest.mark.parametrize("column", ["debits_posted", "credits_posted", "debits_pending",
                                    "credits_pending"])
async def test_an_edited_balance_is_a_mismatch_and_unbalances_its_currency(env, column):
    pool, ids = env
    await sql(pool, f"UPDATE accounts SET {column} = {column} + 1 WHERE account_id = $1",
              ids["m1"])
    report = await verify.verify(pool, ids["a"])
    assert not report.ok and report.chain_ok
    assert report.mismatched_account_ids == [ids["m1"]]
    cny, usd = report.totals
    assert not cny.balanced and usd.balanced


async def test_balanced_edits_are_still_mismatches(env):
    pool, ids = env
    # +5 debit on m0 and +5 credit on m1: the totals balance, the rows disagree
    await sql(pool, "UPDATE accounts SET debits_posted = debits_posted + 5 WHERE account_id = $1",
              ids["m0"])
    await sql(pool, "UPDATE accounts SET credits_posted = credits_posted + 5"
                    " WHERE account_id = $1", ids["m1"])
    report = await verify.verify(pool, ids["a"])
    assert all(t.balanced for t in report.totals) and report.chain_ok
    assert not report.ok
    assert report.mismatched_account_ids == sorted([ids["m0"], ids["m1"]])


async def test_another_platforms_tampering_is_not_this_platforms_mismatch(env):
    pool, ids = env
    await sql(pool, "UPDATE accounts SET credits_posted = credits_posted + 1"
                    " WHERE account_id = $1", ids["b0"])
    report = await verify.verify(pool, ids["a"])
    assert report.ok and report.mismatched_account_ids == []
    assert (await verify.verify(pool, ids["b"])).mismatched_account_ids == [ids["b0"]]
    system = await verify.verify(pool, None)  # the operator's sees every platform's
    assert not system.ok and system.chain_ok
    assert system.mismatched_account_ids == [ids["b0"]]
    assert [(t.currency_code, t.credits_posted, t.balanced) for t in system.totals] == [
        ("CNY", 1_601, False), ("USD", 777, True)]


async def test_pending_remainder_and_state_must_agree_with_posts_and_voids(env):
    pool, ids = env
    await sql(pool, "UPDATE transfers SET pending_remaining = 199 WHERE transfer_id = $1",
              ids["hold"])
    report = await verify.verify(pool, ids["a"])
    assert not report.ok and report.mismatched_account_ids == [ids["m0"]]


@pytest.mark.parametrize("remaining,state", [(0, 1), (200, 2), (200, 3)])
async def test_pending_state_open_exactly_when_something_remains(env, remaining, state):
    pool, ids = env
    await sql(pool, "UPDATE transfers SET pending_remaining = $2, pending_state = $3"
                    " WHERE transfer_id = $1", ids["hold"], remaining, state)
    report = await verify.verify(pool, ids["a"])
    assert ids["m0"] in report.mismatched_account_ids and not report.ok


async def test_mismatches_are_listed_up_to_the_maximum_smallest_ids_first(env):
    pool, ids = env
    async with pool.acquire() as conn:
        extra = [await store.insert_account(conn, ids["a"], f"x{i}", AccountKind.MERCHANT, _E,
                                            "CNY", False, "")
                 for i in range(verify.MISMATCHES_LISTED_MAX + 5)]
        await conn.execute("UPDATE accounts SET credits_posted = 1 WHERE account_id = ANY($1)",
                           extra)
    report = await verify.verify(pool, ids["a"])
    assert report.mismatched_account_ids == sorted(extra)[:verify.MISMATCHES_LISTED_MAX]
    assert report.account_count == 6 + len(extra)


async def _chain_only(pool, ids, first_bad: int) -> verify.Report:
    """Platform a's verification and the whole system's (`clearing verify --all`) both see
    the broken chain, and nothing else; only a posts, so they count the same."""
    reports = [await verify.verify(pool, ids["a"]), await verify.verify(pool, None)]
    for report in reports:
        assert report.chain_ok is False and not report.ok
        assert report.first_bad_batch_seq == first_bad
        assert report.mismatched_account_ids == [] and all(t.balanced for t in report.totals)
    mine, system = reports
    assert (mine.batch_count, mine.transfer_count) == (system.batch_count,
                                                       system.transfer_count)
    assert (mine.account_count, system.account_count) == (6, 8)
    return mine


@pytest.mark.parametrize("k", [0, 3, 6])
async def test_an_edited_batch_hash_is_the_first_bad_batch(env, k):
    pool, ids = env
    b = (await batches(pool))[k]
    await sql(pool, "UPDATE journal_batches SET hash = $1 WHERE seq = $2", bytes(32), b["seq"])
    await _chain_only(pool, ids, b["seq"])


async def test_the_first_of_two_bad_batches_is_reported(env):
    pool, ids = env
    bs = await batches(pool)
    for k in (5, 2):
        await sql(pool, "UPDATE journal_batches SET rows_digest = $1 WHERE seq = $2",
                  bytes(32), bs[k]["seq"])
    report = await _chain_only(pool, ids, bs[2]["seq"])
    assert report.batch_count == 7


async def test_an_edited_row_breaks_its_own_batch(env):
    pool, ids = env
    bs = await batches(pool)
    await sql(pool, "UPDATE transfers SET memo = 'x' WHERE transfer_id / $1 = $2", BATCH_SPAN,
              bs[4]["batch_id"])
    await _chain_only(pool, ids, bs[4]["seq"])


async def test_a_gap_in_the_sequence_is_reported(env):
    pool, ids = env
    bs = await batches(pool)
    await sql(pool, "UPDATE journal_batches SET seq = seq + 1 WHERE seq = $1", bs[-1]["seq"])
    await sql(pool, "UPDATE journal_head SET seq = seq + 1")
    await _chain_only(pool, ids, bs[-1]["seq"] + 1)


async def test_a_batch_record_removed_from_the_middle_is_reported(env):
    pool, ids = env
    bs = await batches(pool)
    await sql(pool, "DELETE FROM journal_batches WHERE seq = $1", bs[3]["seq"])
    # the next batch sits at position 4 with seq 5, and does not chain from batch 3
    for scope in (ids["a"], None):
        report = await verify.verify(pool, scope)
        assert report.chain_ok is False and report.first_bad_batch_seq == bs[4]["seq"]


@pytest.mark.parametrize("change", ["hash = $1", "seq = seq + 1", "seq = seq - 1"])
async def test_an_edited_head_is_reported(env, change):
    pool, ids = env
    args = (bytes(32),) if "$1" in change else ()
    await sql(pool, f"UPDATE journal_head SET {change}", *args)
    await _chain_only(pool, ids, 0)


async def test_a_consistently_truncated_tail_leaves_rows_outside_the_chain(env):
    pool, ids = env
    bs = await batches(pool)
    await sql(pool, "DELETE FROM journal_batches WHERE seq = $1", bs[-1]["seq"])
    await sql(pool, "UPDATE journal_head SET seq = $1, hash = $2", bs[-2]["seq"], bs[-2]["hash"])
    report = await _chain_only(pool, ids, 0)
    assert report.batch_count == 6 and report.transfer_count == 7


async def test_a_fully_truncated_tail_breaks_the_balances(env):
    pool, ids = env
    bs = await batches(pool)
    # the last batch (the USD transfer) gone with its rows and the head moved back: the
    # chain is sound, but the balances still count the transfer
    await sql(pool, "DELETE FROM transfers WHERE transfer_id / $1 = $2", BATCH_SPAN,
              bs[6]["batch_id"])
    await sql(pool, "DELETE FROM journal_batches WHERE seq = $1", bs[6]["seq"])
    await sql(pool, "UPDATE journal_head SET seq = $1, hash = $2", bs[5]["seq"], bs[5]["hash"])
    report = await verify.verify(pool, ids["a"])
    assert report.chain_ok and not report.ok
    assert report.mismatched_account_ids == sorted([ids["cu"], ids["u0"]])


async def test_rows_outside_any_chained_batch_are_reported(env):
    pool, ids = env
    last = (await batches(pool))[-1]
    batch_id = last["batch_id"] + 3
    await sql(pool, "INSERT INTO transfers (transfer_id, platform_id, batch_id, request_id,"
                    " debit_account_id, credit_account_id, amount, currency_code, mode,"
                    " created_at) VALUES ($1, $2, $3, 'forged', $4, $5, 1, 'CNY', 1, now())",
              batch_id * BATCH_SPAN, ids["a"], batch_id, ids["c"], ids["m2"])
    await sql(pool, "UPDATE accounts SET debits_posted = debits_posted + 1 WHERE account_id = $1",
              ids["c"])
    await sql(pool, "UPDATE accounts SET credits_posted = credits_posted + 1"
                    " WHERE account_id = $1", ids["m2"])
    report = await _chain_only(pool, ids, 0)
    assert report.transfer_count == 8 and report.batch_count == 7


async def test_a_batch_whose_rows_are_all_gone_is_reported(env):
    pool, ids = env
    bs = await batches(pool)
    # the USD transfer's rows deleted, its batch record and the balances left: only the
    # batch's recorded row count can tell
    await sql(pool, "DELETE FROM transfers WHERE transfer_id / $1 = $2", BATCH_SPAN,
              bs[6]["batch_id"])
    mine = await verify.verify(pool, ids["a"])
    system = await verify.verify(pool, None)
    for report in (mine, system):
        assert report.chain_ok is False and report.first_bad_batch_seq == bs[6]["seq"]
        assert report.transfer_count == 6
    assert mine.batch_count == 6  # a's batches: those holding a row of a's
    assert system.batch_count == 7  # every chained batch, the empty one too


async def test_a_batch_of_two_rows_is_one_batch(env, pg_admin_dsn):
    pool, ids = env
    writer = LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock())
    writer.start()
    try:
        rid = secrets.token_hex(6)
        await writer.submit(Posting(ids["a"], rid, "Transfer", rid.encode(), (
            Leg(ids["c"], ids["m0"], 5, "CNY", Mode.IMMEDIATE),
            Leg(ids["c"], ids["m1"], 6, "CNY", Mode.IMMEDIATE))))
    finally:
        await writer.drain_and_stop()
    for scope in (ids["a"], None):
        report = await verify.verify(pool, scope)
        assert report.ok, report
        assert (report.batch_count, report.transfer_count) == (8, 9)
    bs = await batches(pool)
    await sql(pool, "UPDATE transfers SET memo = 'x' WHERE transfer_id = $1",
              bs[-1]["batch_id"] * BATCH_SPAN + 1)  # the batch's second row
    for scope in (ids["a"], None):
        report = await verify.verify(pool, scope)
        assert report.chain_ok is False and report.first_bad_batch_seq == bs[-1]["seq"]


class _PausedBeforeHead(asyncpg.Connection):
    """A connection that, before reading the journal head (verify's last look at the chain),
    says so and waits to be let go: the test commits in between."""

    async def fetchrow(self, query, *args, **kwargs):
        if "journal_head" in query:
            self.reached.set()
            await self.go.wait()
        return await super().fetchrow(query, *args, **kwargs)


async def test_a_commit_during_a_verification_is_not_seen(env, pg_admin_dsn):
    """The whole verification reads one snapshot: a batch committed while it runs (after it
    read the balances, the rows and the chain's links, before the head) is not half seen."""
    import asyncio
    pool, ids = env
    conn = await asyncpg.connect(_replace_db(pg_admin_dsn, await pool.fetchval(
        "SELECT current_database()")), connection_class=_PausedBeforeHead)
    conn.reached, conn.go = asyncio.Event(), asyncio.Event()
    writer = LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock())
    writer.start()
    try:
        running = asyncio.create_task(verify.verify_on(conn, ids["a"]))
        await asyncio.wait_for(conn.reached.wait(), 10)
        rid = secrets.token_hex(6)
        await writer.submit(Posting(ids["a"], rid, "Transfer", rid.encode(),
                                    (Leg(ids["c"], ids["m0"], 5, "CNY", Mode.IMMEDIATE),)))
        conn.go.set()
        report = await asyncio.wait_for(running, 10)
    finally:
        await writer.drain_and_stop()
        await conn.close()
    assert report.ok and report.chain_ok
    assert (report.batch_count, report.transfer_count) == (7, 7)  # as before the commit
    assert [(t.currency_code, t.debits_posted) for t in report.totals] == [
        ("CNY", 1_600), ("USD", 777)]
    after = await verify.verify(pool, ids["a"])  # the next one sees the commit
    assert after.ok and (after.batch_count, after.transfer_count) == (8, 8)
