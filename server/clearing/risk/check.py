"""The risk check of one split (pure): which receivers the active policy flags, and the
evaluation with their shares held.

It runs on the split path after evaluation and before the posting is built, with the
counts the counters answered (this split included), so that a hit is decided once per split
and travels with it: the held legs in the posting, the events and the inflows in the split
record the splits sink writes in the posting's transaction. A replay of the request id
answers the first response; its own decision is dropped with its posting.

Rules, each per receiver (the sum of its SHARE legs in the split; fee and subsidy legs and
legs in the custodial hold are not checked):
- LARGE_SPLIT: its share > large_split_minor;
- FREQUENCY: its shares > frequency_amount_minor within the last frequency_window_s, this one
  included, number more than frequency_count_max;
- DAILY_INFLOW: its inflow of the UTC day of the paid time, this share included, >
  daily_inflow_cap_minor.
So a value exactly at a threshold is not a hit; one minor unit above is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from clearing.reasons import Reason
from clearing.risk.model import Policy, RiskAction, RiskRule
from clearing.rules.evaluate import Alert, Evaluation
from clearing.rules.model import HoldReason, LegKind


@dataclass(frozen=True, slots=True)
class Counts:
    """A receiver's counts, this split included: shares above the frequency amount in the
    window (with their order ids, the evidence) and its inflow of the day."""

    frequency_count: int
    day_inflow_minor: int
    frequency_orders: tuple[str, ...] = ()
    source: str = "redis"


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule's hit on one receiver."""

    rule: RiskRule
    account_id: int
    amount_minor: int
    observed: int
    limit: int


@dataclass(frozen=True, slots=True)
class Flag:
    """A flagged receiver of a split: its hits (the first is the event's rule), what is held
    for it, and the evidence."""

    account_id: int
    amount_minor: int
    held_minor: int
    hits: tuple[Hit, ...]
    evidence_json: str


@dataclass(frozen=True, slots=True)
class RiskNote:
    """What a split carries to the splits sink: its receivers' inflows (the counters' truth)
    and its flags (the events)."""

    currency_code: str
    shares: Mapping[int, int]
    flags: tuple[Flag, ...]


def shares(ev: Evaluation) -> dict[int, int]:
    """The amount each receiver gets from the split (SHARE legs, not in custody)."""
    out: dict[int, int] = {}
    for leg in ev.legs:
        if (leg.kind == LegKind.SHARE and leg.account_id
                and leg.hold_reason != HoldReason.RECEIVER_UNAVAILABLE):
            out[leg.account_id] = out.get(leg.account_id, 0) + leg.amount_minor
    return out


def hits(policy: Policy, currency_code: str, account_id: int, amount_minor: int,
         counts: Counts | None) -> list[Hit]:
    """The rules a receiver's share hits."""
    limits = policy.of(currency_code)
    if limits is None:
        return []
    out: list[Hit] = []
    if limits.large_split_minor and amount_minor > limits.large_split_minor:
        out.append(Hit(RiskRule.LARGE_SPLIT, account_id, amount_minor, amount_minor,
                       limits.large_split_minor))
    if counts is not None:
        if (limits.frequency_amount_minor and amount_minor > limits.frequency_amount_minor
                and counts.frequency_count > policy.frequency_count_max):
            out.append(Hit(RiskRule.FREQUENCY, account_id, amount_minor,
                           counts.frequency_count, policy.frequency_count_max))
        if (limits.daily_inflow_cap_minor
                and counts.day_inflow_minor > limits.daily_inflow_cap_minor):
            out.append(Hit(RiskRule.DAILY_INFLOW, account_id, amount_minor,
                           counts.day_inflow_minor, limits.daily_inflow_cap_minor))
    return out


def check(policy: Policy, ev: Evaluation,
          counts: Mapping[int, Counts]) -> tuple[Evaluation, RiskNote]:
    """The evaluation as the policy leaves it (flagged receivers' SHARE legs held whole when
    the action is HOLD_SHARE, with a RISK_HOLD alert each) and the split's risk note."""
    got = shares(ev)
    hold = policy.action == RiskAction.HOLD_SHARE
    flags: list[Flag] = []
    for account_id, amount in got.items():
        found = hits(policy, ev.currency_code, account_id, amount, counts.get(account_id))
        if not found:
            continue
        c = counts.get(account_id)
        evidence = json.dumps({
            "policy_version": policy.version,
            "hits": [{"rule": h.rule.name, "observed": h.observed, "limit": h.limit}
                     for h in found],
            "share_minor": amount,
            "frequency_count": c.frequency_count if c else None,
            "frequency_window_s": policy.frequency_window_s,
            "frequency_orders": list(c.frequency_orders) if c else [],
            "day_inflow_minor": c.day_inflow_minor if c else None,
            "counts_source": c.source if c else None}, sort_keys=True)
        flags.append(Flag(account_id, amount, amount if hold else 0, tuple(found), evidence))
    if not flags or not hold:
        return ev, RiskNote(ev.currency_code, got, tuple(flags))
    return _held(ev, {f.account_id: f for f in flags}), RiskNote(ev.currency_code, got,
                                                                 tuple(flags))


def _held(ev: Evaluation, flagged: Mapping[int, Flag]) -> Evaluation:
    legs = []
    alerts = list(ev.alerts)
    for leg in ev.legs:
        if (leg.kind == LegKind.SHARE and leg.account_id in flagged
                and leg.hold_reason != HoldReason.RECEIVER_UNAVAILABLE):
            flag = flagged[leg.account_id]
            alerts.append(Alert(Reason.RISK_HOLD, leg.account_id, leg.leg_index,
                                f"risk policy: {flag.hits[0].rule.name} (held for review)"))
            leg = leg._replace(held_minor=leg.amount_minor, hold_reason=HoldReason.RISK_REVIEW,
                               release_steps=())
        legs.append(leg)
    return ev._replace(legs=tuple(legs), alerts=tuple(alerts),
                       held_minor=sum(leg.held_minor for leg in legs))
