"""Domain <-> protobuf conversion for SplitService: rule-set versions and splits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.rpc import code_pb2

from clearing.api.convert import timestamp
from clearing.api.errors import bug_reason, code_name
from clearing.errors import ClearingError, InvalidArgument
from clearing.limits import SPLIT_ERROR_MESSAGE_LEN_MAX
from clearing.rules.counters import Reading, Source
from clearing.rules.evaluate import Evaluation
from clearing.rules.model import HoldReason
from clearing.rules.proto import evaluation_to_proto
from clearing.rules.runtime import StoredAction, StoredLeg
from clearing.rules.store import VersionRow
from clearing.v1 import split_pb2 as pb

# The filed content of a RuleSet message (what is stored and hashed).
CONTENT_FIELDS = frozenset({"name", "currency_code", "description", "rules", "attributes",
                            "party_roles", "counters"})


def content_of(msg: pb.RuleSet) -> pb.RuleSet:
    """A copy of the message with its output-only fields cleared."""
    content = pb.RuleSet()
    content.CopyFrom(msg)
    for field in content.DESCRIPTOR.fields:
        if field.name not in CONTENT_FIELDS:
            content.ClearField(field.name)
    return content


def _status(row: VersionRow) -> int:
    if row.is_active:
        return pb.RULE_SET_STATUS_ACTIVE
    if row.activated_at is None:
        return pb.RULE_SET_STATUS_PUBLISHED
    return pb.RULE_SET_STATUS_SUPERSEDED


def rule_set(row: VersionRow, *, include_rules: bool = True) -> pb.RuleSet:
    """The RuleSet message of a stored version, output-only fields filled in."""
    msg = pb.RuleSet.FromString(row.content)
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


# ---- splits -----------------------------------------------------------------------------------

def split_body(ev: Evaluation, order: pb.Order, readings: Sequence[Reading],
               overrides: dict[str, int]) -> pb.Split:
    """The Split message of an evaluation, without what only a commit gives (ids, times,
    transfer ids): counter values carry their source and period."""
    msg = evaluation_to_proto(ev, order)
    by_name = {r.spec.name: r for r in readings}
    for value in msg.counter_values:
        reading = by_name.get(value.counter_name)
        if value.counter_name in overrides:
            value.source = pb.COUNTER_SOURCE_OVERRIDE
        elif reading is not None:
            value.source = int(reading.source)
            if reading.period_start is not None:
                value.period_start_time.CopyFrom(timestamp(reading.period_start))
        else:
            value.source = int(Source.LIVE)
    return msg


def preview(body: pb.Split, custodial_id: int) -> pb.Split:
    """A preview: status PREVIEW, custodial account ids filled in."""
    body.status = pb.SPLIT_STATUS_PREVIEW
    for leg in body.legs:
        leg.account_id = leg.account_id or custodial_id
        leg.debit_account_id = leg.debit_account_id or custodial_id
    return body


def _release_state(leg: StoredLeg) -> int:
    if leg.held_minor == leg.amount_minor:
        return pb.RELEASE_STATE_HELD
    if leg.held_minor:
        return pb.RELEASE_STATE_PARTLY_RELEASED
    if leg.voided_minor:
        return pb.RELEASE_STATE_VOIDED
    return pb.RELEASE_STATE_RELEASED


def split(body: pb.Split, *, split_id: int, request_id: str, status: int,
          legs: Sequence[StoredLeg], created_at: dt.datetime, updated_at: dt.datetime,
          refunded_minor: int = 0, actions: Sequence[StoredAction] = (),
          into: pb.Split | None = None) -> pb.Split:
    """A committed split: the evaluated body with the legs' live amounts and transfers,
    built in `into` (e.g. an outcome's field) or a new message."""
    msg = pb.Split() if into is None else into
    msg.CopyFrom(body)
    msg.split_id, msg.request_id, msg.status = split_id, request_id, status
    created = timestamp(created_at)
    msg.create_time.CopyFrom(created)
    msg.update_time.CopyFrom(created if updated_at == created_at else timestamp(updated_at))
    first_legs = body.legs
    split_action = msg.actions.add(
        action_id=split_id, kind=pb.SPLIT_ACTION_KIND_SPLIT, request_id=request_id,
        amount_minor=sum(leg.amount_minor for leg in first_legs), create_time=created)
    add_change = split_action.leg_changes.add
    for out, leg in zip(msg.legs, legs):
        out.account_id, out.debit_account_id = leg.account_id, leg.debit_account_id
        out.held_minor, out.released_minor = leg.held_minor, leg.released_minor
        out.voided_minor, out.refunded_minor = leg.voided_minor, leg.refunded_minor
        out.release_state = _release_state(leg)
        if not leg.held_minor:
            out.hold_reason = int(HoldReason.UNSPECIFIED)
        out.transfer_ids[:] = leg.transfer_ids
        first = first_legs[leg.leg_index]
        add_change(leg_index=leg.leg_index, account_id=leg.account_id,
                   held_minor=first.held_minor, released_minor=first.released_minor,
                   transfer_ids=leg.transfer_ids[:1])
    msg.held_minor = sum(leg.held_minor for leg in legs)
    msg.released_minor = sum(leg.released_minor for leg in legs)
    msg.voided_minor = sum(leg.voided_minor for leg in legs)
    msg.refunded_minor = refunded_minor
    for stored in actions:
        _add_action(msg, action(stored))
    return msg


def fresh_split(body: pb.Split, *, split_id: int, request_id: str, status: int,
                custodial_id: int, transfer_ids: Sequence[int], created_at: dt.datetime,
                into: pb.Split | None = None) -> pb.Split:
    """`split(...)` of a split just committed: its legs as evaluated (nothing released,
    voided or refunded since), a 0 account being the custodial account, `transfer_ids[i]`
    the transfer of leg i (0: none, a custodial hold). The same message, with less work:
    the split path builds one per order."""
    msg = pb.Split() if into is None else into
    msg.CopyFrom(body)
    msg.split_id, msg.request_id, msg.status = split_id, request_id, status
    created = timestamp(created_at)
    msg.create_time.CopyFrom(created)
    msg.update_time.CopyFrom(created)
    split_action = msg.actions.add(action_id=split_id, kind=pb.SPLIT_ACTION_KIND_SPLIT,
                                   request_id=request_id, create_time=created)
    add_change = split_action.leg_changes.add
    amount_total = held_total = 0
    for index, (out, transfer_id) in enumerate(zip(msg.legs, transfer_ids)):
        if not out.account_id:
            out.account_id = custodial_id
        if not out.debit_account_id:
            out.debit_account_id = custodial_id
        amount, held = out.amount_minor, out.held_minor
        amount_total += amount
        held_total += held
        out.released_minor = amount - held
        out.release_state = (pb.RELEASE_STATE_HELD if held == amount
                             else pb.RELEASE_STATE_PARTLY_RELEASED if held
                             else pb.RELEASE_STATE_RELEASED)
        if not held:
            out.hold_reason = int(HoldReason.UNSPECIFIED)
        first = body.legs[index]
        if transfer_id:
            out.transfer_ids.append(transfer_id)
            add_change(leg_index=out.leg_index, account_id=out.account_id,
                       held_minor=first.held_minor, released_minor=first.released_minor,
                       transfer_ids=(transfer_id,))
        else:
            add_change(leg_index=out.leg_index, account_id=out.account_id,
                       held_minor=first.held_minor, released_minor=first.released_minor)
    split_action.amount_minor = amount_total
    msg.held_minor = held_total
    msg.released_minor = amount_total - held_total
    msg.voided_minor = 0
    msg.refunded_minor = 0
    return msg


def action(stored: StoredAction) -> pb.SplitAction:
    """A stored release, cancellation or refund with what its commit gave (id, time,
    transfers; a release's event time when its request did not set one)."""
    msg = pb.SplitAction.FromString(stored.body)
    msg.action_id = stored.action_id
    msg.create_time.CopyFrom(timestamp(stored.created_at))
    if msg.kind == pb.SPLIT_ACTION_KIND_RELEASE and not msg.HasField("event_time"):
        msg.event_time.CopyFrom(msg.create_time)  # the request said "now"
    for change, transfer_id in zip(msg.leg_changes, stored.transfer_ids):
        if transfer_id:
            change.transfer_ids.append(transfer_id)
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
