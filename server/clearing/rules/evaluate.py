"""Evaluation: split one paid order by a compiled plan into legs, with integers only.

`evaluate(plan, order, counters, accounts=...)` is a pure function: the same plan, order,
counter values and account states always give the same Evaluation, leg for leg.

What is split
    The order's `amount_minor` minus its `channel_fee_minor` (what reached the custodial
    account; the channel fee is never split). Call it the net amount.

Rules (level 1 is the plan's rule set, a sub-rule-set is one level deeper, at most 10)
    Rules are tried by increasing priority (equal priorities, which validation makes
    mutually exclusive, in declaration order). A rule applies when the order's `paid_time`
    is in its window [start, end) and its condition holds (conditions always look at the
    order itself: its amount, currency, channel, tags, attributes). Each applying rule
    receives an amount (the first one: the net amount):
    1. subsidies into the split base are added to it (SUBSIDY legs from the marketing
       account to the custodial account);
    2. its fees are taken from it, each computed on that same amount:
       floor(amount x ratio_bps / 10000) + fixed_minor, raised to min_minor, lowered to
       max_minor; more fees than the amount fails (FEE_EXCEEDS_AMOUNT). FEE legs;
    3. what is left (D) is shared (SHARE legs), in one of three modes:
       - only ratios summing to exactly 10000 (no REMAINDER share): money.allocate(D,
         ratios): each share floored, then the units left over go one each to the shares
         with the largest discarded fractions, ties to the share declared first;
       - with a REMAINDER share: every ratio share is floor(D x ratio / 10000) (its ratio
         after tiers), every fixed share its amount, and the REMAINDER share takes exactly
         what is left, floors' leftovers included;
       - a top-slice rule: ratio shares floored and fixed shares as in the previous mode;
         what is left, floors' leftovers included, is passed on as the amount the next
         applying rule receives;
       ratio and fixed shares above D fail the order (SHARES_EXCEED_AMOUNT);
    4. subsidies to receivers add SUBSIDY legs from the marketing account (on top of D).
    A rule that is not top-slice ends evaluation at its level; if none applies, the order is
    rejected (NO_MATCHING_RULE). A share to a sub-rule-set is split again, in place, by the
    sub-plan's rules at the next level (a share of 0 is not split again).

Subsidies
    PLATFORM_COUPONS: the sum of the order's platform-funded coupons (seller-funded coupons
    only mean the seller gets less: nothing is paid). FIXED: `fixed_minor`. RATIO:
    floor(order amount x ratio_bps / 10000). Then at most `cap_minor` when set; 0 pays
    nothing.

Tiers
    A tiered ratio share reads its counter's value from `counters` (by counter name; the
    value includes this order; a missing name reads 0, and an order without the counter's
    subject reads 0). The last tier whose `min_counter_value` the value reaches replaces the
    ratio (REPLACE) or is added to it (ADD); below the first tier the share's own ratio
    applies. Every counter read is recorded in `Evaluation.counter_values`.

Legs
    In evaluation order: per applying rule, its split-base subsidy legs, fee legs, share
    legs (a sub-rule-set share's legs in its place), receiver subsidy legs. Legs of 0 are
    not emitted. A leg with release steps is held whole (HOLD_REASON_RELEASE_POLICY); step
    k posts floor(amount x fraction_k / 10000), the last step whatever remains. A leg whose
    receiver is FROZEN or CLOSED in `accounts` is held whole
    (HOLD_REASON_RECEIVER_UNAVAILABLE) and an alert is recorded. `debit_account_id` 0 means
    the platform's custodial account, and so does `account_id` 0 (the credit of a subsidy
    into the split base); the caller knows that account.

Invariants (checked on every evaluation; a failure raises SplitInvariantError, a bug)
    The SHARE and FEE legs sum exactly to `distributed_minor` = net amount + subsidies into
    the split base; the SUBSIDY legs sum to `subsidy_minor`; every leg is > 0; what a leg
    holds is 0 or all of it; release steps sum to the leg; at most LEGS_PER_SPLIT_MAX legs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from clearing.errors import (FailedPrecondition, FieldViolation, InvalidArgument,
                             InvariantViolation, invariant)
from clearing.ledger.model import AccountKind, AccountStatus
from clearing.limits import LEGS_PER_SPLIT_MAX, ORDER_AMOUNT_MINOR_MAX
from clearing.money import allocate, bps_of
from clearing.rules.compile import (
    MODE_ALLOCATE, MODE_REMAINDER, Plan, PlanCounter, PlanRule, PlanSubsidy, Step, Target,
    Tiers, Unit)
from clearing.rules.model import (AccountLike, CounterMetric, CouponFunding, HoldReason, LegKind,
                                  Order, SubsidyBasis)
from clearing.reasons import Reason

_UNAVAILABLE = {AccountStatus.FROZEN: Reason.RECEIVER_FROZEN,
                AccountStatus.CLOSED: Reason.RECEIVER_CLOSED}
_NO_ACCOUNTS: Mapping[str, AccountLike] = {}
_SHARE, _FEE, _SUBSIDY = LegKind.SHARE, LegKind.FEE, LegKind.SUBSIDY


class SplitInvariantError(InvariantViolation):
    """The legs of a split broke an invariant (e.g. they do not sum to the amount): a bug;
    nothing may be posted (answered INTERNAL, reason SPLIT_INVARIANT_BROKEN)."""

    reason = Reason.SPLIT_INVARIANT_BROKEN


# The records below are NamedTuples, not frozen dataclasses: as immutable, but built in a
# tenth of the time (a frozen dataclass of 16 fields takes about 2 us to construct), and an
# evaluation builds several per order on the hot path.
class StepAmount(NamedTuple):
    event_name: str
    fraction_bps: int
    amount_minor: int


class Leg(NamedTuple):
    leg_index: int
    kind: LegKind
    account_id: int  # 0: the custodial account
    external_ref: str
    debit_account_id: int  # 0: the custodial account
    amount_minor: int
    held_minor: int
    hold_reason: HoldReason
    release_steps: tuple[StepAmount, ...]
    rule_set_name: str
    rule_set_version: int
    rule_name: str
    label: str
    level: int
    ratio_bps: int  # RATIO shares: the ratio applied, tiers included; else 0
    match_index: int  # the MatchedRule that produced it


class MatchedRule(NamedTuple):
    match_index: int
    rule_set_name: str
    rule_set_version: int
    rule_name: str
    priority: int
    level: int
    parent_match_index: int  # -1 at level 1
    top_slice: bool
    base_minor: int  # what the rule received, subsidies into the split base included
    fee_minor: int
    passed_on_minor: int


class CounterUse(NamedTuple):
    counter_name: str
    subject: str
    value: int


class Alert(NamedTuple):
    reason: str
    account_id: int
    leg_index: int
    message: str


class CounterRequest(NamedTuple):
    """A counter an order raises (the counter store adds `delta` before evaluation)."""

    counter_name: str
    subject: str
    metric: int
    period: int
    time_zone: str
    delta: int


class Evaluation(NamedTuple):
    rule_set_name: str
    rule_set_version: int
    currency_code: str
    amount_minor: int
    channel_fee_minor: int
    net_amount_minor: int
    subsidy_minor: int  # every SUBSIDY leg
    distributed_minor: int  # the SHARE and FEE legs: net + subsidies into the split base
    fee_minor: int
    held_minor: int
    legs: tuple[Leg, ...]
    matched_rules: tuple[MatchedRule, ...]
    counter_values: tuple[CounterUse, ...]
    alerts: tuple[Alert, ...]


class _Run:
    """The state of one evaluation."""

    __slots__ = ("plan", "order", "tags", "counters", "accounts", "legs", "matched", "used",
                 "alerts", "into_base_minor", "subsidy_minor")

    def __init__(self, plan: Plan, order: Order, counters: Mapping[str, int],
                 accounts: Mapping[str, AccountLike]) -> None:
        self.plan = plan
        self.order = order
        self.tags = frozenset(order.tags)
        self.counters = counters
        self.accounts = accounts
        self.legs: list[Leg] = []
        self.matched: list[MatchedRule | None] = []
        self.used: dict[str, CounterUse] = {}
        self.alerts: list[Alert] = []
        self.into_base_minor = 0
        self.subsidy_minor = 0


def evaluate(plan: Plan, order: Order, counters: Mapping[str, int], *,
             accounts: Mapping[str, AccountLike] | None = None) -> Evaluation:
    """Split `order` by `plan` (see the module docstring).

    `counters`: counter values by name, this order included. `accounts`: current accounts by
    external_ref; required for the refs the order's parties name, and any receiver found
    there FROZEN or CLOSED is held. Raises InvalidArgument for a bad order,
    FailedPrecondition (NO_MATCHING_RULE, FEE_EXCEEDS_AMOUNT, SHARES_EXCEED_AMOUNT) when the
    plan cannot split it, SplitInvariantError on a bug.
    """
    _check_order(plan, order)
    run = _Run(plan, order, counters, accounts if accounts is not None else _NO_ACCOUNTS)
    net = order.amount_minor - order.channel_fee_minor
    _split(run, 0, net, -1)
    return _finish(run, net)


def _check_order(plan: Plan, order: Order) -> None:
    problems = []
    if order.currency_code != plan.currency_code:
        raise InvalidArgument([FieldViolation(
            "order.currency_code", f"the rule set splits {plan.currency_code}, "
                                   f"not {order.currency_code!r}")],
                              reason=Reason.CURRENCY_MISMATCH)
    if not 1 <= order.amount_minor <= ORDER_AMOUNT_MINOR_MAX:
        problems.append(FieldViolation("order.amount_minor",
                                       f"must be 1 to {ORDER_AMOUNT_MINOR_MAX} minor units"))
    elif not 0 <= order.channel_fee_minor <= order.amount_minor:
        problems.append(FieldViolation("order.channel_fee_minor",
                                       "must be 0 to the order's amount_minor"))
    for i, coupon in enumerate(order.coupons):
        if coupon.amount_minor <= 0:
            problems.append(FieldViolation(f"order.coupons[{i}].amount_minor",
                                           "must be a positive number of minor units"))
    if problems:
        raise InvalidArgument(problems, reason=Reason.INVALID_ORDER)


# ---- rules ----------------------------------------------------------------------------------

def _applies(run: _Run, rule: PlanRule) -> bool:
    if rule.start_ns is not None or rule.end_ns is not None:
        paid = run.order.paid_time_ns
        if paid is None:
            raise InvalidArgument([FieldViolation(
                "order.paid_time", "required: rules of this rule set have validity windows")],
                reason=Reason.INVALID_ORDER)
        if (rule.start_ns is not None and paid < rule.start_ns) or (
                rule.end_ns is not None and paid >= rule.end_ns):
            return False
    c = rule.condition
    if c is None:
        return True
    o = run.order
    return c.holds(o.amount_minor, o.currency_code, o.channel, run.tags, o.attributes)


def _split(run: _Run, unit_index: int, amount: int, parent: int) -> None:
    """Split `amount` by the rules of one unit (a rule set at one level)."""
    unit = run.plan.units[unit_index]
    for rule in unit.rules:
        if _applies(run, rule):
            amount = _apply(run, unit, rule, amount, parent)
            if not rule.top_slice:
                return
    raise FailedPrecondition(
        f"no rule of rule set {unit.rule_set_name!r} (level {unit.level}) that ends "
        f"evaluation applies to the order", reason=Reason.NO_MATCHING_RULE,
        metadata={"rule_set_name": unit.rule_set_name})


def _apply(run: _Run, unit: Unit, rule: PlanRule, amount: int, parent: int) -> int:
    """Apply one rule to the amount it receives; returns what it passes on."""
    match_index = len(run.matched)
    run.matched.append(None)  # its place in evaluation order; sub-levels follow it
    base = amount
    for subsidy in rule.subsidies:
        if subsidy.into_base:
            base += _subsidy(run, unit, rule, subsidy, match_index)
    fee_minor = _fees(run, unit, rule, base, match_index)
    distributable = base - fee_minor
    ratios = ([_ratio(run, share.ratio_bps, share.tiers) for share in rule.shares]
              if rule.tiered else rule.ratios_bps)
    amounts = _share_amounts(unit, rule, distributable, ratios)
    for share, share_minor, ratio in zip(rule.shares, amounts, ratios):
        if share.target.unit >= 0:
            if share_minor:
                _split(run, share.target.unit, share_minor, match_index)
        else:
            _leg(run, LegKind.SHARE, share.target, 0, share_minor, share.steps, unit, rule,
                 share.label, ratio, match_index)
    for subsidy in rule.subsidies:
        if not subsidy.into_base:
            _subsidy(run, unit, rule, subsidy, match_index)
    passed_on = distributable - sum(amounts) if rule.top_slice else 0
    run.matched[match_index] = MatchedRule(
        match_index, unit.rule_set_name, unit.rule_set_version, rule.name, rule.priority,
        unit.level, parent, rule.top_slice, base, fee_minor, passed_on)
    return passed_on


def _fees(run: _Run, unit: Unit, rule: PlanRule, base: int, match_index: int) -> int:
    total = 0
    for fee in rule.fees:
        fee_minor = bps_of(base, fee.ratio_bps) + fee.fixed_minor
        if fee_minor < fee.min_minor:
            fee_minor = fee.min_minor
        if fee.max_minor and fee_minor > fee.max_minor:
            fee_minor = fee.max_minor
        total += fee_minor
        _leg(run, LegKind.FEE, fee.target, 0, fee_minor, fee.steps, unit, rule, fee.label, 0,
             match_index)
    if total > base:
        raise FailedPrecondition(
            f"rule {rule.name!r}: fees of {total} exceed the {base} it receives",
            reason=Reason.FEE_EXCEEDS_AMOUNT,
            metadata={"fee_minor": str(total), "base_minor": str(base)})
    return total


def _share_amounts(unit: Unit, rule: PlanRule, distributable: int,
                   ratios: Sequence[int]) -> list[int]:
    if rule.mode == MODE_ALLOCATE:
        return allocate(distributable, list(ratios))
    # a RATIO share has no fixed part, a FIXED share no ratio, a REMAINDER share neither
    amounts = [bps_of(distributable, ratio) + fixed
               for ratio, fixed in zip(ratios, rule.fixed_minor)]
    taken = sum(amounts)
    if taken > distributable:
        raise FailedPrecondition(
            f"rule {rule.name!r} of rule set {unit.rule_set_name!r}: its shares take {taken} "
            f"of the {distributable} it distributes", reason=Reason.SHARES_EXCEED_AMOUNT,
            metadata={"shares_minor": str(taken), "distributable_minor": str(distributable)})
    if rule.mode == MODE_REMAINDER:
        amounts[rule.remainder_index] = distributable - taken
    return amounts


def _subsidy(run: _Run, unit: Unit, rule: PlanRule, subsidy: PlanSubsidy,
             match_index: int) -> int:
    order = run.order
    if subsidy.basis == SubsidyBasis.PLATFORM_COUPONS:
        amount = sum(c.amount_minor for c in order.coupons
                     if c.funding == CouponFunding.PLATFORM)
    elif subsidy.basis == SubsidyBasis.FIXED:
        amount = subsidy.fixed_minor
    else:
        amount = bps_of(order.amount_minor, subsidy.ratio_bps)
    if subsidy.cap_minor and amount > subsidy.cap_minor:
        amount = subsidy.cap_minor
    if subsidy.into_base:
        run.into_base_minor += amount
    run.subsidy_minor += amount
    _leg(run, LegKind.SUBSIDY, subsidy.target, subsidy.source.account_id, amount,
         subsidy.steps, unit, rule, subsidy.label, 0, match_index)
    return amount


# ---- tiers ----------------------------------------------------------------------------------

def _ratio(run: _Run, ratio_bps: int, tiers: Tiers | None) -> int:
    if tiers is None:
        return ratio_bps
    value = _counter_value(run, tiers.counter_name)
    ratio = ratio_bps
    for min_value, tier_bps in zip(tiers.mins, tiers.ratios_bps):
        if value < min_value:
            break
        ratio = ratio_bps + tier_bps if tiers.add else tier_bps
    return ratio


def _subject(counter: PlanCounter, order: Order) -> str:
    if counter.account_ref:
        return counter.account_ref
    if counter.party_role:
        return order.parties.get(counter.party_role, "")
    return order.attributes.get(counter.attribute_key, "")


def _counter_value(run: _Run, name: str) -> int:
    use = run.used.get(name)
    if use is None:
        counter = next(c for c in run.plan.counters if c.name == name)
        subject = _subject(counter, run.order)
        value = int(run.counters.get(name, 0)) if subject else 0
        use = run.used[name] = CounterUse(name, subject, value)
    return use.value


def counter_requests(plan: Plan, order: Order) -> tuple[CounterRequest, ...]:
    """The counters an order raises: every counter of the plan whose subject the order
    resolves, with its contribution (1 order, or the order's amount)."""
    out = []
    for counter in plan.counters:
        subject = _subject(counter, order)
        if subject:
            delta = 1 if counter.metric == CounterMetric.ORDER_COUNT else order.amount_minor
            out.append(CounterRequest(counter.name, subject, counter.metric, counter.period,
                                      counter.time_zone, delta))
    return tuple(out)


# ---- legs -----------------------------------------------------------------------------------

def _resolve(run: _Run, target: Target, debit_account_id: int) -> tuple[int, str]:
    """The account a leg credits. A party may name any account of the platform, but not
    the custodial account nor the leg's own debit account (a subsidy's source): a leg
    moves money between two accounts."""
    if not target.party_role:
        return target.account_id, target.external_ref
    path = f"order.parties[{target.party_role}]"
    ref = run.order.parties.get(target.party_role)
    if not ref:
        raise InvalidArgument([FieldViolation(
            path, f"required: the rule set pays party role {target.party_role!r}")],
            reason=Reason.INVALID_ORDER)
    account = run.accounts.get(ref)
    if account is None:
        raise InvalidArgument([FieldViolation(path, f"unknown account {ref!r}")],
                              reason=Reason.INVALID_ORDER)
    if account.currency_code != run.plan.currency_code:
        raise InvalidArgument([FieldViolation(
            path, f"account {ref!r} holds {account.currency_code}, the rule set splits "
                  f"{run.plan.currency_code}")], reason=Reason.CURRENCY_MISMATCH)
    if account.kind == AccountKind.CUSTODIAL:
        raise InvalidArgument([FieldViolation(
            path, f"account {ref!r} is the custodial account: it pays the legs, it cannot "
                  f"receive one")], reason=Reason.INVALID_ORDER)
    if account.account_id == debit_account_id:
        raise InvalidArgument([FieldViolation(
            path, f"account {ref!r} pays this leg (it is the subsidy's source): it cannot "
                  f"receive it")], reason=Reason.INVALID_ORDER)
    return int(account.account_id), ref


def _leg(run: _Run, kind: LegKind, target: Target, debit_account_id: int, amount: int,
         steps: tuple[Step, ...], unit: Unit, rule: PlanRule, label: str, ratio: int,
         match_index: int) -> None:
    if amount == 0:
        return  # a negative amount is a bug: the leg is made, and _finish refuses it
    account_id, ref = _resolve(run, target, debit_account_id)
    leg_index = len(run.legs)
    held, reason, step_amounts = 0, HoldReason.UNSPECIFIED, ()
    if steps:
        held, reason, step_amounts = amount, HoldReason.RELEASE_POLICY, _steps(amount, steps)
    account = run.accounts.get(ref) if ref else None
    if account is not None and account.status in _UNAVAILABLE:
        held, reason = amount, HoldReason.RECEIVER_UNAVAILABLE
        run.alerts.append(Alert(_UNAVAILABLE[account.status], account_id, leg_index,
                                f"account {ref!r} is not active: its {amount} is held"))
    run.legs.append(Leg(leg_index, kind, account_id, ref, debit_account_id, amount, held,
                        reason, step_amounts, unit.rule_set_name, unit.rule_set_version,
                        rule.name, label, unit.level, ratio, match_index))


def _steps(amount: int, steps: tuple[Step, ...]) -> tuple[StepAmount, ...]:
    out = []
    left = amount
    last = len(steps) - 1
    for k, step in enumerate(steps):
        part = left if k == last else bps_of(amount, step.fraction_bps)
        left -= part
        out.append(StepAmount(step.event_name, step.fraction_bps, part))
    return tuple(out)


# ---- the result -----------------------------------------------------------------------------

def _finish(run: _Run, net: int) -> Evaluation:
    legs = run.legs
    distributed = net + run.into_base_minor
    split_minor = fee_minor = subsidy_minor = held_minor = 0
    bad: Leg | None = None
    for leg in legs:
        amount = leg.amount_minor
        kind = leg.kind
        if kind == _SUBSIDY:
            subsidy_minor += amount
        else:
            split_minor += amount
            if kind == _FEE:
                fee_minor += amount
        held_minor += leg.held_minor
        if amount <= 0 or (leg.held_minor and leg.held_minor != amount) or (
                leg.release_steps and sum(s.amount_minor for s in leg.release_steps) != amount):
            bad = leg
    try:
        invariant(split_minor == distributed,
                  f"share and fee legs sum to {split_minor}, not {distributed}")
        invariant(subsidy_minor == run.subsidy_minor,
                  f"subsidy legs sum to {subsidy_minor}, not {run.subsidy_minor}")
        invariant(len(legs) <= LEGS_PER_SPLIT_MAX,
                  f"{len(legs)} legs, more than {LEGS_PER_SPLIT_MAX}")
        invariant(bad is None, f"leg {bad!r}: not positive, partly held, or its release "
                               f"steps do not sum to it")
    except InvariantViolation as exc:
        raise SplitInvariantError(f"order {run.order.order_id!r}: {exc}") from exc
    plan = run.plan
    order = run.order
    return Evaluation(plan.rule_set_name, plan.rule_set_version, plan.currency_code,
                      order.amount_minor, order.channel_fee_minor, net, subsidy_minor,
                      distributed, fee_minor, held_minor, tuple(legs), tuple(run.matched),
                      tuple(run.used.values()), tuple(run.alerts))
