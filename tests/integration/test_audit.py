"""The audit trail (docs/audit.md) through the generated stubs against the real server and
PostgreSQL: every kind of operator action leaves exactly one event, with its actor, before
and after, in the transaction of its change (a refused change leaves none; a change whose
audit write fails does not happen); a platform sees only its own events; filters and pages;
nothing sensitive; the hash chain verified, a tampered event reported; the AUDIT export and
the `clearing audit` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys

import asyncpg
import grpc
import pytest

from clearing import audit
from clearing.tenancy import create_key, create_platform, revoke_key
from clearing.v1 import audit_pb2 as apb
from clearing.v1 import audit_pb2_grpc
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as ppb
from clearing.v1 import reconciliation_pb2 as rpb
from clearing.v1 import report_pb2 as repb
from clearing.v1 import risk_pb2 as kpb
from tests.payout_support import CARD, Payouts, party, set_config
from tests.report_support import Reports, read_csv, read_xlsx
from tests.risk_support import limits, make_world, rule_set
from tests.split_support import Splits, new_key, order
from tests.support import (AS_TAMPERING_SUPERUSER, CALL_TIMEOUT_S, ROOT, Client, cli, details,
                           rid)

pytestmark = [pytest.mark.timeout(90)]


class Trail:
    """AuditService as one key."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.stub = audit_pb2_grpc.AuditServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def page(self, **filters) -> apb.ListAuditEventsResponse:
        return await self.stub.ListAuditEvents(apb.ListAuditEventsRequest(**filters),
                                               metadata=self.metadata, timeout=CALL_TIMEOUT_S)

    async def events(self, **filters) -> list[apb.AuditEvent]:
        out, token = [], ""
        while True:
            page = await self.page(page_token=token, page_size=1000, **filters)
            out.extend(page.events)
            token = page.next_page_token
            if not token:
                return out


def doc(text: str):
    return json.loads(text) if text else None


async def key_id_of(database_url: str, key: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT key_id FROM api_keys WHERE key_prefix = $1"
                                   " ORDER BY key_id DESC LIMIT 1", key[:8])
    finally:
        await conn.close()


# ---- accounts and transfers: one event each, none for a refusal ----------------------------

async def test_account_actions_and_transfers_leave_one_event_each(channel, client: Client,
                                                                  platform, database_url):
    trail = Trail(channel, platform.key)
    me = await key_id_of(database_url, platform.key)
    custodial = await client.open("c", kind=lpb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    before = len(await trail.events())  # the platform's first key (made by the fixture)
    freeze_id = rid()
    freeze = lpb.FreezeAccountRequest(request_id=freeze_id, account_id=merchant.account_id,
                                      reason="kyc review")
    await client.call("FreezeAccount", freeze)
    await client.call("FreezeAccount", freeze)  # a retry: the first answer, no second event
    # a refusal (already frozen) writes nothing
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.call("FreezeAccount", lpb.FreezeAccountRequest(
            request_id=rid(), account_id=merchant.account_id, reason="again"))
    assert details(err.value)[0] == "ACCOUNT_FROZEN"
    await client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=merchant.account_id, reason="cleared"))
    t = await client.transfer(custodial.account_id, merchant.account_id, 500, memo="fund")
    with pytest.raises(grpc.aio.AioRpcError):  # insufficient funds: refused, no event
        await client.transfer(merchant.account_id, custodial.account_id, 10_000)
    await client.transfer(merchant.account_id, custodial.account_id, 500)
    await client.call("CloseAccount", lpb.CloseAccountRequest(request_id=rid(),
                                                              account_id=merchant.account_id))
    events = (await trail.events())[before:]
    assert [e.method for e in events] == ["FreezeAccount", "UnfreezeAccount", "Transfer",
                                          "Transfer", "CloseAccount"]
    f = events[0]
    assert (f.resource, f.key_id, f.key_prefix, list(f.roles), f.request_id) == (
        f"account:{merchant.account_id}", me, platform.key[:8], ["gateway", "operator"],
        freeze_id)
    assert doc(f.before_json) == {"status": "ACTIVE", "frozen_minor": 0}
    assert doc(f.after_json) == {"status": "FROZEN", "frozen_minor": 0, "amount_minor": 0,
                                 "reason": "kyc review"}
    assert doc(events[1].before_json)["status"] == "FROZEN"
    assert doc(events[1].after_json)["status"] == "ACTIVE"
    assert events[2].resource == f"transfer:{t.transfer_id}"
    assert doc(events[2].after_json)["amount_minor"] == 500
    assert doc(events[4].after_json)["status"] == "CLOSED"
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 5))
    v = await client.verify()
    assert v.ok and v.audit_chain_ok and v.audit_event_count == before + 5


