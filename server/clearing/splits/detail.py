"""The stored form of what a split keeps as it was made (the order as recorded, the
evaluation, the counter values) and of an action: JSON of the domain's own, in the
`detail` columns of splits and split_actions.

A split's detail is written once per order on the hot path, so its repeated parts (legs,
matched rules, counter values, alerts) are rows of values in the order of the field names
its `format` number stands for (FORMATS); a reader maps each row to its fields by name, so
a format that adds a field reads the rows of older formats. Changing a row type of the
rules engine (`Leg`, `MatchedRule`, `StepAmount`, `Alert`) or `CounterValue` means a new
format number (tests/unit/splits/test_detail.py fails until there is one).
"""

from __future__ import annotations

import datetime as dt
import json

import msgspec
from collections.abc import Mapping, Sequence
from typing import Any

from clearing.errors import invariant
from clearing.rules.counters import Source
from clearing.rules.evaluate import Alert, CounterUse, Evaluation, Leg, MatchedRule, StepAmount
from clearing.rules.model import Coupon, CouponFunding, HoldReason, LegKind, Order
from clearing.splits.model import Action, ActionKind, CounterValue, LegChange

FORMAT = 1
# The field names of each row type, per format.
FORMATS: dict[int, dict[str, tuple[str, ...]]] = {
    1: {
        "legs": ("leg_index", "kind", "account_id", "external_ref", "debit_account_id",
                 "amount_minor", "held_minor", "hold_reason", "release_steps",
                 "rule_set_name", "rule_set_version", "rule_name", "label", "level",
                 "ratio_bps", "match_index"),
        "release_steps": ("event_name", "fraction_bps", "amount_minor"),
        "matched_rules": ("match_index", "rule_set_name", "rule_set_version", "rule_name",
                          "priority", "level", "parent_match_index", "top_slice",
                          "base_minor", "fee_minor", "passed_on_minor"),
        "counter_values": ("counter_name", "subject", "value", "source", "period_start_ns"),
        "alerts": ("reason", "account_id", "leg_index", "message"),
    },
}
# The evaluation's amounts (its rows aside), by name.
_TOTALS = ("rule_set_name", "rule_set_version", "currency_code", "amount_minor",
           "channel_fee_minor", "net_amount_minor", "subsidy_minor", "distributed_minor",
           "fee_minor", "held_minor")
_SEPARATORS = (",", ":")
# msgspec writes named tuples as arrays and enums as their numbers, ~9x faster than json on
# a split's rows (the split path writes one detail per order); reading uses json.
_ENCODER = msgspec.json.Encoder()


