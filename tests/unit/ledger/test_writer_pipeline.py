"""Pipelined flushes (clearing.ledger.writer, "Pipelined flushes"; clearing.ledger.pipeline):
with `pipeline` 2, a batch commits while an earlier one is still committing, unless it could
decide differently on what that batch has not committed yet: then it waits for it and
decides on the committed state, as if the flushes ran one after another.

Batch 1 is held in flight by a sink that waits (a sink writes in the batch's transaction,
after its journal rows and idempotency records, before its last statement and COMMIT)."""

from __future__ import annotations

import asyncio
import dataclasses

from clearing import metrics
from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import AlreadyExists
from clearing.ledger import store
from clearing.ledger.model import Leg, Mode, Posting
from clearing.ledger.writer import LedgerWriter
from tests.unit.ledger.conftest import posting

HELD_S = 0.5  # how long the second batch is given while batch 1 is held


class _Gate:
    """A sink that holds its batch until `open` is set."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = asyncio.Event()

    async def write(self, conn, committed) -> None:
        self.entered.set()
        await self.open.wait()


def _first(pid: int, custodial: int, m0: int, m1: int) -> Posting:
    """Batch 1: custodial -> m0 1, custodial -> m1 100, held by the gate."""
    base = posting(pid, custodial, m0, 1, "b1")
    return dataclasses.replace(base, legs=(Leg(custodial, m0, 1, "CNY", Mode.IMMEDIATE),
                                           Leg(custodial, m1, 100, "CNY", Mode.IMMEDIATE)),
                               sink="gate", attachment=None)


async def _available(pool, pid: int, account_id: int) -> int:
    async with pool.acquire() as conn:
        return (await store.get_account(conn, pid, account_id=account_id)).balance.available


async def _second_while_first_held(pool, started, accounts, pipeline: int,
                                   second) -> tuple[bool, object]:
    """Batch 1 held in flight, then `second(writer, pid, custodial, m1, m2)` submitted:
    whether it was answered while batch 1 was held, and its answer."""
    pid, custodial, (m0, m1, m2) = accounts
    gate = _Gate()
    writer = started(LedgerWriter(pool, WriterSettings(batch_size_max=1, flush_ms_max=0,
                                                       queue_max=100, pipeline=pipeline),
                                  Clock(), sinks={"gate": gate}))
    await writer.submit(posting(pid, custodial, m0, 1))  # the writer has read the accounts
    first = asyncio.create_task(writer.submit(_first(pid, custodial, m0, m1)))
    try:
        await asyncio.wait_for(gate.entered.wait(), 10)
        answer = asyncio.create_task(second(writer, pid, custodial, m1, m2))
        await asyncio.wait([answer], timeout=HELD_S)
        early = answer.done()
        assert not first.done()
    finally:
        gate.open.set()
    assert len(await first) == 2
    return early, await answer


async def _independent(writer, pid, custodial, m1, m2):
    return await writer.submit(posting(pid, custodial, m2, 5, "b2"))


async def test_a_batch_commits_while_an_earlier_one_is_in_flight(pool, accounts, started):
    early, records = await _second_while_first_held(pool, started, accounts, 2, _independent)
    assert early and records[0].amount_minor == 5
    assert await _available(pool, accounts[0], accounts[2][2]) == 5


async def test_without_the_pipeline_the_batch_waits(pool, accounts, started):
    early, records = await _second_while_first_held(pool, started, accounts, 1, _independent)
    assert not early and records[0].amount_minor == 5


async def _spend_the_credit(writer, pid, custodial, m1, m2):
    # m1 may not go negative: it has only the 100 batch 1 credits it
    return await writer.submit(posting(pid, m1, m2, 100, "b2"))


async def test_a_batch_debiting_what_the_batch_in_flight_credits_waits_for_it(
        pool, accounts, started):
    early, records = await _second_while_first_held(pool, started, accounts, 2,
                                                    _spend_the_credit)
    assert not early  # it waited: read before batch 1's commit, m1 had 0 available
    assert records[0].amount_minor == 100
    pid, _, (_, m1, m2) = accounts
    assert await _available(pool, pid, m1) == 0 and await _available(pool, pid, m2) == 100


async def _same_request_id(writer, pid, custodial, m1, m2):
    try:
        return await writer.submit(posting(pid, custodial, m2, 7, "b1"))
    except AlreadyExists as exc:  # noqa: F841 - a different payload under b1's request id
        return exc


async def test_a_batch_with_the_request_id_of_the_batch_in_flight_waits_for_it(
        pool, accounts, started):
    retries = metrics.WRITER_BATCH_RETRIES._value.get()
    early, answer = await _second_while_first_held(pool, started, accounts, 2,
                                                   _same_request_id)
    # it waited, then was answered from b1's record (another request under its id); had
    # it not waited, its record's INSERT would have waited for b1's and failed the batch
    # once (RaceLost, redone)
    assert not early and metrics.WRITER_BATCH_RETRIES._value.get() == retries
    assert isinstance(answer, AlreadyExists) and answer.reason == "REQUEST_ID_REUSED"
    pid, _, (_, _, m2) = accounts
    assert await _available(pool, pid, m2) == 0
