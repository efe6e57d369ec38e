"""Accounts and transfers through the generated stubs against a real server."""

from __future__ import annotations

import grpc
import pytest

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, details, rid



async def _funded(client: Client, amount: int) -> tuple[pb.Account, pb.Account]:
    custodial = await client.open("custodial", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("merchant")
    await client.transfer(custodial.account_id, merchant.account_id, amount)
    return custodial, merchant


async def test_create_account_defaults(client: Client):
    custodial = await client.open("c1", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m1", owner=pb.OWNER_TYPE_INDIVIDUAL, display_name="Shop")
    assert custodial.allow_negative is True
    assert merchant.allow_negative is False
    assert merchant.status == pb.ACCOUNT_STATUS_ACTIVE
    assert merchant.owner_type == pb.OWNER_TYPE_INDIVIDUAL
    assert merchant.display_name == "Shop"
    assert merchant.balance.posted_minor == 0
    got = await client.call("GetAccount", pb.GetAccountRequest(external_ref="m1"))
    assert got.account.account_id == merchant.account_id


async def test_duplicate_external_ref_is_already_exists(client: Client):
    await client.open("dup")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.open("dup")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err.value)[0] == "EXTERNAL_REF_TAKEN"


async def test_immediate_transfer_moves_exact_amounts(client: Client):
    custodial, merchant = await _funded(client, 99_00)
    shop = await client.open("shop")
    t = await client.transfer(merchant.account_id, shop.account_id, 14_70, memo="fee")
    assert t.mode == pb.TRANSFER_MODE_IMMEDIATE and t.amount_minor == 1470 and t.memo == "fee"
    assert (await client.balance(custodial.account_id)).posted_minor == -9900
    m = await client.balance(merchant.account_id)
    assert (m.posted_minor, m.available_minor, m.debits_posted_minor, m.credits_posted_minor) \
        == (8430, 8430, 1470, 9900)
    assert (await client.balance(shop.account_id)).available_minor == 1470


async def test_pending_post_partial_then_void_rest(client: Client):
    custodial, merchant = await _funded(client, 1000)
    seller = await client.open("seller")
    pending = await client.transfer(merchant.account_id, seller.account_id, 600,
                                    mode=pb.TRANSFER_MODE_PENDING)
    assert pending.pending_state == pb.PENDING_STATE_OPEN
    assert pending.pending_remaining_minor == 600
    m = await client.balance(merchant.account_id)
    assert (m.posted_minor, m.pending_debit_minor, m.available_minor) == (1000, 600, 400)
    s = await client.balance(seller.account_id)
    assert (s.posted_minor, s.pending_credit_minor, s.available_minor) == (0, 600, 0)

    post = await client.transfer(0, 0, 250, currency="", mode=pb.TRANSFER_MODE_POST_PENDING,
                                 pending_transfer_id=pending.transfer_id)
    assert post.amount_minor == 250 and post.pending_transfer_id == pending.transfer_id
    assert post.debit_account_id == merchant.account_id
    s = await client.balance(seller.account_id)
    assert (s.posted_minor, s.pending_credit_minor, s.available_minor) == (250, 350, 250)

    void = await client.transfer(0, 0, 0, currency="", mode=pb.TRANSFER_MODE_VOID_PENDING,
                                 pending_transfer_id=pending.transfer_id)
    assert void.amount_minor == 350
    m = await client.balance(merchant.account_id)
    assert (m.posted_minor, m.pending_debit_minor, m.available_minor) == (750, 0, 750)
    s = await client.balance(seller.account_id)
    assert (s.posted_minor, s.pending_credit_minor) == (250, 0)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.transfer(0, 0, 1, currency="", mode=pb.TRANSFER_MODE_POST_PENDING,
                              pending_transfer_id=pending.transfer_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0] == "PENDING_ALREADY_VOIDED"
    report = await client.verify()
    assert report.ok, report


async def test_post_more_than_pending_is_invalid(client: Client):
    _, merchant = await _funded(client, 1000)
    seller = await client.open("seller")
    pending = await client.transfer(merchant.account_id, seller.account_id, 100,
                                    mode=pb.TRANSFER_MODE_PENDING)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.transfer(0, 0, 101, currency="", mode=pb.TRANSFER_MODE_POST_PENDING,
                              pending_transfer_id=pending.transfer_id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value) == ("AMOUNT_EXCEEDS_PENDING", ["amount_minor"])


async def test_insufficient_funds_fails_alone(client: Client):
    _, merchant = await _funded(client, 500)
    other = await client.open("other")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.transfer(merchant.account_id, other.account_id, 501)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err.value)[0] == "INSUFFICIENT_FUNDS"
    assert (await client.balance(merchant.account_id)).available_minor == 500


