"""SplitStream through the generated stubs: outcomes matched by order id, exact ledger
balances, a bad order answered alone, a clean end on half-close, bounded read-ahead."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing.v1 import split_pb2 as pb
from tests.split_support import Splits, file_examples, new_key, order
from tests.support import CALL_TIMEOUT_S, Client, rid

ORDERS = 500
AMOUNT_MINOR = 100_000  # baby: 15% PLAT_001, 75% SUP_2025001, 10% DIST_01
BABY_LEGS = {"PLAT_001": 15_000, "SUP_2025001": 75_000, "DIST_01": 10_000}


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await file_examples(channel, client, database_url, platform.platform_id)


def _item(amount_minor: int = AMOUNT_MINOR, **kw) -> pb.SplitStreamRequest:
    kw.setdefault("rule_set_name", "baby")
    return pb.SplitStreamRequest(request_id=rid(), order=order(amount_minor, **kw))


async def _exchange(splits, items: list[pb.SplitStreamRequest]) -> list[pb.SplitOutcome]:
    """Send every item, half-close, and read outcomes until the server ends the stream."""
    call = splits.stub.SplitStream(metadata=splits.metadata, timeout=CALL_TIMEOUT_S)

    async def send() -> None:
        for item in items:
            await call.write(item)
        await call.done_writing()

    sender = asyncio.create_task(send())
    outcomes = [response.outcome async for response in call]
    await sender
    return outcomes


async def _posted(client: Client, ids: dict[str, int], ref: str) -> int:
    return (await client.balance(ids[ref])).posted_minor


async def test_500_orders_over_one_stream(world, client: Client):
    splits, ids = world
    items = [_item() for _ in range(ORDERS)]
    outcomes = await _exchange(splits, items)
    by_order = {o.order_id: o for o in outcomes}
    assert len(outcomes) == len(by_order) == ORDERS
    for item in items:
        outcome = by_order[item.order.order_id]
        assert outcome.request_id == item.request_id
        assert outcome.split.order.order_id == item.order.order_id
        assert [leg.amount_minor for leg in outcome.split.legs] == [15_000, 75_000, 10_000]
    for ref, amount in BABY_LEGS.items():
        assert await _posted(client, ids, ref) == amount * ORDERS, ref
    assert await _posted(client, ids, "CUSTODIAL") == -AMOUNT_MINOR * ORDERS
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_a_bad_order_mid_stream_answers_alone(world, client: Client):
    splits, ids = world
    items = [_item() for _ in range(10)]
    items.insert(5, _item(0))
    items.insert(7, _item(100, rule_set_name="takeaway"))
    outcomes = await _exchange(splits, items)
    by_order = {o.order_id: o for o in outcomes}
    assert len(outcomes) == 12
    bad = [by_order[items[5].order.order_id], by_order[items[7].order.order_id]]
    assert [(o.WhichOneof("result"), o.error.reason) for o in bad] == [
        ("error", "INVALID_ARGUMENT"), ("error", "INVALID_ORDER")]
    assert [f.field for f in bad[0].error.field_violations] == ["order.amount_minor"]
    assert sum(o.WhichOneof("result") == "split" for o in outcomes) == 10
    assert await _posted(client, ids, "SUP_2025001") == 75_000 * 10
    assert (await client.verify()).ok


async def test_a_replayed_stream_answers_the_first_splits(world, client: Client):
    splits, ids = world
    items = [_item() for _ in range(30)]
    first = {o.order_id: o for o in await _exchange(splits, items)}
    again = {o.order_id: o for o in await _exchange(splits, items)}
    assert again == first
    assert await _posted(client, ids, "SUP_2025001") == 75_000 * 30


async def test_an_empty_stream_ends_cleanly(world):
    splits, _ = world
    call = splits.stub.SplitStream(metadata=splits.metadata, timeout=CALL_TIMEOUT_S)
    await call.done_writing()
    assert [r async for r in call] == []
    assert await call.code() == grpc.StatusCode.OK


async def test_only_gateways_stream(world, channel, database_url, platform):
    operator = Splits(channel, await new_key(database_url, platform.platform_id, {"operator"}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _exchange(operator, [_item()])
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


