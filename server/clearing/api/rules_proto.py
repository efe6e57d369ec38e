"""Conversions between the contract (`clearing.v1` messages, and YAML files) and the rules
model; the only module of `clearing.rules` that imports generated protobuf code.

The YAML format of a rule set IS the `clearing.v1.RuleSet` message in the protobuf JSON
mapping: `yaml.safe_load` output goes through `json_format.ParseDict`, so field names are
the proto's (snake_case, or the lowerCamelCase JSON names), enums are their value names
(`SHARE_TYPE_RATIO`), times are RFC 3339 strings, and anything the message cannot hold is
rejected with its field path. YAML's implicit timestamps and yes/no/on/off booleans are
turned off (only `true` / `false` are booleans), so `event_name: ON` stays a string.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import yaml
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from clearing.errors import FieldViolation, InvalidArgument
from clearing.limits import RULE_SET_BYTES_MAX
from clearing.rules.evaluate import Evaluation
from clearing.rules.model import (AttributeComparison, AttributeCondition, AttributeDeclaration,
                                  Coupon, CounterDefinition, CounterMetric, CounterPeriod,
                                  CouponFunding, Fee, Order, Receiver, ReleasePolicy, ReleaseStep,
                                  Rule, RuleCondition, RuleSet, Share, ShareType, SubRuleSetRef,
                                  Subsidy, SubsidyBasis, SubsidyTarget, Tier, TierEffect, TierTable)
from clearing.v1 import rule_set_pb2
from clearing.v1 import split_pb2 as pb
from clearing.values import timestamp_problem
from clearing.reasons import Reason

# The filed content of a rule set (what content_sha256 covers): name and fields 4 to 9.
_CONTENT_FIELDS = ("name", "currency_code", "description", "rules", "attributes",
                   "party_roles", "counters")


class _Problems:
    """Conversion problems (an enum number the model does not know), with field paths."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: list[FieldViolation] = []

    def enum(self, cls, value: int, path: str):
        if value in cls._value2member_map_:
            return cls(value)
        self.items.append(FieldViolation(self.prefix + path, f"unknown value {value}"))
        return cls(0)

    def time_ns(self, msg, name: str, path: str) -> int | None:
        """A Timestamp field in nanoseconds since the epoch; None when unset or invalid."""
        if not msg.HasField(name):
            return None
        ts = getattr(msg, name)
        problem = timestamp_problem(ts.seconds, ts.nanos)
        if problem is not None:
            self.items.append(FieldViolation(self.prefix + path, problem))
            return None
        return ts.ToNanoseconds()

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items, reason=Reason.RULE_SET_INVALID)


# ---- proto -> model -------------------------------------------------------------------------

def _release(msg) -> ReleasePolicy | None:
    return ReleasePolicy(tuple(ReleaseStep(s.event_name, s.fraction_bps) for s in msg.steps))


def _receiver(msg: rule_set_pb2.Receiver) -> Receiver:
    sub = None
    if msg.HasField("rule_set"):
        sub = SubRuleSetRef(msg.rule_set.rule_set_name, msg.rule_set.rule_set_version)
    return Receiver(account_ref=msg.account_ref, party_role=msg.party_role, rule_set=sub)


def _share(msg: rule_set_pb2.Share, path: str, p: _Problems) -> Share:
    tiers = None
    if msg.HasField("tiers"):
        t = msg.tiers
        tiers = TierTable(t.counter_name, p.enum(TierEffect, t.effect, f"{path}.tiers.effect"),
                          tuple(Tier(x.min_counter_value, x.ratio_bps) for x in t.tiers))
    return Share(
        label=msg.label, type=p.enum(ShareType, msg.type, f"{path}.type"),
        receiver=_receiver(msg.receiver) if msg.HasField("receiver") else None,
        ratio_bps=msg.ratio_bps, fixed_minor=msg.fixed_minor,
        release=_release(msg.release) if msg.HasField("release") else None, tiers=tiers)


def _fee(msg: rule_set_pb2.Fee) -> Fee:
    return Fee(label=msg.label, ratio_bps=msg.ratio_bps, fixed_minor=msg.fixed_minor,
               account_ref=msg.account_ref, min_minor=msg.min_minor, max_minor=msg.max_minor,
               release=_release(msg.release) if msg.HasField("release") else None)


