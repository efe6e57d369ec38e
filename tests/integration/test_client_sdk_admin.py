"""clearing_client's PlatformService methods against the real server, with admin keys:
platforms and keys made (a replay of the same request id answers the first result, the key
not shown again), listed and revoked; a fee change pending, refused to its maker, approved
by another admin key, in force; a rejected one; the business calendar; a platform's key
refused. Errors arrive typed (ClearingRpcError with reason and fields)."""

from __future__ import annotations

import datetime as dt
import secrets

import asyncpg
import grpc
import pytest

from clearing.tenancy import create_admin_key
from clearing_client import ACCOUNT_KIND_PLATFORM, ClearingClient, ClearingRpcError
from clearing_client.v1 import platform_pb2 as pb


async def _admin(channel, database_url: str) -> ClearingClient:
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await create_admin_key(conn, f"sdk-{secrets.token_hex(3)}")
    finally:
        await conn.close()
    return ClearingClient("", key, channel=channel)


@pytest.fixture
async def maker(channel, database_url) -> ClearingClient:
    return await _admin(channel, database_url)


@pytest.fixture
async def checker(channel, database_url) -> ClearingClient:
    return await _admin(channel, database_url)


async def test_platforms_and_keys_with_safe_retries(channel, maker):
    name = f"sdk-{secrets.token_hex(5)}"
    made = await maker.create_platform(name, request_id=f"sdk-p-{name}")
    again = await maker.create_platform(name, request_id=f"sdk-p-{name}")  # a retry
    assert again == made and made.name == name and made.platform_id > 0
    assert await maker.get_platform(name=name) == made
    assert await maker.get_platform(made.platform_id) == made
    with pytest.raises(ClearingRpcError) as err:
        await maker.create_platform(name)  # another request id: the name is taken
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.ALREADY_EXISTS,
                                                   "ALREADY_EXISTS")
    other = await maker.create_platform(f"{name}-2")
    page = await maker.list_platforms(page_size=1)
    assert len(page.platforms) == 1 and page.next_page_token
    seen, token = [], ""
    while True:
        page = await maker.list_platforms(page_size=2, page_token=token)
        seen += [p.platform_id for p in page.platforms]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and {made.platform_id, other.platform_id} <= set(seen)

    rid = f"sdk-k-{name}"
    key = await maker.create_api_key(made.platform_id, ["gateway", "operator"], request_id=rid)
    assert key.key.startswith("ck_") and not key.key_shown_before
    replay = await maker.create_api_key(made.platform_id, ["gateway", "operator"],
                                        request_id=rid)
    assert replay.api_key == key.api_key and replay.key == "" and replay.key_shown_before
    second = await maker.create_api_key(made.platform_id, ["approver"])
    listed = await maker.list_api_keys(made.platform_id)
    assert [k.key_id for k in listed.api_keys] == [key.api_key.key_id, second.api_key.key_id]
    assert [k.key_id for k in (await maker.list_api_keys(
        key_prefix=key.api_key.key_prefix)).api_keys] == [key.api_key.key_id]

    platform = ClearingClient("", key.key, channel=channel)
    account = await platform.create_account("fees", kind=ACCOUNT_KIND_PLATFORM)
    assert account.external_ref == "fees"
    with pytest.raises(ClearingRpcError) as err:  # a platform's key: no admin calls
        await platform.list_platforms()
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                   "ROLE_REQUIRED")

    revoked = await maker.revoke_api_key(key.api_key.key_id)
    assert revoked.api_key.HasField("revoke_time") and not revoked.revoked_before
    assert (await maker.revoke_api_key(key.api_key.key_id)).revoked_before  # a retry

    with pytest.raises(ClearingRpcError) as err:
        await maker.create_api_key(made.platform_id, ["root"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.fields == ["roles[0]"]


async def test_a_fee_change_is_approved_by_another_admin_key(channel, maker, checker):
    p = await maker.create_platform(f"sdk-{secrets.token_hex(5)}")
    key = (await maker.create_api_key(p.platform_id, ["gateway", "operator"])).key
    fees = (await ClearingClient("", key, channel=channel).create_account(
        "fees", kind=ACCOUNT_KIND_PLATFORM)).account_id
    current = await maker.get_payout_config(p.platform_id, "CNY")
    assert not current.HasField("pending_change") and current.config.fee_fixed_minor == 0
    wanted = pb.PayoutConfig()
    wanted.CopyFrom(current.config)
    wanted.fee_fixed_minor, wanted.fee_account_id = 300, fees
    rid = f"sdk-c-{p.platform_id}"
    change = await maker.set_payout_config(wanted, request_id=rid)
    assert change.state == pb.PAYOUT_CONFIG_CHANGE_STATE_PENDING
    assert await maker.set_payout_config(wanted, request_id=rid) == change  # a retry
    assert (await maker.get_payout_config(p.platform_id, "CNY")).pending_change == change

    with pytest.raises(ClearingRpcError) as err:
        await maker.approve_payout_config_change(change.change_id)
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.PERMISSION_DENIED,
                                                   "MAKER_CHECKER")
    approved = await checker.approve_payout_config_change(change.change_id, note="ok")
    assert approved.state == pb.PAYOUT_CONFIG_CHANGE_STATE_APPROVED and approved.note == "ok"
    got = await maker.get_payout_config(p.platform_id, "CNY")
    assert got.config.fee_fixed_minor == 300 and not got.HasField("pending_change")
    with pytest.raises(ClearingRpcError) as err:  # decided once: a retry is refused
        await checker.approve_payout_config_change(change.change_id)
    assert (err.value.code, err.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                   "PAYOUT_CONFIG_CHANGE_NOT_PENDING")
    assert err.value.metadata["state"] == "APPROVED"

    wanted.fee_fixed_minor = 500
    second = await maker.set_payout_config(wanted)
    rejected = await maker.reject_payout_config_change(second.change_id, note="too high")
    assert rejected.state == pb.PAYOUT_CONFIG_CHANGE_STATE_REJECTED
    assert (await maker.get_payout_config(p.platform_id, "CNY")).config.fee_fixed_minor == 300


async def test_the_business_calendar(maker, database_url):
    try:
        done = await maker.set_business_calendar([
            (dt.date(2097, 5, 1), pb.CALENDAR_DAY_KIND_HOLIDAY, "labour day"),
            pb.CalendarDay(day="2097-05-04", kind=pb.CALENDAR_DAY_KIND_WORKDAY)])
        assert [(d.day, d.kind, d.note) for d in done] == [
            ("2097-05-01", pb.CALENDAR_DAY_KIND_HOLIDAY, "labour day"),
            ("2097-05-04", pb.CALENDAR_DAY_KIND_WORKDAY, "")]
        got = await maker.get_business_calendar(dt.date(2097, 4, 30), "2097-05-31")
        assert got == done
        await maker.set_business_calendar([("2097-05-01", pb.CALENDAR_DAY_KIND_UNSET)])
        assert await maker.get_business_calendar("2097-04-30", "2097-05-31") == done[1:]
        with pytest.raises(ClearingRpcError) as err:
            await maker.get_business_calendar("2097-02-30", "2097-05-31")
        assert err.value.fields == ["start_day"]
    finally:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DELETE FROM calendar_days WHERE day BETWEEN '2097-04-30'"
                               " AND '2097-05-31'")
        finally:
            await conn.close()
