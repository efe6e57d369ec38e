"""The split engine's last functional gaps, through the generated stubs: at most 100 actions
per split (TOO_MANY_ACTIONS), refunds touching a receiver frozen or closed since the split
(refused as a whole, or covered by the shortfall account; held money still voidable), and
SplitStream's read-ahead bound observed on the clearing_split_stream_in_flight gauge while
the ledger writer is held back by a row lock (no timing assumption on a correct server)."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from clearing.api import split as split_api
from clearing.limits import ACTIONS_PER_SPLIT_MAX
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import split_pb2 as pb
from tests.integration.test_split_stream import BABY_LEGS, _item
from tests.split_support import file_examples, order
from tests.support import CALL_TIMEOUT_S, Client, rid, wait_for

# held: 10% to PLAT_001 at once, the remainder to SUP_2025001 held, 50% on SHIPPED and 50%
# on RECEIVED (see test_split_release.py).
AMOUNT_MINOR = 1_114
PLATFORM_MINOR = 111
HELD_MINOR = 1_003


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await file_examples(channel, client, database_url, platform.platform_id)


async def _held_split(splits, amount_minor: int = AMOUNT_MINOR) -> pb.Split:
    return await splits.split(order(amount_minor, rule_set_name="held"))


async def _release(splits, order_id: str, request_id: str | None = None, **what):
    return await splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=request_id or rid(), order_id=order_id, **what))


async def _refund(splits, order_id: str, amount_minor: int, request_id: str | None = None,
                  **extra) -> pb.RefundSplitResponse:
    extra.setdefault("reason", "buyer returned the goods")
    return await splits.call("RefundSplit", pb.RefundSplitRequest(
        request_id=request_id or rid(), order_id=order_id, amount_minor=amount_minor,
        currency_code="CNY", **extra))


async def _get(splits, order_id: str) -> pb.Split:
    return (await splits.call("GetSplit", pb.GetSplitRequest(order_id=order_id))).split


async def _balance(client: Client, account_id: int) -> tuple[int, int]:
    b = await client.balance(account_id)
    return b.posted_minor, b.pending_credit_minor


async def _refused(coro) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """(code, ErrorInfo reason, ErrorInfo metadata) of a refused call."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    status = rpc_status.from_call(err.value)
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return err.value.code(), info.reason, dict(info.metadata)
    raise AssertionError("no ErrorInfo")


def _changes(action: pb.SplitAction) -> list[tuple[int, int, int, int]]:
    return [(c.leg_index, c.refunded_held_minor, c.refunded_posted_minor, c.shortfall_minor)
            for c in action.leg_changes]


async def _freeze(client: Client, account_id: int) -> None:
    await client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=account_id, reason="compliance review"))


# ---- at most 100 actions per split --------------------------------------------------------------

async def test_a_split_takes_at_most_100_actions(world, client: Client):
    splits, ids = world
    # 1_000_000: PLAT_001 100_000 posted, SUP_2025001 900_000 held; a 1 bps release posts
    # allocate(900_000, [1, 9_999])[0] = 90
    split = await _held_split(splits, 1_000_000)
    request_ids = [rid() for _ in range(ACTIONS_PER_SPLIT_MAX)]
    for request_id in request_ids[:-1]:
        await _release(splits, split.order_id, request_id, fraction_bps=1)
    last = await _refund(splits, split.order_id, 10, request_ids[-1])
    assert _changes(last.action) == [(0, 0, 1, 0), (1, 9, 0, 0)]
    supplier = ids["SUP_2025001"]
    before = await _get(splits, split.order_id)
    assert len(before.actions) == 1 + ACTIONS_PER_SPLIT_MAX
    assert await _balance(client, supplier) == (90 * 99, 900_000 - 90 * 99 - 9)
    refused = (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_ACTIONS",
               {"order_id": split.order_id, "actions_max": "100"})
    assert await _refused(_release(splits, split.order_id, fraction_bps=1)) == refused
    assert await _refused(_release(splits, split.order_id, event_name="SHIPPED")) == refused
    assert await _refused(splits.call("CancelSplit", pb.CancelSplitRequest(
        request_id=rid(), order_id=split.order_id, reason="buyer cancelled"))) == refused
    assert await _refused(_refund(splits, split.order_id, 1)) == refused
    # nothing changed; the recorded actions still answer their retries
    assert await _get(splits, split.order_id) == before
    assert await _balance(client, supplier) == (90 * 99, 900_000 - 90 * 99 - 9)
    again = await _release(splits, split.order_id, request_ids[0], fraction_bps=1)
    assert again.action == before.actions[1] and again.action.amount_minor == 90
    assert (await _refund(splits, split.order_id, 10, request_ids[-1])).action == last.action
    report = await client.verify()
    assert report.ok and report.chain_ok