def _ns(at: dt.datetime | None) -> int | None:
    if at is None:
        return None
    return (at - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _time(ns: int | None) -> dt.datetime | None:
    return None if ns is None else _EPOCH + dt.timedelta(microseconds=ns // 1000)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


# ---- splits -----------------------------------------------------------------------------------

def _order(order: Order) -> dict[str, Any]:
    return {"channel": order.channel, "channel_transaction_id": order.channel_transaction_id,
            "tags": order.tags, "attributes": order.attributes, "parties": order.parties,
            "coupons": [{"coupon_id": c.coupon_id, "amount_minor": c.amount_minor,
                         "funding": c.funding} for c in order.coupons],
            "rule_set_name": order.rule_set_name, "paid_time_ns": order.paid_time_ns,
            "memo": order.memo}


def encode_split(order: Order, ev: Evaluation, counter_values: Sequence[CounterValue]) -> str:
    """A split's detail: the order (its id, amount and currency are columns of splits, so
    not repeated here), the evaluation and the counter values, as JSON text."""
    return _ENCODER.encode({
        "format": FORMAT,
        "order": _order(order),
        "totals": {name: getattr(ev, name) for name in _TOTALS},
        "legs": ev.legs,  # rows (named tuples are JSON arrays; enums their numbers)
        "matched_rules": ev.matched_rules,
        "counter_values": [(c.counter_name, c.subject, c.value, c.source, _ns(c.period_start))
                           for c in counter_values],
        "alerts": ev.alerts,
    }).decode()


def _rows(doc: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The rows of `name` as dicts by field name, per the document's format."""
    fields = FORMATS[doc["format"]][name]
    rows = doc[name] if name in doc else []
    out = []
    for row in rows:
        invariant(len(row) == len(fields), f"a {name} row of {len(row)} values, format"
                  f" {doc['format']} has {len(fields)} fields")
        out.append(dict(zip(fields, row)))
    return out


def _leg(doc: Mapping[str, Any], row: dict[str, Any]) -> Leg:
    steps_fields = FORMATS[doc["format"]]["release_steps"]
    steps = tuple(StepAmount(**dict(zip(steps_fields, step))) for step in row["release_steps"])
    return Leg(**{**row, "kind": LegKind(row["kind"]), "hold_reason": HoldReason(row["hold_reason"]),
                  "release_steps": steps})


def decode_split(text: str, *, order_id: str) -> tuple[Order, Evaluation, tuple[CounterValue, ...]]:
    """The order, evaluation and counter values of a split's detail (`encode_split`)."""
    doc = json.loads(text)
    invariant(doc.get("format") in FORMATS, f"unknown split detail format {doc.get('format')}")
    o, totals = doc["order"], doc["totals"]
    order = Order(order_id=order_id, amount_minor=totals["amount_minor"],
                  currency_code=totals["currency_code"], channel=o["channel"],
                  channel_fee_minor=totals["channel_fee_minor"], tags=tuple(o["tags"]),
                  attributes=o["attributes"], parties=o["parties"],
                  coupons=tuple(Coupon(c["coupon_id"], c["amount_minor"],
                                       CouponFunding(c["funding"])) for c in o["coupons"]),
                  rule_set_name=o["rule_set_name"], paid_time_ns=o["paid_time_ns"],
                  channel_transaction_id=o["channel_transaction_id"], memo=o["memo"])
    ev = Evaluation(
        **totals, legs=tuple(_leg(doc, row) for row in _rows(doc, "legs")),
        matched_rules=tuple(MatchedRule(**row) for row in _rows(doc, "matched_rules")),
        counter_values=(), alerts=tuple(Alert(**row) for row in _rows(doc, "alerts")))
    counters = tuple(CounterValue(r["counter_name"], r["subject"], r["value"],
                                  Source(r["source"]), _time(r["period_start_ns"]))
                     for r in _rows(doc, "counter_values"))
    return order, ev._replace(counter_values=tuple(
        CounterUse(c.counter_name, c.subject, c.value) for c in counters)), counters


# ---- actions ----------------------------------------------------------------------------------

_CHANGE_FIELDS = ("leg_index", "account_id", "held_minor", "released_minor", "voided_minor",
                  "refunded_held_minor", "refunded_posted_minor", "shortfall_minor",
                  "shortfall_account_id", "transfer_ids")


def encode_action(action: Action) -> str:
    """An action's detail (what the columns of split_actions do not hold), as JSON text with
    named fields: actions are few, off the hot path."""
    return json.dumps({
        "format": FORMAT, "kind": action.kind, "amount_minor": action.amount_minor,
        "event_name": action.event_name, "fraction_bps": action.fraction_bps,
        "event_time_ns": action.event_time_ns, "refund_ref": action.refund_ref,
        "reason": action.reason_text,
        "leg_changes": [{name: getattr(c, name) for name in _CHANGE_FIELDS}
                        for c in action.leg_changes],
    }, separators=_SEPARATORS)


def decode_action(text: str, *, action_id: int, request_id: str, payload_hash: bytes,
                  created_at: dt.datetime) -> Action:
    """The action of a split_actions row (`encode_action`)."""
    doc = json.loads(text)
    invariant(doc.get("format") in FORMATS, f"unknown action detail format {doc.get('format')}")
    changes = tuple(LegChange(**{**c, "transfer_ids": tuple(c["transfer_ids"])})
                    for c in doc["leg_changes"])
    return Action(action_id, ActionKind(doc["kind"]), request_id, payload_hash,
                  doc["amount_minor"], changes, created_at, event_name=doc["event_name"],
                  fraction_bps=doc["fraction_bps"], event_time_ns=doc["event_time_ns"],
                  refund_ref=doc["refund_ref"], reason_text=doc["reason"])
