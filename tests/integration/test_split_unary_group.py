"""Concurrent unary Split calls are split together (api/split_group.py), each with its own
answer: good orders, an invalid one, one the evaluator refuses, replays of committed
request ids, a request id reused with another order and the same call twice, all in flight
at once; exact balances and a clean VerifyLedger. A call at an idle moment goes alone at
once (a group of one); the queue is bounded (RESOURCE_EXHAUSTED, then the same request ids
go through); CLEARING_SPLIT_UNARY_GROUPING=0 splits each call on its own."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from clearing import server
from clearing.api import split_group
from clearing.config import SplitUnarySettings
from clearing.v1 import split_pb2 as pb
from tests.conftest import server_settings
from tests.split_support import file_examples, order
from tests.support import Client, details, rid, wait_for

AMOUNT_MINOR = 100_000  # baby: 15% PLAT_001, 75% SUP_2025001, 10% DIST_01
BABY_LEGS = {"PLAT_001": 15_000, "SUP_2025001": 75_000, "DIST_01": 10_000}
EARLIER = 10
NEW = 40
REPLAYED = 5
QUEUE_MAX = 5
GROUPS_MAX = 2


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _groups() -> tuple[float, float]:
    """(groups split, calls in them) since the process started."""
    return (_metric("clearing_split_unary_group_size_count"),
            _metric("clearing_split_unary_group_size_sum"))


def _pending() -> float:
    return _metric("clearing_split_unary_pending")


def _baby(amount_minor: int = AMOUNT_MINOR) -> pb.SplitRequest:
    return pb.SplitRequest(request_id=rid(), order=order(amount_minor, rule_set_name="baby"))


async def _call(splits, request: pb.SplitRequest):
    """The call's Split, or its error."""
    try:
        return (await splits.call("Split", request)).split
    except grpc.aio.AioRpcError as err:
        return err


async def _posted(client: Client, ids: dict[str, int], ref: str) -> int:
    return (await client.balance(ids[ref])).posted_minor


class _Blocked:
    """Holds the custodial account's row: the ledger writer cannot commit, so a group in
    flight stays in flight and later calls wait for the next group."""

    def __init__(self, database_url: str, account_id: int) -> None:
        self._url = database_url
        self._account_id = account_id

    async def __aenter__(self) -> "_Blocked":
        self._conn = await asyncpg.connect(self._url)
        self._tx = self._conn.transaction()
        await self._tx.start()
        await self._conn.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE",
                                 self._account_id)
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self._tx.rollback()
        finally:
            await self._conn.close()


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await file_examples(channel, client, database_url, platform.platform_id)


async def test_concurrent_calls_each_get_their_own_answer(database_url, redis_url, redis_prefix,
                                                          platform, monkeypatch):
    # two groups at most in flight: with the writer held, the other calls wait and go
    # together once it commits again
    monkeypatch.setattr(split_group, "SPLIT_UNARY_GROUPS_MAX", GROUPS_MAX)
    srv, ch, client, splits, ids = await _private(database_url, redis_url, redis_prefix,
                                                  platform, SplitUnarySettings())
    try:
        await _concurrent_calls(client, splits, ids, database_url)
    finally:
        await ch.close()
        await srv.stop()


