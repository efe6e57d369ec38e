"""Compile a validated rule set (and the sub-rule-sets it reaches) into a flat, immutable Plan.

The plan is what evaluation reads, so that it parses and looks up nothing:
- rules sorted by priority (ties keep declaration order; validation made them exclusive),
  each with its share mode decided (allocate / remainder / top-slice);
- conditions as ready predicates: frozensets for channels, tags and attribute values,
  thresholds as ints, windows as int nanoseconds;
- receivers resolved to account ids (or to a party role the order maps, or to a sub-plan);
- sub-rule-sets flattened into `Plan.units`, one per (rule set, version, level), level 1
  being the rule set itself; a share to a sub-rule-set points at its unit by index.

A sub-rule-set named with version 0 ("the active one") is pinned to the version active at
compile time; `Plan.pinned` lists every sub-rule-set version used, so the owner of the plan
can recompile when another version of a floating reference is activated.

`to_bytes()` / `from_bytes()` serialize a plan as canonical JSON (sorted keys, sets sorted,
no floats) with a format number, for the Redis and PostgreSQL caches: the same plan always
gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache

from clearing.errors import FieldViolation, InvalidArgument
from clearing.rules import chain as chains
from clearing.rules.model import (
    Accounts, AttributeComparison, Fee, Receiver, ReleasePolicy, Resolver, Rule, RuleSet,
    Share, ShareType, Subsidy, SubsidyTarget, TierEffect)
from clearing.rules.validate import validate
from clearing.reasons import Reason

PLAN_FORMAT = 1

# How a rule turns what it distributes into shares.
MODE_ALLOCATE = 1  # only ratios, summing to 10000: money.allocate (largest remainders)
MODE_REMAINDER = 2  # ratios and fixed floored; the REMAINDER share takes the rest
MODE_TOP_SLICE = 3  # ratios and fixed floored; the rest is passed on to the next rule


class PlanFormatError(ValueError):
    """Bytes that are not a plan of this format (e.g. cached by an older release)."""


@dataclass(frozen=True, slots=True)
class Step:
    event_name: str
    fraction_bps: int


@dataclass(frozen=True, slots=True)
class Target:
    """Who a leg credits: an account (id and ref), a party role the order maps to an
    account, or a sub-plan (`unit` >= 0). `account_id` 0 with no role and no unit is the
    platform's custodial account (subsidies into the split base)."""

    account_id: int = 0
    external_ref: str = ""
    party_role: str = ""
    unit: int = -1


@dataclass(frozen=True, slots=True)
class Tiers:
    counter_name: str
    add: bool  # TIER_EFFECT_ADD, else REPLACE
    mins: tuple[int, ...]  # strictly increasing min_counter_value
    ratios_bps: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PlanFee:
    label: str
    ratio_bps: int
    fixed_minor: int
    min_minor: int
    max_minor: int
    target: Target
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class PlanShare:
    label: str
    type: int  # ShareType
    ratio_bps: int
    fixed_minor: int
    target: Target
    steps: tuple[Step, ...]
    tiers: Tiers | None


@dataclass(frozen=True, slots=True)
class PlanSubsidy:
    label: str
    source: Target
    basis: int  # SubsidyBasis
    fixed_minor: int
    ratio_bps: int
    cap_minor: int
    into_base: bool  # SUBSIDY_TARGET_SPLIT_BASE
    target: Target  # the custodial account (Target()) when into_base
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class AttributeTest:
    key: str
    positive: bool  # EQUALS / IN: must be one of `values`; NOT_*: must not be
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's condition as a ready predicate: every clause that is set must hold."""

    min_amount_minor: int
    max_amount_minor: int  # 0: no upper bound
    currencies: frozenset[str]
    channels: frozenset[str]
    tags_any: frozenset[str]
    tags_all: frozenset[str]
    tags_none: frozenset[str]
    attributes: tuple[AttributeTest, ...]

    def holds(self, amount_minor: int, currency_code: str, channel: str,
              tags: frozenset[str], attributes: Mapping[str, str]) -> bool:
        if amount_minor < self.min_amount_minor:
            return False
        if self.max_amount_minor and amount_minor >= self.max_amount_minor:
            return False
        if self.currencies and currency_code not in self.currencies:
            return False
        if self.channels and channel not in self.channels:
            return False
        if self.tags_any and self.tags_any.isdisjoint(tags):
            return False
        if self.tags_all and not self.tags_all <= tags:
            return False
        if self.tags_none and not self.tags_none.isdisjoint(tags):
            return False
        for test in self.attributes:
            value = attributes.get(test.key)
            if test.positive:
                if value is None or value not in test.values:
                    return False
            elif value is not None and value in test.values:
                return False
        return True


