"""Validation of a rule set before it is filed: every problem, each with its field path.

`validate()` never stops at the first problem: publishing answers with all of them. Paths
use the proto field-path syntax relative to the rule set (`rules[2].shares[1].ratio_bps`);
pass `prefix="rule_set."` to get paths relative to a request.

What is checked, beyond the contract's per-field limits: shares over 100% in a rule
(counting the highest tier each share can reach), a missing REMAINDER share where ratios do
not make exactly 100%, unknown, closed or wrong-currency accounts, the custodial account as
a receiver, a subsidy paid from anything but a marketing or functional account, sub-rule-set
cycles and chains of more than 10 levels, rules of equal priority that can both apply, a
condition on an undeclared attribute or value, tiers not strictly increasing, release
fractions not summing to 100%, and more legs per split than a split may hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from clearing.errors import FieldViolation, Violations
from clearing.ledger.model import AccountKind, AccountStatus
from clearing.limits import (ALLOWED_VALUES_MAX, ATTRIBUTE_DESCRIPTION_LEN_MAX, ATTRIBUTES_MAX,
                             BPS_MAX, CHANNEL_LEN_MAX, CONDITION_ATTRIBUTES_MAX,
                             CONDITION_VALUES_MAX, COUNTERS_MAX, DESCRIPTION_LEN_MAX,
                             EVENT_NAME_LEN_MAX, EXTERNAL_REF_LEN_MAX, FEES_PER_RULE_MAX,
                             LABEL_LEN_MAX, LEGS_PER_SPLIT_MAX, PARTY_ROLES_MAX, PRIORITY_MAX,
                             RELEASE_STEPS_MAX, RULES_MAX, RULE_SET_VERSION_MAX,
                             SHARES_PER_RULE_MAX, SUBSIDIES_PER_RULE_MAX, TAG_LEN_MAX, TIERS_MAX,
                             VALUE_LEN_MAX)
from clearing.money import is_currency
from clearing.rules import chain as chains
from clearing.rules import leaf_checks as leaf
from clearing.rules.leaf_checks import EVENT_RE, NAME_RE, Ctx
from clearing.rules.model import (Accounts, AttributeComparison, AttributeCondition,
                                  CounterDefinition, CounterMetric, CounterPeriod, Fee, Receiver,
                                  ReleasePolicy, Resolver, Rule, RuleCondition, RuleSet, Share,
                                  ShareType, Subsidy, SubsidyBasis, SubsidyTarget, TierEffect,
                                  TierTable)
from clearing.rules.overlap import can_both_apply
from clearing.values import text_problem, time_zone_problem

_SINGLE_VALUE = (AttributeComparison.EQUALS, AttributeComparison.NOT_EQUALS)
_SUBSIDY_SOURCE_KINDS = (AccountKind.MARKETING, AccountKind.FUNCTIONAL)


def _no_rule_sets(name: str, version: int) -> None:
    return None


def validate(rule_set: RuleSet, accounts: Accounts, resolver: Resolver | None = None, *,
             prefix: str = "") -> list[FieldViolation]:
    """Every problem of `rule_set`; empty if it can be filed.

    `accounts`: the platform's accounts by external_ref (every ref the rule set names must
    be there). `resolver`: finds the rule sets that sub-rule-set shares name.
    """
    ctx = Ctx(rule_set, accounts, Violations(), prefix)
    _header(ctx)
    _declarations(ctx)
    rules = rule_set.rules
    for i, rule in enumerate(rules[:RULES_MAX]):
        _rule(ctx, f"rules[{i}]", rule)
    _rule_names(ctx, rules)
    _priorities(ctx, rules)
    _chain(ctx, resolver or _no_rule_sets)
    return ctx.v.items


# ---- the rule set ---------------------------------------------------------------------------

def _header(ctx: Ctx) -> None:
    rs = ctx.rule_set
    leaf.name(ctx, "name", rs.name)
    if not is_currency(rs.currency_code):
        ctx.add("currency_code", f"{rs.currency_code!r} is not a known ISO 4217 currency code")
    leaf.text(ctx, "description", rs.description, DESCRIPTION_LEN_MAX)
    if not rs.rules:
        ctx.add("rules", "at least one rule is required")
    elif len(rs.rules) > RULES_MAX:
        ctx.add("rules", f"{len(rs.rules)} rules, more than {RULES_MAX}")
    elif all(rule.top_slice for rule in rs.rules):
        ctx.add("rules", "every rule is top-slice: at least one rule must distribute what "
                         "the top-slice rules pass on")


def _declarations(ctx: Ctx) -> None:
    rs = ctx.rule_set
    leaf.count(ctx, "attributes", rs.attributes, ATTRIBUTES_MAX)
    for i, decl in enumerate(rs.attributes):
        path = f"attributes[{i}]"
        if leaf.key(ctx, f"{path}.key", decl.key) and decl.key in ctx.attributes:
            ctx.add(f"{path}.key", f"attribute {decl.key!r} is declared twice")
        ctx.attributes[decl.key] = decl
        leaf.count(ctx, f"{path}.allowed_values", decl.allowed_values, ALLOWED_VALUES_MAX)
        leaf.texts(ctx, f"{path}.allowed_values", decl.allowed_values, VALUE_LEN_MAX)
        leaf.text(ctx, f"{path}.description", decl.description, ATTRIBUTE_DESCRIPTION_LEN_MAX)
    leaf.count(ctx, "party_roles", rs.party_roles, PARTY_ROLES_MAX)
    for i, role in enumerate(rs.party_roles):
        if leaf.key(ctx, f"party_roles[{i}]", role) and role in ctx.roles:
            ctx.add(f"party_roles[{i}]", f"party role {role!r} is declared twice")
        ctx.roles.add(role)
    leaf.count(ctx, "counters", rs.counters, COUNTERS_MAX)
    for i, counter in enumerate(rs.counters):
        _counter(ctx, f"counters[{i}]", counter)


def _counter(ctx: Ctx, path: str, counter: CounterDefinition) -> None:
    if leaf.key(ctx, f"{path}.name", counter.name) and counter.name in ctx.counters:
        ctx.add(f"{path}.name", f"counter {counter.name!r} is defined twice")
    ctx.counters.add(counter.name)
    leaf.enum(ctx, f"{path}.metric", counter.metric, CounterMetric)
    leaf.enum(ctx, f"{path}.period", counter.period, CounterPeriod)
    if counter.subjects_count() != 1:
        ctx.add(f"{path}.subject", "exactly one of account_ref, party_role, attribute_key "
                                   "is required")
    elif counter.account_ref:
        _account(ctx, f"{path}.account_ref", counter.account_ref)
    elif counter.party_role:
        _role(ctx, f"{path}.party_role", counter.party_role)
    elif counter.attribute_key not in ctx.attributes:
        ctx.add(f"{path}.attribute_key",
                f"attribute {counter.attribute_key!r} is not declared in attributes")
    if counter.time_zone:  # empty: the counter store's default
        problem = time_zone_problem(counter.time_zone)
        if problem is not None:
            ctx.add(f"{path}.time_zone", problem)


# ---- one rule -------------------------------------------------------------------------------

def _rule(ctx: Ctx, path: str, rule: Rule) -> None:
    leaf.name(ctx, f"{path}.rule_name", rule.rule_name)
    if not 1 <= rule.priority <= PRIORITY_MAX:
        ctx.add(f"{path}.priority", f"must be 1 to {PRIORITY_MAX}")
    leaf.text(ctx, f"{path}.description", rule.description, DESCRIPTION_LEN_MAX)
    if (rule.start_time_ns is not None and rule.end_time_ns is not None
            and rule.end_time_ns <= rule.start_time_ns):
        ctx.add(f"{path}.end_time", "must be after start_time")
    if rule.condition is not None:
        _condition(ctx, f"{path}.condition", rule.condition)
    leaf.count(ctx, f"{path}.fees", rule.fees, FEES_PER_RULE_MAX)
    for j, fee in enumerate(rule.fees[:FEES_PER_RULE_MAX]):
        _fee(ctx, f"{path}.fees[{j}]", fee)
    leaf.count(ctx, f"{path}.shares", rule.shares, SHARES_PER_RULE_MAX)
    for j, share in enumerate(rule.shares[:SHARES_PER_RULE_MAX]):
        _share(ctx, f"{path}.shares[{j}]", share, rule)
    _share_totals(ctx, path, rule)
    leaf.count(ctx, f"{path}.subsidies", rule.subsidies, SUBSIDIES_PER_RULE_MAX)
    for j, subsidy in enumerate(rule.subsidies[:SUBSIDIES_PER_RULE_MAX]):
        _subsidy(ctx, f"{path}.subsidies[{j}]", subsidy)


def _condition(ctx: Ctx, path: str, c: RuleCondition) -> None:
    leaf.amounts_max(ctx, path, c, "min_amount_minor", "max_amount_minor")
    if c.min_amount_minor < 0:
        ctx.add(f"{path}.min_amount_minor", "must not be negative")
    if c.max_amount_minor < 0:
        ctx.add(f"{path}.max_amount_minor", "must not be negative")
    elif 0 < c.max_amount_minor <= c.min_amount_minor:
        ctx.add(f"{path}.max_amount_minor", "must exceed min_amount_minor")
    for k, code in enumerate(c.currency_codes):
        if code != ctx.rule_set.currency_code:
            ctx.add(f"{path}.currency_codes[{k}]",
                    f"the rule set splits {ctx.rule_set.currency_code} only, not {code!r}")
    for name, values, length_max in (("channels", c.channels, CHANNEL_LEN_MAX),
                                     ("tags_any", c.tags_any, TAG_LEN_MAX),
                                     ("tags_all", c.tags_all, TAG_LEN_MAX),
                                     ("tags_none", c.tags_none, TAG_LEN_MAX)):
        leaf.count(ctx, f"{path}.{name}", values, CONDITION_VALUES_MAX)
        leaf.texts(ctx, f"{path}.{name}", values, length_max)
    leaf.count(ctx, f"{path}.attributes", c.attributes, CONDITION_ATTRIBUTES_MAX)
    for k, clause in enumerate(c.attributes):
        _attribute_condition(ctx, f"{path}.attributes[{k}]", clause)


def _attribute_condition(ctx: Ctx, path: str, clause: AttributeCondition) -> None:
    decl = ctx.attributes.get(clause.key)
    if decl is None:
        ctx.add(f"{path}.key", f"attribute {clause.key!r} is not declared in the rule "
                               f"set's attributes")
    if not leaf.enum(ctx, f"{path}.comparison", clause.comparison, AttributeComparison):
        return
    single = clause.comparison in _SINGLE_VALUE
    if single and len(clause.values) != 1:
        ctx.add(f"{path}.values", "exactly one value is required for EQUALS and NOT_EQUALS")
    elif not 1 <= len(clause.values) <= CONDITION_VALUES_MAX:
        ctx.add(f"{path}.values", f"1 to {CONDITION_VALUES_MAX} values are required")
    leaf.texts(ctx, f"{path}.values", clause.values, VALUE_LEN_MAX)
    if decl is not None and decl.allowed_values:
        allowed = set(decl.allowed_values)
        for k, value in enumerate(clause.values):
            if value not in allowed:
                ctx.add(f"{path}.values[{k}]",
                        f"{value!r} is not an allowed value of attribute {clause.key!r}")


def _fee(ctx: Ctx, path: str, fee: Fee) -> None:
    leaf.amounts_max(ctx, path, fee, "fixed_minor", "min_minor", "max_minor")
    leaf.text(ctx, f"{path}.label", fee.label, LABEL_LEN_MAX)
    leaf.bps(ctx, f"{path}.ratio_bps", fee.ratio_bps, low=0)
    if fee.fixed_minor < 0:
        ctx.add(f"{path}.fixed_minor", "must not be negative")
    if fee.ratio_bps <= 0 and fee.fixed_minor <= 0:
        ctx.add(f"{path}.ratio_bps", "a fee needs ratio_bps or fixed_minor above zero")
    if fee.min_minor < 0:
        ctx.add(f"{path}.min_minor", "must not be negative")
    if fee.max_minor < 0:
        ctx.add(f"{path}.max_minor", "must not be negative")
    elif 0 < fee.max_minor < fee.min_minor:
        ctx.add(f"{path}.max_minor", "must be at least min_minor")
    _account(ctx, f"{path}.account_ref", fee.account_ref)
    _release(ctx, f"{path}.release", fee.release)


def _share(ctx: Ctx, path: str, share: Share, rule: Rule) -> None:
    leaf.amounts_max(ctx, path, share, "fixed_minor")
    leaf.text(ctx, f"{path}.label", share.label, LABEL_LEN_MAX)
    if not leaf.enum(ctx, f"{path}.type", share.type, ShareType):
        return
    if share.type == ShareType.RATIO:
        leaf.bps(ctx, f"{path}.ratio_bps", share.ratio_bps, low=1)
    elif share.ratio_bps:
        ctx.add(f"{path}.ratio_bps", f"only for RATIO shares, not {share.type.name}")
    if share.type == ShareType.FIXED:
        if share.fixed_minor <= 0:
            ctx.add(f"{path}.fixed_minor", "must be a positive number of minor units")
    elif share.fixed_minor:
        ctx.add(f"{path}.fixed_minor", f"only for FIXED shares, not {share.type.name}")
    if share.type == ShareType.REMAINDER and rule.top_slice:
        ctx.add(f"{path}.type", "a top-slice rule cannot have a REMAINDER share: what it "
                                "does not take is passed on")
    _receiver(ctx, f"{path}.receiver", share.receiver, sub_allowed=True)
    _release(ctx, f"{path}.release", share.release)
    if share.tiers is not None:
        _tiers(ctx, f"{path}.tiers", share)


def _tiers(ctx: Ctx, path: str, share: Share) -> None:
    table: TierTable = share.tiers
    if share.type != ShareType.RATIO:
        ctx.add(path, "tiers are only for RATIO shares")
    if table.counter_name not in ctx.counters:
        ctx.add(f"{path}.counter_name",
                f"counter {table.counter_name!r} is not defined in the rule set's counters")
    leaf.enum(ctx, f"{path}.effect", table.effect, TierEffect)
    if not 1 <= len(table.tiers) <= TIERS_MAX:
        ctx.add(f"{path}.tiers", f"1 to {TIERS_MAX} tiers are required")
    previous = -1
    for k, tier in enumerate(table.tiers):
        if tier.min_counter_value < 0:
            ctx.add(f"{path}.tiers[{k}].min_counter_value", "must not be negative")
        elif tier.min_counter_value <= previous:
            ctx.add(f"{path}.tiers[{k}].min_counter_value",
                    "tiers must have strictly increasing min_counter_value")
        previous = max(previous, tier.min_counter_value)
        if leaf.bps(ctx, f"{path}.tiers[{k}].ratio_bps", tier.ratio_bps, low=0):
            ratio = tier_ratio(share.ratio_bps, table.effect, tier.ratio_bps)
            if ratio > BPS_MAX:
                ctx.add(f"{path}.tiers[{k}].ratio_bps",
                        f"the share's ratio with this tier is {ratio} bps, over {BPS_MAX}")


def tier_ratio(share_bps: int, effect: int, tier_bps: int) -> int:
    """The ratio a share gets with a tier."""
    return share_bps + tier_bps if effect == TierEffect.ADD else tier_bps


def highest_ratio(share: Share) -> int:
    """The highest ratio a RATIO share can reach (its tiers included)."""
    ratio = share.ratio_bps
    if share.tiers is not None and share.tiers.effect in (TierEffect.ADD, TierEffect.REPLACE):
        for tier in share.tiers.tiers:
            ratio = max(ratio, tier_ratio(share.ratio_bps, share.tiers.effect, tier.ratio_bps))
    return ratio


def _share_totals(ctx: Ctx, path: str, rule: Rule) -> None:
    total = 0
    over = False
    tiered = any(s.tiers is not None for s in rule.shares)
    for j, share in enumerate(rule.shares):
        if share.type == ShareType.RATIO:
            total += highest_ratio(share)
            if total > BPS_MAX and not over:
                over = True
                ctx.add(f"{path}.shares[{j}].ratio_bps",
                        f"the rule's ratios reach {total} bps here"
                        f"{' (tiers at their highest)' if tiered else ''}, over {BPS_MAX} "
                        f"(100%)")
    remainders = [j for j, s in enumerate(rule.shares) if s.type == ShareType.REMAINDER]
    for j in remainders[1:]:
        ctx.add(f"{path}.shares[{j}].type", "at most one REMAINDER share per rule")
    if rule.top_slice or remainders:
        return
    only_ratios = all(s.type == ShareType.RATIO for s in rule.shares)
    if tiered:
        ctx.add(f"{path}.shares", "a rule with tiered shares needs a REMAINDER share to "
                                  "absorb what the tiers change")
    elif not over and not (rule.shares and only_ratios and total == BPS_MAX):
        ctx.add(f"{path}.shares",
                f"no REMAINDER share, and the shares are not only ratios summing to "
                f"{BPS_MAX} (they sum to {total} bps): add a REMAINDER share")


def _subsidy(ctx: Ctx, path: str, s: Subsidy) -> None:
    leaf.amounts_max(ctx, path, s, "fixed_minor", "cap_minor")
    leaf.text(ctx, f"{path}.label", s.label, LABEL_LEN_MAX)
    _account(ctx, f"{path}.source_account_ref", s.source_account_ref,
             kinds=_SUBSIDY_SOURCE_KINDS)
    if leaf.enum(ctx, f"{path}.basis", s.basis, SubsidyBasis):
        if s.basis == SubsidyBasis.FIXED and s.fixed_minor <= 0:
            ctx.add(f"{path}.fixed_minor", "must be a positive number of minor units")
        if s.basis == SubsidyBasis.RATIO:
            leaf.bps(ctx, f"{path}.ratio_bps", s.ratio_bps, low=1)
    if s.basis != SubsidyBasis.FIXED and s.fixed_minor:
        ctx.add(f"{path}.fixed_minor", "only for basis FIXED")
    if s.basis != SubsidyBasis.RATIO and s.ratio_bps:
        ctx.add(f"{path}.ratio_bps", "only for basis RATIO")
    if s.cap_minor < 0:
        ctx.add(f"{path}.cap_minor", "must not be negative")
    if not leaf.enum(ctx, f"{path}.target", s.target, SubsidyTarget):
        return
    if s.target == SubsidyTarget.RECEIVER:
        _receiver(ctx, f"{path}.receiver", s.receiver, sub_allowed=False)
        if s.receiver is not None and s.receiver.account_ref and \
                s.receiver.account_ref == s.source_account_ref:
            ctx.add(f"{path}.receiver.account_ref",
                    "the subsidy's source account cannot receive it")
        _release(ctx, f"{path}.release", s.release)
        return
    if s.receiver is not None:
        ctx.add(f"{path}.receiver", "a subsidy into the split base has no receiver")
    if s.release is not None and s.release.steps:
        ctx.add(f"{path}.release", "a subsidy into the split base has no release policy "
                                   "(its shares have)")


# ---- receivers, accounts, releases ----------------------------------------------------------

def _receiver(ctx: Ctx, path: str, receiver: Receiver | None, *, sub_allowed: bool) -> None:
    if receiver is None or receiver.targets_count() == 0:
        ctx.add(path, "required: an account_ref, a party_role"
                      + (" or a rule_set" if sub_allowed else ""))
    elif receiver.targets_count() > 1:
        ctx.add(path, "exactly one of account_ref, party_role, rule_set")
    elif receiver.account_ref:
        _account(ctx, f"{path}.account_ref", receiver.account_ref)
    elif receiver.party_role:
        _role(ctx, f"{path}.party_role", receiver.party_role)
    elif not sub_allowed:
        ctx.add(f"{path}.rule_set", "a subsidy cannot go to a sub-rule-set")
    elif not NAME_RE.fullmatch(receiver.rule_set.rule_set_name):
        ctx.add(f"{path}.rule_set.rule_set_name", "1 to 64 characters: a-z, 0-9, '_', '-'")
    elif not 0 <= receiver.rule_set.rule_set_version <= RULE_SET_VERSION_MAX:
        ctx.add(f"{path}.rule_set.rule_set_version",
                f"must be 0 (active) or a version, 1 to {RULE_SET_VERSION_MAX}")


def _account(ctx: Ctx, path: str, ref: str,
             kinds: Sequence[AccountKind] | None = None) -> None:
    if not ref:
        ctx.add(path, "required: an account's external_ref")
        return
    problem = text_problem(ref, EXTERNAL_REF_LEN_MAX)
    if problem is not None:
        ctx.add(path, f"not an external_ref: {problem}")
        return
    account = ctx.accounts.get(ref)
    if account is None:
        ctx.add(path, f"unknown account {ref!r}: the platform has no account with this"
                      " external_ref; open it first (CreateAccount, `clearing accounts create"
                      f" --ref {ref} ...`)")
        return
    currency = ctx.rule_set.currency_code
    if account.currency_code != currency:
        ctx.add(path, f"account {ref!r} holds {account.currency_code}, the rule set splits "
                      f"{currency}")
    if account.status == AccountStatus.CLOSED:
        ctx.add(path, f"account {ref!r} is closed")
    if kinds is not None and account.kind not in kinds:
        ctx.add(path, f"account {ref!r} must be a marketing or functional account")
    elif account.kind == AccountKind.CUSTODIAL:
        ctx.add(path, f"account {ref!r} is the custodial account: it pays the legs, it "
                      f"cannot receive one")


def _role(ctx: Ctx, path: str, role: str) -> None:
    if role not in ctx.roles:
        ctx.add(path, f"party role {role!r} is not declared in party_roles")


def _release(ctx: Ctx, path: str, release: ReleasePolicy | None) -> None:
    if release is None or not release.steps:
        return
    steps = release.steps
    leaf.count(ctx, f"{path}.steps", steps, RELEASE_STEPS_MAX)
    seen: set[str] = set()
    for k, step in enumerate(steps):
        if not EVENT_RE.fullmatch(step.event_name):
            ctx.add(f"{path}.steps[{k}].event_name",
                    f"1 to {EVENT_NAME_LEN_MAX} characters in UPPER_SNAKE (e.g. SHIPPED)")
        elif step.event_name in seen:
            ctx.add(f"{path}.steps[{k}].event_name", f"event {step.event_name!r} repeated")
        seen.add(step.event_name)
        leaf.bps(ctx, f"{path}.steps[{k}].fraction_bps", step.fraction_bps, low=1)
    total = sum(step.fraction_bps for step in steps)
    if total != BPS_MAX:
        ctx.add(f"{path}.steps", f"fractions sum to {total} bps, not {BPS_MAX} (100%)")


# ---- across rules ---------------------------------------------------------------------------

def _rule_names(ctx: Ctx, rules: Sequence[Rule]) -> None:
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.rule_name in seen:
            ctx.add(f"rules[{i}].rule_name", f"rule name {rule.rule_name!r} is used twice")
        seen.add(rule.rule_name)


def _priorities(ctx: Ctx, rules: Sequence[Rule]) -> None:
    by_priority: dict[int, list[int]] = {}
    for i, rule in enumerate(rules[:RULES_MAX]):
        by_priority.setdefault(rule.priority, []).append(i)
    for indexes in by_priority.values():
        for n, i in enumerate(indexes):
            for j in indexes[n + 1:]:
                if can_both_apply(rules[i], rules[j]):
                    ctx.add(f"rules[{j}].priority",
                            f"overlapping priorities: rules {rules[i].rule_name!r} and "
                            f"{rules[j].rule_name!r} both have priority {rules[i].priority} "
                            f"and can both apply to one order")


def _chain(ctx: Ctx, resolver: Resolver) -> None:
    chain = chains.walk(ctx.rule_set, resolver)
    for problem in chain.problems:
        ctx.add(problem.field, problem.description)
    _counter_conflicts(ctx, chain)
    legs = chains.legs_bound(ctx.rule_set, chain)
    if legs > LEGS_PER_SPLIT_MAX:
        ctx.add("rules", f"one order could get {legs} legs (sub-rule-sets included), more "
                         f"than {LEGS_PER_SPLIT_MAX}")


def _counter_conflicts(ctx: Ctx, chain: chains.Chain) -> None:
    """Counters are kept by name: a sub-rule-set may not define a name differently."""
    defined = {c.name: c for c in ctx.rule_set.counters}
    for key, sub in chain.subs.items():
        for counter in sub.counters:
            known = defined.setdefault(counter.name, counter)
            if known != counter:
                ctx.add(chain.reached_from.get(key, "rules"),
                        f"rule set {sub.name!r} defines counter {counter.name!r} "
                        f"differently")
