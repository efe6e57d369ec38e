"""How splits are stored: the ledger writer's sinks that write a committed split (rows,
legs, alerts) and a committed action in the transaction of their transfers, and the reads
of a stored split. Tables: migrations 0003-0005 and 0011 (a split's and an action's
`detail`, see `detail`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from clearing.errors import invariant
from clearing.events import outbox
from clearing.events.model import EventType
from clearing.ledger.batch_sql import bytea_array, int_array, text_array
from clearing.ledger.model import Posting, TransferRecord
from clearing.risk import events as risk_events
from clearing.rules.model import HoldReason
from clearing.splits import detail
from clearing.splits.model import ActionKind, LegState, Split, SplitStatus
from clearing.splits.records import ActionRecord, SplitRecord, apply

SINK_NAME = "splits"
ACTION_SINK_NAME = "split_actions"

_SQL_STORE = """
WITH s AS (
  INSERT INTO splits (split_id, platform_id, order_id, request_id, payload_hash, status,
                      rule_set_name, rule_set_version, currency_code, amount_minor,
                      channel_fee_minor, distributed_minor, subsidy_minor, fee_minor,
                      counter_values, detail, channel, channel_transaction_id, paid_time_ns,
                      created_at, updated_at)
  SELECT u.id, u.p, u.o, u.r, u.h, u.st, u.n, u.v, u.cur, u.a, u.cf, u.d, u.sub, u.fee,
         u.cv::jsonb, u.detail, u.ch, u.ctx, u.paid, $20, $20
  FROM unnest($1::text::bigint[], $2::text::bigint[], $3::text::text[], $4::text::text[],
              $5::text::bytea[], $6::text::smallint[], $7::text::text[], $8::text::integer[],
              $9::text::text[], $10::text::bigint[], $11::text::bigint[], $12::text::bigint[],
              $13::text::bigint[], $14::text::bigint[], $15::text[], $16::text[],
              $17::text::text[], $18::text::text[], $19::text::bigint[])
       AS u(id, p, o, r, h, st, n, v, cur, a, cf, d, sub, fee, cv, detail, ch, ctx, paid)
  RETURNING 1
), l AS (
  INSERT INTO split_legs (split_id, leg_index, kind, account_id, debit_account_id,
                          amount_minor, held_minor, released_minor, hold_reason, transfer_ids)
  SELECT u.id, u.i, u.k, u.acc, u.deb, u.a, u.held, u.a - u.held, u.hr,
         CASE WHEN u.t = 0 THEN '{}'::bigint[] ELSE ARRAY[u.t] END
  FROM unnest($21::text::bigint[], $22::text::integer[], $23::text::smallint[],
              $24::text::bigint[], $25::text::bigint[], $26::text::bigint[],
              $27::text::bigint[], $28::text::smallint[], $29::text::bigint[])
       AS u(id, i, k, acc, deb, a, held, hr, t)
  RETURNING 1
), al AS (
  INSERT INTO split_alerts (platform_id, split_id, reason, account_id, leg_index, message,
                            created_at)
  SELECT u.p, u.id, u.r, u.acc, u.i, u.m, $20
  FROM unnest($30::text::bigint[], $31::text::bigint[], $32::text::text[],
              $33::text::bigint[], $34::text::integer[], $35::text::text[])
       AS u(p, id, r, acc, i, m)
  RETURNING 1
)
SELECT (SELECT count(*) FROM s) AS splits, (SELECT count(*) FROM l) AS legs,
       (SELECT count(*) FROM al) AS alerts