@dataclass(frozen=True, slots=True)
class PlanRule:
    name: str
    priority: int
    top_slice: bool
    mode: int  # MODE_*
    remainder_index: int  # the REMAINDER share (MODE_REMAINDER), else -1
    ratios_bps: tuple[int, ...]  # every share's ratio_bps before tiers (0: not RATIO)
    fixed_minor: tuple[int, ...]  # every share's fixed_minor (0: not FIXED)
    tiered: bool  # some share has tiers
    start_ns: int | None
    end_ns: int | None
    condition: Condition | None
    fees: tuple[PlanFee, ...]
    shares: tuple[PlanShare, ...]
    subsidies: tuple[PlanSubsidy, ...]


@dataclass(frozen=True, slots=True)
class Unit:
    """One rule set at one level of the plan."""

    rule_set_name: str
    rule_set_version: int
    level: int
    rules: tuple[PlanRule, ...]  # by priority


@dataclass(frozen=True, slots=True)
class PlanCounter:
    name: str
    metric: int  # CounterMetric
    period: int  # CounterPeriod
    time_zone: str
    account_ref: str
    party_role: str
    attribute_key: str


@dataclass(frozen=True, slots=True)
class PinnedRef:
    rule_set_name: str
    asked_version: int  # 0: the active one at compile time
    version: int


@dataclass(frozen=True, slots=True)
class Plan:
    format: int
    rule_set_name: str
    rule_set_version: int
    currency_code: str
    level_count: int
    legs_max: int
    units: tuple[Unit, ...]  # units[0] is the rule set itself, level 1
    counters: tuple[PlanCounter, ...]  # by name, sub-rule-sets' included
    pinned: tuple[PinnedRef, ...]


# ---- compiling ------------------------------------------------------------------------------

def _memo(resolver: Resolver | None) -> Resolver:
    """The same answer for the same reference during one compilation."""
    seen: dict[tuple[str, int], RuleSet | None] = {}

    def resolve(name: str, version: int) -> RuleSet | None:
        if (name, version) not in seen:
            seen[(name, version)] = resolver(name, version) if resolver else None
        return seen[(name, version)]

    return resolve


def account_refs(rule_set: RuleSet) -> Iterator[tuple[str, str]]:
    """(field path, external_ref) of every account a rule set names."""
    for i, counter in enumerate(rule_set.counters):
        if counter.account_ref:
            yield f"counters[{i}].account_ref", counter.account_ref
    for i, rule in enumerate(rule_set.rules):
        for j, fee in enumerate(rule.fees):
            yield f"rules[{i}].fees[{j}].account_ref", fee.account_ref
        for j, share in enumerate(rule.shares):
            if share.receiver is not None and share.receiver.account_ref:
                yield f"rules[{i}].shares[{j}].receiver.account_ref", share.receiver.account_ref
        for j, s in enumerate(rule.subsidies):
            yield f"rules[{i}].subsidies[{j}].source_account_ref", s.source_account_ref
            if s.receiver is not None and s.receiver.account_ref:
                yield f"rules[{i}].subsidies[{j}].receiver.account_ref", s.receiver.account_ref


def needed_account_refs(rule_set: RuleSet, resolver: Resolver | None) -> set[str]:
    """Every external_ref `compile_plan` needs in its `accounts` (sub-rule-sets' too)."""
    chain = chains.walk(rule_set, _memo(resolver))
    refs = {ref for _, ref in account_refs(rule_set)}
    for sub in chain.subs.values():
        refs.update(ref for _, ref in account_refs(sub))
    return refs


