"""RequestPayout and BindBankAccount through gRPC: the hold, fees, cutting into bank
transfers, masked numbers, every refusal (nothing held), idempotent replays."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as pb
from tests.payout_support import CARD, MASKED, Payouts, party, set_config
from tests.support import Client, details, rid


@pytest.fixture
def payouts(channel, platform) -> Payouts:
    return Payouts(channel, platform.key)


async def _refused(call, code: grpc.StatusCode, reason: str, fields: list[str] | None = None):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value
    got_reason, got_fields = details(err.value)
    assert got_reason == reason
    if fields is not None:
        assert got_fields == fields
    return err.value


async def _untouched(client: Client, account_id: int, funds: int) -> None:
    b = await client.balance(account_id)
    assert (b.posted_minor, b.available_minor, b.pending_debit_minor) == (funds, funds, 0)


async def test_bind_masks_the_number_and_replaces_the_earlier_binding(client, payouts):
    merchant = (await client.open("m")).account_id
    first = await payouts.bind(merchant)
    assert first.masked_account_number == MASKED
    assert first.status == pb.BANK_ACCOUNT_STATUS_ACTIVE
    assert CARD not in str(first)
    second = await payouts.bind(merchant, number="6222020000005678")
    assert second.masked_account_number == "6222****5678"
    assert second.bank_account_id != first.bank_account_id
    # a replay of the first request returns the first binding (now REPLACED)
    rid_ = rid()
    third = await payouts.bind(merchant, number="6222020000009999", request_id=rid_)
    again = await payouts.bind(merchant, number="6222020000009999", request_id=rid_)
    assert again.bank_account_id == third.bank_account_id
    await _refused(payouts.bind(merchant, number="6222020000001111", request_id=rid_),
                   grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


async def test_bind_refuses_owner_type_mismatch_and_bad_fields(client, payouts):
    person = (await client.open("person", owner=lpb.OWNER_TYPE_INDIVIDUAL)).account_id
    await _refused(payouts.bind(person, account_type=pb.BANK_ACCOUNT_TYPE_CORPORATE),
                   grpc.StatusCode.FAILED_PRECONDITION, "OWNER_TYPE_MISMATCH")
    bound = await payouts.bind(person, account_type=pb.BANK_ACCOUNT_TYPE_PERSONAL)
    assert bound.account_type == pb.BANK_ACCOUNT_TYPE_PERSONAL
    await _refused(payouts.call("BindBankAccount", pb.BindBankAccountRequest(
        request_id=rid(), account_id=person, bank_code="", bank_name="B",
        account_number="12ab", holder_name="", account_type=0, branch_code="1")),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
        ["bank_code", "branch_code", "account_number", "holder_name", "account_type"])
    await _refused(payouts.bind(999_999_999), grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")


async def test_payout_holds_amount_with_fee_and_masks_number(client, payouts, platform,
                                                             database_url):
    p = await party(client, payouts, funds=10_000)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=4,
                     fee_account_id=p.fee)
    payout = await payouts.request(p.account, 990, memo="withdrawal")
    assert (payout.amount_minor, payout.fee_minor, payout.net_amount_minor) == (990, 4, 986)
    assert payout.masked_account_number == MASKED
    assert payout.state in (pb.PAYOUT_STATE_QUEUED, pb.PAYOUT_STATE_SUBMITTED,
                            pb.PAYOUT_STATE_SUCCEEDED)
    assert payout.origin == pb.PAYOUT_ORIGIN_REQUEST
    assert payout.fee_account_id == p.fee
    assert [t.amount_minor for t in payout.transfers] == [986]
    assert payout.transfers[0].sequence == 1
    assert payout.memo == "withdrawal"
    assert payout.external_ref == "merchant"
    b = await client.balance(p.account)
    assert b.available_minor == 10_000 - 990
    # held, or already paid out by the worker
    assert (b.posted_minor, b.pending_debit_minor) in ((10_000, 990), (9_010, 0))


async def test_payout_fee_in_basis_points_uses_the_one_rounding_rule(client, payouts, platform,
                                                                     database_url):
    p = await party(client, payouts, funds=100_000)
    # 3 + 0.6% of 12,345 = 3 + 74.07 -> 3 + 74 (floored)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=3, fee_bps=60,
                     fee_account_id=p.fee)
    payout = await payouts.request(p.account, 12_345)
    assert (payout.fee_minor, payout.net_amount_minor) == (77, 12_268)


async def test_large_payout_is_cut_into_bank_transfers_of_at_most_500k(client, payouts,
                                                                      platform, database_url):
    p = await party(client, payouts, funds=200_000_000)
    await set_config(database_url, platform.platform_id)
    payout = await payouts.request(p.account, 120_000_000)
    assert [t.amount_minor for t in payout.transfers] == [50_000_000, 50_000_000, 20_000_000]
    assert [t.sequence for t in payout.transfers] == [1, 2, 3]
    assert (await client.balance(p.account)).available_minor == 80_000_000


async def test_refusals_hold_nothing(client, payouts, platform, database_url):
    p = await party(client, payouts, funds=5_000)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=50,
                     fee_account_id=p.fee, min_amount_minor=100, max_amount_minor=4_000,
                     daily_max_minor=6_000)
    inv, fp = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    await _refused(payouts.request(p.account, 99), inv, "AMOUNT_BELOW_MINIMUM",
                   ["amount_minor"])
    await _refused(payouts.request(p.account, 4_001), inv, "AMOUNT_ABOVE_MAXIMUM",
                   ["amount_minor"])
    await _refused(payouts.request(p.account, 1_000, currency="USD"), inv,
                   "CURRENCY_MISMATCH", ["currency_code"])
    await _refused(payouts.request(p.account, 0, currency="XXX"), inv, "INVALID_ARGUMENT",
                   ["amount_minor", "currency_code"])
    await _refused(payouts.request(p.account, 999_999), inv, "AMOUNT_ABOVE_MAXIMUM")
    await _untouched(client, p.account, 5_000)
    # fee >= amount: a platform whose minimum is below its fee
    await set_config(database_url, platform.platform_id, fee_fixed_minor=50,
                     fee_account_id=p.fee, min_amount_minor=1)
    await _refused(payouts.request(p.account, 50), inv, "AMOUNT_NOT_ABOVE_FEE",
                   ["amount_minor"])
    await _refused(payouts.request(p.account, 5_001), fp, "INSUFFICIENT_FUNDS")
    await _untouched(client, p.account, 5_000)


async def test_daily_maximum_counts_todays_payouts(client, payouts, platform, database_url):
    p = await party(client, payouts, funds=50_000)
    await set_config(database_url, platform.platform_id, daily_max_minor=10_000)
    await payouts.request(p.account, 6_000)
    await payouts.request(p.account, 4_000)
    await _refused(payouts.request(p.account, 1), grpc.StatusCode.RESOURCE_EXHAUSTED,
                   "DAILY_LIMIT_EXCEEDED")
    assert (await client.balance(p.account)).available_minor == 40_000


async def test_account_and_bank_account_preconditions(client, payouts, platform, database_url):
    fp = grpc.StatusCode.FAILED_PRECONDITION
    p = await party(client, payouts, funds=5_000, bind=False)
    await _refused(payouts.request(p.account, 1_000), fp, "NO_BANK_ACCOUNT")
    await payouts.bind(p.account, kyc=False)
    await _refused(payouts.request(p.account, 1_000), fp, "KYC_NOT_VERIFIED")
    await payouts.bind(p.account)
    await client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=p.account, reason="investigation"))
    await _refused(payouts.request(p.account, 1_000), fp, "ACCOUNT_FROZEN")
    await client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=p.account, reason="cleared"))
    await _untouched(client, p.account, 5_000)
    # a binding whose type no longer matches the owner (made before the rule): refused
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE bank_accounts SET account_type = 2 WHERE account_id = $1"
                           " AND status = 1", p.account)
    finally:
        await conn.close()
    await _refused(payouts.request(p.account, 1_000), fp, "OWNER_TYPE_MISMATCH")
    await _refused(payouts.request(999_999_999, 1_000), grpc.StatusCode.NOT_FOUND,
                   "ACCOUNT_NOT_FOUND")
    await _untouched(client, p.account, 5_000)


async def test_replay_returns_the_payout_and_other_payload_is_refused(client, payouts):
    p = await party(client, payouts, funds=5_000)
    request_id = rid()
    first = await payouts.request(p.account, 1_000, request_id=request_id)
    again = await payouts.request(p.account, 1_000, request_id=request_id)
    assert again.payout_id == first.payout_id
    await _refused(payouts.request(p.account, 1_001, request_id=request_id),
                   grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert (await client.balance(p.account)).available_minor == 4_000


async def test_other_platforms_payouts_are_not_found(channel, client, payouts, database_url):
    from clearing.tenancy import create_platform
    p = await party(client, payouts, funds=5_000)
    payout = await payouts.request(p.account, 1_000)
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await create_platform(conn, f"other_{rid()[:8]}",
                                       frozenset({"operator", "approver"}))
    finally:
        await conn.close()
    other = Payouts(channel, key)
    await _refused(other.get(payout.payout_id), grpc.StatusCode.NOT_FOUND, "PAYOUT_NOT_FOUND")
    await _refused(other.request(p.account, 1_000), grpc.StatusCode.NOT_FOUND,
                   "ACCOUNT_NOT_FOUND")


async def test_the_full_number_is_never_logged_nor_returned(client, payouts, caplog):
    import logging
    caplog.set_level(logging.DEBUG, logger="clearing")
    p = await party(client, payouts, funds=5_000)
    payout = await payouts.request(p.account, 1_000)
    listed = await payouts.call("ListPayouts", pb.ListPayoutsRequest(account_id=p.account))
    got = await payouts.get(payout.payout_id)
    with pytest.raises(grpc.aio.AioRpcError):  # an error path too
        await payouts.bind(p.account, number=CARD + "x")
    for message in (payout, listed, got):
        assert CARD not in str(message) and MASKED in str(message)
    assert CARD not in caplog.text


async def test_set_payout_schedule_is_served_by_the_payout_service(client, payouts):
    merchant = (await client.open("scheduled")).account_id
    response = await payouts.call("SetPayoutSchedule", pb.SetPayoutScheduleRequest(
        request_id=rid(), schedule=pb.PayoutSchedule(account_id=merchant,
                                                     cycle=pb.PAYOUT_CYCLE_MANUAL)))
    assert (response.schedule.account_id, response.schedule.cycle,
            response.schedule.currency_code) == (merchant, pb.PAYOUT_CYCLE_MANUAL, "CNY")
    await _refused(payouts.call("SetPayoutSchedule", pb.SetPayoutScheduleRequest(
        request_id=rid(), schedule=pb.PayoutSchedule(account_id=merchant))),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["schedule.cycle"])
