"""Domain <-> protobuf conversion for SplitService: rule-set versions, orders, splits
(`clearing.splits.model`) and their actions, split errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2

from clearing.api.convert import nanoseconds, timestamp
from clearing.api.errors import aborted, bug_reason, code_name
from clearing.errors import ClearingError, InvalidArgument
from clearing.limits import SPLIT_ERROR_MESSAGE_LEN_MAX
from clearing.rules.model import HoldReason, Order
from clearing.api.rules_proto import order_from_proto
from clearing.rules.evaluate import Evaluation
from clearing.rules.store import VersionRow
from clearing.splits.model import Action, ActionKind, CounterValue, LegState, Preview, Split
from clearing.v1 import rule_set_pb2
from clearing.v1 import split_pb2 as pb

# The filed content of a RuleSet message (what is stored and hashed).
CONTENT_FIELDS = frozenset({"name", "currency_code", "description", "rules", "attributes",
                            "party_roles", "counters"})


def content_of(msg: rule_set_pb2.RuleSet) -> rule_set_pb2.RuleSet:
    """A copy of the message with its output-only fields cleared."""
    content = rule_set_pb2.RuleSet()
    content.CopyFrom(msg)
    for field in content.DESCRIPTOR.fields:
        if field.name not in CONTENT_FIELDS:
            content.ClearField(field.name)
    return content


def _status(row: VersionRow) -> int:
    if row.is_active:
        return rule_set_pb2.RULE_SET_STATUS_ACTIVE
    if row.activated_at is None:
        return rule_set_pb2.RULE_SET_STATUS_PUBLISHED
    return rule_set_pb2.RULE_SET_STATUS_SUPERSEDED


def rule_set(row: VersionRow, *, include_rules: bool = True) -> rule_set_pb2.RuleSet:
    """The RuleSet message of a stored version, output-only fields filled in."""
    msg = rule_set_pb2.RuleSet.FromString(row.content)
    if not include_rules:
        msg.ClearField("rules")
    msg.rule_set_id = row.rule_set_id
    msg.version = row.version
    msg.status = _status(row)
    msg.content_sha256 = row.content_sha256.hex()
    msg.published_by = str(row.published_by)
    msg.publish_time.CopyFrom(timestamp(row.published_at))
    msg.level_count = row.level_count
    if row.activated_at is not None:
        msg.activated_by = str(row.activated_by)
        msg.activate_time.CopyFrom(timestamp(row.activated_at))
    if row.superseded_at is not None:
        msg.supersede_time.CopyFrom(timestamp(row.superseded_at))
    return msg


# ---- orders --------------------------------------------------------------------------------

def order(msg: pb.Order, received_at: dt.datetime | None = None) -> Order:
    """The order of a (validated) Order message; its paid time `received_at` when the
    gateway did not say (None: unset, the split service then takes its clock's now)."""
    return order_from_proto(msg, paid_time_ns_default=None if received_at is None
                            else nanoseconds(received_at))


def _ns_timestamp(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def order_message(o: Order) -> pb.Order:
    """The Order message of an order as recorded."""
    msg = pb.Order(order_id=o.order_id, amount_minor=o.amount_minor,
                   currency_code=o.currency_code, channel=o.channel,
                   channel_fee_minor=o.channel_fee_minor,
                   channel_transaction_id=o.channel_transaction_id, tags=o.tags,
                   attributes=o.attributes, parties=o.parties,
                   rule_set_name=o.rule_set_name, memo=o.memo)
    for c in o.coupons:
        msg.coupons.add(coupon_id=c.coupon_id, amount_minor=c.amount_minor, funding=c.funding)
    if o.paid_time_ns is not None:
        msg.paid_time.CopyFrom(_ns_timestamp(o.paid_time_ns))
    return msg


# ---- splits -----------------------------------------------------------------------------------

def _counters(msg: pb.Split, values: Sequence[CounterValue]) -> None:
    """Each counter value's source and period start, on the message's counter values."""
    by_name = {v.counter_name: v for v in values}
    for out in msg.counter_values:
        value = by_name.get(out.counter_name)
        if value is None:
            continue
        out.source = int(value.source)
        if value.period_start is not None:
            out.period_start_time.CopyFrom(timestamp(value.period_start))


def evaluation_to_proto(ev: Evaluation, order: pb.Order | None = None, *,
                        into: pb.Split | None = None,
                        legs: Sequence[LegState] | None = None) -> pb.Split:
    """A Split message of an evaluation (status, ids, times and actions are the caller's),
    built in place (each part added to its message, not built apart and copied in: the
    split path builds one per order), in `into` if given. `legs`: the legs' live accounts,
    amounts and transfers (else as evaluated)."""
    msg = pb.Split() if into is None else into
    msg.Clear()
    msg.order_id = order.order_id if order is not None else ""
    msg.currency_code, msg.amount_minor = ev.currency_code, ev.amount_minor
    msg.channel_fee_minor, msg.net_amount_minor = ev.channel_fee_minor, ev.net_amount_minor
    msg.subsidy_minor, msg.distributed_minor = ev.subsidy_minor, ev.distributed_minor
    msg.fee_minor = ev.fee_minor
    msg.rule_set_name, msg.rule_set_version = ev.rule_set_name, ev.rule_set_version
    if order is not None:
        msg.order.CopyFrom(order)
    if legs is None:
        _evaluated_legs(msg, ev)
    else:
        _live_legs(msg, ev, legs)
    add_match = msg.matched_rules.add
    for m in ev.matched_rules:
        add_match(match_index=m.match_index, rule_set_name=m.rule_set_name,
                  rule_set_version=m.rule_set_version, rule_name=m.rule_name,
                  priority=m.priority, level=m.level, parent_match_index=m.parent_match_index,
                  top_slice=m.top_slice, base_minor=m.base_minor, fee_minor=m.fee_minor,
                  passed_on_minor=m.passed_on_minor)
    for c in ev.counter_values:
        msg.counter_values.add(counter_name=c.counter_name, subject=c.subject, value=c.value)
    for a in ev.alerts:
        msg.alerts.add(reason=a.reason, account_id=a.account_id, leg_index=a.leg_index,
                       message=a.message)
    return msg


def _add_leg(msg: pb.Split, leg, account_id: int, debit_account_id: int, held_minor: int,
             released_minor: int, voided_minor: int, refunded_minor: int, release_state: int,
             hold_reason: int, transfer_ids: Sequence[int]) -> None:
    out = msg.legs.add(
        leg_index=leg.leg_index, kind=int(leg.kind), account_id=account_id,
        external_ref=leg.external_ref, debit_account_id=debit_account_id,
        amount_minor=leg.amount_minor, held_minor=held_minor, released_minor=released_minor,
        voided_minor=voided_minor, refunded_minor=refunded_minor, release_state=release_state,
        hold_reason=hold_reason, rule_set_name=leg.rule_set_name,
        rule_set_version=leg.rule_set_version, rule_name=leg.rule_name, label=leg.label,
        level=leg.level, ratio_bps=leg.ratio_bps, transfer_ids=transfer_ids)
    for step in leg.release_steps:
        out.release_steps.add(event_name=step.event_name, fraction_bps=step.fraction_bps,
                              amount_minor=step.amount_minor)


def _evaluated_legs(msg: pb.Split, ev: Evaluation) -> None:
    for leg in ev.legs:
        held = leg.held_minor
        _add_leg(msg, leg, leg.account_id, leg.debit_account_id, held,
                 leg.amount_minor - held, 0, 0,
                 pb.RELEASE_STATE_HELD if held else pb.RELEASE_STATE_RELEASED,
                 int(leg.hold_reason), ())
    msg.held_minor = ev.held_minor
    msg.released_minor = sum(leg.amount_minor - leg.held_minor for leg in ev.legs)


def _live_legs(msg: pb.Split, ev: Evaluation, legs: Sequence[LegState]) -> None:
    held_total = released_total = voided_total = 0
    for leg, live in zip(ev.legs, legs):
        held = live.held_minor
        _add_leg(msg, leg, live.account_id, live.debit_account_id, held, live.released_minor,
                 live.voided_minor, live.refunded_minor, int(live.release_state),
                 int(leg.hold_reason) if held else int(HoldReason.UNSPECIFIED),
                 live.transfer_ids)
        held_total += held
        released_total += live.released_minor
        voided_total += live.voided_minor
    msg.held_minor, msg.released_minor, msg.voided_minor = (held_total, released_total,
                                                            voided_total)


def preview(p: Preview) -> pb.Split:
    """A preview: status PREVIEW, custodial account ids filled in."""
    msg = evaluation_to_proto(p.evaluation, order_message(p.order))
    _counters(msg, p.counter_values)
    msg.status = pb.SPLIT_STATUS_PREVIEW
    for leg in msg.legs:
        leg.account_id = leg.account_id or p.custodial_id
        leg.debit_account_id = leg.debit_account_id or p.custodial_id
    return msg


def split(s: Split, into: pb.Split | None = None, *,
          order_msg: pb.Order | None = None) -> pb.Split:
    """The Split message of a split, built in `into` (e.g. an outcome's field) or a new
    message: the evaluation as made, the legs' live amounts and transfers, the split itself
    as its first action and every action since. `order_msg`: the Order message of
    `s.order` when the caller has it (the request's), else made from `s.order`."""
    msg = evaluation_to_proto(s.evaluation, order_msg or order_message(s.order), into=into,
                              legs=s.legs)
    if s.counter_values:
        _counters(msg, s.counter_values)
    msg.split_id, msg.request_id, msg.status = s.split_id, s.request_id, int(s.status)
    created = timestamp(s.created_at)
    msg.create_time.CopyFrom(created)
    msg.update_time.CopyFrom(created if s.updated_at == s.created_at
                             else timestamp(s.updated_at))
    split_action = msg.actions.add(
        action_id=s.split_id, kind=pb.SPLIT_ACTION_KIND_SPLIT, request_id=s.request_id,
        create_time=created)
    add_change = split_action.leg_changes.add
    amount_total = 0
    for leg, first in zip(s.legs, s.evaluation.legs):
        amount_total += first.amount_minor
        add_change(leg_index=leg.leg_index, account_id=leg.account_id,
                   held_minor=first.held_minor,
                   released_minor=first.amount_minor - first.held_minor,
                   transfer_ids=leg.transfer_ids[:1])
    split_action.amount_minor = amount_total
    msg.refunded_minor = s.refunded_minor
    for act in s.actions:
        _add_action(msg, action(act))
    return msg


def action(a: Action) -> pb.SplitAction:
    """The SplitAction message of a release, cancellation or refund (a release's event
    time is its commit time when its request did not set one)."""
    msg = pb.SplitAction(action_id=a.action_id, kind=int(a.kind), request_id=a.request_id,
                         event_name=a.event_name, fraction_bps=a.fraction_bps,
                         amount_minor=a.amount_minor, refund_ref=a.refund_ref, reason=a.reason_text,
                         create_time=timestamp(a.created_at))
    if a.event_time_ns is not None:
        msg.event_time.CopyFrom(_ns_timestamp(a.event_time_ns))
    elif a.kind == ActionKind.RELEASE:
        msg.event_time.CopyFrom(msg.create_time)  # the request said "now"
    add_change = msg.leg_changes.add
    for c in a.leg_changes:
        add_change(leg_index=c.leg_index, account_id=c.account_id, held_minor=c.held_minor,
                   released_minor=c.released_minor, voided_minor=c.voided_minor,
                   refunded_held_minor=c.refunded_held_minor,
                   refunded_posted_minor=c.refunded_posted_minor,
                   shortfall_minor=c.shortfall_minor,
                   shortfall_account_id=c.shortfall_account_id, transfer_ids=c.transfer_ids)
    return msg


def _add_action(split_msg: pb.Split, act: pb.SplitAction) -> None:
    """Append an action; an event release marks the steps of that event on its legs."""
    split_msg.actions.append(act)
    if act.kind != pb.SPLIT_ACTION_KIND_RELEASE or not act.event_name:
        return
    for change in act.leg_changes:
        for step in split_msg.legs[change.leg_index].release_steps:
            if step.event_name == act.event_name and not step.released:
                step.released = True
                step.release_time.CopyFrom(act.event_time)


def split_error(exc: BaseException) -> pb.SplitError:
    """What the unary Split would have answered for `exc`, as one order's SplitError (a
    bug shows only its reason, as on the wire)."""
    exc = aborted(exc)
    if isinstance(exc, ClearingError):
        reason, message, metadata = exc.reason, exc.message, exc.metadata
    else:
        reason, message, metadata = bug_reason(exc), "internal error", {}
    out = pb.SplitError(reason=reason, message=message[:SPLIT_ERROR_MESSAGE_LEN_MAX],
                        code=code_pb2.Code.Value(code_name(exc)), metadata=metadata)
    if isinstance(exc, InvalidArgument):
        out.field_violations.extend(
            pb.SplitError.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations)
    return out
