"""Authentication, roles and tenancy."""

from __future__ import annotations

import secrets

import asyncpg
import grpc
import pytest

from clearing.tenancy import create_platform
from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, details, rid



async def _platform(database_url: str, roles: set[str]) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await create_platform(conn, f"p_{secrets.token_hex(5)}", frozenset(roles))
    finally:
        await conn.close()
    return key


async def test_no_key_is_unauthenticated(channel):
    from clearing.v1 import ledger_pb2_grpc
    stub = ledger_pb2_grpc.LedgerServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListAccounts(pb.ListAccountsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(err.value)[0] == "API_KEY_MISSING"


async def test_wrong_key_is_unauthenticated(channel):
    for key in ("ck_" + secrets.token_urlsafe(32), "x" * 500):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await Client(channel, key).call("ListAccounts", pb.ListAccountsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_malformed_authorization_is_unauthenticated(channel):
    from clearing.v1 import ledger_pb2_grpc
    stub = ledger_pb2_grpc.LedgerServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListAccounts(pb.ListAccountsRequest(), timeout=10,
                                metadata=(("authorization", "Basic abc"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_another_platforms_account_is_not_found(client: Client, channel, database_url):
    mine = await client.open("mine")
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    intruder = Client(channel, await _platform(database_url, {"operator"}))
    their_custodial = await intruder.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    calls = [
        ("GetAccount", pb.GetAccountRequest(account_id=mine.account_id)),
        ("GetAccount", pb.GetAccountRequest(external_ref="mine")),
        ("GetBalance", pb.GetBalanceRequest(account_id=mine.account_id)),
        ("ListEntries", pb.ListEntriesRequest(account_id=mine.account_id)),
        ("FreezeAccount", pb.FreezeAccountRequest(request_id=rid(), account_id=mine.account_id,
                                                  reason="x")),
        ("CloseAccount", pb.CloseAccountRequest(request_id=rid(), account_id=mine.account_id)),
        ("Transfer", pb.TransferRequest(
            request_id=rid(), debit_account_id=their_custodial.account_id,
            credit_account_id=mine.account_id, amount_minor=1, currency_code="CNY",
            mode=pb.TRANSFER_MODE_IMMEDIATE)),
        ("Transfer", pb.TransferRequest(
            request_id=rid(), debit_account_id=custodial.account_id,
            credit_account_id=their_custodial.account_id, amount_minor=1, currency_code="CNY",
            mode=pb.TRANSFER_MODE_IMMEDIATE)),
    ]
    for method, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await intruder.call(method, request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, method
    listed = await intruder.call("ListAccounts", pb.ListAccountsRequest())
    assert [a.external_ref for a in listed.accounts] == ["c"]
    assert (await client.balance(mine.account_id)).posted_minor == 0
    assert (await client.call("GetAccount", pb.GetAccountRequest(
        account_id=mine.account_id))).account.status == pb.ACCOUNT_STATUS_ACTIVE


async def test_roles_are_enforced(channel, database_url):
    gateway = Client(channel, await _platform(database_url, {"gateway"}))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.open("x")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(err.value)[0] == "ROLE_REQUIRED"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await gateway.verify()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await gateway.call("ListAccounts", pb.ListAccountsRequest())
    assert list(listed.accounts) == []
