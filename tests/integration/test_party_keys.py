"""Party keys through the generated stubs: a key made by the admin API bound to one party's
accounts reads only that party's splits (another's answers NOT_FOUND exactly as an unknown
one), its accounts' balances and statements, its splits' vouchers (never issuing another's)
and its payouts; every other method of every service answers PERMISSION_DENIED with its
reason. CreateApiKey validates the accounts (field and reason), lists them, records them in
the audit trail; `clearing keys create --party-account` makes one."""

from __future__ import annotations

import json
import re

import asyncpg
import grpc
import pytest

from clearing.api import audit as audit_api
from clearing.api import event as event_api
from clearing.api import ledger as ledger_api
from clearing.api import payout as payout_api
from clearing.api import reconciliation as recon_api
from clearing.api import report as report_api
from clearing.api import risk as risk_api
from clearing.api import split as split_api
from clearing.tenancy import create_platform
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as ppb
from clearing.v1 import platform_pb2 as pb
from clearing.v1 import report_pb2 as rpb
from clearing.v1 import report_pb2_grpc
from clearing.v1 import split_pb2 as spb
from tests.integration.test_platform_admin import Admin, _admin_key
from tests.payout_support import TERMINAL, Payouts, set_config
from tests.split_support import Splits, new_key, open_accounts, order
from tests.support import CALL_TIMEOUT_S, Client, admin_cli, details, rid

REFS = ["CUSTODIAL", "PLAT_001", "SUP_2025001", "DIST_01"]
RULE_SET = """
name: {name}
currency_code: CNY
rules:
  - rule_name: cut
    priority: 1
    shares:
      - {{label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {{account_ref: PLAT_001}}}}
      - {{label: rest, type: SHARE_TYPE_REMAINDER, receiver: {{account_ref: {ref}}}}}
"""
# (rule set, amount): the supplier gets 90% of pk-sup orders, the distributor of pk-dist.
ORDERS = [("pk-sup", 1_000), ("pk-dist", 2_000), ("pk-sup", 3_000)]
# What a party key may call; everything else is PERMISSION_DENIED.
OPEN_TO_PARTY = {"GetSplit", "ListSplits", "GetAccount", "ListAccounts", "GetBalance",
                 "ListEntries", "GetPayout", "ListPayouts", "GetVoucher"}


class Reports:
    def __init__(self, channel, key: str) -> None:
        self.stub = report_pb2_grpc.ReportServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def get(self, **which) -> rpb.GetVoucherResponse:
        return await self.stub.GetVoucher(rpb.GetVoucherRequest(**which),
                                          metadata=self.metadata, timeout=CALL_TIMEOUT_S)


class World:
    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)


async def _party_key(maker: Admin, platform_id: int, *account_ids: int) -> pb.CreateApiKeyResponse:
    return await maker.call("CreateApiKey", pb.CreateApiKeyRequest(
        platform_id=platform_id, party_account_ids=list(account_ids), request_id=rid()))


@pytest.fixture
async def world(channel, client: Client, database_url, platform):
    ids = await open_accounts(client, REFS)
    gateway = Splits(channel, platform.key)
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    for name, ref in (("pk-sup", "SUP_2025001"), ("pk-dist", "DIST_01")):
        published = await gateway.publish(RULE_SET.format(name=name, ref=ref))
        await checker.activate(published.name, published.version)
    splits = [await gateway.split(order(amount, rule_set_name=name)) for name, amount in ORDERS]
    payouts = Payouts(channel, platform.key)
    await set_config(database_url, platform.platform_id)
    made_payouts = {}
    for ref, amount in (("SUP_2025001", 500), ("DIST_01", 700)):
        await payouts.bind(ids[ref])
        made_payouts[ref] = (await payouts.request(ids[ref], amount)).payout_id
        paid = await payouts.wait_state(made_payouts[ref], TERMINAL)  # the bank simulator's
        assert paid.state == ppb.PAYOUT_STATE_SUCCEEDED, paid
    _, admin_key = await _admin_key(database_url)
    maker = Admin(channel, admin_key)
    sup = await _party_key(maker, platform.platform_id, ids["SUP_2025001"])
    dist = await _party_key(maker, platform.platform_id, ids["DIST_01"])
    return World(ids=ids, splits=splits, payouts=made_payouts, maker=maker, sup=sup, dist=dist,
                 platform=platform, gateway=gateway)


