"""SplitBatch through the generated stubs: one outcome per order in request order, exact
ledger balances, bad orders failing alone, a retried batch answering the same outcomes,
shared group commits, the size limit."""

from __future__ import annotations

import grpc
import pytest

from clearing.limits import BATCH_SPAN, SPLIT_BATCH_SIZE_MAX
from clearing.v1 import split_pb2 as pb
from tests.split_support import file_examples, order
from tests.support import Client, details, rid

ORDERS = 300
AMOUNT_MINOR = 100_000  # baby: 15% PLAT_001, 75% SUP_2025001, 10% DIST_01
BABY_LEGS = {"PLAT_001": 15_000, "SUP_2025001": 75_000, "DIST_01": 10_000}


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await file_examples(channel, client, database_url, platform.platform_id)


def _batch(requests: list[pb.SplitRequest]) -> pb.SplitBatchRequest:
    return pb.SplitBatchRequest(request_id=rid(), requests=requests)


def _baby(amount_minor: int = AMOUNT_MINOR) -> pb.SplitRequest:
    return pb.SplitRequest(request_id=rid(), order=order(amount_minor, rule_set_name="baby"))


async def _posted(client: Client, ids: dict[str, int], ref: str) -> int:
    return (await client.balance(ids[ref])).posted_minor


async def test_batch_books_every_order_exactly_and_shares_commits(world, client: Client):
    splits, ids = world
    requests = [_baby() for _ in range(ORDERS)]
    response = await splits.call("SplitBatch", _batch(requests))
    assert [(o.order_id, o.request_id) for o in response.outcomes] == [
        (r.order.order_id, r.request_id) for r in requests]
    assert all(o.WhichOneof("result") == "split" for o in response.outcomes)
    assert all([leg.amount_minor for leg in o.split.legs] == [15_000, 75_000, 10_000]
               for o in response.outcomes)
    for ref, amount in BABY_LEGS.items():
        assert await _posted(client, ids, ref) == amount * ORDERS, ref
    assert await _posted(client, ids, "CUSTODIAL") == -AMOUNT_MINOR * ORDERS
    journal_batches = {o.split.split_id // BATCH_SPAN for o in response.outcomes}
    assert len(journal_batches) < ORDERS  # the orders' postings shared group commits
    got = (await splits.call("GetSplit", pb.GetSplitRequest(
        order_id=requests[7].order.order_id))).split
    assert got == response.outcomes[7].split
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_bad_orders_fail_alone_with_their_reasons(world, client: Client):
    splits, ids = world
    done = await splits.split(order(AMOUNT_MINOR, rule_set_name="baby"))
    good = [_baby(), _baby()]
    invalid = pb.SplitRequest(request_id=rid(), order=order(0, rule_set_name="baby"))
    no_rule_set = pb.SplitRequest(request_id=rid(), order=order(100, rule_set_name="nothing"))
    missing_party = pb.SplitRequest(request_id=rid(), order=order(100, rule_set_name="takeaway"))
    already = pb.SplitRequest(request_id=rid(), order=done.order)
    same_order = pb.SplitRequest(request_id=rid(), order=good[0].order)
    same_request = pb.SplitRequest(request_id=good[1].request_id, order=good[1].order)
    requests = [good[0], invalid, no_rule_set, missing_party, already, good[1], same_order,
                same_request]
    outcomes = (await splits.call("SplitBatch", _batch(requests))).outcomes
    errors = [(o.error.reason, o.error.code, list(f.field for f in o.error.field_violations))
              for o in outcomes if o.WhichOneof("result") == "error"]
    assert [o.WhichOneof("result") for o in outcomes] == [
        "split", "error", "error", "error", "error", "split", "error", "error"]
    assert errors == [
        ("INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT.value[0], ["order.amount_minor"]),
        ("NO_ACTIVE_RULE_SET", grpc.StatusCode.FAILED_PRECONDITION.value[0], []),
        ("INVALID_ORDER", grpc.StatusCode.INVALID_ARGUMENT.value[0],
         ["order.parties[merchant]"]),
        ("ORDER_ALREADY_SPLIT", grpc.StatusCode.ALREADY_EXISTS.value[0], []),
        ("ORDER_ALREADY_SPLIT", grpc.StatusCode.ALREADY_EXISTS.value[0], []),
        ("REQUEST_ID_REUSED", grpc.StatusCode.ALREADY_EXISTS.value[0], []),
    ]
    assert outcomes[1].order_id == invalid.order.order_id
    assert await _posted(client, ids, "SUP_2025001") == 75_000 * 3
    assert (await client.verify()).ok


async def test_retried_batch_answers_the_same_outcomes_and_posts_nothing_more(
        world, client: Client):
    splits, ids = world
    requests = [_baby() for _ in range(20)]
    requests.append(pb.SplitRequest(request_id=rid(), order=order(0, rule_set_name="baby")))
    batch = _batch(requests)
    first = await splits.call("SplitBatch", batch)
    again = await splits.call("SplitBatch", batch)
    assert again == first
    assert await _posted(client, ids, "SUP_2025001") == 75_000 * 20
    alone = await splits.split(requests[3].order, request_id=requests[3].request_id)
    assert alone == first.outcomes[3].split  # the same request id as a unary Split
    other = pb.SplitBatchRequest(request_id=batch.request_id, requests=[_baby()])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await splits.call("SplitBatch", other)
    assert (err.value.code(), details(err.value)[0]) == (grpc.StatusCode.ALREADY_EXISTS,
                                                         "REQUEST_ID_REUSED")
    assert await _posted(client, ids, "SUP_2025001") == 75_000 * 20


async def test_batch_size_is_limited(world):
    splits, _ = world
    for size in (0, SPLIT_BATCH_SIZE_MAX + 1):
        requests = [pb.SplitRequest(request_id=rid(), order=order(1, rule_set_name="baby"))
                    for _ in range(size)]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await splits.call("SplitBatch", _batch(requests))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(err.value)[1] == ["requests"]


async def test_a_full_batch_is_split(world, client: Client):
    splits, ids = world
    requests = [_baby(1_000) for _ in range(SPLIT_BATCH_SIZE_MAX)]
    outcomes = (await splits.call("SplitBatch", _batch(requests))).outcomes
    assert sum(o.WhichOneof("result") == "split" for o in outcomes) == SPLIT_BATCH_SIZE_MAX
    assert await _posted(client, ids, "SUP_2025001") == 750 * SPLIT_BATCH_SIZE_MAX
    assert (await client.verify()).ok
