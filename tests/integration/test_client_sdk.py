"""clearing_client: its public surface, error details, and safe retries by request id."""

from __future__ import annotations

import asyncio

import grpc
import pytest

import clearing_client
from clearing import server
from clearing_client import ClearingClient, ClearingRpcError
from tests.conftest import server_settings
from tests.support import free_port



def test_public_surface_is_pinned():
    assert set(clearing_client.__all__) == {
        "ClearingClient", "ClearingRpcError", "RETRYABLE_CODES", "new_request_id",
        "tls_credentials", "WebhookSignatureError", "verify_signature", "verify_webhook",
        "ACCOUNT_KIND_CUSTODIAL", "ACCOUNT_KIND_PLATFORM", "ACCOUNT_KIND_MERCHANT",
        "ACCOUNT_KIND_ORDINARY", "ACCOUNT_KIND_FEE", "ACCOUNT_KIND_MARKETING",
        "ACCOUNT_KIND_FUNCTIONAL", "OWNER_TYPE_ENTERPRISE", "OWNER_TYPE_INDIVIDUAL",
        "TRANSFER_MODE_IMMEDIATE", "TRANSFER_MODE_PENDING", "TRANSFER_MODE_POST_PENDING",
        "TRANSFER_MODE_VOID_PENDING"}


async def test_errors_carry_reason_and_fields(channel, platform):
    c = ClearingClient("", platform.key, channel=channel)
    with pytest.raises(ClearingRpcError) as err:
        await c.transfer(1, 1, -5, "cny")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.reason == "INVALID_ARGUMENT"
    assert {"credit_account_id", "amount_minor", "currency_code"} <= set(err.value.fields)
    assert [v.field for v in err.value.violations] == err.value.fields
    assert all(v.description for v in err.value.violations)


async def test_retries_until_the_server_is_up(database_url, redis_url, redis_prefix, platform):
    port = free_port()
    async with ClearingClient(f"127.0.0.1:{port}", platform.key, attempts_max=40,
                              backoff_s=0.05, backoff_max_s=0.2) as c:
        call = asyncio.create_task(c.create_account("late", kind=clearing_client.ACCOUNT_KIND_MERCHANT))
        await asyncio.sleep(0.5)
        assert not call.done()
        srv = await server.start(server_settings(database_url, redis_url, redis_prefix,
                                                 grpc_addr=f"127.0.0.1:{port}"), migrate=False)
        try:
            account = await asyncio.wait_for(call, 20)
            assert account.external_ref == "late"
        finally:
            await srv.stop()


async def test_same_request_id_is_one_transfer(channel, platform):
    c = ClearingClient("", platform.key, channel=channel)
    custodial = await c.create_account("c", kind=clearing_client.ACCOUNT_KIND_CUSTODIAL)
    merchant = await c.create_account("m", kind=clearing_client.ACCOUNT_KIND_MERCHANT)
    rid = clearing_client.new_request_id()
    a = await c.transfer(custodial.account_id, merchant.account_id, 42, "CNY", request_id=rid)
    b = await c.transfer(custodial.account_id, merchant.account_id, 42, "CNY", request_id=rid)
    assert a.transfer_id == b.transfer_id
    assert (await c.balance(merchant.account_id)).posted_minor == 42
