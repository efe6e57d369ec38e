"""Helpers for RiskService tests: a platform with a one-rule rule set whose amounts are
worked by hand (PLAT_001 a fixed 1,000 minor units, the merchant the remainder), keys for
the maker-checker, and the risk policy filed through the generated stubs."""

from __future__ import annotations

import grpc

from clearing.v1 import risk_pb2 as rpb
from clearing.v1 import risk_pb2_grpc
from tests.split_support import Splits, new_key, open_accounts
from tests.support import CALL_TIMEOUT_S, Client, rid

PLATFORM_FIXED_MINOR = 1_000
REFS = ["CUSTODIAL", "PLAT_001", "M_10086", "ACC_1"]


def rule_set(name: str, merchant_ref: str) -> str:
    return f"""
name: {name}
currency_code: CNY
rules:
  - rule_name: base
    priority: 3
    shares:
      - {{label: platform, type: SHARE_TYPE_FIXED, fixed_minor: {PLATFORM_FIXED_MINOR},
         receiver: {{account_ref: PLAT_001}}}}
      - {{label: merchant, type: SHARE_TYPE_REMAINDER, receiver: {{account_ref: {merchant_ref}}}}}
"""


class Risk:
    """RiskService through generated stubs, as one key."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.stub = risk_pb2_grpc.RiskServiceStub(channel)
        self.key = key
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def call(self, method: str, request):
        return await getattr(self.stub, method)(request, metadata=self.metadata,
                                                timeout=CALL_TIMEOUT_S)

    async def publish(self, **policy) -> rpb.RiskPolicy:
        policy.setdefault("action", rpb.RISK_ACTION_HOLD_SHARE)
        return (await self.call("PublishRiskPolicy", rpb.PublishRiskPolicyRequest(
            request_id=rid(), policy=rpb.RiskPolicy(**policy)))).policy

    async def events(self, **filters) -> list[rpb.RiskEvent]:
        return list((await self.call("ListRiskEvents",
                                     rpb.ListRiskEventsRequest(**filters))).events)

    async def resolve(self, event_id: int, decision: int, request_id: str | None = None,
                      note: str = "checked") -> rpb.RiskEvent:
        return (await self.call("ResolveRiskEvent", rpb.ResolveRiskEventRequest(
            request_id=request_id or rid(), event_id=event_id, decision=decision,
            note=note))).event


def limits(**kw) -> rpb.RiskCurrencyLimits:
    return rpb.RiskCurrencyLimits(currency_code="CNY", **kw)


class World:
    """A platform ready to split under a risk policy: `gateway` splits (and is the
    operator that publishes), `approver_a` and `approver_b` review."""

    def __init__(self, splits: Splits, ids: dict[str, int], operator: Risk, approver_a: Risk,
                 approver_b: Risk, client: Client) -> None:
        self.splits, self.ids, self.operator = splits, ids, operator
        self.approver_a, self.approver_b, self.client = approver_a, approver_b, client

    async def file_policy(self, **policy) -> rpb.RiskPolicy:
        published = await self.operator.publish(**policy)
        return (await self.approver_a.call("ActivateRiskPolicy", rpb.ActivateRiskPolicyRequest(
            request_id=rid(), version=published.version))).policy


async def make_world(channel, client: Client, database_url: str, platform_id: int) -> World:
    ids = await open_accounts(client, refs=REFS)
    key = client.metadata[0][1].split(" ", 1)[1]
    maker = Splits(channel, key)
    checker = Splits(channel, await new_key(database_url, platform_id, {"approver"}))
    for name, ref in (("to-m", "M_10086"), ("to-a", "ACC_1")):
        published = await maker.publish(rule_set(name, ref))
        await checker.activate(published.name, published.version)
    return World(maker, ids, Risk(channel, key),
                 Risk(channel, await new_key(database_url, platform_id, {"approver"})),
                 Risk(channel, await new_key(database_url, platform_id, {"approver"})), client)
