"""How the writer groups postings and its life cycle, from its contract: a batch is flushed
`flush_ms_max` after its first posting arrived (what arrived meanwhile joins it), or at once
when `batch_size_max` postings are waiting, and never holds more than `batch_size_max`
postings; the queue holds at most `queue_max` (`has_room` says whether n more fit now);
a writer drains what is queued when it stops; and replays of records the writer did not
make itself (a recorded refusal without its encoded form, an unfinished request) answer
the rule of `clearing.idempotency`."""

from __future__ import annotations

import asyncio
import time

import pytest

from clearing import metrics
from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import AlreadyExists, FailedPrecondition, InvariantViolation, NotFound
from clearing.ledger import store
from clearing.ledger.writer import LedgerWriter
from tests.unit.ledger.conftest import posting

SPAN = 65536  # a transfer id is its batch id * 65536 + its place in the batch


def _batches(outcomes) -> list[int]:
    """The batch of each posting's first record, numbered 0, 1, ... in order of first use."""
    seen: dict[int, int] = {}
    return [seen.setdefault(o[0].transfer_id // SPAN, len(seen)) for o in outcomes]


async def test_a_batch_takes_at_most_batch_size_max_postings(pool, accounts, started):
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(batch_size_max=3, flush_ms_max=50,
                                                       queue_max=100), Clock()))
    sizes = metrics.WRITER_BATCH_SIZE._sum.get()
    seconds = metrics.WRITER_FLUSH_SECONDS._sum.get()
    outcomes = await writer.submit_many([posting(pid, c, m0, 1) for _ in range(7)])
    assert _batches(outcomes) == [0, 0, 0, 1, 1, 1, 2]
    # the metrics see each flush: its postings, and the time it took
    # (at least: the metric is the process's, and a server of another test module in this
    # process may flush meanwhile)
    assert metrics.WRITER_BATCH_SIZE._sum.get() >= sizes + 7
    assert metrics.WRITER_FLUSH_SECONDS._sum.get() > seconds


async def test_a_full_batch_is_flushed_at_once(pool, accounts, started):
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(batch_size_max=2, flush_ms_max=5000,
                                                       queue_max=100), Clock()))
    began = time.monotonic()
    outcomes = await writer.submit_many([posting(pid, c, m0, 1) for _ in range(2)])
    assert time.monotonic() - began < 2.5  # not the 5 s a batch may wait to fill
    assert _batches(outcomes) == [0, 0]


async def test_a_posting_alone_waits_flush_ms_max_for_company(pool, accounts, started):
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(batch_size_max=2, flush_ms_max=300,
                                                       queue_max=100), Clock()))
    began = time.monotonic()
    await writer.submit(posting(pid, c, m0, 1))
    assert time.monotonic() - began >= 0.3


async def test_what_arrives_while_a_batch_fills_joins_it(pool, accounts, started):
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(batch_size_max=10, flush_ms_max=300,
                                                       queue_max=100), Clock()))
    first = asyncio.create_task(writer.submit(posting(pid, c, m0, 1)))
    await asyncio.sleep(0.05)
    later = asyncio.create_task(writer.submit(posting(pid, c, m0, 2)))
    outcomes = await asyncio.gather(first, later)
    assert _batches(outcomes) == [0, 0]


async def test_has_room_counts_the_queue_up_to_queue_max(pool, accounts, started):
    pid, c, (m0, *_) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=1, flush_ms_max=0, queue_max=3,
                                               pipeline=1),
                          Clock())
    assert not writer.has_room(1)  # not started: accepts nothing
    await writer.drain_and_stop()  # stopping a writer never started does nothing
    started(writer)
    assert writer.has_room(3) and not writer.has_room(4)
    blocker = await pool.acquire()
    tx = blocker.transaction()
    await tx.start()
    await blocker.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE", m0)
    try:
        first = asyncio.create_task(writer.submit(posting(pid, c, m0, 1)))
        await asyncio.sleep(0.2)  # the flusher took it and waits on the lock
        queued = asyncio.create_task(writer.submit(posting(pid, c, m0, 1)))
        await asyncio.sleep(0.05)
        assert writer.queue_depth == 1
        assert writer.has_room(2) and not writer.has_room(3)
    finally:
        await tx.rollback()
        await pool.release(blocker)
    await asyncio.gather(first, queued)
    await writer.drain_and_stop()
    assert not writer.has_room(1)


async def test_a_writer_starts_once(pool, started):
    writer = started(LedgerWriter(pool, WriterSettings(), Clock()))
    with pytest.raises(InvariantViolation) as err:
        writer.start()
    assert str(err.value) == "writer started twice"
    settings = WriterSettings()
    object.__setattr__(settings, "batch_size_max", 0)  # below the settings' own bound
    with pytest.raises(InvariantViolation) as err:
        LedgerWriter(pool, settings, Clock())
    assert str(err.value) == "batch_size_max must be >= 1"


