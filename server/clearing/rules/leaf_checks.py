"""The leaf checks of rule-set validation (`clearing.rules.validate`): `Ctx`, what one
validation knows and the problems it has found (each with its field path), and the checks
of single values every part of a rule set uses: names, keys, texts, counts, amounts, basis
points, enums. Each check adds its problem and never stops the validation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from clearing.errors import Violations
from clearing.limits import AMOUNT_MINOR_MAX, BPS_MAX, NAME_LEN_MAX
from clearing.rules.model import Accounts, AttributeDeclaration, RuleSet

NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")  # rule-set and rule names
KEY_RE = re.compile(r"[a-z0-9_]{1,64}")  # attribute keys, party roles, counter names
EVENT_RE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")


@dataclass(slots=True)
class Ctx:
    """One validation: the rule set and the platform's accounts it is checked against, the
    problems found so far (their paths behind `prefix`), and what its declarations made
    known (attributes, party roles, counters) for the checks that follow."""

    rule_set: RuleSet
    accounts: Accounts
    v: Violations
    prefix: str
    attributes: dict[str, AttributeDeclaration] = field(default_factory=dict)
    roles: set[str] = field(default_factory=set)
    counters: set[str] = field(default_factory=set)

    def add(self, path: str, description: str) -> None:
        self.v.add(self.prefix + path, description)


def name(ctx: Ctx, path: str, value: str) -> None:
    if not NAME_RE.fullmatch(value):
        ctx.add(path, f"1 to {NAME_LEN_MAX} characters: a-z, 0-9, '_', '-'")


def key(ctx: Ctx, path: str, value: str) -> bool:
    if not KEY_RE.fullmatch(value):
        ctx.add(path, f"1 to {NAME_LEN_MAX} characters: a-z, 0-9, '_'")
        return False
    return True


def text(ctx: Ctx, path: str, value: str, length_max: int) -> None:
    if len(value) > length_max:
        ctx.add(path, f"longer than {length_max} characters")


def texts(ctx: Ctx, path: str, values: Sequence[str], length_max: int) -> None:
    for k, value in enumerate(values):
        if not 1 <= len(value) <= length_max:
            ctx.add(f"{path}[{k}]", f"must be 1 to {length_max} characters")


def count(ctx: Ctx, path: str, items: Sequence, count_max: int) -> None:
    if len(items) > count_max:
        ctx.add(path, f"{len(items)} items, more than {count_max}")


def amounts_max(ctx: Ctx, path: str, item, *names: str) -> None:
    """Amounts in minor units are at most AMOUNT_MINOR_MAX, as any amount of a request."""
    for name in names:
        if getattr(item, name) > AMOUNT_MINOR_MAX:
            ctx.add(f"{path}.{name}", f"exceeds the maximum of {AMOUNT_MINOR_MAX} minor units")


def bps(ctx: Ctx, path: str, value: int, *, low: int) -> bool:
    if not low <= value <= BPS_MAX:
        ctx.add(path, f"must be {low} to {BPS_MAX} basis points")
        return False
    return True


def enum(ctx: Ctx, path: str, value: int, enum_type) -> bool:
    if value == 0:
        ctx.add(path, "required: the UNSPECIFIED value is not allowed")
        return False
    if value not in enum_type._value2member_map_:
        ctx.add(path, f"unknown value {value}")
        return False
    return True
