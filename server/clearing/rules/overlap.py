"""Whether two rules can both apply to one order (rules of equal priority must not).

The condition language is a conjunction of independent clauses (window, amount range,
currency, channel, tags, attributes), so two conditions can both hold exactly when, clause
by clause, some value satisfies both. This module answers that exactly for each clause; an
unset clause is satisfied by every order.
"""

from __future__ import annotations

from clearing.rules.model import AttributeComparison, Rule, RuleCondition

_POSITIVE = (AttributeComparison.EQUALS, AttributeComparison.IN)


def _windows_meet(a: Rule, b: Rule) -> bool:
    starts = [t for t in (a.start_time_ns, b.start_time_ns) if t is not None]
    ends = [t for t in (a.end_time_ns, b.end_time_ns) if t is not None]
    return not ends or not starts or max(starts) < min(ends)


def _amounts_meet(a: RuleCondition, b: RuleCondition) -> bool:
    low = max(a.min_amount_minor, b.min_amount_minor, 1)
    highs = [m for m in (a.max_amount_minor, b.max_amount_minor) if m > 0]
    return not highs or low < min(highs)


def _sets_meet(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return not a or not b or not set(a).isdisjoint(b)


def _tags_meet(a: RuleCondition, b: RuleCondition) -> bool:
    forbidden = set(a.tags_none) | set(b.tags_none)
    if not forbidden.isdisjoint(a.tags_all) or not forbidden.isdisjoint(b.tags_all):
        return False
    for any_of in (a.tags_any, b.tags_any):
        if any_of and set(any_of) <= forbidden:
            return False
    return True


def _attribute_constraint(condition: RuleCondition, key: str) -> tuple[set[str] | None, set[str]]:
    """(values the attribute must be one of, or None if it may be anything or missing;
    values it must not be)."""
    allowed: set[str] | None = None
    denied: set[str] = set()
    for clause in condition.attributes:
        if clause.key != key:
            continue
        if clause.comparison in _POSITIVE:
            allowed = set(clause.values) if allowed is None else allowed & set(clause.values)
        else:
            denied |= set(clause.values)
    return allowed, denied


def _attributes_meet(a: RuleCondition, b: RuleCondition) -> bool:
    keys = {c.key for c in a.attributes} | {c.key for c in b.attributes}
    for key in keys:
        allowed_a, denied_a = _attribute_constraint(a, key)
        allowed_b, denied_b = _attribute_constraint(b, key)
        if allowed_a is None and allowed_b is None:
            continue  # a missing attribute satisfies both
        if allowed_a is None:
            allowed = allowed_b
        elif allowed_b is None:
            allowed = allowed_a
        else:
            allowed = allowed_a & allowed_b
        if not allowed - denied_a - denied_b:
            return False
    return True


def can_both_apply(a: Rule, b: Rule) -> bool:
    """True if some order satisfies the windows and conditions of both rules."""
    if not _windows_meet(a, b):
        return False
    ca = a.condition or RuleCondition()
    cb = b.condition or RuleCondition()
    return (_amounts_meet(ca, cb)
            and _sets_meet(ca.currency_codes, cb.currency_codes)
            and _sets_meet(ca.channels, cb.channels)
            and _tags_meet(ca, cb)
            and _attributes_meet(ca, cb))
