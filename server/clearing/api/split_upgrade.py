"""Splits and actions stored before migration 0011 kept the wire messages (protobuf bytes of
Split and SplitAction in `body`); since then they keep the split domain's own JSON
(`clearing.splits.detail`). `upgrade` converts the old rows: every server start and
`clearing migrate` run it after the migrations, before anything is served, in batches of
UPGRADE_ROWS_MAX rows, each batch in one transaction that writes `detail` and clears
`body`. Rows are locked while converted, so processes starting together convert each row
once. It lives in the API layer because reading the old rows needs the generated code.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg

from clearing.limits import UPGRADE_ROWS_MAX
from clearing.rules.counters import Source
from clearing.rules.evaluate import Alert, CounterUse, Evaluation, Leg, MatchedRule, StepAmount
from clearing.rules.model import HoldReason, LegKind
from clearing.api.rules_proto import order_from_proto
from clearing.splits import detail
from clearing.splits.model import Action, ActionKind, CounterValue, LegChange
from clearing.v1 import split_pb2 as pb

log = logging.getLogger("clearing.api.split_upgrade")

_UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
# Leg.match_index was not on the wire: a converted leg names no matched rule.
MATCH_INDEX_UNKNOWN = -1


def _evaluation(msg: pb.Split) -> Evaluation:
    legs = tuple(Leg(
        leg.leg_index, LegKind(leg.kind), leg.account_id, leg.external_ref,
        leg.debit_account_id, leg.amount_minor, leg.held_minor, HoldReason(leg.hold_reason),
        tuple(StepAmount(s.event_name, s.fraction_bps, s.amount_minor)
              for s in leg.release_steps),
        leg.rule_set_name, leg.rule_set_version, leg.rule_name, leg.label, leg.level,
        leg.ratio_bps, MATCH_INDEX_UNKNOWN) for leg in msg.legs)
    return Evaluation(
        msg.rule_set_name, msg.rule_set_version, msg.currency_code, msg.amount_minor,
        msg.channel_fee_minor, msg.net_amount_minor, msg.subsidy_minor, msg.distributed_minor,
        msg.fee_minor, msg.held_minor, legs,
        tuple(MatchedRule(m.match_index, m.rule_set_name, m.rule_set_version, m.rule_name,
                          m.priority, m.level, m.parent_match_index, m.top_slice, m.base_minor,
                          m.fee_minor, m.passed_on_minor) for m in msg.matched_rules),
        tuple(CounterUse(c.counter_name, c.subject, c.value) for c in msg.counter_values),
        tuple(Alert(a.reason, a.account_id, a.leg_index, a.message) for a in msg.alerts))


def split_detail(body: bytes) -> tuple[str, str, str, int | None]:
    """The detail of a split stored as a Split message before 0011, and its order's
    channel, channel transaction id and paid time (the columns 0011 adds)."""
    msg = pb.Split.FromString(body)
    counters = tuple(CounterValue(
        c.counter_name, c.subject, c.value, Source(c.source or Source.LIVE),
        c.period_start_time.ToDatetime(tzinfo=_UTC) if c.HasField("period_start_time")
        else None) for c in msg.counter_values)
    order = order_from_proto(msg.order)
    return (detail.encode_split(order, _evaluation(msg), counters), order.channel,
            order.channel_transaction_id, order.paid_time_ns)


def action_detail(body: bytes, transfer_ids: list[int]) -> str:
    """The detail of an action stored as a SplitAction message before 0011 (its
    `transfer_ids` column held leg change i's transfer, 0 for none)."""
    msg = pb.SplitAction.FromString(body)
    changes = tuple(LegChange(
        c.leg_index, c.account_id, c.held_minor, c.released_minor, c.voided_minor,
        c.refunded_held_minor, c.refunded_posted_minor, c.shortfall_minor,
        c.shortfall_account_id,
        tuple(c.transfer_ids) + ((transfer_ids[i],) if i < len(transfer_ids)
                                 and transfer_ids[i] else ()))
        for i, c in enumerate(msg.leg_changes))
    action = Action(0, ActionKind(msg.kind), msg.request_id, b"", msg.amount_minor, changes,
                    _EPOCH, event_name=msg.event_name, fraction_bps=msg.fraction_bps,
                    event_time_ns=(msg.event_time.ToNanoseconds()
                                   if msg.HasField("event_time") else None),
                    refund_ref=msg.refund_ref, reason_text=msg.reason)
    return detail.encode_action(action)


async def upgrade(conn: asyncpg.Connection) -> int:
    """Convert every split and action still stored as a message; the rows converted."""
    converted = 0
    while rows := await _batch(conn, "SELECT split_id AS id, body FROM splits"
                               " WHERE detail IS NULL ORDER BY split_id LIMIT $1 FOR UPDATE",
                               "UPDATE splits SET detail = $2, channel = $3,"
                               " channel_transaction_id = $4, paid_time_ns = $5, body = NULL"
                               " WHERE split_id = $1",
                               lambda r: split_detail(r["body"])):
        converted += rows
    while rows := await _batch(conn, "SELECT action_id AS id, body, transfer_ids"
                               " FROM split_actions WHERE detail IS NULL ORDER BY action_id"
                               " LIMIT $1 FOR UPDATE",
                               "UPDATE split_actions SET detail = $2, body = NULL"
                               " WHERE action_id = $1",
                               lambda r: (action_detail(r["body"], list(r["transfer_ids"])),)):
        converted += rows
    if converted:
        log.info("splits and actions converted to their 0011 form",
                 extra={"rows": converted})
    return converted


async def _batch(conn: asyncpg.Connection, select: str, update: str, convert) -> int:
    """Convert up to UPGRADE_ROWS_MAX rows in one transaction (`convert`: a row's new
    values after its id, in the update's order); how many."""
    async with conn.transaction():
        rows = await conn.fetch(select, UPGRADE_ROWS_MAX)
        await conn.executemany(update, [(r["id"], *convert(r)) for r in rows])
    return len(rows)