def _subsidy(msg: rule_set_pb2.Subsidy, path: str, p: _Problems) -> Subsidy:
    return Subsidy(
        label=msg.label, source_account_ref=msg.source_account_ref,
        basis=p.enum(SubsidyBasis, msg.basis, f"{path}.basis"),
        target=p.enum(SubsidyTarget, msg.target, f"{path}.target"),
        fixed_minor=msg.fixed_minor, ratio_bps=msg.ratio_bps, cap_minor=msg.cap_minor,
        receiver=_receiver(msg.receiver) if msg.HasField("receiver") else None,
        release=_release(msg.release) if msg.HasField("release") else None)


def _condition(msg: rule_set_pb2.RuleCondition, path: str, p: _Problems) -> RuleCondition:
    return RuleCondition(
        min_amount_minor=msg.min_amount_minor, max_amount_minor=msg.max_amount_minor,
        currency_codes=tuple(msg.currency_codes), channels=tuple(msg.channels),
        tags_any=tuple(msg.tags_any), tags_all=tuple(msg.tags_all),
        tags_none=tuple(msg.tags_none),
        attributes=tuple(AttributeCondition(
            a.key, p.enum(AttributeComparison, a.comparison,
                          f"{path}.attributes[{k}].comparison"), tuple(a.values))
            for k, a in enumerate(msg.attributes)))


def _rule(msg: rule_set_pb2.Rule, path: str, p: _Problems) -> Rule:
    return Rule(
        rule_name=msg.rule_name, priority=msg.priority,
        shares=tuple(_share(s, f"{path}.shares[{j}]", p) for j, s in enumerate(msg.shares)),
        fees=tuple(_fee(f) for f in msg.fees),
        subsidies=tuple(_subsidy(s, f"{path}.subsidies[{j}]", p)
                        for j, s in enumerate(msg.subsidies)),
        condition=(_condition(msg.condition, f"{path}.condition", p)
                   if msg.HasField("condition") else None),
        top_slice=msg.top_slice,
        start_time_ns=p.time_ns(msg, "start_time", f"{path}.start_time"),
        end_time_ns=p.time_ns(msg, "end_time", f"{path}.end_time"),
        description=msg.description)


def _counter(msg: rule_set_pb2.CounterDefinition, path: str, p: _Problems) -> CounterDefinition:
    return CounterDefinition(
        name=msg.name, metric=p.enum(CounterMetric, msg.metric, f"{path}.metric"),
        period=p.enum(CounterPeriod, msg.period, f"{path}.period"),
        account_ref=msg.account_ref, party_role=msg.party_role,
        attribute_key=msg.attribute_key, time_zone=msg.time_zone)


def rule_set_from_proto(msg: rule_set_pb2.RuleSet, *, prefix: str = "") -> RuleSet:
    """The model of a RuleSet message (output-only fields but `version` ignored).
    InvalidArgument (RULE_SET_INVALID) for an unknown enum number or a message over 1 MiB."""
    if msg.ByteSize() > RULE_SET_BYTES_MAX:
        raise InvalidArgument([FieldViolation(prefix.rstrip(".") or "rule_set",
                                              f"larger than {RULE_SET_BYTES_MAX} bytes")],
                              reason=Reason.RULE_SET_INVALID)
    p = _Problems(prefix)
    rule_set = RuleSet(
        name=msg.name, currency_code=msg.currency_code,
        rules=tuple(_rule(r, f"rules[{i}]", p) for i, r in enumerate(msg.rules)),
        attributes=tuple(AttributeDeclaration(a.key, tuple(a.allowed_values), a.description)
                         for a in msg.attributes),
        party_roles=tuple(msg.party_roles),
        counters=tuple(_counter(c, f"counters[{i}]", p) for i, c in enumerate(msg.counters)),
        description=msg.description, version=msg.version)
    p.raise_if_any()
    return rule_set


