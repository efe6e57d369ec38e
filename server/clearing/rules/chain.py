"""Sub-rule-set chains: resolve every rule set a rule set reaches through sub-rule-set
shares, and find cycles and chains deeper than `LEVELS_MAX`.

A chain is followed by rule-set *name*: a rule set that reaches its own name again (at any
version) is a cycle, since a version-0 reference follows whatever version becomes active.
Each resolved rule set is visited once (depth-first, memoised), so a wide graph costs its
size, not the number of paths through it. Problems are reported on the root rule set's
field that leads to them (e.g. `rules[0].shares[1].receiver.rule_set`), with the chain of
names in the description.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from clearing.errors import FieldViolation
from clearing.limits import LEVELS_MAX, SUB_RULE_SETS_MAX
from clearing.rules.model import Resolver, RuleSet, SubRuleSetRef


RefKey = tuple[str, int]  # (name, version asked for: 0 = active)


def sub_refs(rule_set: RuleSet) -> Iterator[tuple[str, SubRuleSetRef]]:
    """Every sub-rule-set reference of a rule set, with its field path."""
    for i, rule in enumerate(rule_set.rules):
        for j, share in enumerate(rule.shares):
            if share.receiver is not None and share.receiver.rule_set is not None:
                yield f"rules[{i}].shares[{j}].receiver.rule_set", share.receiver.rule_set


@dataclass(slots=True)
class _Node:
    names: tuple[str, ...]  # the deepest chain of names from this rule set down
    problems: list[str]  # cycles and missing rule sets found below it


@dataclass(slots=True)
class Chain:
    """What a rule set reaches: `subs` by reference, the level count (1 without
    sub-rule-sets), and the problems found, on the root's field paths."""

    subs: dict[RefKey, RuleSet] = field(default_factory=dict)
    level_count: int = 1
    deepest: tuple[str, ...] = ()
    problems: list[FieldViolation] = field(default_factory=list)
    reached_from: dict[RefKey, str] = field(default_factory=dict)  # first root path


class _Walker:
    def __init__(self, root: RuleSet, resolver: Resolver) -> None:
        self.root = root
        self.resolver = resolver
        self.chain = Chain()
        self.gray: list[str] = [root.name]  # names on the current path
        self.done: dict[tuple[str, int], _Node] = {}  # by (name, resolved version)
        self.missing: set[RefKey] = set()

    def resolve(self, ref: SubRuleSetRef) -> RuleSet | None:
        key = (ref.rule_set_name, ref.rule_set_version)
        if key in self.chain.subs:
            return self.chain.subs[key]
        if key in self.missing or len(self.chain.subs) >= SUB_RULE_SETS_MAX:
            return None
        found = self.resolver(*key)
        if found is None:
            self.missing.add(key)
            return None
        self.chain.subs[key] = found
        return found

    def visit_ref(self, ref: SubRuleSetRef) -> _Node:
        """The deepest chain below (and including) the referenced rule set."""
        name = ref.rule_set_name
        if name in self.gray:
            loop = self.gray[self.gray.index(name):] + [name]
            return _Node((), [f"cycle: {' -> '.join(loop)}"])
        sub = self.resolve(ref)
        if sub is None:
            return _Node((), [self._missing_text(ref)])
        if sub.currency_code != self.root.currency_code:
            return _Node((name,), [f"rule set {name!r} splits {sub.currency_code}, "
                                   f"not {self.root.currency_code}"])
        key = (sub.name, sub.version)
        node = self.done.get(key)
        if node is None:
            self.gray.append(name)
            node = self.visit_children(sub)
            self.gray.pop()
            self.done[key] = node
        return _Node((name, *node.names[1:]) if node.names else (name,), node.problems)

    def visit_children(self, rule_set: RuleSet) -> _Node:
        deepest: tuple[str, ...] = ()
        problems: list[str] = []
        for _, ref in sub_refs(rule_set):
            child = self.visit_ref(ref)
            problems.extend(child.problems)
            if len(child.names) > len(deepest):
                deepest = child.names
        return _Node((rule_set.name, *deepest), problems)

    def _missing_text(self, ref: SubRuleSetRef) -> str:
        if len(self.chain.subs) >= SUB_RULE_SETS_MAX:
            return f"more than {SUB_RULE_SETS_MAX} distinct sub-rule-sets"
        version = (f"version {ref.rule_set_version}" if ref.rule_set_version
                   else "an active version")
        return f"no rule set {ref.rule_set_name!r} with {version}"


def walk(root: RuleSet, resolver: Resolver) -> Chain:
    """Resolve everything `root` reaches and report cycles, missing rule sets, currency
    mismatches and chains of more than LEVELS_MAX levels."""
    walker = _Walker(root, resolver)
    chain = walker.chain
    deepest: tuple[str, ...] = (root.name,)
    for path, ref in sub_refs(root):
        before = set(chain.subs)
        node = walker.visit_ref(ref)
        for key in set(chain.subs) - before:
            chain.reached_from.setdefault(key, path)
        for text in dict.fromkeys(node.problems):
            chain.problems.append(FieldViolation(path, text))
        names = (root.name, *node.names)
        if len(names) > LEVELS_MAX:
            chain.problems.append(FieldViolation(
                path, f"{len(names)} levels of sub-rule-sets, more than {LEVELS_MAX}: "
                      f"{' -> '.join(names)}"))
        if len(names) > len(deepest):
            deepest = names
    chain.level_count = len(deepest)
    chain.deepest = deepest
    return chain


def legs_bound(rule_set: RuleSet, chain: Chain) -> int:
    """The most legs one order can get from `rule_set`: every top-slice rule applying,
    then the largest rule that ends evaluation; a sub-rule-set share counts the legs of its
    rule set. (Cycles, reported by `walk`, count nothing.)"""
    memo: dict[tuple[str, int], int] = {}

    def bound(rs: RuleSet, path: tuple[str, ...]) -> int:
        key = (rs.name, rs.version)
        if key in memo:
            return memo[key]
        top_slices, last = 0, 0
        for rule in rs.rules:
            count = len(rule.fees) + len(rule.subsidies)
            for share in rule.shares:
                ref = share.receiver.rule_set if share.receiver is not None else None
                sub = chain.subs.get((ref.rule_set_name, ref.rule_set_version)) if ref else None
                if sub is None or sub.name in path:
                    count += 1
                else:
                    count += bound(sub, (*path, sub.name))
            if rule.top_slice:
                top_slices += count
            else:
                last = max(last, count)
        memo[key] = top_slices + last
        return memo[key]

    return bound(rule_set, (rule_set.name,))