async def _refused(call, code: grpc.StatusCode) -> tuple[str, list[str], str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value
    return (*details(info.value), info.value.details())


async def test_a_party_key_reads_only_its_splits(channel, world):
    sup = Splits(channel, world.sup.key)
    a, b, c = world.splits  # pk-sup 1000, pk-dist 2000, pk-sup 3000 (newest last)
    listed = (await sup.call("ListSplits", spb.ListSplitsRequest())).splits
    assert [s.split_id for s in listed] == [c.split_id, a.split_id]
    # the whole split (both legs: the platform's 10% and the supplier's 90%)
    got = (await sup.call("GetSplit", spb.GetSplitRequest(split_id=a.split_id))).split
    assert sorted((leg.external_ref, leg.amount_minor) for leg in got.legs) == [
        ("PLAT_001", 100), ("SUP_2025001", 900)]
    # another party's split answers as an unknown one: same code, reason and message shape
    reason, _, message = await _refused(
        sup.call("GetSplit", spb.GetSplitRequest(split_id=b.split_id)), grpc.StatusCode.NOT_FOUND)
    unknown_id = b.split_id + 10**12
    reason_unknown, _, message_unknown = await _refused(
        sup.call("GetSplit", spb.GetSplitRequest(split_id=unknown_id)), grpc.StatusCode.NOT_FOUND)
    assert reason == reason_unknown == "SPLIT_NOT_FOUND"
    assert message == f"no split with split_id {b.split_id}"
    assert message_unknown == f"no split with split_id {unknown_id}"
    await _refused(sup.call("GetSplit", spb.GetSplitRequest(order_id=b.order_id)),
                   grpc.StatusCode.NOT_FOUND)
    # a filter naming another party's account finds nothing; its own finds its splits
    none = await sup.call("ListSplits", spb.ListSplitsRequest(account_id=world.ids["DIST_01"]))
    assert list(none.splits) == []
    own = await sup.call("ListSplits", spb.ListSplitsRequest(
        account_id=world.ids["SUP_2025001"], page_size=1))
    assert [s.split_id for s in own.splits] == [c.split_id]
    rest = await sup.call("ListSplits", spb.ListSplitsRequest(
        account_id=world.ids["SUP_2025001"], page_size=1, page_token=own.next_page_token))
    assert [s.split_id for s in rest.splits] == [a.split_id]
    dist = Splits(channel, world.dist.key)
    assert [s.split_id for s in (await dist.call("ListSplits", spb.ListSplitsRequest())).splits
            ] == [b.split_id]
    # the platform's own key still sees all three
    everything = await world.gateway.call("ListSplits", spb.ListSplitsRequest())
    assert {s.split_id for s in everything.splits} >= {a.split_id, b.split_id, c.split_id}


async def test_a_party_key_reads_only_its_accounts(channel, world):
    sup = Client(channel, world.sup.key)
    sup_id, dist_id = world.ids["SUP_2025001"], world.ids["DIST_01"]
    listed = await sup.call("ListAccounts", lpb.ListAccountsRequest())
    assert [a.account_id for a in listed.accounts] == [sup_id]
    assert (await sup.call("GetAccount", lpb.GetAccountRequest(
        external_ref="SUP_2025001"))).account.account_id == sup_id
    # 900 + 2700 credited by its two splits, 500 paid out (held, then posted)
    balance = await sup.balance(sup_id)
    assert (balance.posted_minor, balance.available_minor) == (3_100, 3_100)
    entries = (await sup.call("ListEntries", lpb.ListEntriesRequest(account_id=sup_id))).entries
    assert sorted((e.amount_minor, e.mode) for e in entries) == [
        (500, lpb.TRANSFER_MODE_PENDING), (500, lpb.TRANSFER_MODE_POST_PENDING),
        (900, lpb.TRANSFER_MODE_IMMEDIATE), (2_700, lpb.TRANSFER_MODE_IMMEDIATE)]
    for call in (sup.call("GetAccount", lpb.GetAccountRequest(account_id=dist_id)),
                 sup.call("GetBalance", lpb.GetBalanceRequest(account_id=dist_id)),
                 sup.call("ListEntries", lpb.ListEntriesRequest(account_id=dist_id))):
        reason, _, message = await _refused(call, grpc.StatusCode.NOT_FOUND)
        assert (reason, message) == ("ACCOUNT_NOT_FOUND", f"account {dist_id} not found")
    reason, _, message = await _refused(
        sup.call("GetAccount", lpb.GetAccountRequest(external_ref="DIST_01")),
        grpc.StatusCode.NOT_FOUND)
    assert (reason, message) == ("ACCOUNT_NOT_FOUND", "account DIST_01 not found")


async def test_a_party_key_reads_only_its_payouts(channel, world):
    sup = Payouts(channel, world.sup.key)
    listed = await sup.call("ListPayouts", ppb.ListPayoutsRequest())
    assert [p.payout_id for p in listed.payouts] == [world.payouts["SUP_2025001"]]
    got = await sup.get(world.payouts["SUP_2025001"])
    assert (got.account_id, got.amount_minor) == (world.ids["SUP_2025001"], 500)
    other = world.payouts["DIST_01"]
    reason, _, message = await _refused(sup.get(other), grpc.StatusCode.NOT_FOUND)
    assert (reason, message) == ("PAYOUT_NOT_FOUND", f"payout {other} not found")
    none = await sup.call("ListPayouts", ppb.ListPayoutsRequest(account_id=world.ids["DIST_01"]))
    assert list(none.payouts) == []


async def test_a_party_key_gets_only_its_vouchers(channel, world, database_url):
    a, b, _ = world.splits
    sup, platform = Reports(channel, world.sup.key), Reports(channel, world.platform.key)
    own = await sup.get(split_id=a.split_id)
    assert own.pdf.startswith(b"%PDF") and own.voucher.subject_id == a.split_id
    # another party's split: not found, and no voucher was issued for it by asking
    reason, _, message = await _refused(sup.get(split_id=b.split_id), grpc.StatusCode.NOT_FOUND)
    assert (reason, message) == ("VOUCHER_NOT_FOUND", f"no voucher for split_id {b.split_id}")
    conn = await asyncpg.connect(database_url)
    try:
        issued = await conn.fetchval(
            "SELECT count(*) FROM vouchers WHERE platform_id = $1 AND subject_id = $2"
            " AND kind = (SELECT kind FROM vouchers WHERE voucher_id = $3)",
            world.platform.platform_id, b.split_id, own.voucher.voucher_id)
    finally:
        await conn.close()
    assert issued == 0
    # issued for the platform, still not the supplier's to read, by id or by payout
    theirs = (await platform.get(split_id=b.split_id)).voucher.voucher_id
    reason, _, _ = await _refused(sup.get(voucher_id=theirs), grpc.StatusCode.NOT_FOUND)
    assert reason == "VOUCHER_NOT_FOUND"
    assert (await sup.get(voucher_id=own.voucher.voucher_id)).voucher.subject_id == a.split_id
    await _refused(sup.get(payout_id=world.payouts["DIST_01"]), grpc.StatusCode.NOT_FOUND)
    paid = await sup.get(payout_id=world.payouts["SUP_2025001"])
    assert paid.voucher.subject_id == world.payouts["SUP_2025001"]


def _every_method() -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for module in (ledger_api, split_api, payout_api, recon_api, report_api, risk_api,
                   audit_api, event_api):
        out.update(module.METHOD_ROLES)
    return out


async def test_every_other_method_is_denied_with_its_reason(channel, world):
    methods = _every_method()
    assert {m.rsplit("/", 1)[1] for m, roles in methods.items() if "party" in roles} \
        == OPEN_TO_PARTY
    metadata = (("authorization", f"Bearer {world.sup.key}"),)
    raw = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    denied = []
    for method, roles in sorted(methods.items()):
        if "party" in roles:
            continue
        with pytest.raises(grpc.aio.AioRpcError) as info:
            try:
                await channel.unary_unary(method, **raw)(b"", metadata=metadata,
                                                        timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                # a streaming method: called as one
                call = channel.stream_stream(method, **raw)(iter([b""]), metadata=metadata,
                                                           timeout=CALL_TIMEOUT_S)
                async for _ in call:
                    pass
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, (method, info.value)
        reason, _ = details(info.value)
        assert reason == "PARTY_KEY_METHOD_DENIED", method
        denied.append(method.rsplit("/", 1)[1])
    assert {"Split", "ReleaseSplit", "RefundSplit", "ListRuleSets", "CreateAccount",
            "Transfer", "RequestPayout", "ApprovePayout", "VerifyVoucher", "ExportReport",
            "ListDiscrepancies", "ListRiskEvents", "ListEvents", "WatchEvents",
            "ListAuditEvents", "SplitStream", "ImportStatement"} <= set(denied)
    # and the admin API is for admin keys only
    reason, _, _ = await _refused(Admin(channel, world.sup.key).call(
        "ListPlatforms", pb.ListPlatformsRequest()), grpc.StatusCode.PERMISSION_DENIED)
    assert reason == "ROLE_REQUIRED"


async def test_create_api_key_validates_the_party_accounts(channel, world, database_url):
    pid = world.platform.platform_id
    conn = await asyncpg.connect(database_url)
    try:
        _, other_key = await create_platform(conn, f"pk-other-{rid()[:8]}",
                                             frozenset({"operator"}))
    finally:
        await conn.close()
    theirs = (await Client(channel, other_key).open("THEIRS")).account_id
    sup_id = world.ids["SUP_2025001"]
    cases = [
        (dict(party_account_ids=[sup_id, theirs]), ["party_account_ids[1]"],
         "PARTY_ACCOUNT_UNKNOWN"),
        (dict(party_account_ids=[sup_id, sup_id]), ["party_account_ids[1]"], "INVALID_ARGUMENT"),
        (dict(party_account_ids=[sup_id], roles=["operator"]), ["roles"], "INVALID_ARGUMENT"),
        (dict(party_account_ids=[-1]), ["party_account_ids[0]"], "INVALID_ARGUMENT"),
        (dict(roles=["party"]), ["roles[0]"], "INVALID_ARGUMENT"),
    ]
    for fields, paths, want in cases:
        reason, violations, _ = await _refused(world.maker.call(
            "CreateApiKey", pb.CreateApiKeyRequest(platform_id=pid, request_id=rid(),
                                                   **fields)),
            grpc.StatusCode.INVALID_ARGUMENT)
        assert (reason, violations) == (want, paths), fields
    made = await world.maker.call("CreateApiKey", pb.CreateApiKeyRequest(
        platform_id=pid, roles=["party"], party_account_ids=[world.ids["DIST_01"], sup_id],
        request_id=rid()))
    assert list(made.api_key.roles) == ["party"]
    assert list(made.api_key.party_account_ids) == sorted([world.ids["DIST_01"], sup_id])
    listed = await world.maker.call("ListApiKeys", pb.ListApiKeysRequest(platform_id=pid))
    by_id = {k.key_id: k for k in listed.api_keys}
    assert list(by_id[world.sup.api_key.key_id].party_account_ids) == [sup_id]
    assert list(by_id[made.api_key.key_id].party_account_ids) == sorted(
        [world.ids["DIST_01"], sup_id])
    conn = await asyncpg.connect(database_url)
    try:
        after = await conn.fetchval(
            "SELECT after FROM audit_events WHERE platform_id = $1 AND method = 'CreateApiKey'"
            " AND resource = $2", pid, f"api_key:{made.api_key.key_id}")
    finally:
        await conn.close()
    assert json.loads(after) == {"key_id": made.api_key.key_id,
                                 "key_prefix": made.api_key.key_prefix, "roles": ["party"],
                                 "party_account_ids": sorted([world.ids["DIST_01"], sup_id])}
    both = Splits(channel, made.key)
    assert len((await both.call("ListSplits", spb.ListSplitsRequest())).splits) == 3


async def test_cli_makes_a_party_key(running, world, channel):
    sup_id = world.ids["SUP_2025001"]
    code, out, err = await admin_cli(running.port, world.maker.metadata[0][1][7:], "keys",
                                     "create", world.platform.name, "--party-account",
                                     str(sup_id))
    assert code == 0, err
    key = re.search(r"\b(ck_[A-Za-z0-9_-]+)", out).group(1)
    listed = await Client(channel, key).call("ListAccounts", lpb.ListAccountsRequest())
    assert [a.account_id for a in listed.accounts] == [sup_id]
    code, out, err = await admin_cli(running.port, world.maker.metadata[0][1][7:], "keys",
                                     "list", "--platform", world.platform.name)
    assert code == 0, err
    assert f"party:{sup_id}" in out