# ---- refunds and receivers frozen or closed since the split -------------------------------------

async def test_refund_of_posted_money_of_a_frozen_receiver(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    await _release(splits, split.order_id, fraction_bps=10_000)  # SUP_2025001 posted 1_003
    supplier = ids["SUP_2025001"]
    await _freeze(client, supplier)
    before = await _get(splits, split.order_id)
    # refused as a whole, naming the account; nothing is reversed, not even PLAT_001's part
    assert await _refused(_refund(splits, split.order_id, AMOUNT_MINOR)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN",
        {"order_id": split.order_id, "account_ids": str(supplier)})
    assert await _refused(_refund(splits, split.order_id, 10)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN",
        {"order_id": split.order_id, "account_ids": str(supplier)})
    assert await _get(splits, split.order_id) == before
    assert await _balance(client, supplier) == (HELD_MINOR, 0)
    assert await _balance(client, ids["PLAT_001"]) == (PLATFORM_MINOR, 0)
    # the platform's reserve covers the frozen receiver's part; the receiver is untouched
    reserve = (await client.open("REFUND_RESERVE")).account_id
    await client.transfer(ids["CUSTODIAL"], reserve, 5_000)
    done = await _refund(splits, split.order_id, AMOUNT_MINOR,
                         shortfall_account_ref="REFUND_RESERVE")
    assert _changes(done.action) == [(0, 0, PLATFORM_MINOR, 0), (1, 0, HELD_MINOR, HELD_MINOR)]
    assert done.action.leg_changes[1].shortfall_account_id == reserve
    assert len(done.action.leg_changes[1].transfer_ids) == 1  # the reserve's transfer only
    assert await _balance(client, supplier) == (HELD_MINOR, 0)
    assert await _balance(client, reserve) == (5_000 - HELD_MINOR, 0)
    assert await _balance(client, ids["PLAT_001"]) == (0, 0)
    assert await _balance(client, ids["CUSTODIAL"]) == (-5_000, 0)
    assert (done.split.status, done.split.refunded_minor) == (pb.SPLIT_STATUS_REFUNDED,
                                                              AMOUNT_MINOR)
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_refund_of_the_whole_hold_of_a_frozen_receiver(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)  # SUP_2025001: 1_003 pending credit
    supplier = ids["SUP_2025001"]
    await _freeze(client, supplier)
    done = await _refund(splits, split.order_id, AMOUNT_MINOR)
    assert _changes(done.action) == [(0, 0, PLATFORM_MINOR, 0), (1, HELD_MINOR, 0, 0)]
    assert await _balance(client, supplier) == (0, 0)
    assert await _balance(client, ids["PLAT_001"]) == (0, 0)
    custodial = await client.balance(ids["CUSTODIAL"])
    assert (custodial.posted_minor, custodial.pending_debit_minor) == (0, 0)
    assert (done.split.status, done.split.held_minor) == (pb.SPLIT_STATUS_REFUNDED, 0)
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_partial_refund_of_the_hold_of_a_frozen_receiver(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    supplier = ids["SUP_2025001"]
    await _freeze(client, supplier)
    before = await _get(splits, split.order_id)
    request_id = rid()
    # 557 takes 501 of the 1_003 held: the 502 left would need a new pending credit to a
    # frozen account; a shortfall account cannot help with a hold
    refused = (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN",
               {"order_id": split.order_id, "account_ids": str(supplier)})
    assert await _refused(_refund(splits, split.order_id, 557, request_id)) == refused
    reserve = (await client.open("REFUND_RESERVE")).account_id
    await client.transfer(ids["CUSTODIAL"], reserve, 5_000)
    assert await _refused(_refund(splits, split.order_id, 557,
                                  shortfall_account_ref="REFUND_RESERVE")) == refused
    assert await _get(splits, split.order_id) == before
    assert await _balance(client, supplier) == (0, HELD_MINOR)
    assert await _balance(client, ids["PLAT_001"]) == (PLATFORM_MINOR, 0)
    # once the account is active again: the same request id replays its first response
    # (the refusal, clearing.idempotency), a new request goes through
    await client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=supplier, reason="cleared"))
    assert await _refused(_refund(splits, split.order_id, 557, request_id)) == refused
    done = await _refund(splits, split.order_id, 557, rid())
    assert _changes(done.action) == [(0, 0, 56, 0), (1, 501, 0, 0)]
    assert await _balance(client, supplier) == (0, 502)
    assert (await client.verify()).ok