def compile_plan(rule_set: RuleSet, accounts: Accounts, resolver: Resolver | None = None, *,
                 prefix: str = "") -> Plan:
    """Validate `rule_set` and compile it with every sub-rule-set it reaches.

    Raises InvalidArgument (reason RULE_SET_INVALID) listing every problem."""
    resolve = _memo(resolver)
    problems = validate(rule_set, accounts, resolve, prefix=prefix)
    chain = chains.walk(rule_set, resolve)
    for key, sub in chain.subs.items():
        for _, ref in account_refs(sub):
            if ref not in accounts:
                problems.append(FieldViolation(
                    prefix + chain.reached_from.get(key, "rules"),
                    f"sub-rule-set {sub.name!r} names unknown account {ref!r}"))
    if problems:
        raise InvalidArgument(problems, reason=Reason.RULE_SET_INVALID)
    builder = _Builder(accounts, chain)
    builder.unit(rule_set, 1)
    return Plan(
        format=PLAN_FORMAT, rule_set_name=rule_set.name, rule_set_version=rule_set.version,
        currency_code=rule_set.currency_code, level_count=chain.level_count,
        legs_max=chains.legs_bound(rule_set, chain), units=tuple(builder.units),
        counters=_counters(rule_set, chain),
        pinned=tuple(PinnedRef(name, asked, chain.subs[(name, asked)].version)
                     for name, asked in sorted(chain.subs)))


def _counters(rule_set: RuleSet, chain: chains.Chain) -> tuple[PlanCounter, ...]:
    by_name = {}
    for rs in (rule_set, *chain.subs.values()):
        for c in rs.counters:
            by_name.setdefault(c.name, PlanCounter(
                c.name, int(c.metric), int(c.period), c.time_zone, c.account_ref,
                c.party_role, c.attribute_key))
    return tuple(by_name[name] for name in sorted(by_name))


class _Builder:
    def __init__(self, accounts: Accounts, chain: chains.Chain) -> None:
        self.accounts = accounts
        self.chain = chain
        self.units: list[Unit] = []
        self.index: dict[tuple[str, int, int], int] = {}

    def unit(self, rule_set: RuleSet, level: int) -> int:
        key = (rule_set.name, rule_set.version, level)
        if key in self.index:
            return self.index[key]
        position = len(self.units)
        self.index[key] = position
        self.units.append(None)  # type: ignore[arg-type]  # filled below; children follow
        rules = [self.rule(rule, level) for rule in rule_set.rules]
        rules.sort(key=lambda r: r.priority)  # stable: ties keep declaration order
        self.units[position] = Unit(rule_set.name, rule_set.version, level, tuple(rules))
        return position

    def rule(self, rule: Rule, level: int) -> PlanRule:
        shares = tuple(self.share(s, level) for s in rule.shares)
        types_ = [s.type for s in rule.shares]
        if rule.top_slice:
            mode, remainder = MODE_TOP_SLICE, -1
        elif ShareType.REMAINDER in types_:
            mode, remainder = MODE_REMAINDER, types_.index(ShareType.REMAINDER)
        else:
            mode, remainder = MODE_ALLOCATE, -1
        return PlanRule(
            name=rule.rule_name, priority=rule.priority, top_slice=rule.top_slice, mode=mode,
            remainder_index=remainder,
            ratios_bps=tuple(s.ratio_bps for s in rule.shares),
            fixed_minor=tuple(s.fixed_minor for s in rule.shares),
            tiered=any(s.tiers is not None for s in rule.shares),
            start_ns=rule.start_time_ns, end_ns=rule.end_time_ns,
            condition=_condition(rule), fees=tuple(self.fee(f) for f in rule.fees),
            shares=shares, subsidies=tuple(self.subsidy(s) for s in rule.subsidies))

    def account(self, ref: str) -> Target:
        return Target(account_id=int(self.accounts[ref].account_id), external_ref=ref)

    def target(self, receiver: Receiver, level: int) -> Target:
        if receiver.account_ref:
            return self.account(receiver.account_ref)
        if receiver.party_role:
            return Target(party_role=receiver.party_role)
        ref = receiver.rule_set
        sub = self.chain.subs[(ref.rule_set_name, ref.rule_set_version)]
        return Target(unit=self.unit(sub, level + 1))

    def fee(self, fee: Fee) -> PlanFee:
        return PlanFee(fee.label, fee.ratio_bps, fee.fixed_minor, fee.min_minor, fee.max_minor,
                       self.account(fee.account_ref), _steps(fee.release))

    def share(self, share: Share, level: int) -> PlanShare:
        tiers = None
        if share.tiers is not None:
            t = share.tiers
            tiers = Tiers(t.counter_name, t.effect == TierEffect.ADD,
                          tuple(x.min_counter_value for x in t.tiers),
                          tuple(x.ratio_bps for x in t.tiers))
        target = self.target(share.receiver, level)
        steps = () if target.unit >= 0 else _steps(share.release)
        return PlanShare(share.label, int(share.type), share.ratio_bps, share.fixed_minor,
                         target, steps, tiers)

    def subsidy(self, s: Subsidy) -> PlanSubsidy:
        into_base = s.target == SubsidyTarget.SPLIT_BASE
        target = Target() if into_base else self.target(s.receiver, 0)
        return PlanSubsidy(s.label, self.account(s.source_account_ref), int(s.basis),
                           s.fixed_minor, s.ratio_bps, s.cap_minor, into_base, target,
                           () if into_base else _steps(s.release))