"""

def _split_columns(records: list[SplitRecord], ids: list[int]) -> list[list]:
    cols: list[list] = [[] for _ in range(19)]
    for rec, split_id in zip(records, ids):
        ev = rec.evaluation
        values = (split_id, rec.platform_id, rec.order.order_id, rec.request_id,
                  rec.payload_hash, int(rec.status), ev.rule_set_name, ev.rule_set_version,
                  ev.currency_code, ev.amount_minor, ev.channel_fee_minor,
                  ev.distributed_minor, ev.subsidy_minor, ev.fee_minor, rec.counters_json,
                  rec.detail, rec.order.channel, rec.order.channel_transaction_id,
                  rec.order.paid_time_ns)
        for col, value in zip(cols, values):
            col.append(value)
    return cols


def _leg_columns(records: list[SplitRecord], sents: list[list[TransferRecord]]) -> list[list]:
    cols: list[list] = [[] for _ in range(9)]
    for rec, sent in zip(records, sents):
        split_id = sent[0].transfer_id
        for leg, position in zip(rec.evaluation.legs, rec.transfer_positions):
            transfer = sent[position] if position >= 0 else None
            account = leg.account_id or rec.custodial_id
            debit = leg.debit_account_id or rec.custodial_id
            values = (split_id, leg.leg_index, int(leg.kind), account, debit,
                      leg.amount_minor, leg.held_minor, int(leg.hold_reason),
                      transfer.transfer_id if transfer else 0)
            for col, value in zip(cols, values):
                col.append(value)
    return cols


def _alert_columns(records: list[SplitRecord], ids: list[int]) -> list[list]:
    cols: list[list] = [[] for _ in range(6)]
    for rec, split_id in zip(records, ids):
        for alert in rec.evaluation.alerts:
            values = (rec.platform_id, split_id, alert.reason, alert.account_id,
                      alert.leg_index, alert.message)
            for col, value in zip(cols, values):
                col.append(value)
    return cols


def _literals(cols: list[list], integer_columns: Iterable[int],
              text_columns: Iterable[int] = (), bytea_columns: Iterable[int] = ()) -> list:
    """`cols` as array literals (`batch_sql.int_array`, `text_array`, `bytea_array`)."""
    out: list = list(cols)
    for i in integer_columns:
        out[i] = int_array(cols[i])
    for i in text_columns:
        out[i] = text_array(cols[i])
    for i in bytea_columns:
        out[i] = bytea_array(cols[i])
    return out




class SplitSink:
    """Writes the splits of a committed batch (rows, legs, alerts) in one statement."""

    async def write(self, conn: asyncpg.Connection,
                    committed: list[tuple[Posting, list[TransferRecord]]]) -> None:
        records: list[SplitRecord] = []
        sents: list[list[TransferRecord]] = []
        for posting, sent in committed:
            invariant(isinstance(posting.attachment, SplitRecord),
                      "the splits sink got a foreign attachment")
            records.append(posting.attachment)
            sents.append(sent)
        ids = [sent[0].transfer_id for sent in sents]
        splits = _split_columns(records, ids)
        legs = _leg_columns(records, sents)
        alerts = _alert_columns(records, ids)
        row = await conn.fetchrow(  # array literals (see batch_sql) but the JSON columns,
            # whose quotes would all need escaping (asyncpg's encoding is cheaper for them)
            _SQL_STORE, *_literals(splits, (0, 1, 5, 7, 9, 10, 11, 12, 13, 18),
                                   (2, 3, 6, 8, 16, 17), (4,)),
            sents[0][0].created_at, *_literals(legs, range(9)),
            *_literals(alerts, (0, 1, 3, 4), (2, 5)))
        invariant(row["splits"] == len(records), f"split rows written: {dict(row)}")
        if outbox.enabled():  # the batch's events: one multi-row INSERT, before
            # their risk events'
            at = sents[0][0].created_at
            await outbox.write(conn, [
                outbox.Row(rec.platform_id,
                           EventType.SPLIT_HELD if rec.status == SplitStatus.HOLDING
                           else EventType.SPLIT_COMMITTED, str(split_id), rec.request_id,
                           None if rec.response is not None else rec.committed(sent), at,
                           rec.response)
                for rec, sent, split_id in zip(records, sents, ids)])
        risky = [(rec.platform_id, split_id, rec.order.order_id, rec.order.paid_time_ns,
                  rec.risk) for rec, split_id in zip(records, ids) if rec.risk is not None]
        if risky:  # the risk counters' truth and the events, in the splits' transaction
            await risk_events.write_from_splits(conn, risky, sents[0][0].created_at)


# ---- actions on splits (release, cancel, refund) ---------------------------------------------

_SQL_ACTION_LEG = """
UPDATE split_legs
SET held_minor = held_minor - $3 - $4 - $5, released_minor = released_minor + $3,
    voided_minor = voided_minor + $4 + $5, refunded_minor = refunded_minor + $5 + $6,
    refunded_posted_minor = refunded_posted_minor + $6,
    transfer_ids = transfer_ids || $7::bigint[],
    pending_transfer_id = CASE WHEN $8::bigint = 0 THEN pending_transfer_id ELSE $8 END