async def test_frozen_account_neither_sends_nor_receives(client: Client):
    custodial, merchant = await _funded(client, 500)
    frozen = await client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant.account_id, reason="court order"))
    assert frozen.account.status == pb.ACCOUNT_STATUS_FROZEN
    for debit, credit in ((merchant.account_id, custodial.account_id),
                          (custodial.account_id, merchant.account_id)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.transfer(debit, credit, 1)
        assert details(err.value)[0] == "ACCOUNT_FROZEN"
    await client.call("UnfreezeAccount", pb.UnfreezeAccountRequest(
        request_id=rid(), account_id=merchant.account_id, reason="lifted"))
    await client.transfer(merchant.account_id, custodial.account_id, 1)


async def test_amount_freeze_limits_available(client: Client):
    custodial, merchant = await _funded(client, 500)
    r = await client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant.account_id, amount_minor=300, reason="dispute"))
    assert r.account.balance.frozen_minor == 300
    assert r.account.balance.available_minor == 200
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.transfer(merchant.account_id, custodial.account_id, 201)
    assert details(err.value)[0] == "INSUFFICIENT_FUNDS"
    await client.transfer(merchant.account_id, custodial.account_id, 200)


async def test_close_needs_zero_balances(client: Client):
    custodial, merchant = await _funded(client, 10)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.call("CloseAccount", pb.CloseAccountRequest(
            request_id=rid(), account_id=merchant.account_id))
    assert details(err.value)[0] == "ACCOUNT_NOT_EMPTY"
    await client.transfer(merchant.account_id, custodial.account_id, 10)
    closed = await client.call("CloseAccount", pb.CloseAccountRequest(
        request_id=rid(), account_id=merchant.account_id))
    assert closed.account.status == pb.ACCOUNT_STATUS_CLOSED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.transfer(custodial.account_id, merchant.account_id, 1)
    assert details(err.value)[0] == "ACCOUNT_CLOSED"


async def test_statement_pages_newest_first(client: Client):
    custodial, merchant = await _funded(client, 1)
    for amount in range(2, 8):
        await client.transfer(custodial.account_id, merchant.account_id, amount)
    seen, token = [], ""
    while True:
        page = await client.call("ListEntries", pb.ListEntriesRequest(
            account_id=merchant.account_id, page_size=3, page_token=token))
        seen += [(e.amount_minor, e.side, e.counterparty_account_id) for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert [a for a, _, _ in seen] == [7, 6, 5, 4, 3, 2, 1]
    assert {s for _, s, _ in seen} == {pb.ENTRY_SIDE_CREDIT}
    assert {c for _, _, c in seen} == {custodial.account_id}


async def test_list_accounts_pages(client: Client):
    for i in range(5):
        await client.open(f"acct-{i}")
    first = await client.call("ListAccounts", pb.ListAccountsRequest(page_size=2))
    assert len(first.accounts) == 2 and first.next_page_token
    rest = await client.call("ListAccounts", pb.ListAccountsRequest(
        page_size=10, page_token=first.next_page_token))
    refs = [a.external_ref for a in (*first.accounts, *rest.accounts)]
    assert refs == [f"acct-{i}" for i in range(5)]
    assert rest.next_page_token == ""


async def test_verify_reports_trial_balance(client: Client):
    custodial, merchant = await _funded(client, 12_345)
    report = await client.verify()
    assert report.ok and report.chain_ok
    assert [(t.currency_code, t.debits_posted_minor, t.credits_posted_minor, t.balanced)
            for t in report.totals] == [("CNY", 12_345, 12_345, True)]
    assert report.account_count == 2
