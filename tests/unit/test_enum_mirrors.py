"""The domain enums that mirror proto enums agree with the generated descriptors: for each
pair, every domain member has the proto value of the same name under the proto's prefix rule
(`AccountStatus.FROZEN` <-> `ACCOUNT_STATUS_FROZEN`) and the same number, and every proto
value has its domain member, `*_UNSPECIFIED` (0) excepted: a domain member numbered 0 (named
UNSPECIFIED, or NONE for PendingState) stands for it.

The domain packages never import generated code, so this test is where the two meet. It also
keeps the list complete: every IntEnum of the domain packages is either a mirror or named
below as the domain's own, and every proto enum is either mirrored or named as used only by
the API layer."""

from __future__ import annotations

import enum
import importlib
import pkgutil
import re

import pytest

import clearing.events
import clearing.ledger
import clearing.payout
import clearing.platforms
import clearing.recon
import clearing.reports
import clearing.risk
import clearing.rules
import clearing.splits
from clearing.events import model as events_model
from clearing.ledger import model as ledger
from clearing.payout import calendar, model as payout
from clearing.platforms import model as platforms
from clearing.recon import model as recon
from clearing.reports import voucher_model
from clearing.risk import model as risk
from clearing.rules import counters, model as rules
from clearing.splits import model as split_model
from clearing.v1 import (audit_pb2, ledger_pb2, payout_pb2, platform_pb2, reconciliation_pb2, report_pb2,
                         risk_pb2, rule_set_pb2, split_pb2)
from clearing.v1 import event_pb2
from tests.support import ROOT

# The generated modules whose enums are paired here: every .proto file's but errors.proto's
# (ErrorReason has its mirror in clearing.reasons, tests/unit/test_reasons.py).
MODULES = (audit_pb2, event_pb2, ledger_pb2, payout_pb2, platform_pb2, reconciliation_pb2,
           report_pb2, risk_pb2, rule_set_pb2, split_pb2)

# (domain enum, proto enum descriptor)
PAIRS = [
    (ledger.AccountKind, ledger_pb2.AccountKind.DESCRIPTOR),
    (ledger.OwnerType, ledger_pb2.OwnerType.DESCRIPTOR),
    (ledger.AccountStatus, ledger_pb2.AccountStatus.DESCRIPTOR),
    (ledger.Mode, ledger_pb2.TransferMode.DESCRIPTOR),
    (ledger.PendingState, ledger_pb2.PendingState.DESCRIPTOR),
    (ledger.EntrySide, ledger_pb2.EntrySide.DESCRIPTOR),
    (payout.BankAccountType, payout_pb2.BankAccountType.DESCRIPTOR),
    (payout.BankAccountStatus, payout_pb2.BankAccountStatus.DESCRIPTOR),
    (payout.PayoutOrigin, payout_pb2.PayoutOrigin.DESCRIPTOR),
    (payout.PayoutState, payout_pb2.PayoutState.DESCRIPTOR),
    (payout.TransferState, payout_pb2.BankTransferState.DESCRIPTOR),
    (calendar.PayoutCycle, payout_pb2.PayoutCycle.DESCRIPTOR),
    (rules.ShareType, rule_set_pb2.ShareType.DESCRIPTOR),
    (rules.AttributeComparison, rule_set_pb2.AttributeComparison.DESCRIPTOR),
    (rules.CounterMetric, rule_set_pb2.CounterMetric.DESCRIPTOR),
    (rules.CounterPeriod, rule_set_pb2.CounterPeriod.DESCRIPTOR),
    (counters.Period, rule_set_pb2.CounterPeriod.DESCRIPTOR),
    (counters.Source, split_pb2.CounterSource.DESCRIPTOR),
    (rules.TierEffect, rule_set_pb2.TierEffect.DESCRIPTOR),
    (rules.SubsidyBasis, rule_set_pb2.SubsidyBasis.DESCRIPTOR),
    (rules.SubsidyTarget, rule_set_pb2.SubsidyTarget.DESCRIPTOR),
    (rules.CouponFunding, split_pb2.CouponFunding.DESCRIPTOR),
    (rules.LegKind, split_pb2.LegKind.DESCRIPTOR),
    (rules.HoldReason, split_pb2.HoldReason.DESCRIPTOR),
    (split_model.SplitStatus, split_pb2.SplitStatus.DESCRIPTOR),
    (split_model.ActionKind, split_pb2.SplitActionKind.DESCRIPTOR),
    (split_model.ReleaseState, split_pb2.ReleaseState.DESCRIPTOR),
    (rules.RuleSetStatus, rule_set_pb2.RuleSetStatus.DESCRIPTOR),
    (recon.StatementFormat, reconciliation_pb2.StatementFormat.DESCRIPTOR),
    (recon.LineType, reconciliation_pb2.StatementLineType.DESCRIPTOR),
    (recon.MatchClass, reconciliation_pb2.ReconciliationClass.DESCRIPTOR),
    (recon.DiscrepancyState, reconciliation_pb2.DiscrepancyState.DESCRIPTOR),
    (recon.ResolutionAction, reconciliation_pb2.ResolutionAction.DESCRIPTOR),
    (recon.ResolutionState, reconciliation_pb2.ResolutionState.DESCRIPTOR),
    (recon.ResolutionStep, reconciliation_pb2.ResolutionStep.DESCRIPTOR),
    (voucher_model.VoucherKind, report_pb2.VoucherKind.DESCRIPTOR),
    (voucher_model.ProblemKind, report_pb2.VoucherProblemKind.DESCRIPTOR),
    (risk.RiskRule, risk_pb2.RiskRule.DESCRIPTOR),
    (risk.RiskAction, risk_pb2.RiskAction.DESCRIPTOR),
    (risk.RiskEventState, risk_pb2.RiskEventState.DESCRIPTOR),
    (events_model.DeliveryState, event_pb2.WebhookDeliveryState.DESCRIPTOR),
    (events_model.DisabledReason, event_pb2.WebhookDisabledReason.DESCRIPTOR),
    (risk.RiskDecision, risk_pb2.RiskDecision.DESCRIPTOR),
    (platforms.ChangeState, platform_pb2.PayoutConfigChangeState.DESCRIPTOR),
    (platforms.DayKind, platform_pb2.CalendarDayKind.DESCRIPTOR),
]
# IntEnums of the domain packages that mirror no proto enum: the bank's answer states
# (clearing.dev's simulator has its own, outside the domain packages).
DOMAIN_ONLY = {"clearing.payout.bank.BankState"}
# Proto enums with no domain mirror: only the API layer reads and writes them.
API_ONLY: set[str] = {
    # ExportReport's file format: api/report_export.py maps it to the encoder's name
    "clearing.v1.ReportFormat",
}