WHERE split_id = $1 AND leg_index = $2
"""
_SQL_ACTION_SPLIT = """
UPDATE splits SET status = $2, updated_at = $3, refunded_minor = refunded_minor + $4
WHERE split_id = $1
"""
_SQL_ACTION_INSERT = """
INSERT INTO split_actions (action_id, split_id, platform_id, request_id, payload_hash,
                           detail, transfer_ids, created_at)
VALUES ($1, $2, $3, $4, $5, $6, '{}', $7)
"""


_ACTION_EVENTS = {ActionKind.RELEASE: EventType.SPLIT_RELEASED,
                  ActionKind.CANCEL: EventType.SPLIT_CANCELLED,
                  ActionKind.REFUND: EventType.SPLIT_REFUNDED}


class ActionSink:
    """Writes committed releases, cancellations and refunds: the legs' amounts, the
    split's status, the action (the same changes as `records.apply`), and their events
    (one statement for the batch)."""

    async def write(self, conn: asyncpg.Connection,
                    committed: list[tuple[Posting, list[TransferRecord]]]) -> None:
        events: list[outbox.Row] = []
        for posting, sent in committed:
            rec = posting.attachment
            invariant(isinstance(rec, ActionRecord), "the actions sink got a foreign attachment")
            await self._write_one(conn, rec, sent)
            if rec.before is not None and outbox.enabled():
                after, _ = apply(rec.before, rec, sent)
                events.append(outbox.Row(rec.platform_id, _ACTION_EVENTS[rec.action.kind],
                                         str(rec.split_id), rec.action.request_id, after,
                                         sent[0].created_at))
        await outbox.write(conn, events)

    @staticmethod
    async def _write_one(conn: asyncpg.Connection, rec: ActionRecord,
                         sent: list[TransferRecord]) -> None:
        action = rec.committed(sent)
        await conn.executemany(_SQL_ACTION_LEG, [
            (rec.split_id, c.leg_index, c.released_minor, c.voided_minor,
             c.refunded_held_minor, c.refunded_posted_minor, list(c.transfer_ids), pending_id)
            for c, pending_id in zip(action.leg_changes, rec.pending_ids(sent))])
        status = await conn.execute(_SQL_ACTION_SPLIT, rec.split_id, int(rec.status),
                                    action.created_at, rec.refunded_minor)
        invariant(status == "UPDATE 1", f"split updated: {status}")
        await conn.execute(_SQL_ACTION_INSERT, action.action_id, rec.split_id,
                           rec.platform_id, action.request_id, action.payload_hash,
                           detail.encode_action(action), action.created_at)


# ---- reading stored splits --------------------------------------------------------------------

_SPLIT_COLUMNS = ("split_id, order_id, request_id, payload_hash, status, refunded_minor,"
                  " detail, created_at, updated_at")
_SPLIT_KEYS = {"order_id": "order_id", "split_id": "split_id", "request_id": "request_id"}


async def load_split(conn: asyncpg.Connection, platform_id: int, key: str,
                     value: object) -> Split | None:
    """A stored split by order_id, split_id or request_id, with its legs and actions; None
    if absent."""
    column = _SPLIT_KEYS[key]
    row = await conn.fetchrow(
        f"SELECT {_SPLIT_COLUMNS} FROM splits WHERE platform_id = $1 AND {column} = $2",
        platform_id, value)
    if row is None:
        return None
    legs = await conn.fetch(
        "SELECT leg_index, account_id, debit_account_id, amount_minor, held_minor,"
        " released_minor, voided_minor, refunded_minor, hold_reason, transfer_ids,"
        " refunded_posted_minor, pending_transfer_id"
        " FROM split_legs WHERE split_id = $1 ORDER BY leg_index", row["split_id"])
    actions = await conn.fetch(
        "SELECT action_id, request_id, payload_hash, detail, created_at"
        " FROM split_actions WHERE split_id = $1 ORDER BY action_id", row["split_id"])
    return _split(row, legs, actions)


def _split(row: asyncpg.Record, legs, actions) -> Split:
    """A Split from its row, its leg rows (by leg index) and action rows (by action id)."""
    invariant(row["detail"] is not None,
              f"split {row['split_id']} has no detail (run the 0011 conversion)")
    order, ev, counter_values = detail.decode_split(row["detail"], order_id=row["order_id"])
    return Split(
        row["split_id"], row["request_id"], row["payload_hash"], SplitStatus(row["status"]),
        order, ev, counter_values, tuple(_leg_state(r) for r in legs), row["refunded_minor"],
        row["created_at"], row["updated_at"],
        tuple(detail.decode_action(a["detail"], action_id=a["action_id"],
                                   request_id=a["request_id"], payload_hash=a["payload_hash"],
                                   created_at=a["created_at"]) for a in actions))


def _leg_state(row: asyncpg.Record) -> LegState:
    return LegState(
        leg_index=row["leg_index"], account_id=row["account_id"],
        debit_account_id=row["debit_account_id"], amount_minor=row["amount_minor"],
        held_minor=row["held_minor"], released_minor=row["released_minor"],
        voided_minor=row["voided_minor"], refunded_minor=row["refunded_minor"],
        hold_reason=HoldReason(row["hold_reason"]), transfer_ids=tuple(row["transfer_ids"]),
        refunded_posted_minor=row["refunded_posted_minor"],
        pending_transfer_id=row["pending_transfer_id"])


# ---- ListSplits ------------------------------------------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class SplitFilter:
    """What ListSplits keeps (every set filter applies): a state, a paid-time range
    [paid_start_ns, paid_end_ns), an account credited by a leg, an amount range (inclusive)
    and a currency; None (or '') means any."""

    status: SplitStatus | None = None
    paid_start_ns: int | None = None
    paid_end_ns: int | None = None
    account_id: int | None = None
    amount_min: int | None = None
    amount_max: int | None = None
    currency_code: str = ""
    # A party key's accounts: only the splits with a leg crediting one of them (None: any).
    account_ids: frozenset[int] | None = None

    def key(self) -> str:
        """The filters as text, to bind a page token to them."""
        fields = (None if self.status is None else int(self.status), self.paid_start_ns,
                  self.paid_end_ns, self.account_id, self.amount_min, self.amount_max,
                  self.currency_code)
        if self.account_ids is not None:  # a party key's listing
            fields += (tuple(sorted(self.account_ids)),)
        return repr(fields)


@dataclass(frozen=True, slots=True)
class SplitPage:
    """A page of ListSplits: the splits, newest paid first, and the (paid time, split id)
    the next page starts after, None on the last page."""

    splits: tuple[Split, ...]
    after: tuple[int, int] | None


# The walk reads at most $6 splits of the paid-time range below the position ($4, $5), by
# splits_platform_paid_idx (0023); the other filters apply to the walked rows. Rows with
# `tail` true: the last walked row, when the walk reached its maximum (the next page
# starts after it).
_SQL_LIST = """
WITH walk AS MATERIALIZED (
  SELECT split_id, paid_time_ns, status, amount_minor, currency_code FROM splits
  WHERE platform_id = $1 AND paid_time_ns >= $2 AND paid_time_ns < $3
    AND (paid_time_ns, split_id) < ($4, $5)
  ORDER BY paid_time_ns DESC, split_id DESC
  LIMIT $6
), hits AS (
  SELECT w.split_id, w.paid_time_ns FROM walk w
  WHERE ($7::smallint IS NULL OR w.status = $7)
    AND ($8::bigint IS NULL OR w.amount_minor >= $8)
    AND ($9::bigint IS NULL OR w.amount_minor <= $9)
    AND ($10::text = '' OR w.currency_code = $10)
    AND ($11::bigint IS NULL OR EXISTS (
          SELECT 1 FROM split_legs l WHERE l.split_id = w.split_id AND l.account_id = $11))
    AND ($13::bigint[] IS NULL OR EXISTS (
          SELECT 1 FROM split_legs l WHERE l.split_id = w.split_id
            AND l.account_id = ANY($13::bigint[])))
  ORDER BY w.paid_time_ns DESC, w.split_id DESC
  LIMIT $12
)
SELECT split_id, paid_time_ns, false AS tail FROM hits
UNION ALL
SELECT split_id, paid_time_ns, true FROM (
  SELECT split_id, paid_time_ns FROM walk ORDER BY paid_time_ns, split_id LIMIT 1) t