async def _concurrent_calls(client: Client, splits, ids: dict[str, int],
                            database_url: str) -> None:
    earlier = [_baby() for _ in range(EARLIER)]
    first = [await _call(splits, r) for r in earlier]
    assert all(isinstance(s, pb.Split) for s in first)

    new = [_baby() for _ in range(NEW)]
    invalid = _baby(0)  # refused before any group: INVALID_ARGUMENT
    refused = pb.SplitRequest(request_id=rid(), order=order(100, rule_set_name="takeaway"))
    reused = pb.SplitRequest(request_id=earlier[0].request_id, order=order(AMOUNT_MINOR,
                                                                           rule_set_name="baby"))
    twice = _baby()
    # the order the calls are made in: the earlier request ids' replays mixed in
    requests = ([refused] + new[:20] + earlier[:REPLAYED] + [invalid, reused, twice, twice]
                + new[20:])
    queued = len(requests) - 1  # every call but the invalid one reaches the queue
    groups, calls = _groups()
    base = _pending()
    async with _Blocked(database_url, ids["CUSTODIAL"]):
        tasks = [asyncio.create_task(_call(splits, r)) for r in requests]

        async def waiting() -> bool:  # the refused order may be answered alone, early
            return _pending() - base >= queued - 1

        await wait_for(waiting)
        # nothing can commit: no call that reached the writer is answered
        assert not any(t.done() for r, t in zip(requests, tasks)
                       if r is not invalid and r is not refused)
    results = await asyncio.gather(*tasks)
    answers = {id(r): a for r, a in zip(requests, results)}
    both = [a for r, a in zip(requests, results) if r is twice]

    for request in new:
        split = answers[id(request)]
        assert isinstance(split, pb.Split), split
        assert split.order.order_id == request.order.order_id
        assert [leg.amount_minor for leg in split.legs] == [15_000, 75_000, 10_000]
    for request, split in zip(earlier[:REPLAYED], first):
        assert answers[id(request)] == split  # the first answer, byte for byte
    err = answers[id(invalid)]
    assert (err.code(), details(err)[1]) == (grpc.StatusCode.INVALID_ARGUMENT,
                                             ["order.amount_minor"])
    err = answers[id(refused)]
    assert details(err) == ("INVALID_ORDER", ["order.parties[merchant]"])
    err = answers[id(reused)]
    assert (err.code(), details(err)[0]) == (grpc.StatusCode.ALREADY_EXISTS,
                                             "REQUEST_ID_REUSED")
    assert all(isinstance(s, pb.Split) for s in both) and both[0] == both[1]

    booked = EARLIER + NEW + 1  # `twice` once
    for ref, amount in BABY_LEGS.items():
        assert await _posted(client, ids, ref) == amount * booked, ref
    assert await _posted(client, ids, "CUSTODIAL") == -AMOUNT_MINOR * booked
    report = await client.verify()
    assert report.ok and report.chain_ok
    # grouped: at most GROUPS_MAX groups went to the held writer, the calls waiting behind
    # them went together (at most one group each for the takeaway order, alone, early)
    now_groups, now_calls = _groups()
    assert now_calls - calls == queued
    assert now_groups - groups <= GROUPS_MAX + 2
    assert _pending() == base


async def test_a_call_at_an_idle_moment_goes_alone(world, client: Client):
    splits, ids = world
    groups, calls = _groups()
    split = await _call(splits, _baby())
    assert isinstance(split, pb.Split)
    # one group of one: the call did not wait for company
    assert _groups() == (groups + 1, calls + 1)
    assert await _posted(client, ids, "SUP_2025001") == 75_000


async def _private(database_url, redis_url, redis_prefix, platform, unary: SplitUnarySettings):
    srv = await server.start(server_settings(database_url, redis_url, redis_prefix,
                                             split_unary=unary, db_pool_max=6), migrate=False)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    client = Client(ch, platform.key)
    splits, ids = await file_examples(ch, client, database_url, platform.platform_id)
    return srv, ch, client, splits, ids


async def test_the_queue_is_bounded(database_url, redis_url, redis_prefix, platform):
    srv, ch, client, splits, ids = await _private(
        database_url, redis_url, redis_prefix, platform, SplitUnarySettings(queue_max=QUEUE_MAX))
    try:
        accepted = [_baby() for _ in range(QUEUE_MAX)]
        over = [_baby() for _ in range(3)]
        base = _pending()
        async with _Blocked(database_url, ids["CUSTODIAL"]):
            tasks = [asyncio.create_task(_call(splits, r)) for r in accepted]

            async def full() -> bool:
                return _pending() - base == QUEUE_MAX

            await wait_for(full)
            # answered at once, while the queue is full and nothing can commit
            for request in over:
                err = await _call(splits, request)
                assert (err.code(), details(err)[0]) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                         "WRITER_QUEUE_FULL")
            assert not any(t.done() for t in tasks)
        assert all(isinstance(s, pb.Split) for s in await asyncio.gather(*tasks))
        # the refused calls again, same request ids: split now
        for request in over:
            assert isinstance(await _call(splits, request), pb.Split)
        booked = QUEUE_MAX + len(over)
        for ref, amount in BABY_LEGS.items():
            assert await _posted(client, ids, ref) == amount * booked, ref
        assert (await client.verify()).ok
        assert _pending() == base
    finally:
        await ch.close()
        await srv.stop()


async def test_without_grouping_each_call_goes_alone(database_url, redis_url, redis_prefix,
                                                     platform):
    srv, ch, client, splits, ids = await _private(
        database_url, redis_url, redis_prefix, platform, SplitUnarySettings(grouping=False))
    try:
        groups = _groups()
        answers = await asyncio.gather(*(_call(splits, _baby()) for _ in range(20)))
        assert all(isinstance(s, pb.Split) for s in answers)
        assert _groups() == groups  # no group made
        for ref, amount in BABY_LEGS.items():
            assert await _posted(client, ids, ref) == amount * 20, ref
        assert (await client.verify()).ok
    finally:
        await ch.close()
        await srv.stop()
