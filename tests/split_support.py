"""Helpers for SplitService tests: keys with other roles, the accounts the rules engine's
worked examples name, and publish-then-activate through the generated stubs."""

from __future__ import annotations

import textwrap

import asyncpg
import grpc

from clearing.tenancy import create_key
from clearing.ledger.model import AccountStatus
from clearing.api import rules_proto as proto
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import rule_set_pb2
from clearing.v1 import split_pb2 as pb
from clearing.v1 import split_pb2_grpc
from tests.support import CALL_TIMEOUT_S, Client, rid
from tests.unit.rules.helpers import ACCOUNTS

# The accounts of the engine's examples that the gRPC tests open (ACC_0..ACC_39 but three
# are left out to keep each test's set-up short).
REFS = [ref for ref in ACCOUNTS if not ref.startswith("ACC_")] + ["ACC_1", "ACC_2", "ACC_3"]


async def new_key(database_url: str, platform_id: int, roles: set[str]) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return await create_key(conn, platform_id, frozenset(roles))
    finally:
        await conn.close()


class Splits:
    """SplitService through generated stubs, as one key."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.stub = split_pb2_grpc.SplitServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def call(self, method: str, request):
        return await getattr(self.stub, method)(request, metadata=self.metadata,
                                                timeout=CALL_TIMEOUT_S)

    async def publish(self, yaml_text: str,
                      request_id: str | None = None) -> rule_set_pb2.RuleSet:
        msg = proto.rule_set_proto_from_yaml(textwrap.dedent(yaml_text))
        response = await self.call("PublishRuleSet", pb.PublishRuleSetRequest(
            request_id=request_id or rid(), rule_set=msg))
        return response.rule_set

    async def activate(self, name: str, version: int, **extra) -> pb.ActivateRuleSetResponse:
        return await self.call("ActivateRuleSet", pb.ActivateRuleSetRequest(
            request_id=extra.pop("request_id", None) or rid(), rule_set_name=name,
            rule_set_version=version, **extra))

    async def preview(self, order: pb.Order, **extra) -> pb.Split:
        return (await self.call("PreviewSplit", pb.PreviewSplitRequest(order=order,
                                                                       **extra))).split

    async def split(self, order: pb.Order, request_id: str | None = None) -> pb.Split:
        return (await self.call("Split", pb.SplitRequest(request_id=request_id or rid(),
                                                         order=order))).split


async def open_accounts(client: Client, refs=REFS) -> dict[str, int]:
    """Open the example accounts (frozen and closed ones put in that state); ids by ref."""
    ids = {}
    for ref in refs:
        info = ACCOUNTS[ref]
        account = await client.open(ref, kind=int(info.kind), currency=info.currency_code)
        ids[ref] = account.account_id
        if info.status == AccountStatus.FROZEN:
            await client.call("FreezeAccount", lpb.FreezeAccountRequest(
                request_id=rid(), account_id=account.account_id, reason="test"))
        elif info.status == AccountStatus.CLOSED:
            await client.call("CloseAccount", lpb.CloseAccountRequest(
                request_id=rid(), account_id=account.account_id))
    return ids


def order(amount_minor: int, **kw) -> pb.Order:
    kw.setdefault("order_id", rid())
    kw.setdefault("currency_code", "CNY")
    kw.setdefault("channel", "WECHAT_PAY")
    return pb.Order(amount_minor=amount_minor, **kw)


def by_ref(split: pb.Split) -> dict[str, int]:
    out: dict[str, int] = {}
    for leg in split.legs:
        out[leg.external_ref] = out.get(leg.external_ref, 0) + leg.amount_minor
    return out


# ---- the worked examples of REQUIREMENTS.md as filed rule sets ---------------------------------
# The engine's tests hold most of them (tests/unit/rules/test_examples.py); the ones written
# inside its test functions are repeated here.

from tests.unit.rules.examples import (  # noqa: E402,F401 - re-exported
    COUPONS_BASE, SHARING, RATIOS, HELD, SUPPLIER_OWN, PLATFORM_LEVELS, FROZEN)


def example_rule_sets() -> list[str]:
    """Every example rule set, sub-rule-sets before the rule sets naming them."""
    from tests.unit.rules import test_examples as ex
    from tests.unit.rules.helpers import EXAMPLES

    takeaway_fee = ex.TAKEAWAY.replace("name: takeaway\n", "name: takeaway-fee\n").replace(
        "    shares:\n",
        "    fees: [{label: service_fee, fixed_minor: 200, account_ref: PLAT_FEE}]\n"
        "    shares:\n", 1)
    signed_for = ex.BABY.replace("name: baby\n", "name: signed-for\n").replace(
        "receiver: {account_ref: DIST_01}}",
        "receiver: {account_ref: DIST_01},\n"
        "         release: {steps: [{event_name: SIGNED_FOR, fraction_bps: 10000}]}}")
    return [(EXAMPLES / "b2b.yaml").read_text(), ex.TAKEAWAY, takeaway_fee, ex.CLOTHING,
            ex.LEDGER_WALK, ex.COUPONS, COUPONS_BASE, ex.BABY, ex.THIRDS, SHARING, RATIOS,
            ex.SCENARIOS, HELD, signed_for, ex.SUPPLIER_TIERS, ex.HOSTS, SUPPLIER_OWN,
            PLATFORM_LEVELS, FROZEN]


async def file_examples(channel, client: Client, database_url: str,
                        platform_id: int) -> tuple[Splits, dict[str, int]]:
    """Open the example accounts, publish and activate every example rule set; returns the
    platform's gateway/operator view of SplitService and the account ids by ref."""
    ids = await open_accounts(client)
    maker = Splits(channel, client.metadata[0][1].split(" ", 1)[1])
    checker = Splits(channel, await new_key(database_url, platform_id, {"approver"}))
    for text in example_rule_sets():
        published = await maker.publish(text)
        await checker.activate(published.name, published.version)
    return maker, ids