def order_from_proto(msg: pb.Order, *, prefix: str = "order.",
                     paid_time_ns_default: int | None = None) -> Order:
    """The model of an Order message. InvalidArgument for an unknown coupon funding. (No
    problem list, generator or Timestamp read for an order without coupons or paid time:
    every Split converts one: 6.9-7.5 -> 5.7-6.0 us for the bench's order.)"""
    p = None
    coupons: tuple[Coupon, ...] = ()
    if msg.coupons:
        p = _Problems(prefix)
        coupons = tuple(Coupon(c.coupon_id, c.amount_minor,
                               p.enum(CouponFunding, c.funding, f"coupons[{i}].funding"))
                        for i, c in enumerate(msg.coupons))
    if msg.HasField("paid_time"):
        p = p or _Problems(prefix)
        paid_time_ns = p.time_ns(msg, "paid_time", "paid_time")
    else:
        paid_time_ns = paid_time_ns_default
    if p is not None and p.items:
        raise InvalidArgument(p.items, reason=Reason.INVALID_ORDER)
    return Order(order_id=msg.order_id, amount_minor=msg.amount_minor,
                 currency_code=msg.currency_code, channel=msg.channel,
                 channel_fee_minor=msg.channel_fee_minor, tags=tuple(msg.tags),
                 attributes=dict(msg.attributes), parties=dict(msg.parties), coupons=coupons,
                 rule_set_name=msg.rule_set_name, paid_time_ns=paid_time_ns,
                 channel_transaction_id=msg.channel_transaction_id, memo=msg.memo)


# ---- model -> proto -------------------------------------------------------------------------

def _ts(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def _release_pb(release: ReleasePolicy | None) -> rule_set_pb2.ReleasePolicy | None:
    if release is None:
        return None
    return rule_set_pb2.ReleasePolicy(
        steps=[rule_set_pb2.ReleaseStep(event_name=s.event_name, fraction_bps=s.fraction_bps)
               for s in release.steps])


def _receiver_pb(r: Receiver | None) -> rule_set_pb2.Receiver | None:
    if r is None:
        return None
    sub = None
    if r.rule_set is not None:
        sub = rule_set_pb2.SubRuleSetRef(rule_set_name=r.rule_set.rule_set_name,
                                         rule_set_version=r.rule_set.rule_set_version)
    return rule_set_pb2.Receiver(account_ref=r.account_ref or None,
                                 party_role=r.party_role or None, rule_set=sub)


def _share_pb(s: Share) -> rule_set_pb2.Share:
    tiers = None
    if s.tiers is not None:
        tiers = rule_set_pb2.TierTable(
            counter_name=s.tiers.counter_name, effect=int(s.tiers.effect),
            tiers=[rule_set_pb2.Tier(min_counter_value=t.min_counter_value,
                                     ratio_bps=t.ratio_bps) for t in s.tiers.tiers])
    return rule_set_pb2.Share(label=s.label, type=int(s.type), ratio_bps=s.ratio_bps,
                              fixed_minor=s.fixed_minor, receiver=_receiver_pb(s.receiver),
                              release=_release_pb(s.release), tiers=tiers)


def _rule_pb(r: Rule) -> rule_set_pb2.Rule:
    c = r.condition
    condition = None if c is None else rule_set_pb2.RuleCondition(
        min_amount_minor=c.min_amount_minor, max_amount_minor=c.max_amount_minor,
        currency_codes=c.currency_codes, channels=c.channels, tags_any=c.tags_any,
        tags_all=c.tags_all, tags_none=c.tags_none,
        attributes=[rule_set_pb2.AttributeCondition(key=a.key, comparison=int(a.comparison),
                                                    values=a.values) for a in c.attributes])
    return rule_set_pb2.Rule(
        rule_name=r.rule_name, priority=r.priority, description=r.description,
        start_time=None if r.start_time_ns is None else _ts(r.start_time_ns),
        end_time=None if r.end_time_ns is None else _ts(r.end_time_ns),
        condition=condition, top_slice=r.top_slice,
        fees=[rule_set_pb2.Fee(label=f.label, ratio_bps=f.ratio_bps, fixed_minor=f.fixed_minor,
                               min_minor=f.min_minor, max_minor=f.max_minor,
                               account_ref=f.account_ref, release=_release_pb(f.release))
              for f in r.fees],
        shares=[_share_pb(s) for s in r.shares],
        subsidies=[rule_set_pb2.Subsidy(label=s.label, source_account_ref=s.source_account_ref,
                                        basis=int(s.basis), fixed_minor=s.fixed_minor,
                                        ratio_bps=s.ratio_bps, cap_minor=s.cap_minor,
                                        target=int(s.target), receiver=_receiver_pb(s.receiver),
                                        release=_release_pb(s.release)) for s in r.subsidies])


def rule_set_to_proto(rs: RuleSet) -> rule_set_pb2.RuleSet:
    """The RuleSet message of a model (filed content and version only)."""
    return rule_set_pb2.RuleSet(
        name=rs.name, version=rs.version, currency_code=rs.currency_code,
        description=rs.description, rules=[_rule_pb(r) for r in rs.rules],
        attributes=[rule_set_pb2.AttributeDeclaration(key=a.key,
                                                      allowed_values=a.allowed_values,
                                                      description=a.description)
                    for a in rs.attributes],
        party_roles=rs.party_roles,
        counters=[rule_set_pb2.CounterDefinition(
            name=c.name, metric=int(c.metric), period=int(c.period),
            account_ref=c.account_ref or None, party_role=c.party_role or None,
            attribute_key=c.attribute_key or None, time_zone=c.time_zone)
            for c in rs.counters])


def content_sha256(msg: rule_set_pb2.RuleSet) -> str:
    """SHA-256 (hex) of the canonical encoding of the filed content (name, fields 4 to 9)."""
    content = rule_set_pb2.RuleSet()
    content.CopyFrom(msg)
    for field in content.DESCRIPTOR.fields:
        if field.name not in _CONTENT_FIELDS:
            content.ClearField(field.name)
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


# ---- YAML -----------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """safe_load without implicit timestamps and with only true/false as booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"),
                              list("tf"))


