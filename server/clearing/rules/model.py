"""Rule-set domain model: frozen dataclasses that mirror `clearing.v1.RuleSet` field by field.

Money is `int` minor units, ratios `int` basis points (10000 = 100%), times `int`
nanoseconds since the Unix epoch (`None` when unset). Enum numbers equal the proto enum
numbers, `0` being the proto's `*_UNSPECIFIED` (kept so that validation can report it).
Nothing here imports protobuf: `clearing.api.rules_proto` converts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol


class ShareType(IntEnum):
    UNSPECIFIED = 0
    RATIO = 1
    FIXED = 2
    REMAINDER = 3


class AttributeComparison(IntEnum):
    UNSPECIFIED = 0
    EQUALS = 1
    NOT_EQUALS = 2
    IN = 3
    NOT_IN = 4


class CounterMetric(IntEnum):
    UNSPECIFIED = 0
    ORDER_COUNT = 1
    AMOUNT_MINOR = 2


class CounterPeriod(IntEnum):
    UNSPECIFIED = 0
    DAY = 1
    WEEK = 2
    MONTH = 3
    YEAR = 4
    LIFETIME = 5


class TierEffect(IntEnum):
    UNSPECIFIED = 0
    ADD = 1
    REPLACE = 2


class SubsidyBasis(IntEnum):
    UNSPECIFIED = 0
    PLATFORM_COUPONS = 1
    FIXED = 2
    RATIO = 3


class SubsidyTarget(IntEnum):
    UNSPECIFIED = 0
    RECEIVER = 1
    SPLIT_BASE = 2


class CouponFunding(IntEnum):
    UNSPECIFIED = 0
    PLATFORM = 1
    SELLER = 2


class LegKind(IntEnum):
    UNSPECIFIED = 0
    SHARE = 1
    FEE = 2
    SUBSIDY = 3


class HoldReason(IntEnum):
    UNSPECIFIED = 0
    RELEASE_POLICY = 1
    RECEIVER_UNAVAILABLE = 2
    RISK_REVIEW = 3  # the platform's risk policy flagged the receiver (clearing.risk)


class RuleSetStatus(IntEnum):
    """A rule-set version's status (derived from activated_at and the active version)."""

    UNSPECIFIED = 0
    PUBLISHED = 1
    ACTIVE = 2
    SUPERSEDED = 3


# ---- the rule set ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReleaseStep:
    event_name: str
    fraction_bps: int


@dataclass(frozen=True, slots=True)
class ReleasePolicy:
    """No steps: credited at once. Steps: held, posted in parts as events arrive."""

    steps: tuple[ReleaseStep, ...] = ()


@dataclass(frozen=True, slots=True)
class Tier:
    min_counter_value: int
    ratio_bps: int


@dataclass(frozen=True, slots=True)
class TierTable:
    counter_name: str
    effect: TierEffect
    tiers: tuple[Tier, ...]


@dataclass(frozen=True, slots=True)
class SubRuleSetRef:
    rule_set_name: str
    rule_set_version: int = 0  # 0: the version active when resolved


@dataclass(frozen=True, slots=True)
class Receiver:
    """Exactly one of the three should be set (validation says so when not)."""

    account_ref: str = ""
    party_role: str = ""
    rule_set: SubRuleSetRef | None = None

    def targets_count(self) -> int:
        return bool(self.account_ref) + bool(self.party_role) + (self.rule_set is not None)


@dataclass(frozen=True, slots=True)
class Fee:
    label: str
    ratio_bps: int
    fixed_minor: int
    account_ref: str
    min_minor: int = 0
    max_minor: int = 0
    release: ReleasePolicy | None = None


@dataclass(frozen=True, slots=True)
class Share:
    label: str
    type: ShareType
    receiver: Receiver | None
    ratio_bps: int = 0
    fixed_minor: int = 0
    release: ReleasePolicy | None = None
    tiers: TierTable | None = None


@dataclass(frozen=True, slots=True)
class Subsidy:
    label: str
    source_account_ref: str
    basis: SubsidyBasis
    target: SubsidyTarget
    fixed_minor: int = 0
    ratio_bps: int = 0
    cap_minor: int = 0
    receiver: Receiver | None = None
    release: ReleasePolicy | None = None


@dataclass(frozen=True, slots=True)
class AttributeCondition:
    key: str
    comparison: AttributeComparison
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleCondition:
    min_amount_minor: int = 0
    max_amount_minor: int = 0
    currency_codes: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    tags_none: tuple[str, ...] = ()
    attributes: tuple[AttributeCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    rule_name: str
    priority: int
    shares: tuple[Share, ...] = ()
    fees: tuple[Fee, ...] = ()
    subsidies: tuple[Subsidy, ...] = ()
    condition: RuleCondition | None = None
    top_slice: bool = False
    start_time_ns: int | None = None
    end_time_ns: int | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class AttributeDeclaration:
    key: str
    allowed_values: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class CounterDefinition:
    """A running counter; exactly one subject (`account_ref`, `party_role`, `attribute_key`)."""

    name: str
    metric: CounterMetric
    period: CounterPeriod
    account_ref: str = ""
    party_role: str = ""
    attribute_key: str = ""
    time_zone: str = ""  # "" means the counter store's default (Asia/Shanghai)

    def subjects_count(self) -> int:
        return bool(self.account_ref) + bool(self.party_role) + bool(self.attribute_key)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The filed content of one rule-set version (output-only proto fields are left out,
    except `version`, which the server assigns and the compiled plan records)."""

    name: str
    currency_code: str
    rules: tuple[Rule, ...]
    attributes: tuple[AttributeDeclaration, ...] = ()
    party_roles: tuple[str, ...] = ()
    counters: tuple[CounterDefinition, ...] = ()
    description: str = ""
    version: int = 0


# ---- orders ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Coupon:
    coupon_id: str
    amount_minor: int
    funding: CouponFunding


@dataclass(frozen=True, slots=True)
class Order:
    """A paid order. `paid_time_ns`: when the payment completed (the caller sets the time
    it first received the order when the gateway did not say)."""

    order_id: str
    amount_minor: int
    currency_code: str
    channel: str = ""
    channel_fee_minor: int = 0
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    parties: Mapping[str, str] = field(default_factory=dict)
    coupons: tuple[Coupon, ...] = ()
    rule_set_name: str = ""
    paid_time_ns: int | None = None
    # recorded with the split, not read by the rules
    channel_transaction_id: str = ""
    memo: str = ""


# ---- what the caller tells the rules engine about accounts -----------------------------------

class AccountLike(Protocol):
    """What validation, compilation and evaluation need to know of an account;
    `clearing.ledger.model.Account` has these attributes."""

    @property
    def account_id(self) -> int: ...
    @property
    def currency_code(self) -> str: ...
    @property
    def status(self) -> int: ...  # clearing.ledger.model.AccountStatus
    @property
    def kind(self) -> int: ...  # clearing.ledger.model.AccountKind


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """A minimal AccountLike."""

    account_id: int
    currency_code: str
    status: int
    kind: int


Accounts = Mapping[str, AccountLike]  # by external_ref
# Resolves a sub-rule-set reference: (name, version or 0 for the active one) -> the rule
# set (with its `version` set), or None if there is none.
Resolver = Callable[[str, int], "RuleSet | None"]
