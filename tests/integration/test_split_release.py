"""ReleaseSplit and CancelSplit through the generated stubs: hold-then-release by events
and by fractions to the exact minor unit, idempotency, cancel voiding the rest, a custodial
hold paid once its receiver is active, GetSplit showing the states, VerifyLedger ok."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import split_pb2 as pb
from tests.split_support import file_examples, order
from tests.support import Client, details, rid

# held: 10% to PLAT_001 at once, the remainder to SUP_2025001 held, 50% on SHIPPED and 50%
# on RECEIVED. 1_114: PLAT_001 111, SUP_2025001 1_003 held as steps of 501 and 502 (the
# last step takes what remains).
AMOUNT_MINOR = 1_114
PLATFORM_MINOR = 111
HELD_MINOR = 1_003
SHIPPED_MINOR, RECEIVED_MINOR = 501, 502


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await file_examples(channel, client, database_url, platform.platform_id)


async def _held_split(splits) -> pb.Split:
    split = await splits.split(order(AMOUNT_MINOR, rule_set_name="held"))
    assert [(leg.amount_minor, leg.held_minor) for leg in split.legs] == [
        (PLATFORM_MINOR, 0), (HELD_MINOR, HELD_MINOR)]
    assert [s.amount_minor for s in split.legs[1].release_steps] == [SHIPPED_MINOR,
                                                                     RECEIVED_MINOR]
    return split


async def _release(splits, order_id: str, request_id: str | None = None, **what):
    return await splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=request_id or rid(), order_id=order_id, **what))


async def _get(splits, order_id: str) -> pb.Split:
    return (await splits.call("GetSplit", pb.GetSplitRequest(order_id=order_id))).split


async def _balance(client: Client, ids, ref: str) -> tuple[int, int]:
    b = await client.balance(ids[ref])
    return b.posted_minor, b.pending_credit_minor


async def _refused(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value.code(), details(err.value)[0]


async def test_release_by_events_in_fractions(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    shipped = await _release(splits, split.order_id, event_name="SHIPPED")
    assert (shipped.action.kind, shipped.action.amount_minor) == (
        pb.SPLIT_ACTION_KIND_RELEASE, SHIPPED_MINOR)
    assert [(c.leg_index, c.released_minor) for c in shipped.action.leg_changes] == [
        (1, SHIPPED_MINOR)]
    assert await _balance(client, ids, "SUP_2025001") == (SHIPPED_MINOR, RECEIVED_MINOR)
    mid = await _get(splits, split.order_id)
    leg = mid.legs[1]
    assert (mid.status, leg.held_minor, leg.released_minor, leg.release_state) == (
        pb.SPLIT_STATUS_HOLDING, RECEIVED_MINOR, SHIPPED_MINOR,
        pb.RELEASE_STATE_PARTLY_RELEASED)
    assert [s.released for s in leg.release_steps] == [True, False]
    assert len(leg.transfer_ids) == 2 and mid == shipped.split
    received = await _release(splits, split.order_id, event_name="RECEIVED")
    assert received.action.amount_minor == RECEIVED_MINOR
    assert await _balance(client, ids, "SUP_2025001") == (HELD_MINOR, 0)
    done = await _get(splits, split.order_id)
    assert (done.status, done.held_minor, done.released_minor) == (
        pb.SPLIT_STATUS_POSTED, 0, AMOUNT_MINOR)
    assert done.legs[1].release_state == pb.RELEASE_STATE_RELEASED
    assert [s.released for s in done.legs[1].release_steps] == [True, True]
    assert [a.kind for a in done.actions] == [pb.SPLIT_ACTION_KIND_SPLIT,
                                              pb.SPLIT_ACTION_KIND_RELEASE,
                                              pb.SPLIT_ACTION_KIND_RELEASE]
    custodial = await client.balance(ids["CUSTODIAL"])
    assert (custodial.posted_minor, custodial.pending_debit_minor) == (-AMOUNT_MINOR, 0)
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_releasing_an_event_twice(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    request_id = rid()
    first = await _release(splits, split.order_id, request_id, event_name="SHIPPED")
    again = await _release(splits, split.order_id, request_id, event_name="SHIPPED")
    assert again.action == first.action
    assert await _balance(client, ids, "SUP_2025001") == (SHIPPED_MINOR, RECEIVED_MINOR)
    assert await _refused(_release(splits, split.order_id, event_name="SHIPPED")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "EVENT_ALREADY_RELEASED")
    assert await _refused(_release(splits, split.order_id, request_id,
                                   event_name="RECEIVED")) == (
        grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert await _refused(_release(splits, split.order_id, event_name="DELIVERED")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_DUE")
    assert await _balance(client, ids, "SUP_2025001") == (SHIPPED_MINOR, RECEIVED_MINOR)
    assert len((await _get(splits, split.order_id)).actions) == 2


async def test_fractions_sum_exactly_to_the_leg(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    # allocate(1_003, [3_333, 6_667]) = [334, 669]: three times 334, then the 1 left.
    amounts = [(await _release(splits, split.order_id, fraction_bps=3_333)).action.amount_minor
               for _ in range(4)]
    assert amounts == [334, 334, 334, 1] and sum(amounts) == HELD_MINOR
    assert await _balance(client, ids, "SUP_2025001") == (HELD_MINOR, 0)
    assert await _refused(_release(splits, split.order_id, fraction_bps=10_000)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_HELD")
    assert (await _get(splits, split.order_id)).status == pb.SPLIT_STATUS_POSTED
    assert (await client.verify()).ok


async def test_concurrent_releases_post_the_hold_once(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    results = await asyncio.gather(
        *(_release(splits, split.order_id, fraction_bps=10_000) for _ in range(4)),
        return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [(r.code(), details(r)[0]) for r in results if isinstance(r, BaseException)]
    assert len(done) == 1 and done[0].action.amount_minor == HELD_MINOR
    assert set(refused) <= {(grpc.StatusCode.ALREADY_EXISTS, "SPLIT_CHANGED"),
                            (grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_HELD")}
    assert await _balance(client, ids, "SUP_2025001") == (HELD_MINOR, 0)
    assert len((await _get(splits, split.order_id)).actions) == 2
    assert (await client.verify()).ok


async def test_release_limited_to_accounts(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    assert await _refused(_release(splits, split.order_id, fraction_bps=10_000,
                                   account_ids=[ids["PLAT_001"]])) == (
        grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_DUE")
    done = await _release(splits, split.order_id, fraction_bps=10_000,
                          account_ids=[ids["SUP_2025001"]])
    assert done.action.amount_minor == HELD_MINOR
    assert await _balance(client, ids, "SUP_2025001") == (HELD_MINOR, 0)


async def test_cancel_voids_what_is_held(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    await _release(splits, split.order_id, event_name="SHIPPED")
    cancelled = await splits.call("CancelSplit", pb.CancelSplitRequest(
        request_id=rid(), order_id=split.order_id, reason="buyer cancelled"))
    assert (cancelled.action.kind, cancelled.action.amount_minor) == (
        pb.SPLIT_ACTION_KIND_CANCEL, RECEIVED_MINOR)
    leg = cancelled.split.legs[1]
    assert (cancelled.split.status, leg.held_minor, leg.released_minor, leg.voided_minor) == (
        pb.SPLIT_STATUS_CANCELLED, 0, SHIPPED_MINOR, RECEIVED_MINOR)
    assert cancelled.split.voided_minor == RECEIVED_MINOR
    assert await _balance(client, ids, "SUP_2025001") == (SHIPPED_MINOR, 0)
    custodial = await client.balance(ids["CUSTODIAL"])
    assert (custodial.posted_minor, custodial.pending_debit_minor) == (
        -(PLATFORM_MINOR + SHIPPED_MINOR), 0)
    assert await _get(splits, split.order_id) == cancelled.split
    assert await _refused(splits.call("CancelSplit", pb.CancelSplitRequest(
        request_id=rid(), order_id=split.order_id, reason="again"))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_HELD")
    assert await _refused(_release(splits, split.order_id, event_name="RECEIVED")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_HELD")
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_custodial_hold_is_paid_once_the_receiver_is_active(world, client: Client):
    splits, ids = world
    split = await splits.split(order(10_000, rule_set_name="frozen",
                                     parties={"merchant": "M_FROZEN"}))
    assert await _refused(_release(splits, split.order_id, fraction_bps=10_000)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_DUE")
    await client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=ids["M_FROZEN"], reason="checked"))
    paid = await _release(splits, split.order_id, fraction_bps=10_000)
    assert paid.action.amount_minor == 9_000
    assert await _balance(client, ids, "M_FROZEN") == (9_000, 0)
    assert (await client.balance(ids["CUSTODIAL"])).posted_minor == -10_000
    assert paid.split.status == pb.SPLIT_STATUS_POSTED
    assert (await client.verify()).ok


async def test_invalid_release_and_cancel_requests(world):
    splits, _ = world
    cases = [
        ("ReleaseSplit", pb.ReleaseSplitRequest(request_id=rid(), order_id="o"),
         ["event_name"]),
        ("ReleaseSplit", pb.ReleaseSplitRequest(order_id="o", fraction_bps=10_001),
         ["request_id", "fraction_bps"]),
        ("ReleaseSplit", pb.ReleaseSplitRequest(request_id=rid(), event_name="shipped"),
         ["order_id", "event_name"]),
        ("CancelSplit", pb.CancelSplitRequest(request_id=rid(), order_id="o"), ["reason"]),
    ]
    for method, request, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await splits.call(method, request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(err.value)[1] == fields, request
    assert await _refused(_release(splits, "never-split", event_name="SHIPPED")) == (
        grpc.StatusCode.NOT_FOUND, "SPLIT_NOT_FOUND")


async def _set_frozen(client: Client, account_id: int, frozen: bool) -> None:
    if frozen:
        await client.call("FreezeAccount", lpb.FreezeAccountRequest(
            request_id=rid(), account_id=account_id, reason="review"))
    else:
        await client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
            request_id=rid(), account_id=account_id, reason="cleared"))


async def test_releases_follow_the_status_rule_on_both_sides(world, client: Client):
    """A receiver frozen since the split keeps its hold (the release skips it); a frozen
    custodial account, the side the held money leaves, refuses the release (nothing
    moves); a cancellation voids a frozen receiver's hold (voids move nothing)."""
    splits, ids = world
    split = await _held_split(splits)
    supplier, custodial = ids["SUP_2025001"], ids["CUSTODIAL"]
    await _set_frozen(client, supplier, True)
    assert await _refused(_release(splits, split.order_id, event_name="SHIPPED")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_DUE")
    assert await _balance(client, ids, "SUP_2025001") == (0, HELD_MINOR)
    await _set_frozen(client, supplier, False)
    shipped = await _release(splits, split.order_id, event_name="SHIPPED")
    assert shipped.action.amount_minor == SHIPPED_MINOR
    await _set_frozen(client, custodial, True)
    assert await _refused(_release(splits, split.order_id, event_name="RECEIVED")) == (
        grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN")
    assert await _balance(client, ids, "SUP_2025001") == (SHIPPED_MINOR, RECEIVED_MINOR)
    assert (await _get(splits, split.order_id)).legs[1].held_minor == RECEIVED_MINOR
    await _set_frozen(client, custodial, False)
    await _set_frozen(client, supplier, True)
    cancelled = await splits.call("CancelSplit", pb.CancelSplitRequest(
        request_id=rid(), order_id=split.order_id, reason="order cancelled"))
    assert cancelled.action.amount_minor == RECEIVED_MINOR
    assert await _balance(client, ids, "SUP_2025001") == (SHIPPED_MINOR, 0)
    c = await client.balance(custodial)
    assert (c.posted_minor, c.pending_debit_minor) == (-(PLATFORM_MINOR + SHIPPED_MINOR), 0)
    report = await client.verify()
    assert report.ok and report.chain_ok