async def test_concurrent_operator_actions_queue_up_on_the_chain(channel, client: Client,
                                                                 platform):
    accounts = [await client.open(f"m{i}") for i in range(8)]
    await asyncio.gather(*(client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=a.account_id, reason="r")) for a in accounts))
    events = await Trail(channel, platform.key).events(method="FreezeAccount")
    assert sorted(e.resource for e in events) == sorted(f"account:{a.account_id}"
                                                         for a in accounts)
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + 8))
    times = [e.create_time.ToDatetime() for e in events]
    assert times == sorted(times)
    # Transfers of one writer batch: one statement for the batch's events, chained in order
    custodial = await client.open("c", kind=lpb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("m")
    made = await asyncio.gather(*(client.transfer(custodial.account_id, merchant.account_id,
                                                  100 + i) for i in range(12)))
    transfers = await Trail(channel, platform.key).events(method="Transfer")
    assert sorted(e.resource for e in transfers) == sorted(f"transfer:{t.transfer_id}"
                                                            for t in made)
    v = await client.verify()
    assert v.audit_chain_ok and v.audit_event_count == 1 + 8 + 12  # with the fixture's key


async def test_a_change_whose_audit_write_fails_does_not_happen(channel, client: Client,
                                                               platform, database_url):
    """Same transaction: the database refuses this account's audit event, so the freeze
    rolls back with it (no change without its record); the trail has no event either."""
    account = await client.open("m")
    resource = f"account:{account.account_id}"
    conn = await asyncpg.connect(database_url)
    fn = f"refuse_audit_{account.account_id}"
    await conn.execute(f"""
        CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused for the test'; END $$;
        CREATE TRIGGER {fn} BEFORE INSERT ON audit_events FOR EACH ROW
        WHEN (NEW.resource = '{resource}') EXECUTE FUNCTION {fn}();""")
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await client.call("FreezeAccount", lpb.FreezeAccountRequest(
                request_id=rid(), account_id=account.account_id, reason="r"))
    finally:
        await conn.execute(f"DROP TRIGGER {fn} ON audit_events; DROP FUNCTION {fn}()")
        await conn.close()
    got = (await client.call("GetAccount", lpb.GetAccountRequest(
        account_id=account.account_id))).account
    assert got.status == lpb.ACCOUNT_STATUS_ACTIVE
    assert await Trail(channel, platform.key).events(resource=resource) == []
    assert (await client.verify()).audit_chain_ok


async def test_a_record_outside_a_transaction_is_refused(database_url, platform):
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(RuntimeError):
            await audit.record(conn, audit.Actor.core_admin(platform.platform_id), "X", "x:1")
        async with conn.transaction():  # a failed transaction takes its event with it
            head = await conn.fetchval("SELECT seq FROM audit_head WHERE platform_id = $1",
                                       platform.platform_id)
        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                await audit.record(conn, audit.Actor.core_admin(platform.platform_id), "X",
                                   "x:1")
                1 / 0
        assert await conn.fetchval("SELECT seq FROM audit_head WHERE platform_id = $1",
                                   platform.platform_id) == head
        assert await conn.fetchval("SELECT count(*) FROM audit_events WHERE platform_id = $1"
                                   " AND method = 'X'", platform.platform_id) == 0
    finally:
        await conn.close()


# ---- keys, payouts, rules, risk, reconciliation ------------------------------------------

async def test_keys_bank_binding_config_schedule_and_payout_reviews(channel, client: Client,
                                                                    platform, database_url):
    trail = Trail(channel, platform.key)
    conn = await asyncpg.connect(database_url)
    try:
        approver = await create_key(conn, platform.platform_id, frozenset({"approver"}))
        spare = await create_key(conn, platform.platform_id, frozenset({"gateway"}))
        spare_id = await conn.fetchval("SELECT key_id FROM api_keys WHERE key_prefix = $1",
                                       spare[:8])
        assert await revoke_key(conn, spare_id)
        assert not await revoke_key(conn, spare_id)  # revoked already: no second event
    finally:
        await conn.close()
    maker, checker = Payouts(channel, platform.key), Payouts(channel, approver)
    p = await party(client, maker, funds=100_000)
    await maker.bind(p.account)  # a replacement: before and after, both masked
    await set_config(database_url, platform.platform_id, fee_fixed_minor=10,
                     fee_account_id=p.fee, review_threshold_minor=1_000)
    await maker.call("SetPayoutSchedule", ppb.SetPayoutScheduleRequest(
        request_id=rid(), schedule=ppb.PayoutSchedule(
            account_id=p.account, cycle=ppb.PAYOUT_CYCLE_WEEKLY, weekday=3)))
    first = await maker.request(p.account, 5_000)
    second = await maker.request(p.account, 6_000)
    await checker.approve(first.payout_id, reason="known")
    await checker.reject(second.payout_id, reason="not today")

    events = await trail.events()
    methods = [e.method for e in events]
    assert methods.count("CreateApiKey") == 3  # the fixture's, the approver's, the spare
    assert methods.count("RevokeApiKey") == 1
    assert methods.count("BindBankAccount") == 2
    assert methods.count("SetPayoutConfig") == 1
    assert methods.count("SetPayoutSchedule") == 1
    assert methods.count("ApprovePayout") == methods.count("RejectPayout") == 1
    assert "RequestPayout" not in methods  # a party's request, not an operator action
    revoked = next(e for e in events if e.method == "RevokeApiKey")
    assert (revoked.resource, revoked.key_id, list(revoked.roles)) == (
        f"api_key:{spare_id}", 0, ["core-admin"])
    binds = [e for e in events if e.method == "BindBankAccount"]
    assert doc(binds[0].before_json) is None
    assert doc(binds[1].before_json)["account_number"] == "6225****1234"
    assert doc(binds[1].after_json)["account_number"] == "6225****1234"
    config = next(e for e in events if e.method == "SetPayoutConfig")
    assert config.resource == "payout_config:CNY" and doc(config.before_json) is None
    assert doc(config.after_json)["review_threshold_minor"] == 1_000
    schedule = next(e for e in events if e.method == "SetPayoutSchedule")
    assert doc(schedule.after_json)["cycle"].endswith("WEEKLY")
    approve = next(e for e in events if e.method == "ApprovePayout")
    checker_id = await key_id_of(database_url, approver)
    assert (approve.resource, approve.key_id, list(approve.roles)) == (
        f"payout:{first.payout_id}", checker_id, ["approver"])
    assert doc(approve.before_json) == {"state": "PENDING_REVIEW"}
    assert doc(approve.after_json)["state"] in ("QUEUED", "SUBMITTED", "SUCCEEDED")
    reject = next(e for e in events if e.method == "RejectPayout")
    assert doc(reject.after_json)["state"] == "FAILED"
    # nothing sensitive anywhere: no full bank number, no key
    text = "\n".join(e.before_json + e.after_json + e.resource for e in events)
    assert CARD not in text
    for key in (platform.key, approver, spare):
        assert key not in text
    assert (await client.verify()).audit_chain_ok


async def test_rule_sets_and_risk_policies_and_risk_event_resolution(channel, client: Client,
                                                                     platform, database_url):
    world = await make_world(channel, client, database_url, platform.platform_id)
    await world.file_policy(limits=[limits(large_split_minor=50_000)])
    await world.splits.split(order(51_001, rule_set_name="to-m"))
    # an activation the database refuses leaves no event (its transaction rolls back)
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    await world.splits.publish(rule_set("to-x", "M_10086"))
    conn = await asyncpg.connect(database_url)
    fn = f"refuse_activation_{platform.platform_id}"
    await conn.execute(f"""
        CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused for the test'; END $$;
        CREATE TRIGGER {fn} BEFORE INSERT ON rule_set_activations FOR EACH ROW
        WHEN (NEW.platform_id = {platform.platform_id}) EXECUTE FUNCTION {fn}();""")
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await checker.activate("to-x", 1)
    finally:
        await conn.execute(f"DROP TRIGGER {fn} ON rule_set_activations; DROP FUNCTION {fn}()")
        await conn.close()
    trail = Trail(channel, platform.key)
    assert [e.method for e in await trail.events(resource="rule_set:to-x")] == [
        "PublishRuleSet"]
    await checker.activate("to-x", 1)
    assert [e.method for e in await trail.events(resource="rule_set:to-x")] == [
        "PublishRuleSet", "ActivateRuleSet"]
    [event] = await world.approver_a.events()
    await world.approver_a.resolve(event.event_id, kpb.RISK_DECISION_RELEASE)
    await world.approver_b.resolve(event.event_id, kpb.RISK_DECISION_RELEASE, note="known")
    events = await Trail(channel, platform.key).events()
    methods = [e.method for e in events]
    assert methods.count("PublishRuleSet") == methods.count("ActivateRuleSet") == 3
    assert methods.count("PublishRiskPolicy") == methods.count("ActivateRiskPolicy") == 1
    assert methods.count("ResolveRiskEvent") == 2
    assert "Split" not in methods  # splits never write the trail
    activation = next(e for e in events if e.method == "ActivateRuleSet")
    assert activation.resource == "rule_set:to-m"
    assert doc(activation.before_json) == {"active_version": 0}
    assert doc(activation.after_json)["active_version"] == 1
    resolved = [e for e in events if e.method == "ResolveRiskEvent"]
    assert [doc(e.after_json)["state"] for e in resolved] == [
        "RESOLUTION_PROPOSED", "RELEASED"]
    assert resolved[0].key_id != resolved[1].key_id
    assert doc(next(e for e in events if e.method == "ActivateRiskPolicy").after_json) == {
        "active_version": 1}
    only = await Trail(channel, platform.key).events(resource="risk_event:")
    assert only == resolved


async def test_reconciliation_settlement_and_resolutions(channel, client: Client, platform,
                                                         database_url):
    from tests.integration.test_recon_resolution import Desk
    from tests.recon_support import ReconWorld, hand_day

    world = await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                  platform.key)
    day = await hand_day(world)
    await world.call("PostSettlement", rpb.PostSettlementRequest(request_id=rid(),
                                                                 run_id=day.run.run_id))
    desk = Desk(world, day, await new_key(database_url, platform.platform_id, {"approver"}),
                await new_key(database_url, platform.platform_id, {"operator", "approver"}))
    await desk.load()
    one = await desk.propose(day.g, rpb.RESOLUTION_ACTION_WRITE_OFF)
    await desk.approve(one.resolution_id, note="fine")
    two = await desk.propose(day.b, rpb.RESOLUTION_ACTION_WRITE_OFF)
    await desk.reject(two.resolution_id)
    events = await Trail(channel, platform.key).events()
    settle = [e for e in events if e.method == "PostSettlement"]
    assert len(settle) == 1 and settle[0].resource == f"recon_run:{day.run.run_id}"
    assert doc(settle[0].after_json)["settled"] is True
    steps = [(e.method, e.resource, doc(e.after_json)["state"]) for e in events
             if e.resource.startswith("recon_resolution:")]
    assert steps == [
        ("ProposeResolution", f"recon_resolution:{one.resolution_id}", "PROPOSED"),
        ("ApproveResolution", f"recon_resolution:{one.resolution_id}", "APPROVED"),
        ("ProposeResolution", f"recon_resolution:{two.resolution_id}", "PROPOSED"),
        ("RejectResolution", f"recon_resolution:{two.resolution_id}", "REJECTED")]


