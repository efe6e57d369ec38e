"""PlatformService: admin keys only (and admin keys nowhere else); platforms created, got and
listed page by page; API keys made (shown once), listed and revoked (then refused); a payout
fee set through maker-checker (pending, approved by another admin key, in force on
RequestPayout's fee); the business calendar; invalid input answered with its field."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import grpc
import pytest

from clearing.tenancy import create_admin_key
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as ppb
from clearing.v1 import platform_pb2 as pb
from clearing.v1 import platform_pb2_grpc
from tests.support import Client, details, rid, wait_for


class Admin:
    """PlatformService as one admin key."""

    def __init__(self, channel: grpc.aio.Channel, key: str, key_id: int = 0) -> None:
        self.stub = platform_pb2_grpc.PlatformServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)
        self.key_id = key_id

    async def call(self, method: str, request):
        return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=10)


async def _admin_key(database_url: str) -> tuple[int, str]:
    conn = await asyncpg.connect(database_url)
    try:
        return await create_admin_key(conn, f"test-{secrets.token_hex(3)}")
    finally:
        await conn.close()


@pytest.fixture
async def maker(channel, database_url) -> Admin:
    key_id, key = await _admin_key(database_url)
    return Admin(channel, key, key_id)


@pytest.fixture
async def checker(channel, database_url) -> Admin:
    key_id, key = await _admin_key(database_url)
    return Admin(channel, key, key_id)


async def _refused(call, code: grpc.StatusCode) -> tuple[str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value
    return details(info.value)


def _name() -> str:
    return f"adm-{secrets.token_hex(5)}"


async def test_admin_keys_and_platform_keys_stay_on_their_side(channel, maker, client,
                                                              platform):
    as_platform = Admin(channel, platform.key)
    reason, _ = await _refused(as_platform.call("ListPlatforms", pb.ListPlatformsRequest()),
                               grpc.StatusCode.PERMISSION_DENIED)
    assert reason == "ROLE_REQUIRED"
    as_admin = Client(channel, maker.metadata[0][1].removeprefix("Bearer "))
    reason, _ = await _refused(as_admin.call("ListAccounts", lpb.ListAccountsRequest()),
                               grpc.StatusCode.PERMISSION_DENIED)
    assert reason == "ROLE_REQUIRED"
    stranger = Admin(channel, "ca_" + secrets.token_urlsafe(32))
    await _refused(stranger.call("ListPlatforms", pb.ListPlatformsRequest()),
                   grpc.StatusCode.UNAUTHENTICATED)
    assert (await maker.call("ListPlatforms", pb.ListPlatformsRequest(page_size=1))).platforms


async def test_platforms_are_created_got_and_listed_by_pages(maker):
    names = [_name() for _ in range(3)]
    made = [(await maker.call("CreatePlatform", pb.CreatePlatformRequest(
        name=n, request_id=rid()))).platform for n in names]
    assert [p.name for p in made] == names and made[0].platform_id < made[2].platform_id
    reason, _ = await _refused(maker.call("CreatePlatform", pb.CreatePlatformRequest(
        name=names[0], request_id=rid())), grpc.StatusCode.ALREADY_EXISTS)
    assert reason == "ALREADY_EXISTS"
    got = (await maker.call("GetPlatform", pb.GetPlatformRequest(name=names[1]))).platform
    assert got == made[1]
    got = (await maker.call("GetPlatform", pb.GetPlatformRequest(
        platform_id=made[2].platform_id))).platform
    assert got == made[2]
    reason, _ = await _refused(maker.call("GetPlatform", pb.GetPlatformRequest(
        name=_name())), grpc.StatusCode.NOT_FOUND)
    assert reason == "PLATFORM_NOT_FOUND"
    seen, token = [], ""
    while True:
        page = await maker.call("ListPlatforms", pb.ListPlatformsRequest(page_size=2,
                                                                          page_token=token))
        assert len(page.platforms) <= 2
        seen += [p.platform_id for p in page.platforms]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and {p.platform_id for p in made} <= set(seen)


async def test_keys_are_made_listed_and_revoked(channel, maker):
    pid = (await maker.call("CreatePlatform", pb.CreatePlatformRequest(
        name=_name(), request_id=rid()))).platform.platform_id
    made = [await maker.call("CreateApiKey", pb.CreateApiKeyRequest(
        platform_id=pid, roles=roles, request_id=rid()))
        for roles in (["gateway", "operator"], ["approver"], ["gateway"])]
    assert made[0].key.startswith("ck_") and made[0].key[:8] == made[0].api_key.key_prefix
    keys = []
    token = ""
    while True:
        page = await maker.call("ListApiKeys", pb.ListApiKeysRequest(
            platform_id=pid, page_size=2, page_token=token))
        keys += page.api_keys
        token = page.next_page_token
        if not token:
            break
    assert [k.key_id for k in keys] == [m.api_key.key_id for m in made]
    assert list(keys[0].roles) == ["gateway", "operator"] and not keys[0].HasField("revoke_time")
    platform_client = Client(channel, made[2].key)
    await platform_client.call("ListAccounts", lpb.ListAccountsRequest())
    revoked = (await maker.call("RevokeApiKey", pb.RevokeApiKeyRequest(
        key_id=made[2].api_key.key_id))).api_key
    assert revoked.HasField("revoke_time")

    async def refused() -> bool:
        try:
            await platform_client.call("ListAccounts", lpb.ListAccountsRequest())
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            return True
        return False

    await wait_for(refused, timeout_s=1.5)
    again = (await maker.call("RevokeApiKey", pb.RevokeApiKeyRequest(
        key_id=made[2].api_key.key_id))).api_key
    assert again.revoke_time == revoked.revoke_time
    reason, _ = await _refused(maker.call("RevokeApiKey", pb.RevokeApiKeyRequest(
        key_id=2**62)), grpc.StatusCode.NOT_FOUND)
    assert reason == "API_KEY_NOT_FOUND"


async def test_a_keys_last_use_is_recorded(channel, running, maker):
    pid = (await maker.call("CreatePlatform", pb.CreatePlatformRequest(
        name=_name(), request_id=rid()))).platform.platform_id
    made = await maker.call("CreateApiKey", pb.CreateApiKeyRequest(
        platform_id=pid, roles=["operator"], request_id=rid()))
    assert not made.api_key.HasField("last_use_time")
    await Client(channel, made.key).call("ListAccounts", lpb.ListAccountsRequest())
    await running.keys.flush_last_use()
    listed = (await maker.call("ListApiKeys", pb.ListApiKeysRequest(platform_id=pid))).api_keys
    assert listed[0].HasField("last_use_time")


async def test_invalid_input_names_its_field(maker, platform):
    cases = [
        ("CreatePlatform", pb.CreatePlatformRequest(request_id=rid(), name="has space"), "name"),
        ("CreatePlatform", pb.CreatePlatformRequest(request_id=rid()), "name"),
        ("GetPlatform", pb.GetPlatformRequest(), "platform_id"),
        ("CreatePlatform", pb.CreatePlatformRequest(name=_name()), "request_id"),
        ("CreateApiKey", pb.CreateApiKeyRequest(request_id=rid(),
                                                platform_id=platform.platform_id,
                                                roles=["gateway", "root"]), "roles[1]"),
        ("CreateApiKey", pb.CreateApiKeyRequest(request_id=rid(),
                                                platform_id=platform.platform_id), "roles"),
        ("CreateApiKey", pb.CreateApiKeyRequest(platform_id=platform.platform_id,
                                                roles=["gateway"], request_id="x" * 129),
         "request_id"),
        ("ListApiKeys", pb.ListApiKeysRequest(platform_id=platform.platform_id,
                                              page_size=1001), "page_size"),
        ("ListPlatforms", pb.ListPlatformsRequest(page_token="forged"), "page_token"),
        ("RevokeApiKey", pb.RevokeApiKeyRequest(), "key_id"),
        ("GetPayoutConfig", pb.GetPayoutConfigRequest(platform_id=platform.platform_id,
                                                      currency_code="XXQ"), "currency_code"),
        ("SetPayoutConfig", pb.SetPayoutConfigRequest(request_id=rid()), "config"),
        ("SetPayoutConfig", pb.SetPayoutConfigRequest(request_id=rid(), config=pb.PayoutConfig(
            platform_id=platform.platform_id, currency_code="CNY", fee_bps=10001,
            min_amount_minor=1, max_amount_minor=10, daily_max_minor=10,
            bank_transfer_max_minor=10, time_zone="UTC")), "config.fee_bps"),
        ("SetPayoutConfig", pb.SetPayoutConfigRequest(request_id=rid(), config=pb.PayoutConfig(
            platform_id=platform.platform_id, currency_code="CNY", min_amount_minor=1,
            max_amount_minor=10, daily_max_minor=10, bank_transfer_max_minor=10,
            time_zone="Mars/Olympus")), "config.time_zone"),
        ("SetPayoutConfig", pb.SetPayoutConfigRequest(request_id=rid(), config=pb.PayoutConfig(
            platform_id=platform.platform_id, currency_code="CNY", fee_fixed_minor=400,
            fee_account_id=2**62, min_amount_minor=1, max_amount_minor=10, daily_max_minor=10,
            bank_transfer_max_minor=10, time_zone="UTC")), "config.fee_account_id"),
        ("ApprovePayoutConfigChange", pb.ApprovePayoutConfigChangeRequest(), "change_id"),
        ("GetBusinessCalendar", pb.GetBusinessCalendarRequest(start_day="2099-02-30",
                                                              end_day="2099-03-01"),
         "start_day"),
        ("SetBusinessCalendar", pb.SetBusinessCalendarRequest(days=[pb.CalendarDay(
            day="2099-06-03")]), "days[0].kind"),
    ]
    for method, request, field in cases:
        reason, fields = await _refused(maker.call(method, request),
                                        grpc.StatusCode.INVALID_ARGUMENT)
        assert field in fields, (method, fields)


async def test_a_fee_change_waits_for_another_admin_key_then_applies_to_payouts(
        channel, maker, checker, client, platform):
    pid = platform.platform_id
    custodial = (await client.open("custodial", kind=lpb.ACCOUNT_KIND_CUSTODIAL)).account_id
    seller = (await client.open("seller")).account_id
    fees = (await client.open("fees", kind=lpb.ACCOUNT_KIND_PLATFORM)).account_id
    await client.transfer(custodial, seller, 100_000)
    current = (await maker.call("GetPayoutConfig", pb.GetPayoutConfigRequest(
        platform_id=pid, currency_code="CNY"))).config
    assert current.fee_account_id == 0 and not current.fee_fixed_minor
    wanted = pb.PayoutConfig()
    wanted.CopyFrom(current)
    wanted.fee_fixed_minor, wanted.fee_account_id = 400, fees
    request = pb.SetPayoutConfigRequest(request_id=rid(), config=wanted)
    change = (await maker.call("SetPayoutConfig", request)).change
    assert change.state == pb.PAYOUT_CONFIG_CHANGE_STATE_PENDING
    assert change.requested_by_admin_key_id == maker.key_id
    assert (await maker.call("SetPayoutConfig", request)).change == change  # a retry
    request.config.fee_bps = 1
    reason, _ = await _refused(maker.call("SetPayoutConfig", request),
                               grpc.StatusCode.ALREADY_EXISTS)
    assert reason == "REQUEST_ID_REUSED"
    got = await maker.call("GetPayoutConfig", pb.GetPayoutConfigRequest(
        platform_id=pid, currency_code="CNY"))
    assert got.config == current and got.pending_change == change
    reason, _ = await _refused(maker.call("ApprovePayoutConfigChange",
                                          pb.ApprovePayoutConfigChangeRequest(
                                              change_id=change.change_id)),
                               grpc.StatusCode.PERMISSION_DENIED)
    assert reason == "MAKER_CHECKER"
    approved = (await checker.call("ApprovePayoutConfigChange",
                                   pb.ApprovePayoutConfigChangeRequest(
                                       change_id=change.change_id, note="ok"))).change
    assert approved.state == pb.PAYOUT_CONFIG_CHANGE_STATE_APPROVED
    assert approved.decided_by_admin_key_id == checker.key_id
    reason, _ = await _refused(checker.call("RejectPayoutConfigChange",
                                            pb.RejectPayoutConfigChangeRequest(
                                                change_id=change.change_id)),
                               grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "PAYOUT_CONFIG_CHANGE_NOT_PENDING"
    got = await maker.call("GetPayoutConfig", pb.GetPayoutConfigRequest(
        platform_id=pid, currency_code="CNY"))
    assert got.config == wanted and not got.HasField("pending_change")
    # in force: RequestPayout takes the fee
    payouts = ppb_stub(channel, platform.key)
    bank = (await payouts("BindBankAccount", ppb.BindBankAccountRequest(
        request_id=rid(), account_id=seller, bank_code="BANKSIM", bank_name="Bank",
        account_number="6222020200112233445", holder_name="Seller Ltd",
        account_type=ppb.BANK_ACCOUNT_TYPE_CORPORATE, kyc_verified=True))).bank_account
    assert bank.bank_account_id
    payout = (await payouts("RequestPayout", ppb.RequestPayoutRequest(
        request_id=rid(), account_id=seller, amount_minor=50_000,
        currency_code="CNY"))).payout
    assert (payout.fee_minor, payout.net_amount_minor) == (400, 49_600)
    # a change that leaves the fee as it is applies at once
    limits = pb.PayoutConfig()
    limits.CopyFrom(wanted)
    limits.review_threshold_minor = 9_000_000
    applied = (await maker.call("SetPayoutConfig", pb.SetPayoutConfigRequest(
        request_id=rid(), config=limits))).change
    assert applied.state == pb.PAYOUT_CONFIG_CHANGE_STATE_APPLIED
    # a pending change is replaced by a later one; a rejection changes nothing
    fee_up = pb.PayoutConfig()
    fee_up.CopyFrom(limits)
    fee_up.fee_bps = 50
    first = (await maker.call("SetPayoutConfig", pb.SetPayoutConfigRequest(
        request_id=rid(), config=fee_up))).change
    fee_up.fee_bps = 60
    second = (await maker.call("SetPayoutConfig", pb.SetPayoutConfigRequest(
        request_id=rid(), config=fee_up))).change
    reason, _ = await _refused(checker.call("ApprovePayoutConfigChange",
                                            pb.ApprovePayoutConfigChangeRequest(
                                                change_id=first.change_id)),
                               grpc.StatusCode.FAILED_PRECONDITION)
    assert reason == "PAYOUT_CONFIG_CHANGE_NOT_PENDING"
    rejected = (await maker.call("RejectPayoutConfigChange", pb.RejectPayoutConfigChangeRequest(
        change_id=second.change_id, note="no"))).change
    assert rejected.state == pb.PAYOUT_CONFIG_CHANGE_STATE_REJECTED
    got = await maker.call("GetPayoutConfig", pb.GetPayoutConfigRequest(
        platform_id=pid, currency_code="CNY"))
    assert got.config == limits


def ppb_stub(channel, key: str):
    from clearing.v1 import payout_pb2_grpc

    stub = payout_pb2_grpc.PayoutServiceStub(channel)
    metadata = (("authorization", f"Bearer {key}"),)

    async def call(method: str, request):
        return await getattr(stub, method)(request, metadata=metadata, timeout=10)

    return call


async def test_the_business_calendar_is_set_and_read(maker, database_url):
    days = [pb.CalendarDay(day="2098-10-01", kind=pb.CALENDAR_DAY_KIND_HOLIDAY, note="national"),
            pb.CalendarDay(day="2098-10-10", kind=pb.CALENDAR_DAY_KIND_WORKDAY)]
    try:
        await maker.call("SetBusinessCalendar", pb.SetBusinessCalendarRequest(days=days))
        got = (await maker.call("GetBusinessCalendar", pb.GetBusinessCalendarRequest(
            start_day="2098-09-30", end_day="2098-10-31"))).days
        assert list(got) == days
        await maker.call("SetBusinessCalendar", pb.SetBusinessCalendarRequest(days=[
            pb.CalendarDay(day="2098-10-01", kind=pb.CALENDAR_DAY_KIND_UNSET)]))
        got = (await maker.call("GetBusinessCalendar", pb.GetBusinessCalendarRequest(
            start_day="2098-09-30", end_day="2098-10-31"))).days
        assert list(got) == days[1:]
    finally:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DELETE FROM calendar_days WHERE day BETWEEN '2098-09-30'"
                               " AND '2098-10-31'")
        finally:
            await conn.close()


async def test_admin_init_makes_a_key_the_platform_commands_use(running, database_url,
                                                                tmp_path):
    import asyncio
    import os
    import sys

    from tests.support import ROOT, admin_cli

    out = tmp_path / "admin.key"
    env = {**os.environ, "CLEARING_DATABASE_URL": database_url, "CLEARING_LOG_LEVEL": "WARNING"}

    async def init() -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clearing.cli", "admin", "init", "--name", "ops",
            "--out", str(out), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        o, e = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, o.decode(), e.decode()

    code, stdout, err = await init()
    assert code == 0 and f"written to {out}" in stdout, err
    assert out.stat().st_mode & 0o777 == 0o600
    code, _, err = await init()
    assert code != 0 and "exists" in err  # never overwritten unasked
    key = out.read_text().strip()
    assert key.startswith("ca_")
    name = _name()
    request_id = rid()
    code, stdout, err = await admin_cli(running.port, key, "platform", "create", name,
                                        "--request-id", request_id)
    assert code == 0 and f"platform {name} (id " in stdout, err
    platform_key = stdout.splitlines()[-1]
    assert platform_key.startswith("ck_")
    # A rerun with the request id (its answer lost, say) makes nothing and shows no key.
    code, stdout, err = await admin_cli(running.port, key, "platform", "create", name,
                                        "--request-id", request_id)
    assert code == 0 and "ck_" not in stdout and "shown then only" in err, (stdout, err)
    code, stdout, err = await admin_cli(running.port, platform_key, "platform", "list")
    assert code != 0 and "PERMISSION_DENIED" in err  # a platform's key is no admin key
    code, stdout, err = await admin_cli(running.port, key, "platform", "create", name)
    assert code != 0 and "already exists" in err


async def test_a_revoked_admin_key_is_refused_within_a_second(channel, database_url):
    import os
    import sys
    import time

    from tests.support import ROOT

    key_id, key = await _admin_key(database_url)
    admin = Admin(channel, key)
    await admin.call("ListPlatforms", pb.ListPlatformsRequest(page_size=1))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clearing.cli", "admin", "revoke", str(key_id),
        env={**os.environ, "CLEARING_DATABASE_URL": database_url}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    revoked = time.monotonic()
    assert proc.returncode == 0 and f"admin key {key_id} revoked" in out.decode(), err
    while True:
        started = time.monotonic()
        try:
            await admin.call("ListPlatforms", pb.ListPlatformsRequest(page_size=1))
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        assert started - revoked < 1.0, "a revoked admin key was accepted after a second"
        await asyncio.sleep(0.02)


async def test_a_change_made_while_a_fee_is_approved_does_not_undo_the_fee(
        maker, checker, client, platform, database_url):
    """Found in review: an approval locked only its change, so a SetPayoutConfig arriving
    while it committed read the old fee, waited on the change row, then applied the old fee
    again (APPLIED, no approval): the approved fee was silently undone. Both now queue on
    the platform's row: the later change sees the approved fee, and putting the old fee
    back is itself a fee change that waits for another admin key."""
    from clearing.platforms import service

    pid = platform.platform_id
    fees = (await client.open("fees", kind=lpb.ACCOUNT_KIND_PLATFORM)).account_id
    current = (await maker.call("GetPayoutConfig", pb.GetPayoutConfigRequest(
        platform_id=pid, currency_code="CNY"))).config
    current.review_threshold_minor = 8_000_000  # the platform's own row, no fee yet
    assert (await maker.call("SetPayoutConfig", pb.SetPayoutConfigRequest(
        request_id=rid(), config=current))).change.state == pb.PAYOUT_CONFIG_CHANGE_STATE_APPLIED
    wanted = pb.PayoutConfig()
    wanted.CopyFrom(current)
    wanted.fee_fixed_minor, wanted.fee_account_id = 400, fees
    change = (await maker.call("SetPayoutConfig", pb.SetPayoutConfigRequest(
        request_id=rid(), config=wanted))).change
    assert change.state == pb.PAYOUT_CONFIG_CHANGE_STATE_PENDING
    limits = pb.PayoutConfig()
    limits.CopyFrom(current)  # the fee as it was before the approval
    limits.review_threshold_minor = 7_000_000
    approving = await asyncpg.connect(database_url)
    try:
        async with approving.transaction():
            await service.approve_payout_config_change(approving, checker.key_id,
                                                       change.change_id)
            later = asyncio.create_task(maker.call("SetPayoutConfig", pb.SetPayoutConfigRequest(
                request_id=rid(), config=limits)))

            async def waiting() -> bool:
                # pg_stat_clear_snapshot: inside a transaction, pg_stat_activity is read once
                # and kept (a first look before the call waits would be seen again and again)
                await approving.execute("SELECT pg_stat_clear_snapshot()")
                return bool(await approving.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND (query LIKE '%FROM platforms%'"
                    " OR query LIKE '%UPDATE payout_config_changes%')"))

            await wait_for(waiting)
        made = (await later).change
    finally:
        await approving.close()
    got = await maker.call("GetPayoutConfig", pb.GetPayoutConfigRequest(
        platform_id=pid, currency_code="CNY"))
    assert (got.config.fee_fixed_minor, got.config.fee_account_id) == (400, fees)
    assert made.state == pb.PAYOUT_CONFIG_CHANGE_STATE_PENDING
    assert got.pending_change.change_id == made.change_id


async def test_an_admin_change_in_progress_does_not_hold_up_the_ledger_writer(
        channel, maker, client, platform, database_url):
    """Found in review: PlatformService's changes locked the platform's row FOR UPDATE,
    which also blocks the foreign-key check of every row inserted naming the platform, the
    ledger writer's payouts among them: one admin change held up the process's writer (the
    splits and transfers of every platform) until it committed, and with a Transfer of the
    platform earlier in the same batch (its audit head taken first) the two deadlocked. The
    platform's row is locked FOR NO KEY UPDATE now: admin changes still queue on it, a
    foreign-key check does not."""
    from clearing.platforms import service
    from tests.payout_support import Payouts, party

    payouts = Payouts(channel, platform.key)
    p = await party(client, payouts, funds=100_000)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():  # the change made, not yet committed
            await service.create_api_key(conn, maker.key_id, platform.platform_id,
                                         frozenset({"gateway"}))
            made = await asyncio.wait_for(payouts.request(p.account, 5_000), 5)
        assert made.payout_id and made.amount_minor == 5_000
    finally:
        await conn.close()


async def test_retried_creates_answer_the_same_platform_and_key_and_make_one_key(maker,
                                                                                checker):
    # Platform: a replay (by any admin key: admin request ids are one namespace) answers the
    # same platform; the request id with another name is refused.
    create = pb.CreatePlatformRequest(name=_name(), request_id=rid())
    platform = (await maker.call("CreatePlatform", create)).platform
    assert (await checker.call("CreatePlatform", create)).platform == platform
    reason, _ = await _refused(maker.call("CreatePlatform", pb.CreatePlatformRequest(
        name=_name(), request_id=create.request_id)), grpc.StatusCode.ALREADY_EXISTS)
    assert reason == "REQUEST_ID_REUSED"
    # Key: the first answer shows it; a retry answers the same key without it, flagged.
    ask = pb.CreateApiKeyRequest(platform_id=platform.platform_id, roles=["gateway"],
                                 request_id=rid())
    first = await maker.call("CreateApiKey", ask)
    assert first.key.startswith("ck_") and not first.key_shown_before
    again = await maker.call("CreateApiKey", ask)
    assert again.api_key == first.api_key and again.key == "" and again.key_shown_before
    reason, _ = await _refused(maker.call("CreateApiKey", pb.CreateApiKeyRequest(
        platform_id=platform.platform_id, roles=["gateway", "operator"],
        request_id=ask.request_id)), grpc.StatusCode.ALREADY_EXISTS)
    assert reason == "REQUEST_ID_REUSED"
    # Concurrent retries of another request id: one key made, shown to one of them.
    ask2 = pb.CreateApiKeyRequest(platform_id=platform.platform_id, roles=["operator"],
                                  request_id=rid())
    both = await asyncio.gather(*(maker.call("CreateApiKey", ask2) for _ in range(2)))
    assert both[0].api_key.key_id == both[1].api_key.key_id
    assert sorted(bool(r.key) for r in both) == [False, True]
    assert sorted(r.key_shown_before for r in both) == [False, True]
    listed = (await maker.call("ListApiKeys", pb.ListApiKeysRequest(
        platform_id=platform.platform_id))).api_keys
    assert [k.key_id for k in listed] == [first.api_key.key_id, both[0].api_key.key_id]
