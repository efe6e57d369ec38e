"""SplitBatch and SplitStream split their orders as a group (one plan lookup, one counters
call, one writer call); an order leaving the usual path must still get exactly what the
unary Split answers: a receiver frozen after the directory cached it (the refused posting
retried from a fresh read, nothing recorded), a rule set with no active version, a request
id already used (its first split; REQUEST_ID_REUSED with another order), an order already
split under another request id, and good orders beside them booked once."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import split_pb2 as pb
from tests.split_support import file_examples, order
from tests.support import CALL_TIMEOUT_S, Client, rid


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    splits, ids = await file_examples(channel, client, database_url, platform.platform_id)
    merchant = (await client.open(f"M_{rid()[:8]}")).account_id
    got = await client.call("GetAccount", lpb.GetAccountRequest(account_id=merchant))
    return splits, ids, merchant, got.account.external_ref


def _merchant(amount: int, ref: str) -> pb.SplitRequest:
    return pb.SplitRequest(request_id=rid(), order=order(
        amount, rule_set_name="frozen", parties={"merchant": ref}))


def _baby(amount: int = 100_000, **kw) -> pb.SplitRequest:
    return pb.SplitRequest(request_id=rid(), order=order(amount, rule_set_name="baby", **kw))


async def _batch(splits, requests: list[pb.SplitRequest]) -> list[pb.SplitOutcome]:
    response = await splits.call("SplitBatch", pb.SplitBatchRequest(request_id=rid(),
                                                                    requests=requests))
    assert [o.request_id for o in response.outcomes] == [r.request_id for r in requests]
    return list(response.outcomes)


async def _stream(splits, requests: list[pb.SplitRequest]) -> list[pb.SplitOutcome]:
    call = splits.stub.SplitStream(metadata=splits.metadata, timeout=CALL_TIMEOUT_S)

    async def send() -> None:
        for r in requests:
            await call.write(pb.SplitStreamRequest(request_id=r.request_id, order=r.order))
        await call.done_writing()

    sender = asyncio.create_task(send())
    got = {response.outcome.request_id: response.outcome async for response in call}
    await sender
    return [got[r.request_id] for r in requests]


async def _unrecorded_failures(database_url: str, platform_id: int, request_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM requests WHERE platform_id = $1 AND request_id = $2"
            " AND NOT ok", platform_id, request_id)
    finally:
        await conn.close()


@pytest.mark.parametrize("send", [_batch, _stream], ids=["batch", "stream"])
async def test_receiver_frozen_after_it_was_cached_is_held_in_a_group(
        world, client: Client, database_url, platform, send):
    splits, ids, merchant, ref = world
    first = await send(splits, [_merchant(10_000, ref)])  # caches the merchant as active
    assert [leg.held_minor for leg in first[0].split.legs] == [0, 0]
    await client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant, reason="compliance hold"))
    requests = [_baby(), _merchant(10_000, ref), _baby(200_000)]
    outcomes = await send(splits, requests)
    assert [o.WhichOneof("result") for o in outcomes] == ["split"] * 3
    held = outcomes[1].split
    assert [(leg.account_id, leg.amount_minor, leg.held_minor, leg.hold_reason)
            for leg in held.legs][1] == (merchant, 9_000, 9_000,
                                         pb.HOLD_REASON_RECEIVER_UNAVAILABLE)
    assert held.status == pb.SPLIT_STATUS_HOLDING
    assert [leg.amount_minor for leg in outcomes[2].split.legs] == [30_000, 150_000, 20_000]
    balance = await client.balance(merchant)
    assert (balance.posted_minor, balance.pending_credit_minor) == (9_000, 0)
    assert await _unrecorded_failures(database_url, platform.platform_id,
                                      requests[1].request_id) == 0
    again = await send(splits, [requests[1]])  # the retry answers the committed split
    assert again[0].split == held
    stored = (await splits.call("GetSplit", pb.GetSplitRequest(
        order_id=requests[1].order.order_id))).split
    assert stored == held
    assert (await client.verify()).ok


@pytest.mark.parametrize("send", [_batch, _stream], ids=["batch", "stream"])
async def test_orders_off_the_usual_path_answer_as_the_unary_split(world, client: Client,
                                                                   send):
    splits, ids, _, _ = world
    done, used = _baby(50_000), _baby(40_000)
    first = await splits.split(done.order, request_id=done.request_id)
    await splits.split(used.order, request_id=used.request_id)
    reused = pb.SplitRequest(request_id=used.request_id, order=order(70_000,
                                                                     rule_set_name="baby"))
    again = pb.SplitRequest(request_id=rid(), order=used.order)  # split, new request id
    requests = [_baby(), done, pb.SplitRequest(request_id=rid(), order=order(
        1_000, rule_set_name="never-filed")), reused, again, _baby(300_000)]
    outcomes = await send(splits, requests)
    assert outcomes[0].WhichOneof("result") == "split"
    assert outcomes[1].split == first
    assert (outcomes[2].error.reason, outcomes[3].error.reason, outcomes[4].error.reason) == (
        "NO_ACTIVE_RULE_SET", "REQUEST_ID_REUSED", "ORDER_ALREADY_SPLIT")
    assert [leg.amount_minor for leg in outcomes[5].split.legs] == [45_000, 225_000, 30_000]
    for request, outcome in zip(requests[2:5], outcomes[2:5]):  # exactly the unary answers
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await splits.split(request.order, request_id=request.request_id)
        assert (outcome.error.code, outcome.error.message) == (
            err.value.code().value[0], err.value.details())
    assert (await client.balance(ids["SUP_2025001"])).posted_minor == (
        75_000 + 37_500 + 30_000 + 225_000)
    assert (await client.verify()).ok