async def _record(pool, pid: int, rid: str, **columns) -> None:
    names = ", ".join(columns)
    marks = ", ".join(f"${i + 3}" for i in range(len(columns)))
    await pool.execute(f"INSERT INTO requests (platform_id, request_id, {names})"
                       f" VALUES ($1, $2, {marks})", pid, rid, *columns.values())


async def test_a_refusal_recorded_without_its_encoded_form_is_replayed(pool, accounts,
                                                                       started):
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))
    for rid, code, cls in (("old", "FAILED_PRECONDITION", FailedPrecondition),
                           ("old2", "NOT_FOUND", NotFound)):
        p = posting(pid, c, m0, 5, rid)
        await _record(pool, pid, rid, method=p.method, payload_hash=p.payload_hash, ok=False,
                      error_code=code, error_reason="SOME_REASON",
                      error_message=f"the first answer of {rid}")
        with pytest.raises(cls) as err:
            await writer.submit(p)
        assert (err.value.reason, err.value.message) == ("SOME_REASON",
                                                          f"the first answer of {rid}")
    async with pool.acquire() as conn:
        assert (await store.get_account(conn, pid, account_id=m0)).balance.posted == 0


async def test_a_request_id_bound_to_an_unfinished_request_is_reused(pool, accounts, started):
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))
    p = posting(pid, c, m0, 5, "unfinished")
    await _record(pool, pid, "unfinished", method=p.method, payload_hash=p.payload_hash,
                  ok=True)
    with pytest.raises(AlreadyExists) as err:
        await writer.submit(p)
    assert err.value.reason == "REQUEST_ID_REUSED"
    # another method with the same payload: reused too
    q = posting(pid, c, m0, 5, "elsewhere")
    await _record(pool, pid, "elsewhere", method="Split", payload_hash=q.payload_hash, ok=True)
    with pytest.raises(AlreadyExists) as err:
        await writer.submit(q)
    assert err.value.reason == "REQUEST_ID_REUSED"
    async with pool.acquire() as conn:
        assert (await store.get_account(conn, pid, account_id=m0)).balance.posted == 0


async def test_postings_share_a_batch_up_to_batch_span_legs(pool, accounts, started):
    """A batch's journal rows are numbered within BATCH_SPAN: postings join it while their
    legs fit, exactly BATCH_SPAN in all, and the next posting goes to the next batch."""
    from clearing.ledger.model import Leg, Mode, Posting
    from clearing.limits import BATCH_SPAN
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))
    leg = Leg(c, m0, 1, "CNY", Mode.IMMEDIATE)
    half = BATCH_SPAN // 2
    outcomes = await writer.submit_many([
        Posting(pid, rid, "Transfer", rid.encode(), (leg,) * n)
        for rid, n in (("h1", half), ("h2", BATCH_SPAN - half), ("next", 1))])
    assert [len(o) for o in outcomes] == [half, BATCH_SPAN - half, 1]
    assert _batches(outcomes) == [0, 0, 1]
    assert outcomes[1][-1].transfer_id % SPAN == BATCH_SPAN - 1  # the batch's last row
    async with pool.acquire() as conn:
        assert (await store.get_account(conn, pid, account_id=m0)).balance.posted == \
            BATCH_SPAN + 1


async def test_a_leg_from_and_to_one_account_is_refused_before_queueing(pool, accounts,
                                                                         started):
    from clearing.ledger.model import Leg, Mode, Posting
    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))
    for mode in (Mode.IMMEDIATE, Mode.PENDING):
        with pytest.raises(InvariantViolation) as err:
            await writer.submit(Posting(pid, "same", "Transfer", b"s",
                                        (Leg(m0, m0, 1, "CNY", mode),)))
        assert str(err.value) == "a leg debits and credits the same account"
    assert writer.queue_depth == 0


async def test_a_failing_sink_fails_its_batch_and_the_writer_goes_on(pool, accounts, started,
                                                                     caplog):
    """A sink must not fail; if one does (a bug), every posting of the batch is answered
    INTERNAL (InvariantViolation), nothing of the batch is committed, the writer lives."""
    import logging

    from clearing.ledger.model import Leg, Mode, Posting

    class Broken:
        async def write(self, conn, committed):
            raise RuntimeError("a bug in a sink")

    pid, c, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=20), Clock(),
                                  sinks={"broken": Broken()}))
    caplog.set_level(logging.ERROR, "clearing.ledger.writer")
    outcomes = await writer.submit_many([
        Posting(pid, "s1", "T", b"1", (Leg(c, m0, 1, "CNY", Mode.IMMEDIATE),), sink="broken"),
        posting(pid, c, m0, 2, "plain")])
    for outcome in outcomes:
        assert isinstance(outcome, InvariantViolation)
        assert str(outcome) == "ledger writer crashed"
    assert [r.getMessage() for r in caplog.records] == ["ledger writer flush crashed"]
    assert await pool.fetchval("SELECT count(*) FROM requests WHERE platform_id = $1", pid) == 0
    await writer.submit(posting(pid, c, m0, 3))
    async with pool.acquire() as conn:
        assert (await store.get_account(conn, pid, account_id=m0)).balance.posted == 3
