"""Review above the threshold (maker-checker approve and reject), GetPayout / ListPayouts
with pagination and filters, and the masked number everywhere."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from clearing.v1 import payout_pb2 as pb
from tests.payout_support import CARD, MASKED, Payouts, party, set_config
from tests.split_support import new_key
from tests.support import details, rid

pytestmark = [pytest.mark.timeout(60)]


@pytest.fixture
async def desk(channel, client, platform, database_url):
    """(operator view, approver view, party) with a review threshold of 10,000."""
    maker = Payouts(channel, platform.key)
    checker = Payouts(channel, await new_key(database_url, platform.platform_id,
                                             {"approver"}))
    p = await party(client, maker, funds=100_000)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=10,
                     fee_account_id=p.fee, review_threshold_minor=10_000)
    return maker, checker, p


async def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), details(err.value)[0]


async def test_above_threshold_waits_for_review_then_approve_pays(desk, client):
    maker, checker, p = desk
    small = await maker.request(p.account, 10_000)
    assert not small.review_required
    big = await maker.request(p.account, 10_001)
    assert big.state == pb.PAYOUT_STATE_PENDING_REVIEW and big.review_required
    assert not big.transfers[0].HasField("next_attempt_time")
    await asyncio.sleep(0.5)  # the worker must not touch it meanwhile
    assert (await maker.get(big.payout_id)).state == pb.PAYOUT_STATE_PENDING_REVIEW
    # the operator who asked cannot approve: wrong role; an approver key can
    assert await _code(maker.approve(big.payout_id)) == (grpc.StatusCode.PERMISSION_DENIED,
                                                        "ROLE_REQUIRED")
    approved = await checker.approve(big.payout_id, reason="checked the invoice")
    assert approved.state in (pb.PAYOUT_STATE_QUEUED, pb.PAYOUT_STATE_SUBMITTED,
                              pb.PAYOUT_STATE_SUCCEEDED)
    assert approved.review_reason == "checked the invoice" and approved.reviewed_by
    assert approved.HasField("review_time")
    done = await maker.wait_state(big.payout_id, (pb.PAYOUT_STATE_SUCCEEDED,))
    assert done.paid_minor == 9_991
    await maker.wait_state(small.payout_id, (pb.PAYOUT_STATE_SUCCEEDED,))
    b = await client.balance(p.account)
    assert (b.posted_minor, b.pending_debit_minor) == (100_000 - 20_001, 0)
    assert (await client.balance(p.fee)).posted_minor == 20
    # approving again: no longer in review
    assert await _code(checker.approve(big.payout_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "PAYOUT_NOT_IN_REVIEW")


async def test_reject_releases_the_hold_and_replays(desk, client):
    maker, checker, p = desk
    big = await maker.request(p.account, 50_000)
    assert (await client.balance(p.account)).available_minor == 50_000
    assert await _code(checker.call("RejectPayout", pb.RejectPayoutRequest(
        request_id=rid(), payout_id=big.payout_id, reason=""))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    request_id = rid()
    rejected = await checker.reject(big.payout_id, reason="suspicious", request_id=request_id)
    assert rejected.state == pb.PAYOUT_STATE_FAILED
    assert (rejected.failure_reason, rejected.paid_minor) == ("REJECTED", 0)
    assert rejected.HasField("finish_time")
    again = await checker.reject(big.payout_id, reason="suspicious", request_id=request_id)
    assert again.state == pb.PAYOUT_STATE_FAILED
    assert await _code(checker.reject(big.payout_id, reason="other", request_id=request_id)) \
        == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    b = await client.balance(p.account)
    assert (b.posted_minor, b.available_minor, b.pending_debit_minor) == (100_000, 100_000, 0)
    f = await client.balance(p.fee)
    assert (f.posted_minor, f.pending_credit_minor) == (0, 0)
    assert await _code(checker.approve(big.payout_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "PAYOUT_NOT_IN_REVIEW")
    assert (await client.verify()).ok


async def test_maker_checker_one_key_with_both_roles_cannot_review_its_own(
        channel, client, platform, database_url):
    both = Payouts(channel, await new_key(database_url, platform.platform_id,
                                          {"operator", "approver"}))
    other = Payouts(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    p = await party(client, both, funds=100_000)
    await set_config(database_url, platform.platform_id, review_threshold_minor=100)
    payout = await both.request(p.account, 5_000)
    assert payout.state == pb.PAYOUT_STATE_PENDING_REVIEW
    assert await _code(both.approve(payout.payout_id)) == (grpc.StatusCode.PERMISSION_DENIED,
                                                          "MAKER_CHECKER")
    assert await _code(both.reject(payout.payout_id)) == (grpc.StatusCode.PERMISSION_DENIED,
                                                         "MAKER_CHECKER")
    request_id = rid()
    approved = await other.approve(payout.payout_id, request_id=request_id)
    replay = await other.approve(payout.payout_id, request_id=request_id)
    assert replay.payout_id == approved.payout_id
    await both.wait_state(payout.payout_id, (pb.PAYOUT_STATE_SUCCEEDED,))
    assert await _code(other.approve(999_999_999)) == (grpc.StatusCode.NOT_FOUND,
                                                      "PAYOUT_NOT_FOUND")


async def test_get_and_list_with_pagination_and_filters(desk, client, channel, database_url):
    maker, checker, p = desk
    second = (await client.open("second-merchant")).account_id
    await client.transfer(p.custodial, second, 100_000)
    await maker.bind(second)
    reviewed = [await maker.request(p.account, 20_000 + i) for i in range(3)]
    queued = [await maker.request(second, 1_000 + i) for i in range(4)]
    created = reviewed + queued
    # every payout, newest first, 3 per page
    seen, token = [], ""
    for _ in range(10):
        page = await checker.call("ListPayouts", pb.ListPayoutsRequest(page_size=3,
                                                                       page_token=token))
        assert len(page.payouts) <= 3
        seen += [x.payout_id for x in page.payouts]
        token = page.next_page_token
        if not token:
            break
    assert seen == [x.payout_id for x in reversed(created)]
    by_account = await maker.call("ListPayouts", pb.ListPayoutsRequest(account_id=second))
    assert [x.payout_id for x in by_account.payouts] == [x.payout_id for x in reversed(queued)]
    in_review = await maker.call("ListPayouts", pb.ListPayoutsRequest(
        states=[pb.PAYOUT_STATE_PENDING_REVIEW]))
    assert [x.payout_id for x in in_review.payouts] == [x.payout_id for x in reversed(reviewed)]
    start = Timestamp()
    start.CopyFrom(queued[0].create_time)
    window = await maker.call("ListPayouts", pb.ListPayoutsRequest(
        start_time=start, end_time=queued[2].create_time))
    assert [x.payout_id for x in window.payouts] == [queued[1].payout_id, queued[0].payout_id]
    for x in (await maker.call("ListPayouts", pb.ListPayoutsRequest())).payouts:
        assert x.masked_account_number == MASKED and CARD not in str(x)
    got = await maker.get(reviewed[0].payout_id)
    assert (got.amount_minor, got.fee_minor, got.external_ref) == (20_000, 10, "merchant")
    # bad filters and tokens: field paths
    bad = [(pb.ListPayoutsRequest(page_size=1001), ["page_size"]),
           (pb.ListPayoutsRequest(states=[0, 9]), ["states[0]", "states[1]"]),
           (pb.ListPayoutsRequest(account_id=-1), ["account_id"]),
           (pb.ListPayoutsRequest(page_token="garbage"), ["page_token"]),
           (pb.ListPayoutsRequest(start_time=queued[2].create_time,
                                  end_time=queued[0].create_time), ["end_time"])]
    for request, fields in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await maker.call("ListPayouts", request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(err.value)[1] == fields, request
