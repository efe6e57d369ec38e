"""The risk policy and the risk event: values, validation, and their JSON form in
PostgreSQL. Enums equal their proto counterparts (tests/unit/test_enum_mirrors.py)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from enum import IntEnum

from clearing.errors import Violations
from clearing.limits import AMOUNT_MINOR_MAX
from clearing.money import BPS_ONE

CURRENCIES_MAX = 16
FREQUENCY_COUNT_MAX = 10_000
FREQUENCY_WINDOW_S_MIN = 60
FREQUENCY_WINDOW_S_MAX = 86_400
SWING_THRESHOLD_BPS_DEFAULT = 3_000  # the seeds' 30%
NOTE_LEN_MAX = 500


class RiskRule(IntEnum):
    """Equal to proto RiskRule."""

    UNSPECIFIED = 0
    LARGE_SPLIT = 1
    FREQUENCY = 2
    DAILY_INFLOW = 3
    RATIO_SWING = 4


class RiskAction(IntEnum):
    """Equal to proto RiskAction."""

    UNSPECIFIED = 0
    HOLD_SHARE = 1
    REVIEW_ONLY = 2


class RiskEventState(IntEnum):
    """Equal to proto RiskEventState."""

    UNSPECIFIED = 0
    OPEN = 1
    RESOLUTION_PROPOSED = 2
    RELEASED = 3
    REJECTED = 4


class RiskDecision(IntEnum):
    """Equal to proto RiskDecision."""

    UNSPECIFIED = 0
    RELEASE = 1
    REJECT = 2


@dataclass(frozen=True, slots=True)
class CurrencyLimits:
    """Thresholds of one currency (0: that rule is off in this currency)."""

    currency_code: str
    large_split_minor: int = 0
    frequency_amount_minor: int = 0
    daily_inflow_cap_minor: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    """A risk policy version (`version` 0 before it is published)."""

    limits: tuple[CurrencyLimits, ...]
    frequency_count_max: int = 0
    frequency_window_s: int = 0
    swing_threshold_bps: int = SWING_THRESHOLD_BPS_DEFAULT
    action: RiskAction = RiskAction.HOLD_SHARE
    version: int = 0

    def of(self, currency_code: str) -> CurrencyLimits | None:
        for limits in self.limits:
            if limits.currency_code == currency_code:
                return limits
        return None

    @property
    def counts(self) -> bool:
        """Whether a split of this policy needs counters (a frequency rule or a cap)."""
        return any(lim.frequency_amount_minor or lim.daily_inflow_cap_minor
                   for lim in self.limits)

    def to_json(self) -> str:
        return json.dumps({
            "limits": [[lim.currency_code, lim.large_split_minor, lim.frequency_amount_minor,
                        lim.daily_inflow_cap_minor] for lim in self.limits],
            "frequency_count_max": self.frequency_count_max,
            "frequency_window_s": self.frequency_window_s,
            "swing_threshold_bps": self.swing_threshold_bps, "action": int(self.action)},
            sort_keys=True)

    @staticmethod
    def from_json(text: str, version: int) -> Policy:
        d = json.loads(text)
        return Policy(tuple(CurrencyLimits(*row) for row in d["limits"]),
                      d["frequency_count_max"], d["frequency_window_s"],
                      d["swing_threshold_bps"], RiskAction(d["action"]), version)


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """A stored version and its life-cycle facts."""

    policy: Policy
    active: bool
    published_by: int
    published_at: dt.datetime
    activated_at: dt.datetime | None


def policy_violations(v: Violations, p: Policy, prefix: str = "policy.") -> None:
    """Add every problem of a policy to `v` (field paths under `prefix`)."""
    if not p.limits:
        v.add(f"{prefix}limits", "required: the thresholds of at least one currency")
    if len(p.limits) > CURRENCIES_MAX:
        v.add(f"{prefix}limits", f"at most {CURRENCIES_MAX} currencies")
    seen: set[str] = set()
    frequency = False
    for i, lim in enumerate(p.limits):
        at = f"{prefix}limits[{i}]."
        code = lim.currency_code
        if len(code) != 3 or not code.isascii() or not code.isupper() or not code.isalpha():
            v.add(at + "currency_code", "must be an ISO 4217 code (3 capital letters)")
        elif code in seen:
            v.add(at + "currency_code", f"{code} is listed twice")
        seen.add(code)
        for name in ("large_split_minor", "frequency_amount_minor", "daily_inflow_cap_minor"):
            value = getattr(lim, name)
            if not 0 <= value <= AMOUNT_MINOR_MAX:
                v.add(at + name, f"must be between 0 and {AMOUNT_MINOR_MAX}")
        if not (lim.large_split_minor or lim.frequency_amount_minor
                or lim.daily_inflow_cap_minor):
            v.add(at, "sets no threshold: set at least one, or leave the currency out")
        frequency |= lim.frequency_amount_minor > 0
    if frequency:
        if not 1 <= p.frequency_count_max <= FREQUENCY_COUNT_MAX:
            v.add(f"{prefix}frequency_count_max", f"must be between 1 and {FREQUENCY_COUNT_MAX}"
                  " when a frequency amount is set")
        if not FREQUENCY_WINDOW_S_MIN <= p.frequency_window_s <= FREQUENCY_WINDOW_S_MAX:
            v.add(f"{prefix}frequency_window_s", f"must be between {FREQUENCY_WINDOW_S_MIN}"
                  f" and {FREQUENCY_WINDOW_S_MAX} when a frequency amount is set")
    else:
        if p.frequency_count_max:
            v.add(f"{prefix}frequency_count_max", "must be 0 without a frequency amount")
        if p.frequency_window_s:
            v.add(f"{prefix}frequency_window_s", "must be 0 without a frequency amount")
    if not 0 < p.swing_threshold_bps <= BPS_ONE:
        v.add(f"{prefix}swing_threshold_bps", f"must be between 0 (default 3000) and {BPS_ONE}")
    if p.action not in (RiskAction.HOLD_SHARE, RiskAction.REVIEW_ONLY):
        v.add(f"{prefix}action", "required: RISK_ACTION_HOLD_SHARE or RISK_ACTION_REVIEW_ONLY")


@dataclass(frozen=True, slots=True)
class EventStep:
    """One audited step of an event."""

    step: str
    key_id: int
    note: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """A stored risk event with its steps."""

    event_id: int
    rule: RiskRule
    state: RiskEventState
    account_id: int
    split_id: int
    order_id: str
    currency_code: str
    amount_minor: int
    held_minor: int
    observed: int
    limit: int
    evidence_json: str
    decision: RiskDecision
    proposed_by: int | None
    created_at: dt.datetime
    steps: tuple[EventStep, ...] = field(default=())
