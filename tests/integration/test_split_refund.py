"""RefundSplit through the generated stubs: a full refund of an unreleased split, partial
refunds after a partial release (held money first, then posted, exact per leg), a partial
refund of a hold that stays held and is released later, idempotency by request id, a refund
over what is left, a receiver without the funds with and without a shortfall account,
concurrent refunds committing once, a subsidy going back to its source, GetSplit showing the
refunds, VerifyLedger ok."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing.v1 import split_pb2 as pb
from tests.split_support import file_examples, order
from tests.support import Client, details, rid

# held: 10% to PLAT_001 at once, the remainder to SUP_2025001 held, 501 on SHIPPED and 502
# on RECEIVED (see test_split_release.py).
AMOUNT_MINOR = 1_114
PLATFORM_MINOR = 111
HELD_MINOR = 1_003


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    return await file_examples(channel, client, database_url, platform.platform_id)


async def _held_split(splits) -> pb.Split:
    split = await splits.split(order(AMOUNT_MINOR, rule_set_name="held"))
    assert [(leg.amount_minor, leg.held_minor) for leg in split.legs] == [
        (PLATFORM_MINOR, 0), (HELD_MINOR, HELD_MINOR)]
    return split


async def _refund(splits, order_id: str, amount_minor: int, request_id: str | None = None,
                  **extra) -> pb.RefundSplitResponse:
    extra.setdefault("reason", "buyer returned the goods")
    extra.setdefault("currency_code", "CNY")
    return await splits.call("RefundSplit", pb.RefundSplitRequest(
        request_id=request_id or rid(), order_id=order_id, amount_minor=amount_minor,
        refund_ref="RF-1", **extra))


async def _release(splits, order_id: str, **what) -> pb.ReleaseSplitResponse:
    return await splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=order_id, **what))


async def _get(splits, order_id: str) -> pb.Split:
    return (await splits.call("GetSplit", pb.GetSplitRequest(order_id=order_id))).split


async def _balance(client: Client, account_id: int) -> tuple[int, int]:
    b = await client.balance(account_id)
    return b.posted_minor, b.pending_credit_minor


async def _refused(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value.code(), details(err.value)[0]


def _changes(action: pb.SplitAction) -> list[tuple[int, int, int, int]]:
    return [(c.leg_index, c.refunded_held_minor, c.refunded_posted_minor, c.shortfall_minor)
            for c in action.leg_changes]


async def test_full_refund_of_an_unreleased_split(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    done = await _refund(splits, split.order_id, AMOUNT_MINOR)
    assert (done.action.kind, done.action.amount_minor, done.action.refund_ref) == (
        pb.SPLIT_ACTION_KIND_REFUND, AMOUNT_MINOR, "RF-1")
    assert _changes(done.action) == [(0, 0, PLATFORM_MINOR, 0), (1, HELD_MINOR, 0, 0)]
    assert all(len(c.transfer_ids) == 1 for c in done.action.leg_changes)
    s = done.split
    assert (s.status, s.refunded_minor, s.held_minor, s.voided_minor) == (
        pb.SPLIT_STATUS_REFUNDED, AMOUNT_MINOR, 0, HELD_MINOR)
    assert [(leg.held_minor, leg.voided_minor, leg.refunded_minor) for leg in s.legs] == [
        (0, 0, PLATFORM_MINOR), (0, HELD_MINOR, HELD_MINOR)]
    assert s.legs[1].release_state == pb.RELEASE_STATE_VOIDED
    for ref in ("PLAT_001", "SUP_2025001", "CUSTODIAL"):
        b = await client.balance(ids[ref])
        assert (b.posted_minor, b.pending_credit_minor, b.pending_debit_minor) == (0, 0, 0)
    assert await _get(splits, split.order_id) == s
    # nothing is left to refund
    assert await _refused(_refund(splits, split.order_id, 1)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_SPLIT")
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_partial_refunds_after_a_partial_release(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    await _release(splits, split.order_id, event_name="SHIPPED")  # 501 posted, 502 held
    # 1000 over what the legs still have (111 and 1003): allocate -> 100 and 900; the
    # supplier's 900 is its 502 held first, then 398 of the 501 posted to it.
    first = await _refund(splits, split.order_id, 1_000)
    assert _changes(first.action) == [(0, 0, 100, 0), (1, 502, 398, 0)]
    assert sum(c.refunded_held_minor + c.refunded_posted_minor
               for c in first.action.leg_changes) == 1_000
    assert await _balance(client, ids["PLAT_001"]) == (11, 0)
    assert await _balance(client, ids["SUP_2025001"]) == (103, 0)
    got = await _get(splits, split.order_id)
    assert got == first.split
    assert (got.status, got.refunded_minor, got.held_minor) == (
        pb.SPLIT_STATUS_PARTLY_REFUNDED, 1_000, 0)
    assert [(leg.released_minor, leg.voided_minor, leg.refunded_minor) for leg in got.legs] == [
        (PLATFORM_MINOR, 0, 100), (501, 502, 900)]
    assert [a.kind for a in got.actions] == [pb.SPLIT_ACTION_KIND_SPLIT,
                                             pb.SPLIT_ACTION_KIND_RELEASE,
                                             pb.SPLIT_ACTION_KIND_REFUND]
    assert got.actions[-1] == first.action
    # more than what is left (114)
    assert await _refused(_refund(splits, split.order_id, 115)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_SPLIT")
    rest = await _refund(splits, split.order_id, 114)
    assert _changes(rest.action) == [(0, 0, 11, 0), (1, 0, 103, 0)]
    assert (rest.split.status, rest.split.refunded_minor) == (pb.SPLIT_STATUS_REFUNDED,
                                                              AMOUNT_MINOR)
    for ref in ("PLAT_001", "SUP_2025001", "CUSTODIAL"):
        assert await _balance(client, ids[ref]) == (0, 0)
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_a_partial_refund_of_a_hold_keeps_the_rest_held(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    # 557 over 111 and 1003: 55.5 and 501.5, the tie to the first leg -> 56 and 501
    done = await _refund(splits, split.order_id, 557)
    assert _changes(done.action) == [(0, 0, 56, 0), (1, 501, 0, 0)]
    held = done.action.leg_changes[1]
    assert len(held.transfer_ids) == 2  # the old pending voided, a new one for 502
    assert await _balance(client, ids["SUP_2025001"]) == (0, 502)
    leg = done.split.legs[1]
    assert (leg.held_minor, leg.voided_minor, leg.refunded_minor, done.split.status) == (
        502, 501, 501, pb.SPLIT_STATUS_PARTLY_REFUNDED)
    # releases post the new pending transfer: 501 on SHIPPED, the last 1 on RECEIVED
    shipped = await _release(splits, split.order_id, event_name="SHIPPED")
    assert shipped.action.amount_minor == 501
    received = await _release(splits, split.order_id, event_name="RECEIVED")
    assert received.action.amount_minor == 1
    assert await _balance(client, ids["SUP_2025001"]) == (502, 0)
    after = await _get(splits, split.order_id)
    assert (after.status, after.held_minor, after.refunded_minor) == (
        pb.SPLIT_STATUS_PARTLY_REFUNDED, 0, 557)
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_refund_twice_with_the_same_and_another_request_id(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    request_id = rid()
    first = await _refund(splits, split.order_id, 100, request_id)
    again = await _refund(splits, split.order_id, 100, request_id)
    assert again == first
    assert (await _get(splits, split.order_id)).refunded_minor == 100
    assert await _refused(_refund(splits, split.order_id, 200, request_id)) == (
        grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    second = await _refund(splits, split.order_id, 100)
    assert second.action.action_id != first.action.action_id
    got = await _get(splits, split.order_id)
    assert got.refunded_minor == 200
    assert [a.kind for a in got.actions].count(pb.SPLIT_ACTION_KIND_REFUND) == 2
    assert sum(leg.refunded_minor for leg in got.legs) == 200
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_a_receiver_without_the_funds(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    await _release(splits, split.order_id, fraction_bps=10_000)
    supplier = ids["SUP_2025001"]
    elsewhere = (await client.open("SPENT_ELSEWHERE")).account_id
    await client.transfer(supplier, elsewhere, 1_000)  # the supplier keeps 3
    before = await _get(splits, split.order_id)
    assert await _refused(_refund(splits, split.order_id, AMOUNT_MINOR)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert await _get(splits, split.order_id) == before
    assert await _balance(client, supplier) == (3, 0)
    assert await _balance(client, ids["PLAT_001"]) == (PLATFORM_MINOR, 0)
    # the platform's reserve covers what the supplier cannot give back
    reserve = (await client.open("REFUND_RESERVE")).account_id
    await client.transfer(ids["CUSTODIAL"], reserve, 5_000)
    done = await _refund(splits, split.order_id, AMOUNT_MINOR,
                         shortfall_account_ref="REFUND_RESERVE")
    assert _changes(done.action) == [(0, 0, PLATFORM_MINOR, 0), (1, 0, HELD_MINOR, 1_000)]
    change = done.action.leg_changes[1]
    assert change.shortfall_account_id == reserve and len(change.transfer_ids) == 2
    assert done.action.leg_changes[0].shortfall_account_id == 0
    assert await _balance(client, supplier) == (0, 0)
    assert await _balance(client, reserve) == (4_000, 0)
    assert (done.split.status, done.split.refunded_minor) == (pb.SPLIT_STATUS_REFUNDED,
                                                              AMOUNT_MINOR)
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_concurrent_refunds_of_one_split_commit_once(world, client: Client):
    splits, ids = world
    split = await _held_split(splits)
    results = await asyncio.gather(
        *(_refund(splits, split.order_id, AMOUNT_MINOR) for _ in range(4)),
        return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [(r.code(), details(r)[0]) for r in results if isinstance(r, BaseException)]
    assert len(done) == 1 and done[0].split.status == pb.SPLIT_STATUS_REFUNDED
    assert set(refused) <= {(grpc.StatusCode.ALREADY_EXISTS, "SPLIT_CHANGED"),
                            (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_SPLIT")}
    assert len((await _get(splits, split.order_id)).actions) == 2
    assert (await client.verify()).ok


async def test_a_subsidy_goes_back_to_its_source(world, client: Client):
    splits, ids = world
    await client.transfer(ids["CUSTODIAL"], ids["MKT"], 5_000)  # the coupon budget
    before = {ref: await _balance(client, ids[ref]) for ref in ("MKT", "CUSTODIAL")}
    split = await splits.split(order(
        8_000, rule_set_name="coupons-base", parties={"seller": "M_10086"},
        coupons=[pb.Coupon(coupon_id="C20", amount_minor=2_000,
                           funding=pb.COUPON_FUNDING_PLATFORM)]))
    assert split.subsidy_minor == 1_500
    assert await _refused(_refund(splits, split.order_id, 8_000, currency_code="USD")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH")
    done = await _refund(splits, split.order_id, 8_000)  # a full refund reverses every leg
    # the coupon (1_500 into the split base) and the shares of 9_500 it made up
    assert sum(c.refunded_posted_minor for c in done.action.leg_changes) == 11_000
    assert done.split.status == pb.SPLIT_STATUS_REFUNDED
    assert {ref: await _balance(client, ids[ref]) for ref in ("MKT", "CUSTODIAL")} == before
    for ref in ("PLAT_001", "M_10086"):
        assert await _balance(client, ids[ref]) == (0, 0)
    assert (await client.verify()).ok
