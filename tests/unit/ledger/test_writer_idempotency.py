"""The writer's part of the one idempotency rule (clearing.idempotency): the first response
(`Posting.respond`) and recorded refusals go in the batch's transaction, with the postings;
retries answer them, in the same batch and in later ones; INVALID_ARGUMENT leaves no
trace."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import FailedPrecondition, InvalidArgument
from clearing.ledger.model import Leg, Mode, Replay
from clearing.ledger.writer import LedgerWriter
from tests.unit.ledger.conftest import posting as _posting


def _writer(pool) -> LedgerWriter:
    writer = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=30,
                                               queue_max=100), Clock())
    writer.start()
    return writer


def _responding(p, calls: list):
    def respond(records) -> bytes:
        calls.append(records)
        return f"first:{records[0].transfer_id}:{records[0].amount_minor}".encode()
    return dataclasses.replace(p, respond=respond)


async def _row(pool, pid: int, request_id: str):
    return await pool.fetchrow("SELECT ok, response, error FROM requests"
                               " WHERE platform_id = $1 AND request_id = $2", pid, request_id)


async def test_first_response_is_recorded_with_the_postings_and_replayed(pool, accounts):
    pid, custodial, (m0, *_) = accounts
    writer = _writer(pool)
    try:
        calls: list = []
        first = _responding(_posting(pid, custodial, m0, 40), calls)
        # the same request twice in one batch: one posting, the second answers the first's
        # response
        fresh, follower = await asyncio.gather(writer.submit(first), writer.submit(first))
        assert isinstance(fresh, list) and len(calls) == 1
        expected = f"first:{fresh[0].transfer_id}:40".encode()
        assert follower == Replay(expected)
        row = await _row(pool, pid, first.request_id)
        assert (row["ok"], bytes(row["response"]), row["error"]) == (True, expected, "")
        # a later batch: the recorded bytes, and respond is not called again
        assert await writer.submit(first) == Replay(expected)
        assert len(calls) == 1
    finally:
        await writer.drain_and_stop()
    balance = await pool.fetchval("SELECT credits_posted FROM accounts WHERE account_id = $1",
                                  m0)
    assert balance == 40


async def test_a_refusal_is_recorded_and_replayed_after_its_cause_is_gone(pool, accounts):
    pid, custodial, (m0, m1, _) = accounts
    writer = _writer(pool)
    try:
        spend = _responding(_posting(pid, m0, m1, 25), [])
        with pytest.raises(FailedPrecondition) as refused:  # m0 has nothing
            await writer.submit(spend)
        first = refused.value
        assert first.reason == "INSUFFICIENT_FUNDS"
        row = await _row(pool, pid, spend.request_id)
        assert row["ok"] is False and '"INSUFFICIENT_FUNDS"' in row["error"]
        await writer.submit(_posting(pid, custodial, m0, 25))  # the cause is gone
        with pytest.raises(FailedPrecondition) as refused:  # the recorded refusal again
            await writer.submit(spend)
        again = refused.value
        assert (again.code, again.reason, again.message, again.metadata) == (
            first.code, first.reason, first.message, first.metadata)
    finally:
        await writer.drain_and_stop()


async def test_invalid_argument_leaves_no_record(pool, accounts):
    pid, custodial, (m0, *_) = accounts
    writer = _writer(pool)
    try:
        wrong = _posting(pid, custodial, m0, 5)
        usd = dataclasses.replace(wrong, legs=(Leg(custodial, m0, 5, "USD", Mode.IMMEDIATE),))
        with pytest.raises(InvalidArgument) as refused:
            await writer.submit(usd)
        assert refused.value.reason == "CURRENCY_MISMATCH"
        assert await _row(pool, pid, usd.request_id) is None
    finally:
        await writer.drain_and_stop()