def _steps(release: ReleasePolicy | None) -> tuple[Step, ...]:
    if release is None:
        return ()
    return tuple(Step(s.event_name, s.fraction_bps) for s in release.steps)


def _condition(rule: Rule) -> Condition | None:
    c = rule.condition
    if c is None:
        return None
    tests = tuple(AttributeTest(a.key, a.comparison in (AttributeComparison.EQUALS,
                                                        AttributeComparison.IN),
                                frozenset(a.values)) for a in c.attributes)
    condition = Condition(c.min_amount_minor, c.max_amount_minor, frozenset(c.currency_codes),
                          frozenset(c.channels), frozenset(c.tags_any), frozenset(c.tags_all),
                          frozenset(c.tags_none), tests)
    return None if condition == _ANY else condition


_ANY = Condition(0, 0, frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), ())


# ---- bytes ----------------------------------------------------------------------------------

def _encode(value: object) -> object:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, frozenset):
        return sorted(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # an IntEnum is stored as its number
    raise TypeError(f"cannot encode {type(value).__name__} in a plan")


@cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _decode(hint: object, data: object) -> object:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if data is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _decode(inner, data)
    if origin is tuple:
        return tuple(_decode(typing.get_args(hint)[0], v) for v in _as(list, data))
    if origin is frozenset:
        return frozenset(_as(str, v) for v in _as(list, data))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        fields = _as(dict, data)
        hints = _hints(hint)
        names = [f.name for f in dataclasses.fields(hint)]
        if set(fields) != set(names):
            raise PlanFormatError(f"{hint.__name__}: fields {sorted(fields)} != {names}")
        return hint(**{n: _decode(hints[n], fields[n]) for n in names})
    return _as(hint, data)


def _as(kind: type, data: object) -> object:
    if type(data) is not kind:
        raise PlanFormatError(f"expected {kind.__name__}, got {type(data).__name__}")
    return data


def to_bytes(plan: Plan) -> bytes:
    """Canonical JSON of the plan (deterministic: same plan, same bytes)."""
    return json.dumps(_encode(plan), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def from_bytes(blob: bytes) -> Plan:
    """The plan `to_bytes` encoded; PlanFormatError if it is not a plan of PLAN_FORMAT."""
    try:
        data = json.loads(blob)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanFormatError(f"not JSON: {exc}") from exc
    found = data.get("format") if isinstance(data, dict) else None
    if found != PLAN_FORMAT:
        raise PlanFormatError(f"plan format {found!r}, this release reads {PLAN_FORMAT}")
    return typing.cast(Plan, _decode(Plan, data))