def proto_prefix(proto_enum_name: str) -> str:
    """The prefix of a proto enum's values: `BankTransferState` -> `BANK_TRANSFER_STATE_`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", proto_enum_name).upper() + "_"


def mismatches(domain: type[enum.IntEnum], descriptor) -> list[str]:
    """What differs between a domain enum and a proto enum (empty when they mirror)."""
    prefix = proto_prefix(descriptor.name)
    problems = []
    proto = {}
    for value in descriptor.values:
        if not value.name.startswith(prefix):
            problems.append(f"proto {value.name} lacks the prefix {prefix}")
            continue
        proto[value.name.removeprefix(prefix)] = value.number
    unspecified = proto.pop("UNSPECIFIED", None)
    if unspecified != 0:
        problems.append(f"proto {descriptor.name} has no {prefix}UNSPECIFIED = 0")
    members = {m.name: int(m) for m in domain}
    zero = [name for name, number in members.items() if number == 0]
    for name in zero:
        members.pop(name)
        if name not in ("UNSPECIFIED", "NONE"):
            problems.append(f"{domain.__name__}.{name} is 0, which only UNSPECIFIED may be")
    for name, number in sorted(members.items()):
        if name not in proto:
            problems.append(f"{domain.__name__}.{name} has no proto {prefix}{name}")
        elif proto[name] != number:
            problems.append(f"{domain.__name__}.{name} = {number}, proto {prefix}{name} = "
                            f"{proto[name]}")
    for name in sorted(set(proto) - set(members)):
        problems.append(f"proto {prefix}{name} has no {domain.__name__}.{name}")
    return problems


@pytest.mark.parametrize("domain,descriptor", PAIRS,
                         ids=[f"{d.__module__}.{d.__name__}" for d, _ in PAIRS])
def test_domain_enum_mirrors_proto(domain, descriptor):
    assert mismatches(domain, descriptor) == []


def _domain_int_enums() -> set[str]:
    found = set()
    for package in (clearing.events, clearing.ledger, clearing.payout, clearing.platforms,
                    clearing.recon, clearing.reports, clearing.rules, clearing.risk,
                    clearing.splits):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if (isinstance(value, type) and issubclass(value, enum.IntEnum)
                        and value.__module__ == module.__name__):
                    found.add(f"{value.__module__}.{value.__name__}")
    return found


def test_every_enum_is_paired_or_named():
    paired = {f"{d.__module__}.{d.__name__}" for d, _ in PAIRS}
    assert _domain_int_enums() == paired | DOMAIN_ONLY
    files = {p.relative_to(ROOT / "proto").as_posix()
             for p in (ROOT / "proto" / "clearing" / "v1").glob("*.proto")}
    assert {m.DESCRIPTOR.name for m in MODULES} == files - {"clearing/v1/errors.proto"}
    proto = {e.full_name for m in MODULES for e in m.DESCRIPTOR.enum_types_by_name.values()}
    assert proto == {d.full_name for _, d in PAIRS} | API_ONLY


def test_a_member_on_one_side_only_is_found():
    class Extra(enum.IntEnum):  # AccountStatus with a member proto does not have
        ACTIVE = 1
        FROZEN = 2
        CLOSED = 3
        DORMANT = 4

    class Missing(enum.IntEnum):  # without one proto has
        ACTIVE = 1
        FROZEN = 2

    class Renumbered(enum.IntEnum):
        ACTIVE = 1
        FROZEN = 3
        CLOSED = 2

    status = ledger_pb2.AccountStatus.DESCRIPTOR
    assert mismatches(Extra, status) == ["Extra.DORMANT has no proto ACCOUNT_STATUS_DORMANT"]
    assert mismatches(Missing, status) == ["proto ACCOUNT_STATUS_CLOSED has no Missing.CLOSED"]
    assert mismatches(Renumbered, status) == [
        "Renumbered.CLOSED = 2, proto ACCOUNT_STATUS_CLOSED = 3",
        "Renumbered.FROZEN = 3, proto ACCOUNT_STATUS_FROZEN = 2"]


def test_prefix_rule():
    assert proto_prefix("AccountStatus") == "ACCOUNT_STATUS_"
    assert proto_prefix("BankTransferState") == "BANK_TRANSFER_STATE_"