# ---- reading: tenancy, filters, pages, invalid input --------------------------------------

async def test_tenancy_filters_and_pages(channel, client: Client, platform, database_url):
    trail = Trail(channel, platform.key)
    accounts = [await client.open(f"m{i}") for i in range(3)]
    started = dt.datetime.now(dt.timezone.utc)
    for a in accounts:
        for method in ("FreezeAccount", "UnfreezeAccount"):
            cls = getattr(lpb, method + "Request")
            await client.call(method, cls(request_id=rid(), account_id=a.account_id,
                                          reason="r"))
    conn = await asyncpg.connect(database_url)
    try:
        _, other_key = await create_platform(conn, f"p_{rid()[:8]}",
                                             frozenset({"operator"}))
    finally:
        await conn.close()
    other = Trail(channel, other_key)
    mine = await trail.events(method="FreezeAccount")
    assert [e.resource for e in mine] == [f"account:{a.account_id}" for a in accounts]
    # another platform sees none of them, whatever it asks
    assert await other.events(resource=f"account:{accounts[0].account_id}") == []
    assert [e.method for e in await other.events()] == ["CreateApiKey"]
    # filters: resource (exact, kind prefix), key, time range
    one = await trail.events(resource=f"account:{accounts[1].account_id}")
    assert [e.method for e in one] == ["FreezeAccount", "UnfreezeAccount"]
    assert len(await trail.events(resource="account:")) == 6
    me = await key_id_of(database_url, platform.key)
    assert len(await trail.events(key_id=me)) == 6
    assert await trail.events(key_id=me + 10_000) == []
    assert len(await trail.events(start_time=_ts(started))) == 6
    assert await trail.events(end_time=_ts(started), method="UnfreezeAccount") == []
    # pages of 4 then 2, the token bound to the platform
    page = await trail.page(page_size=4, resource="account:")
    assert len(page.events) == 4 and page.next_page_token
    rest = await trail.page(page_size=4, resource="account:", page_token=page.next_page_token)
    assert len(rest.events) == 2 and not rest.next_page_token
    ids = [e.event_id for e in [*page.events, *rest.events]]
    assert ids == sorted(set(ids))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await other.page(page_token=page.next_page_token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[1] == ["page_token"]


def _ts(at: dt.datetime):
    from google.protobuf.timestamp_pb2 import Timestamp
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


@pytest.mark.parametrize("fields, field", [
    ({"page_size": 1001}, "page_size"),
    ({"resource": "x" * 129}, "resource"),
    ({"method": "m" * 65}, "method"),
    ({"key_id": -1}, "key_id"),
    ({"start_time": _ts(dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)),
      "end_time": _ts(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))}, "end_time"),
    ({"page_token": "garbage"}, "page_token"),
])
async def test_invalid_filters_name_the_field(channel, platform, fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await Trail(channel, platform.key).page(**fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err.value)[1] == [field]


async def test_a_gateway_key_may_not_read_the_trail(channel, platform, database_url):
    gateway = await new_key(database_url, platform.platform_id, {"gateway"})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await Trail(channel, gateway).page()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


# ---- the chain: verified, tampering reported ----------------------------------------------

async def test_a_tampered_event_breaks_the_chain(channel, client: Client, platform,
                                                 database_url):
    account = await client.open("m")
    for method in ("FreezeAccount", "UnfreezeAccount", "FreezeAccount"):
        await client.call(method, getattr(lpb, method + "Request")(
            request_id=rid(), account_id=account.account_id, reason="r"))
    report = await client.verify()
    assert report.ok and report.audit_chain_ok and report.first_bad_audit_seq == 0
    [_, middle, _] = await Trail(channel, platform.key).events(
        resource=f"account:{account.account_id}")
    conn = await asyncpg.connect(database_url)
    await conn.execute(AS_TAMPERING_SUPERUSER)
    try:
        # an edited reason: the link no longer recomputes
        after = await conn.fetchval("SELECT after::text FROM audit_events WHERE event_id = $1",
                                    middle.event_id)
        await conn.execute("UPDATE audit_events SET after = jsonb_set(after, '{reason}',"
                           " '\"nothing to see\"') WHERE event_id = $1", middle.event_id)
        report = await client.verify()
        assert not report.ok and not report.audit_chain_ok
        assert report.first_bad_audit_seq == middle.seq
        assert report.chain_ok  # the journal is intact: only the trail is reported
        code, out = await _audit_verify(database_url, platform.name)
        assert code == 1 and out["first_bad_seq"] == middle.seq
        await conn.execute("UPDATE audit_events SET after = $2::jsonb WHERE event_id = $1",
                           middle.event_id, after)
        assert (await client.verify()).audit_chain_ok
        # a deleted last event: the head names a position the chain no longer reaches
        last = await conn.fetchrow("SELECT * FROM audit_events WHERE platform_id = $1"
                                   " ORDER BY seq DESC LIMIT 1", platform.platform_id)
        await conn.execute("DELETE FROM audit_events WHERE event_id = $1", last["event_id"])
        report = await client.verify()
        assert not report.audit_chain_ok and report.first_bad_audit_seq == last["seq"]
        columns = list(last.keys())
        await conn.execute(
            f"INSERT INTO audit_events ({', '.join(columns)}) VALUES"
            f" ({', '.join(f'${i}' for i in range(1, len(columns) + 1))})", *last.values())
        assert (await client.verify()).audit_chain_ok
    finally:
        await conn.close()


# ---- the export and the CLI ---------------------------------------------------------------

async def test_the_audit_export_and_the_cli(channel, running, client: Client, platform,
                                            database_url):
    account = await client.open("m")
    await Payouts(channel, platform.key).bind(account.account_id)
    await client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=account.account_id, reason="r"))
    reports = Reports(channel, platform.key)
    today = dt.datetime.now(dt.timezone.utc).date()
    first, last = today - dt.timedelta(days=1), today + dt.timedelta(days=1)
    info, data, _ = await reports.export("audit", first, last)
    rows = read_csv(data)
    assert info.columns[:4] == ["line", "event_id", "seq", "created_at"]
    assert [r["method"] for r in rows] == ["CreateApiKey", "BindBankAccount", "FreezeAccount"]
    assert all(r["line"] == "detail" for r in rows)  # no totals
    assert CARD not in data.decode() and platform.key not in data.decode()
    assert "6225****1234" in rows[1]["after"]
    xlsx = read_xlsx((await reports.export("audit", first, last, repb.REPORT_FORMAT_XLSX))[1])
    assert [r["method"] for r in xlsx] == [r["method"] for r in rows]

    code, out, err = await cli(running, platform.key, "audit", "list", "--resource",
                               f"account:{account.account_id}")
    assert code == 0, err
    listed = json.loads(out)["events"]
    assert [e["method"] for e in listed] == ["BindBankAccount", "FreezeAccount"]
    code, out = await _audit_verify(database_url, platform.name)
    assert code == 0 and out["ok"] is True and out["event_count"] == 3
    code, out = await _admin_cli(database_url, "audit", "list", "--platform", platform.name,
                                 "--method", "BindBankAccount")
    assert code == 0 and [e["resource"] for e in out["events"]] == [
        f"account:{account.account_id}"]


async def _audit_verify(database_url: str, name: str) -> tuple[int, dict]:
    """`clearing audit verify --platform NAME` on the database: (exit status, its JSON)."""
    return await _admin_cli(database_url, "audit", "verify", "--platform", name)


async def _admin_cli(database_url: str, *argv: str) -> tuple[int, dict]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clearing.cli", *argv,
        env={**os.environ, "CLEARING_DATABASE_URL": database_url}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out, err.decode()
    return proc.returncode, json.loads(out)
