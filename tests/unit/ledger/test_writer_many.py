"""LedgerWriter.submit_many on a real PostgreSQL: each posting answered as if submitted
alone, in order; all or none queued; a group spread over several batches."""

from __future__ import annotations

import pytest

from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import AlreadyExists, FailedPrecondition, ResourceExhausted, Unavailable
from clearing.ledger import store, verify
from clearing.ledger.batch_sql import bool_array, bytea_array, int_array, text_array
from clearing.ledger.writer import LedgerWriter

from tests.unit.ledger.conftest import posting as _posting


async def test_each_posting_gets_its_own_outcome_in_order(pool, accounts, started):
    pid, custodial, (m0, m1, m2) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=5,
                                               queue_max=100), Clock())
    started(writer)
    first = _posting(pid, custodial, m0, 100)
    outcomes = await writer.submit_many([
        first,
        _posting(pid, m1, m2, 1),            # m1 has nothing: fails alone
        _posting(pid, m0, m2, 30),           # sees the first posting of the group
        _posting(pid, custodial, m1, 7),
        first,                               # same request id, same payload: its result
    ])
    await writer.drain_and_stop()
    assert [type(o).__name__ for o in outcomes] == ["list", "FailedPrecondition", "list",
                                                   "list", "list"]
    assert outcomes[1].reason == "INSUFFICIENT_FUNDS"
    assert [r.amount_minor for r in outcomes[0]] == [100]
    assert [r.amount_minor for r in outcomes[2]] == [30]
    assert [r.amount_minor for r in outcomes[3]] == [7]
    assert outcomes[4][0].transfer_id == outcomes[0][0].transfer_id
    async with pool.acquire() as conn:
        balances = [(await store.get_account(conn, pid, account_id=a)).balance.posted
                    for a in (m0, m1, m2)]
    assert balances == [70, 7, 30]
    assert (await verify.verify(pool, pid)).ok


async def test_a_replayed_request_id_with_another_payload_is_refused(pool, accounts, started):
    pid, custodial, (m0, *_) = accounts
    writer = LedgerWriter(pool, WriterSettings(flush_ms_max=1), Clock())
    started(writer)
    done = await writer.submit(_posting(pid, custodial, m0, 5, request_id="same-rid"))
    outcomes = await writer.submit_many([_posting(pid, custodial, m0, 5, request_id="same-rid"),
                                         _posting(pid, custodial, m0, 6, request_id="same-rid")])
    await writer.drain_and_stop()
    assert outcomes[0][0].transfer_id == done[0].transfer_id
    assert isinstance(outcomes[1], AlreadyExists)
    assert outcomes[1].reason == "REQUEST_ID_REUSED"


async def test_a_group_larger_than_a_batch_spans_batches(pool, accounts, started):
    pid, custodial, (m0, *_) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=7, flush_ms_max=1,
                                               queue_max=100), Clock())
    started(writer)
    outcomes = await writer.submit_many([_posting(pid, custodial, m0, i + 1)
                                         for i in range(30)])
    await writer.drain_and_stop()
    assert [o[0].amount_minor for o in outcomes] == list(range(1, 31))
    assert len({o[0].transfer_id // 65536 for o in outcomes}) >= 5
    async with pool.acquire() as conn:
        assert (await store.get_account(conn, pid, account_id=m0)).balance.posted == 465


async def test_all_or_none_is_queued(pool, accounts, started):
    pid, custodial, (m0, *_) = accounts
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=10, flush_ms_max=1,
                                               queue_max=5), Clock())
    started(writer)
    with pytest.raises(ResourceExhausted) as err:
        await writer.submit_many([_posting(pid, custodial, m0, 1) for _ in range(6)])
    assert err.value.reason == "WRITER_QUEUE_FULL"
    assert writer.queue_depth == 0
    assert await writer.submit_many([]) == []
    assert len(await writer.submit_many([_posting(pid, custodial, m0, 1)
                                         for _ in range(5)])) == 5
    await writer.drain_and_stop()
    with pytest.raises(Unavailable):
        await writer.submit_many([_posting(pid, custodial, m0, 1)])
    async with pool.acquire() as conn:
        assert (await store.get_account(conn, pid, account_id=m0)).balance.posted == 5


async def test_insufficient_funds_is_answered_not_raised(pool, accounts, started):
    pid, _, (m0, m1, _) = accounts
    writer = LedgerWriter(pool, WriterSettings(flush_ms_max=1), Clock())
    started(writer)
    outcomes = await writer.submit_many([_posting(pid, m0, m1, 1)])
    await writer.drain_and_stop()
    assert isinstance(outcomes[0], FailedPrecondition)


async def test_array_literals_round_trip_through_postgresql(pool):
    values = [0, -1, 1, 2**63 - 1, -(2**63)]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT $1::text::bigint[]", int_array(values)) == values
        assert await conn.fetchval("SELECT $1::text::bigint[]", int_array([])) == []
        assert await conn.fetchval("SELECT $1::text::bool[]",
                                   bool_array([True, False])) == [True, False]
        texts = ["", "NULL", "null", "a,b", "{x}", " padded ", 'say "hi"', "back\\slash",
                 '\\"', "tab\there\nline", "memo ✓ 分账", "'quoted'", "ROW(1)"]
        for case in (texts, texts[:1], ["plain", "ORD-1"], [], [None, 'a"b', None, ""]):
            assert await conn.fetchval("SELECT $1::text::text[]", text_array(case)) == case
        blobs = [b"", b"\x00\xff\\\"{},", bytes(range(256)), None, b"R"]
        for case in (blobs, [b for b in blobs if b is not None], [None], []):
            assert await conn.fetchval("SELECT $1::text::bytea[]", bytea_array(case)) == case