def _strip(text: str) -> str:
    """The innermost reason of a json_format error."""
    text = text.split(" field: ")[-1]
    return re.sub(r"\s+at \"?[\w.\[\]]+\"?\.*\s*$", "", text.split("\n")[0]).rstrip(".") \
        or "invalid value"


def _is_scalar(field: FieldDescriptor) -> bool:
    return (field.message_type is None
            or field.message_type.full_name.startswith("google.protobuf."))


def _locate(data: object, descriptor: Descriptor, path: str) -> tuple[str, str] | None:
    """The path and reason of the first part of `data` the message cannot hold."""
    if not isinstance(data, dict):
        return path, f"expected a mapping of {descriptor.name} fields"
    by_name = {f.name: f for f in descriptor.fields} | {f.json_name: f for f in descriptor.fields}
    for key, value in data.items():
        field = by_name.get(key)
        here = f"{path}.{field.name if field else key}".lstrip(".")
        if field is None:
            return here, f"{descriptor.name} has no field {key!r}"
        try:
            json_format.ParseDict({key: value}, _new(descriptor))
            continue
        except json_format.ParseError as exc:
            reason = _strip(str(exc))
        if _is_scalar(field) or field.message_type.GetOptions().map_entry:
            return here, reason
        items: Iterable = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            item_path = here if i is None else f"{here}[{i}]"
            found = _locate(item, field.message_type, item_path)
            if found is not None:
                return found
        return here, reason
    return None


def _new(descriptor: Descriptor):
    return message_factory.GetMessageClass(descriptor)()


def rule_set_proto_from_yaml(text: str | bytes, *, prefix: str = "") -> rule_set_pb2.RuleSet:
    """Parse a YAML rule set into the RuleSet message; InvalidArgument with a field path."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidArgument([FieldViolation(prefix.rstrip(".") or "rule_set",
                                              f"not valid YAML{where}: "
                                              f"{getattr(exc, 'problem', None) or exc}")],
                              reason=Reason.RULE_SET_INVALID) from exc
    if not isinstance(data, dict):
        raise InvalidArgument([FieldViolation(prefix.rstrip(".") or "rule_set",
                                              "a YAML mapping of RuleSet fields is required")],
                              reason=Reason.RULE_SET_INVALID)
    try:
        return json_format.ParseDict(data, rule_set_pb2.RuleSet())
    except json_format.ParseError as exc:
        path, reason = (_locate(data, rule_set_pb2.RuleSet.DESCRIPTOR, "")
                        or ("", _strip(str(exc))))
        raise InvalidArgument([FieldViolation(prefix + path if path else
                                              prefix.rstrip(".") or "rule_set", reason)],
                              reason=Reason.RULE_SET_INVALID) from exc


def rule_set_from_yaml(text: str | bytes, *, prefix: str = "") -> RuleSet:
    """Parse a YAML rule set into the model (through the RuleSet message)."""
    return rule_set_from_proto(rule_set_proto_from_yaml(text, prefix=prefix), prefix=prefix)


def rule_set_to_yaml(rs: RuleSet | rule_set_pb2.RuleSet) -> str:
    """A YAML file of a rule set (proto field names; defaults left out)."""
    msg = rule_set_to_proto(rs) if isinstance(rs, RuleSet) else rs
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=96)