WHERE (SELECT count(*) FROM walk) >= $6
"""


async def list_splits(conn: asyncpg.Connection, platform_id: int, flt: SplitFilter, *,
                      after: tuple[int, int] | None, limit: int, scan_max: int) -> SplitPage:
    """A page of the platform's splits matching `flt`, newest paid first (then by
    decreasing split id), starting after the position `after` (None: from the newest): at
    most `limit` splits, found among at most `scan_max` splits of the paid-time range."""
    invariant(1 <= limit <= scan_max, "1 <= limit <= scan_max")
    paid, sid = after if after is not None else (INT64_MAX, INT64_MAX)
    rows = await conn.fetch(
        _SQL_LIST, platform_id,
        INT64_MIN if flt.paid_start_ns is None else flt.paid_start_ns,
        INT64_MAX if flt.paid_end_ns is None else flt.paid_end_ns,
        paid, sid, scan_max, None if flt.status is None else int(flt.status),
        flt.amount_min, flt.amount_max, flt.currency_code, flt.account_id, limit + 1,
        None if flt.account_ids is None else sorted(flt.account_ids))
    hits = sorted(((r["paid_time_ns"], r["split_id"]) for r in rows if not r["tail"]),
                  reverse=True)
    tail = [(r["paid_time_ns"], r["split_id"]) for r in rows if r["tail"]]
    if len(hits) > limit:
        hits, next_after = hits[:limit], hits[limit - 1]
    else:
        next_after = tail[0] if tail else None
    found = await load_splits(conn, platform_id, [s for _, s in hits])
    return SplitPage(tuple(found), next_after)


async def load_splits(conn: asyncpg.Connection, platform_id: int,
                      split_ids: list[int]) -> list[Split]:
    """The platform's stored splits of `split_ids`, in that order, with their legs and
    actions (three queries whatever their number); ids of no split of it are left out."""
    if not split_ids:
        return []
    rows = await conn.fetch(
        f"SELECT {_SPLIT_COLUMNS} FROM splits WHERE platform_id = $1"
        " AND split_id = ANY($2::bigint[])", platform_id, split_ids)
    legs: dict[int, list] = {}
    for r in await conn.fetch(
            "SELECT split_id, leg_index, account_id, debit_account_id, amount_minor,"
            " held_minor, released_minor, voided_minor, refunded_minor, hold_reason,"
            " transfer_ids, refunded_posted_minor, pending_transfer_id"
            " FROM split_legs WHERE split_id = ANY($1::bigint[])"
            " ORDER BY split_id, leg_index", split_ids):
        legs.setdefault(r["split_id"], []).append(r)
    actions: dict[int, list] = {}
    for a in await conn.fetch(
            "SELECT split_id, action_id, request_id, payload_hash, detail, created_at"
            " FROM split_actions WHERE split_id = ANY($1::bigint[])"
            " ORDER BY split_id, action_id", split_ids):
        actions.setdefault(a["split_id"], []).append(a)
    by_id = {r["split_id"]: _split(r, legs.get(r["split_id"], ()),
                                   actions.get(r["split_id"], ())) for r in rows}
    return [by_id[i] for i in split_ids if i in by_id]
