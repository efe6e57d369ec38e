"""The group-commit writer on a real PostgreSQL: limits, isolation of failures, batching."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import FailedPrecondition, ResourceExhausted, Unavailable
from clearing.ledger.model import Leg, Mode, Posting
from clearing.ledger import store, verify
from clearing.ledger.writer import LedgerWriter
from tests.unit.ledger.conftest import posting as _posting


async def test_full_queue_answers_resource_exhausted(pool, accounts, started):
    pid, custodial, (m0, *_) = accounts
    settings = WriterSettings(batch_size_max=1, flush_ms_max=0, queue_max=5)
    writer = LedgerWriter(pool, settings, Clock())
    started(writer)
    blocker = await pool.acquire()
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", m0)
    try:
        # the flusher takes one batch per pipeline slot, each waiting on the row lock
        firsts = [asyncio.create_task(writer.submit(_posting(pid, custodial, m0, 1)))
                  for _ in range(settings.pipeline)]
        await asyncio.sleep(0.2)
        queued = [asyncio.create_task(writer.submit(_posting(pid, custodial, m0, 1)))
                  for _ in range(5)]
        await asyncio.sleep(0.05)
        with pytest.raises(ResourceExhausted) as err:
            await writer.submit(_posting(pid, custodial, m0, 1))
        assert err.value.reason == "WRITER_QUEUE_FULL"
    finally:
        await tx.rollback()
        await pool.release(blocker)
    done = await asyncio.gather(*firsts, *queued)
    assert len(done) == settings.pipeline + 5
    await writer.drain_and_stop()
    async with pool.acquire() as conn:
        acct = await store.get_account(conn, pid, account_id=m0)
    assert acct.balance.posted == settings.pipeline + 5


async def test_a_failing_posting_fails_alone_in_its_batch(pool, accounts, started):
    pid, custodial, (m0, m1, m2) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=50,
                                               queue_max=100), Clock())
    started(writer)
    results = await asyncio.gather(
        writer.submit(_posting(pid, custodial, m0, 100)),
        writer.submit(_posting(pid, m1, m2, 1)),          # m1 has nothing
        writer.submit(_posting(pid, custodial, m2, 50)),
        return_exceptions=True)
    await writer.drain_and_stop()
    assert isinstance(results[1], FailedPrecondition)
    assert results[1].reason == "INSUFFICIENT_FUNDS"
    ok = [r for r in results if isinstance(r, list)]
    assert len(ok) == 2
    # all three were in one batch: the two good ones share a journal batch
    assert ok[0][0].transfer_id // 65536 == ok[1][0].transfer_id // 65536
    report = await verify.verify(pool, pid)
    assert report.ok


async def test_a_later_posting_sees_the_earlier_one_in_the_same_batch(pool, accounts, started):
    pid, custodial, (m0, m1, _) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=50,
                                               queue_max=100), Clock())
    started(writer)
    fund, spend, overspend = await asyncio.gather(
        writer.submit(_posting(pid, custodial, m0, 10)),
        writer.submit(_posting(pid, m0, m1, 10)),
        writer.submit(_posting(pid, m0, m1, 1)),
        return_exceptions=True)
    await writer.drain_and_stop()
    assert isinstance(fund, list) and isinstance(spend, list)
    assert isinstance(overspend, FailedPrecondition)


async def test_stopped_writer_refuses_with_unavailable(pool, accounts, started):
    pid, custodial, (m0, *_) = accounts
    writer = LedgerWriter(pool, WriterSettings(), Clock())
    started(writer)
    await writer.submit(_posting(pid, custodial, m0, 1))
    await writer.drain_and_stop()
    with pytest.raises(Unavailable):
        await writer.submit(_posting(pid, custodial, m0, 1))


async def test_drain_commits_everything_queued(pool, accounts, started):
    pid, custodial, (m0, *_) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=10, flush_ms_max=1,
                                               queue_max=1000), Clock())
    started(writer)
    tasks = [asyncio.create_task(writer.submit(_posting(pid, custodial, m0, 1)))
             for _ in range(300)]
    await asyncio.sleep(0)
    await writer.drain_and_stop()
    assert all(t.done() and not t.exception() for t in tasks)
    async with pool.acquire() as conn:
        assert (await store.get_account(conn, pid, account_id=m0)).balance.posted == 300


async def test_multi_leg_posting_is_all_or_nothing(pool, accounts, started):
    pid, custodial, (m0, m1, m2) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=20,
                                               queue_max=100), Clock())
    started(writer)
    legs_ok = (Leg(custodial, m0, 70, "CNY", Mode.IMMEDIATE),
               Leg(custodial, m1, 30, "CNY", Mode.PENDING))
    legs_bad = (Leg(custodial, m2, 5, "CNY", Mode.IMMEDIATE),
                Leg(custodial, m2, 5, "CNY", Mode.PENDING),
                Leg(m1, m2, 1, "CNY", Mode.IMMEDIATE))       # m1 has no posted funds
    ok, bad = await asyncio.gather(
        writer.submit(Posting(pid, "ok", "Split", b"1", legs_ok)),
        writer.submit(Posting(pid, "bad", "Split", b"2", legs_bad)),
        return_exceptions=True)
    assert [r.amount_minor for r in ok] == [70, 30]
    assert isinstance(bad, FailedPrecondition)
    # a posting can hold and then post in one go; the batch after sees the new pending
    hold = ok[1]
    posted = await writer.submit(Posting(pid, "post", "Release", b"3", (
        Leg(0, 0, 10, "", Mode.POST_PENDING, pending_id=hold.transfer_id),
        Leg(0, 0, 20, "", Mode.POST_PENDING, pending_id=hold.transfer_id))))
    assert [r.amount_minor for r in posted] == [10, 20]
    await writer.drain_and_stop()
    async with pool.acquire() as conn:
        b2 = (await store.get_account(conn, pid, account_id=m2)).balance
        b1 = (await store.get_account(conn, pid, account_id=m1)).balance
    assert (b2.posted, b2.credits_pending) == (0, 0)
    assert (b1.posted, b1.credits_pending) == (30, 0)
    row = await pool.fetchrow("SELECT pending_remaining, pending_state FROM transfers"
                              " WHERE transfer_id = $1", hold.transfer_id)
    assert tuple(row) == (0, 2)
    assert (await verify.verify(pool, pid)).ok


async def test_pending_held_and_failed_in_one_posting_leaves_nothing(pool, accounts, started):
    pid, custodial, (m0, m1, _) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=20,
                                               queue_max=100), Clock())
    started(writer)
    # leg 0 holds, leg 1 fails: the hold must vanish, and a later posting in the same batch
    # cannot post against it
    failed, later = await asyncio.gather(
        writer.submit(Posting(pid, "f", "Split", b"f", (
            Leg(custodial, m0, 50, "CNY", Mode.PENDING),
            Leg(m1, m0, 1, "CNY", Mode.IMMEDIATE)))),
        writer.submit(_posting(pid, custodial, m1, 9)),
        return_exceptions=True)
    await writer.drain_and_stop()
    assert isinstance(failed, FailedPrecondition) and isinstance(later, list)
    count = await pool.fetchval("SELECT count(*) FROM transfers WHERE platform_id = $1"
                                " AND request_id = 'f'", pid)
    assert count == 0
    assert (await verify.verify(pool, pid)).ok


async def test_claims_are_taken_once_across_and_within_batches(pool, accounts, started):
    from clearing.errors import AlreadyExists
    from clearing.ledger.model import Claim
    pid, custodial, (m0, m1, _) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=20,
                                               queue_max=100), Clock())
    started(writer)

    def split(rid: str, order: str, debit: int = custodial) -> Posting:
        return Posting(pid, rid, "Split", rid.encode(), (Leg(debit, m0, 5, "CNY", Mode.IMMEDIATE),),
                       claims=(Claim.of("order", order, "ORDER_ALREADY_SPLIT", "split once"),))

    # in one batch: a failing posting does not take the claim; the next one does; a third
    # with the same order is refused
    failed, first, second = await asyncio.gather(
        writer.submit(split("a", "ORD1", debit=m1)),   # m1 has no funds
        writer.submit(split("b", "ORD1")),
        writer.submit(split("c", "ORD1")), return_exceptions=True)
    assert isinstance(failed, FailedPrecondition)
    assert isinstance(first, list)
    assert isinstance(second, AlreadyExists) and second.reason == "ORDER_ALREADY_SPLIT"
    # a later batch: refused too; a replay of "b" still answers its first result
    with pytest.raises(AlreadyExists):
        await writer.submit(split("d", "ORD1"))
    assert [r.transfer_id for r in await writer.submit(split("b", "ORD1"))] == \
        [r.transfer_id for r in first]
    await writer.drain_and_stop()
    async with pool.acquire() as conn:
        assert (await store.get_account(conn, pid, account_id=m0)).balance.posted == 5


async def test_sink_writes_attachments_in_the_same_transaction(pool, accounts, started):
    pid, custodial, (m0, m1, _) = accounts
    table = f"sink_{secrets.token_hex(4)}"
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE TABLE {table} (note text, transfer_id bigint)")

    class Sink:
        calls = 0

        async def write(self, conn, committed):
            Sink.calls += 1
            await conn.execute(
                f"INSERT INTO {table} SELECT * FROM unnest($1::text[], $2::bigint[])",
                [p.attachment for p, _ in committed], [r[0].transfer_id for _, r in committed])

    writer = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=20,
                                               queue_max=100), Clock(), sinks={"notes": Sink()})
    started(writer)

    def posting(rid: str, debit: int, note: str) -> Posting:
        return Posting(pid, rid, "T", rid.encode(), (Leg(debit, m0, 1, "CNY", Mode.IMMEDIATE),),
                       sink="notes", attachment=note)

    ok1, bad, ok2 = await asyncio.gather(
        writer.submit(posting("x", custodial, "one")), writer.submit(posting("y", m1, "lost")),
        writer.submit(posting("z", custodial, "two")), return_exceptions=True)
    await writer.drain_and_stop()
    assert isinstance(bad, FailedPrecondition)
    rows = await pool.fetch(f"SELECT note, transfer_id FROM {table} ORDER BY note")
    assert [(r["note"], r["transfer_id"]) for r in rows] == [
        ("one", ok1[0].transfer_id), ("two", ok2[0].transfer_id)]
    assert Sink.calls == 1  # one statement for the whole batch
    await pool.execute(f"DROP TABLE {table}")