async def test_refund_of_posted_money_of_a_closed_receiver(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    await _release(splits, split.order_id, fraction_bps=10_000)
    supplier = ids["SUP_2025001"]
    elsewhere = (await client.open("SUPPLIER_BANK")).account_id
    await client.transfer(supplier, elsewhere, HELD_MINOR)
    await client.call("CloseAccount", lpb.CloseAccountRequest(request_id=rid(),
                                                              account_id=supplier))
    before = await _get(splits, split.order_id)
    assert await _refused(_refund(splits, split.order_id, AMOUNT_MINOR)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_CLOSED",
        {"order_id": split.order_id, "account_ids": str(supplier)})
    assert await _get(splits, split.order_id) == before
    assert await _balance(client, ids["PLAT_001"]) == (PLATFORM_MINOR, 0)
    reserve = (await client.open("REFUND_RESERVE")).account_id
    await client.transfer(ids["CUSTODIAL"], reserve, 5_000)
    done = await _refund(splits, split.order_id, AMOUNT_MINOR,
                         shortfall_account_ref="REFUND_RESERVE")
    assert _changes(done.action) == [(0, 0, PLATFORM_MINOR, 0), (1, 0, HELD_MINOR, HELD_MINOR)]
    assert await _balance(client, reserve) == (5_000 - HELD_MINOR, 0)
    assert await _balance(client, supplier) == (0, 0)
    assert (await client.verify()).ok


# ---- SplitStream's read-ahead bound -------------------------------------------------------------

STREAM_BOUND = 5
STREAM_ORDERS = 40


def _in_flight() -> float:
    return REGISTRY.get_sample_value("clearing_split_stream_in_flight") or 0.0


async def test_split_stream_reads_at_most_its_bound_ahead(world, client: Client, database_url,
                                                           monkeypatch):
    splits, ids = world
    monkeypatch.setattr(split_api, "SPLIT_STREAM_IN_FLIGHT_MAX", STREAM_BOUND)
    base = _in_flight()
    items = [_item() for _ in range(STREAM_ORDERS)]
    call = splits.stub.SplitStream(metadata=splits.metadata, timeout=CALL_TIMEOUT_S)
    lock = await asyncpg.connect(database_url)
    try:
        # hold the custodial account's row: the ledger writer cannot commit, so no order
        # is answered and every order read stays in flight
        async with lock.transaction():
            await lock.execute("SELECT 1 FROM accounts WHERE account_id = $1 FOR UPDATE",
                               ids["CUSTODIAL"])
            for item in items:  # 40 small messages: within the HTTP/2 window
                await call.write(item)
            await call.done_writing()

            async def bound_reached() -> bool:
                return _in_flight() - base >= STREAM_BOUND

            await wait_for(bound_reached)
            await asyncio.sleep(0.3)  # a server without the bound would read on
            assert _in_flight() - base == STREAM_BOUND
        outcomes = [response.outcome async for response in call]
    finally:
        await lock.close()
    assert await call.code() == grpc.StatusCode.OK
    assert sorted(o.order_id for o in outcomes) == sorted(i.order.order_id for i in items)
    assert all(o.WhichOneof("result") == "split" for o in outcomes)
    for ref, amount in BABY_LEGS.items():
        assert (await client.balance(ids[ref])).posted_minor == amount * STREAM_ORDERS, ref
    assert _in_flight() == base
