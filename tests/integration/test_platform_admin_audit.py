"""Every PlatformService change is in the audit trail, in the chain of the platform it
concerns, naming the admin key that made it (issue 14: "every admin change audited"; the
business calendar, which is no platform's, in the core's own chain, platform 0), and the
chains verify."""

from __future__ import annotations

import json
import secrets

import asyncpg

from clearing import audit
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import platform_pb2 as pb
from tests.integration.test_platform_admin import Admin, _admin_key
from tests.support import Client, rid


async def _trail(database_url: str, platform_id: int) -> list[tuple]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT seq, method, resource, roles, after FROM audit_events"
            " WHERE platform_id = $1 ORDER BY seq", platform_id)
        report = await audit.verify_on(conn, platform_id)
    finally:
        await conn.close()
    assert report.ok, report
    return [(r["seq"], r["method"], r["resource"], list(r["roles"]),
             json.loads(r["after"]) if r["after"] else None) for r in rows]


async def test_admin_changes_are_recorded_by_the_admin_key_that_made_them(
        channel, database_url):
    maker_id, maker_key = await _admin_key(database_url)
    checker_id, checker_key = await _admin_key(database_url)
    maker, checker = Admin(channel, maker_key, maker_id), Admin(channel, checker_key, checker_id)
    by_maker, by_checker = [f"admin-key:{maker_id}"], [f"admin-key:{checker_id}"]

    platform = (await maker.call("CreatePlatform", pb.CreatePlatformRequest(
        name=f"audited-{secrets.token_hex(4)}", request_id=rid()))).platform
    pid = platform.platform_id
    made = await maker.call("CreateApiKey", pb.CreateApiKeyRequest(
        platform_id=pid, roles=["gateway", "operator"], request_id=rid()))
    key_id = made.api_key.key_id
    fees = (await Client(channel, made.key).open(
        "fees", kind=lpb.ACCOUNT_KIND_PLATFORM)).account_id  # not an admin change: no record
    config = (await maker.call("GetPayoutConfig", pb.GetPayoutConfigRequest(
        platform_id=pid, currency_code="CNY"))).config
    config.fee_fixed_minor, config.fee_account_id = 400, fees
    change = (await maker.call("SetPayoutConfig", pb.SetPayoutConfigRequest(
        request_id=rid(), config=config))).change
    await checker.call("ApprovePayoutConfigChange", pb.ApprovePayoutConfigChangeRequest(
        change_id=change.change_id, note="ok"))
    await maker.call("RevokeApiKey", pb.RevokeApiKeyRequest(key_id=key_id))

    trail = await _trail(database_url, pid)
    assert [(seq, method, resource, roles) for seq, method, resource, roles, _ in trail] == [
        (1, "CreatePlatform", f"platform:{pid}", by_maker),
        (2, "CreateApiKey", f"api_key:{key_id}", by_maker),
        (3, "SetPayoutConfig", f"payout_config_change:{change.change_id}", by_maker),
        (4, "SetPayoutConfig", "payout_config:CNY", by_checker),  # applied by the approval
        (5, "ApprovePayoutConfigChange", f"payout_config_change:{change.change_id}",
         by_checker),
        (6, "RevokeApiKey", f"api_key:{key_id}", by_maker),
    ]
    assert trail[2][4]["state"] == "PENDING"
    assert (trail[3][4]["fee_fixed_minor"], trail[3][4]["fee_account_id"]) == (400, fees)
    assert made.key not in json.dumps([t[4] for t in trail])  # the key itself never


async def test_the_calendar_is_recorded_in_the_cores_own_chain(channel, database_url):
    maker_id, maker_key = await _admin_key(database_url)
    maker = Admin(channel, maker_key, maker_id)
    before = len(await _trail(database_url, 0))
    await maker.call("SetBusinessCalendar", pb.SetBusinessCalendarRequest(days=[
        pb.CalendarDay(day="2097-05-01", kind=pb.CALENDAR_DAY_KIND_HOLIDAY, note="labour")]))
    trail = await _trail(database_url, 0)
    assert len(trail) == before + 1
    seq, method, resource, roles, after = trail[-1]
    assert (seq, method, resource, roles) == (before + 1, "SetBusinessCalendar",
                                              "business_calendar", [f"admin-key:{maker_id}"])
    assert after == {"days": [["2097-05-01", "HOLIDAY", "labour"]]}


async def test_admin_keys_made_and_revoked_are_in_the_cores_own_chain(database_url):
    """Found in review: `clearing admin init` and `clearing admin revoke` changed the most
    powerful keys with no audit event. Both are recorded in platform 0's chain, in their
    transaction, with the key's id, name and prefix, never the key."""
    from clearing.tenancy import revoke_admin_key

    before = len(await _trail(database_url, 0))
    key_id, key = await _admin_key(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        assert await revoke_admin_key(conn, key_id)
        assert not await revoke_admin_key(conn, key_id)  # revoked already: no second event
    finally:
        await conn.close()
    trail = (await _trail(database_url, 0))[before:]
    assert [(method, resource, roles) for _, method, resource, roles, _ in trail] == [
        ("CreateAdminKey", f"admin_key:{key_id}", ["core-admin"]),
        ("RevokeAdminKey", f"admin_key:{key_id}", ["core-admin"])]
    assert trail[0][4]["key_prefix"] == key[:8] and trail[1][4]["revoked"] is True
    assert key not in json.dumps([t[4] for t in trail])
