"""request_id: a replay returns the first result; reuse with another payload is refused."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, details, rid



async def test_transfer_replay_returns_first_result(client: Client):
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    key = rid()
    first = await client.transfer(custodial.account_id, merchant.account_id, 700, request_id=key)
    again = await client.transfer(custodial.account_id, merchant.account_id, 700, request_id=key)
    assert again == first
    assert (await client.balance(merchant.account_id)).posted_minor == 700


async def test_concurrent_duplicates_commit_once(client: Client):
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    key = rid()
    results = await asyncio.gather(*[
        client.transfer(custodial.account_id, merchant.account_id, 5, request_id=key)
        for _ in range(20)])
    assert len({r.transfer_id for r in results}) == 1
    assert (await client.balance(merchant.account_id)).posted_minor == 5


async def test_reuse_with_different_payload_is_already_exists(client: Client):
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    key = rid()
    await client.transfer(custodial.account_id, merchant.account_id, 700, request_id=key)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.transfer(custodial.account_id, merchant.account_id, 701, request_id=key)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err.value)[0] == "REQUEST_ID_REUSED"
    # the same id on another method is a reuse too
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.call("CreateAccount", pb.CreateAccountRequest(
            request_id=key, external_ref="x", kind=pb.ACCOUNT_KIND_MERCHANT,
            owner_type=pb.OWNER_TYPE_ENTERPRISE, currency_code="CNY"))
    assert details(err.value)[0] == "REQUEST_ID_REUSED"
    assert (await client.balance(merchant.account_id)).posted_minor == 700


async def test_failed_transfer_replays_its_error(client: Client):
    custodial = await client.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    key = rid()
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.transfer(merchant.account_id, custodial.account_id, 1, request_id=key)
        assert details(err.value)[0] == "INSUFFICIENT_FUNDS"


async def test_create_account_replay(client: Client):
    req = pb.CreateAccountRequest(request_id=rid(), external_ref="once",
                                  kind=pb.ACCOUNT_KIND_MERCHANT,
                                  owner_type=pb.OWNER_TYPE_ENTERPRISE, currency_code="CNY")
    a = await client.call("CreateAccount", req)
    b = await client.call("CreateAccount", req)
    assert a.account.account_id == b.account.account_id
    listed = await client.call("ListAccounts", pb.ListAccountsRequest())
    assert [x.external_ref for x in listed.accounts] == ["once"]


async def test_request_ids_are_per_platform(client: Client, channel, database_url):
    import asyncpg, secrets
    from clearing.api.auth import create_platform
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await create_platform(conn, f"p_{secrets.token_hex(5)}",
                                       frozenset({"operator"}))
    finally:
        await conn.close()
    other = Client(channel, key)
    shared = rid()
    for c in (client, other):
        cust = await c.open("c", kind=pb.ACCOUNT_KIND_CUSTODIAL)
        m = await c.open("m")
        t = await c.transfer(cust.account_id, m.account_id, 3, request_id=shared)
        assert t.amount_minor == 3
