"""Shared test data for the rules engine: a platform's accounts, YAML rule sets, orders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import clearing.rules
from clearing.ledger.model import AccountKind, AccountStatus
from clearing.rules import compile as plans
from clearing.api import rules_proto as proto
from clearing.rules.evaluate import Evaluation, evaluate
from clearing.rules.model import AccountInfo, Order, RuleSet

EXAMPLES = Path(clearing.rules.__file__).parent / "examples"

_K = AccountKind
ACCOUNTS: dict[str, AccountInfo] = {
    ref: AccountInfo(account_id=1000 + i, currency_code=currency, status=status, kind=kind)
    for i, (ref, currency, status, kind) in enumerate([
        ("CUSTODIAL", "CNY", AccountStatus.ACTIVE, _K.CUSTODIAL),
        ("PLAT_001", "CNY", AccountStatus.ACTIVE, _K.PLATFORM),
        ("PLAT_FEE", "CNY", AccountStatus.ACTIVE, _K.FEE),
        ("PLAT_FUNC", "CNY", AccountStatus.ACTIVE, _K.FUNCTIONAL),
        ("MKT", "CNY", AccountStatus.ACTIVE, _K.MARKETING),
        ("GOV_ACCOUNT", "CNY", AccountStatus.ACTIVE, _K.FUNCTIONAL),
        ("MEMBER_FUND", "CNY", AccountStatus.ACTIVE, _K.FUNCTIONAL),
        ("SUP_2025001", "CNY", AccountStatus.ACTIVE, _K.MERCHANT),
        ("LOGISTICS_B", "CNY", AccountStatus.ACTIVE, _K.ORDINARY),
        ("M_10086", "CNY", AccountStatus.ACTIVE, _K.MERCHANT),
        ("M_FROZEN", "CNY", AccountStatus.FROZEN, _K.MERCHANT),
        ("M_CLOSED", "CNY", AccountStatus.CLOSED, _K.MERCHANT),
        ("DIST_01", "CNY", AccountStatus.ACTIVE, _K.MERCHANT),
        ("OWNER_01", "CNY", AccountStatus.ACTIVE, _K.ORDINARY),
        ("SERVICE_01", "CNY", AccountStatus.ACTIVE, _K.MERCHANT),
        ("CHANNEL_01", "CNY", AccountStatus.ACTIVE, _K.MERCHANT),
        ("HOST_01", "CNY", AccountStatus.ACTIVE, _K.ORDINARY),
        ("USD_ACC", "USD", AccountStatus.ACTIVE, _K.MERCHANT),
    ])}
ACCOUNTS.update({f"ACC_{i}": AccountInfo(2000 + i, "CNY", AccountStatus.ACTIVE, _K.MERCHANT)
                 for i in range(40)})


def rule_set(text: str) -> RuleSet:
    return proto.rule_set_from_yaml(textwrap.dedent(text))


def b2b() -> RuleSet:
    return proto.rule_set_from_yaml((EXAMPLES / "b2b.yaml").read_text())


def plan_of(text_or_rule_set: str | RuleSet, resolver=None) -> plans.Plan:
    rs = (rule_set(text_or_rule_set) if isinstance(text_or_rule_set, str)
          else text_or_rule_set)
    return plans.compile_plan(rs, ACCOUNTS, resolver)


def order(amount_minor: int, **kw) -> Order:
    kw.setdefault("order_id", "ORD1")
    kw.setdefault("currency_code", "CNY")
    return Order(amount_minor=amount_minor, **kw)


def split(plan: plans.Plan, o: Order, counters=None) -> Evaluation:
    return evaluate(plan, o, counters or {}, accounts=ACCOUNTS)


def by_ref(ev: Evaluation) -> dict[str, int]:
    """Total credited per account ref (legs of one account added up)."""
    out: dict[str, int] = {}
    for leg in ev.legs:
        out[leg.external_ref] = out.get(leg.external_ref, 0) + leg.amount_minor
    return out


def id_of(ref: str) -> int:
    return ACCOUNTS[ref].account_id
