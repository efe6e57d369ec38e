"""What splitting needs around the pure evaluator: the accounts an order touches, the
counters it raises, the sub-rule-sets a rule set names, the mapping of evaluated legs to
ledger legs, and the writer sink that stores committed splits.

Ledger mapping of a split (one posting, all or nothing):
- a leg credited at once: an IMMEDIATE transfer from its debit account (0 in the
  Evaluation: the platform's custodial account of the order's currency) to its account
  (0: the custodial account, for a subsidy into the split base);
- a leg held by its release policy: a PENDING transfer (a later ReleaseSplit posts it);
- a leg whose receiver is frozen or closed (HOLD_REASON_RECEIVER_UNAVAILABLE): no transfer
  at all. The money stays in the custodial account (the "custodial hold": the ledger
  refuses even a pending credit to a frozen account, and a transfer from the custodial
  account to itself is not allowed), the split records what it holds, and an alert row is
  written; a later ReleaseSplit pays it once the account is active. A split whose every leg
  is held this way is refused (FAILED_PRECONDITION, RECEIVERS_UNAVAILABLE): a posting needs
  at least one transfer to take the order's claim.

Nothing here imports protobuf: the split's message body arrives already encoded.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable
import dataclasses
from dataclasses import dataclass

import asyncpg

from clearing.errors import FailedPrecondition, invariant
from clearing.ledger.model import AccountKind, AccountStatus, Leg, Mode, Posting, TransferRecord
from clearing.ledger.batch_sql import int_array
from clearing.limits import (ALERT_MESSAGE_LEN_MAX, EXTERNAL_REF_LEN_MAX, RESOLVE_ROUNDS_MAX,
                             RULE_SET_VERSION_MAX)
from clearing.rules import chain as chains
from clearing.rules.compile import Plan, Target
from clearing.rules.counters import CounterSpec, Period, Reading
from clearing.rules.evaluate import Evaluation, counter_requests
from clearing.rules.model import AccountInfo, HoldReason, Order, Resolver, RuleSet, SplitStatus
from clearing.rules.validate import NAME_RE
from clearing.values import text_problem
from clearing.reasons import Reason

SINK_NAME = "splits"
ACTION_SINK_NAME = "split_actions"


# ---- accounts -------------------------------------------------------------------------------

def _target_refs(targets: Iterable[Target]) -> set[str]:
    return {t.external_ref for t in targets if t.external_ref}


def plan_refs(plan: Plan) -> frozenset[str]:
    """Every account external_ref the plan names (for the receivers' states)."""
    targets: list[Target] = []
    for unit in plan.units:
        for rule in unit.rules:
            targets += [f.target for f in rule.fees]
            targets += [s.target for s in rule.shares]
            targets += [s.target for s in rule.subsidies] + [s.source for s in rule.subsidies]
    return frozenset(_target_refs(targets))


_SQL_SPLIT_ACCOUNTS = """
SELECT account_id, external_ref, currency_code, status, kind FROM accounts
WHERE platform_id = $1 AND (external_ref = ANY($2::text[]) OR (kind = $3 AND currency_code = $4))
ORDER BY account_id
"""


async def split_accounts(pool: asyncpg.Pool, platform_id: int, plan: Plan, order: Order,
                         refs: Iterable[str] | None = None) -> tuple[int, dict[str, AccountInfo]]:
    """(the custodial account id of the order's currency or 0 if the platform has none,
    accounts by external_ref) for every account the plan or the order's parties name
    (`refs`, when the caller has them already)."""
    refs = sorted(refs if refs is not None else plan_refs(plan) | set(order.parties.values()))
    rows = await pool.fetch(_SQL_SPLIT_ACCOUNTS, platform_id, refs, int(AccountKind.CUSTODIAL),
                            order.currency_code)
    custodial = next((r["account_id"] for r in rows if r["kind"] == AccountKind.CUSTODIAL
                      and r["currency_code"] == order.currency_code), 0)
    wanted = set(refs)
    return custodial, {r["external_ref"]: AccountInfo(r["account_id"], r["currency_code"],
                                                      r["status"], r["kind"])
                       for r in rows if r["external_ref"] in wanted}


# Statuses a split may use from the directory's cache, and how many entries it keeps.
ACCOUNT_CACHE_TTL_S = 1.0
ACCOUNT_CACHE_ENTRIES_MAX = 100_000
# Writer failures that mean "a receiver read as active is no longer": not recorded under
# the request id, so the split reads its accounts afresh and is submitted again.
STALE_ACCOUNT_REASONS = frozenset({Reason.ACCOUNT_FROZEN, Reason.ACCOUNT_CLOSED})


class AccountDirectory:
    """The accounts splits touch, read through a short-lived in-process cache.

    An account's id, currency and kind never change; its status does (freeze, unfreeze,
    close, through any server process). Only ACTIVE accounts are cached, for at most
    `ttl_s`; an account missing or not active is always read from the database. So the
    one stale answer possible is "active" for an account frozen or closed since, and the
    ledger writer catches it: it refuses the credit (ACCOUNT_FROZEN / ACCOUNT_CLOSED)
    without recording the failure (`STALE_ACCOUNT_REASONS`), and the split is evaluated
    again from a fresh read (`lookup(..., fresh=True)`). A split therefore sees the same
    statuses as with a database read per order, without the round trip.
    """

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = ACCOUNT_CACHE_TTL_S,
                 entries_max: int = ACCOUNT_CACHE_ENTRIES_MAX,
                 monotonic: Callable[[], float] | None = None) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._entries_max = entries_max
        self._now = monotonic or time.monotonic
        self._accounts: dict[tuple[int, str], tuple[float, AccountInfo]] = {}
        self._custodial: dict[tuple[int, str], tuple[float, int]] = {}
        self._refs: dict[int, tuple[Plan, frozenset[str]]] = {}

    async def lookup(self, platform_id: int, plan: Plan, order: Order, *,
                     fresh: bool = False) -> tuple[int, dict[str, AccountInfo]]:
        """As `split_accounts`: (custodial account id or 0, accounts by external_ref)."""
        refs = self._plan_refs(plan) | set(order.parties.values())
        if fresh or self._ttl_s <= 0:
            custodial, found = await split_accounts(self._pool, platform_id, plan, order, refs)
            self._keep(platform_id, order.currency_code, custodial, found)
            return custodial, found
        now = self._now()
        found: dict[str, AccountInfo] = {}
        for ref in refs:
            hit = self._accounts.get((platform_id, ref))
            if hit is not None and hit[0] > now:
                found[ref] = hit[1]
        custodial_hit = self._custodial.get((platform_id, order.currency_code))
        if len(found) == len(refs) and custodial_hit is not None and custodial_hit[0] > now:
            return custodial_hit[1], found
        custodial, fetched = await split_accounts(self._pool, platform_id, plan, order, refs)
        self._keep(platform_id, order.currency_code, custodial, fetched)
        return custodial, fetched

    def _keep(self, platform_id: int, currency_code: str, custodial: int,
              found: dict[str, AccountInfo]) -> None:
        if self._ttl_s <= 0:
            return
        if len(self._accounts) >= self._entries_max:
            self._accounts.clear()
            self._custodial.clear()
        until = self._now() + self._ttl_s
        for ref, info in found.items():
            if info.status == AccountStatus.ACTIVE:
                self._accounts[(platform_id, ref)] = (until, info)
            else:
                self._accounts.pop((platform_id, ref), None)
        if custodial:
            self._custodial[(platform_id, currency_code)] = (until, custodial)

    def _plan_refs(self, plan: Plan) -> frozenset[str]:
        kept = self._refs.get(id(plan))
        if kept is None or kept[0] is not plan:
            if len(self._refs) >= 1024:
                self._refs.clear()
            kept = self._refs[id(plan)] = (plan, plan_refs(plan))
        return kept[1]


def require_custodial(custodial_id: int, currency_code: str) -> int:
    """The custodial account a split debits; FailedPrecondition if there is none."""
    if not custodial_id:
        raise FailedPrecondition(
            f"the platform has no custodial account in {currency_code}",
            reason=Reason.CUSTODIAL_ACCOUNT_MISSING, metadata={"currency_code": currency_code})
    return custodial_id


async def accounts_by_ref(conn: asyncpg.Connection, platform_id: int,
                          refs: Iterable[str]) -> dict[str, AccountInfo]:
    """The platform's accounts among `refs`, by external_ref (a ref that cannot be one, e.g.
    with NUL, is not looked up: it names no account)."""
    refs = sorted(r for r in refs if text_problem(r, EXTERNAL_REF_LEN_MAX) is None)
    rows = await conn.fetch(
        "SELECT account_id, external_ref, currency_code, status, kind FROM accounts"
        " WHERE platform_id = $1 AND external_ref = ANY($2::text[])", platform_id, refs)
    return {r["external_ref"]: AccountInfo(r["account_id"], r["currency_code"], r["status"],
                                           r["kind"]) for r in rows}


# ---- sub-rule-sets --------------------------------------------------------------------------

async def preload_resolver(conn: asyncpg.Connection, platform_id: int, root: RuleSet,
                           decode: Callable[[bytes, int], RuleSet]) -> Resolver:
    """A synchronous resolver holding every rule set `root` reaches (the compiler's
    resolver cannot wait on the database): references are fetched level by level."""
    found: dict[tuple[str, int], RuleSet | None] = {}

    def resolve(name: str, version: int) -> RuleSet | None:
        key = (name, version)
        if key not in found:
            missing.add(key)
            return None
        return found[key]

    for _ in range(RESOLVE_ROUNDS_MAX):
        missing: set[tuple[str, int]] = set()
        chains.walk(root, resolve)
        if not missing:
            break
        for name, version in missing:
            found[(name, version)] = await _load_rule_set(conn, platform_id, name, version,
                                                          decode)
    return lambda name, version: found.get((name, version))


async def _load_rule_set(conn, platform_id: int, name: str, version: int,
                         decode: Callable[[bytes, int], RuleSet]) -> RuleSet | None:
    if not 0 <= version <= RULE_SET_VERSION_MAX or NAME_RE.fullmatch(name) is None:
        return None  # no such rule set; the validator says why
    if version == 0:
        row = await conn.fetchrow(
            "SELECT r.content, r.version FROM rule_sets r JOIN rule_set_heads h"
            " ON h.platform_id = r.platform_id AND h.name = r.name"
            " WHERE r.platform_id = $1 AND r.name = $2 AND r.version = h.active_version",
            platform_id, name)
    else:
        row = await conn.fetchrow(
            "SELECT content, version FROM rule_sets WHERE platform_id = $1 AND name = $2"
            " AND version = $3", platform_id, name, version)
    return None if row is None else decode(row["content"], row["version"])


# ---- counters -------------------------------------------------------------------------------

def counter_specs(platform_id: int, plan: Plan, order: Order) -> list[CounterSpec]:
    """The counters `order` raises (its paid time decides the period)."""
    invariant(order.paid_time_ns is not None, "the order's paid time is set before counting")
    at = dt.datetime.fromtimestamp(order.paid_time_ns / 1e9, dt.timezone.utc)
    return [CounterSpec(platform_id, r.counter_name, r.subject, Period(r.period), r.time_zone,
                        r.delta, at) for r in counter_requests(plan, order)]


def counter_values(readings: list[Reading], overrides: dict[str, int]) -> dict[str, int]:
    """Counter values by name for the evaluator; overrides win."""
    values = {r.spec.name: r.value for r in readings}
    values.update(overrides)
    return values


# ---- the ledger posting ---------------------------------------------------------------------

@dataclass(slots=True)
class SplitRecord:
    """What the sink stores for one committed split (the posting's attachment).
    `transfer_positions[i]`: position of leg i's transfer in the posting, -1 if none.
    The sink sets `split_id` (the id of the posting's first transfer)."""

    platform_id: int
    order_id: str
    request_id: str
    payload_hash: bytes
    evaluation: Evaluation
    counter_json: str
    body: bytes
    transfer_positions: list[int]
    custodial_id: int
    split_id: int = 0
    created_at: dt.datetime | None = None

    @property
    def status(self) -> SplitStatus:
        return SplitStatus.HOLDING if self.evaluation.held_minor else SplitStatus.POSTED


def ledger_legs(ev: Evaluation, custodial_id: int, memo: str) -> tuple[list[Leg], list[int]]:
    """The ledger legs of an evaluation and, per split leg, its position among them (-1:
    held in the custodial account, no transfer); see the module docstring."""
    legs: list[Leg] = []
    positions: list[int] = []
    kept_minor = 0
    for leg in ev.legs:
        if leg.hold_reason == HoldReason.RECEIVER_UNAVAILABLE:
            positions.append(-1)
            kept_minor += leg.amount_minor
            continue
        mode = Mode.PENDING if leg.held_minor else Mode.IMMEDIATE
        positions.append(len(legs))
        legs.append(Leg(leg.debit_account_id or custodial_id, leg.account_id or custodial_id,
                        leg.amount_minor, ev.currency_code, mode, 0, memo))
    invariant(sum(leg.amount_minor for leg in legs) + kept_minor
              == ev.distributed_minor + ev.subsidy_minor,
              "ledger legs do not carry the split's legs")
    if not legs:
        raise FailedPrecondition(
            "every receiver of this split is frozen or closed: nothing can be booked yet",
            reason=Reason.RECEIVERS_UNAVAILABLE)
    return legs, positions


def counters_json(readings: list[Reading], overrides: dict[str, int]) -> str:
    """The counter values a split used, for the splits row."""
    if not readings:
        return "[]"  # json.dumps([]), without its cost on every order of a plan with no tiers
    return json.dumps([{"name": r.spec.name, "subject": r.spec.subject, "value": r.value,
                        "source": int(r.source)} for r in readings
                       if r.spec.name not in overrides], sort_keys=True)


# ---- the sink -------------------------------------------------------------------------------

_SQL_STORE = """
WITH s AS (
  INSERT INTO splits (split_id, platform_id, order_id, request_id, payload_hash, status,
                      rule_set_name, rule_set_version, currency_code, amount_minor,
                      channel_fee_minor, distributed_minor, subsidy_minor, fee_minor,
                      counter_values, body, created_at, updated_at)
  SELECT u.id, u.p, u.o, u.r, u.h, u.st, u.n, u.v, u.cur, u.a, u.cf, u.d, u.sub, u.fee,
         u.cv::jsonb, u.body, $17, $17
  FROM unnest($1::text::bigint[], $2::text::bigint[], $3::text[], $4::text[], $5::bytea[],
              $6::text::smallint[], $7::text[], $8::text::integer[], $9::text[],
              $10::text::bigint[], $11::text::bigint[], $12::text::bigint[],
              $13::text::bigint[], $14::text::bigint[], $15::text[], $16::bytea[])
       AS u(id, p, o, r, h, st, n, v, cur, a, cf, d, sub, fee, cv, body)
  RETURNING 1
), l AS (
  INSERT INTO split_legs (split_id, leg_index, kind, account_id, debit_account_id,
                          amount_minor, held_minor, released_minor, hold_reason, transfer_ids)
  SELECT u.id, u.i, u.k, u.acc, u.deb, u.a, u.held, u.a - u.held, u.hr,
         CASE WHEN u.t = 0 THEN '{}'::bigint[] ELSE ARRAY[u.t] END
  FROM unnest($18::text::bigint[], $19::text::integer[], $20::text::smallint[],
              $21::text::bigint[], $22::text::bigint[], $23::text::bigint[],
              $24::text::bigint[], $25::text::smallint[], $26::text::bigint[])
       AS u(id, i, k, acc, deb, a, held, hr, t)
  RETURNING 1
), al AS (
  INSERT INTO split_alerts (platform_id, split_id, reason, account_id, leg_index, message,
                            created_at)
  SELECT u.p, u.id, u.r, u.acc, u.i, u.m, $17
  FROM unnest($27::text::bigint[], $28::text::bigint[], $29::text[], $30::text::bigint[],
              $31::text::integer[], $32::text[]) AS u(p, id, r, acc, i, m)
  RETURNING 1
)
SELECT (SELECT count(*) FROM s) AS splits, (SELECT count(*) FROM l) AS legs,
       (SELECT count(*) FROM al) AS alerts
"""


def _split_columns(records: list[SplitRecord]) -> list[list]:
    cols: list[list] = [[] for _ in range(16)]
    for rec in records:
        ev = rec.evaluation
        values = (rec.split_id, rec.platform_id, rec.order_id, rec.request_id,
                  rec.payload_hash, rec.status, ev.rule_set_name, ev.rule_set_version,
                  ev.currency_code, ev.amount_minor, ev.channel_fee_minor,
                  ev.distributed_minor, ev.subsidy_minor, ev.fee_minor, rec.counter_json,
                  rec.body)
        for col, value in zip(cols, values):
            col.append(value)
    return cols


def _leg_columns(records: list[SplitRecord],
                 transfers: dict[int, list[TransferRecord]]) -> list[list]:
    cols: list[list] = [[] for _ in range(9)]
    for rec in records:
        sent = transfers[id(rec)]
        for leg, position in zip(rec.evaluation.legs, rec.transfer_positions):
            transfer = sent[position] if position >= 0 else None
            account = leg.account_id or rec.custodial_id
            debit = leg.debit_account_id or rec.custodial_id
            values = (rec.split_id, leg.leg_index, int(leg.kind), account, debit,
                      leg.amount_minor, leg.held_minor, int(leg.hold_reason),
                      transfer.transfer_id if transfer else 0)
            for col, value in zip(cols, values):
                col.append(value)
    return cols


def _alert_columns(records: list[SplitRecord]) -> list[list]:
    cols: list[list] = [[] for _ in range(6)]
    for rec in records:
        for alert in rec.evaluation.alerts:
            values = (rec.platform_id, rec.split_id, alert.reason, alert.account_id,
                      alert.leg_index, alert.message)
            for col, value in zip(cols, values):
                col.append(value)
    return cols


def _literals(cols: list[list], integer_columns: Iterable[int]) -> list:
    """`cols` with its integer columns as array literals (`int_array`)."""
    out: list = list(cols)
    for i in integer_columns:
        out[i] = int_array(cols[i])
    return out


class SplitSink:
    """Writes the splits of a committed batch (rows, legs, alerts) in one statement."""

    async def write(self, conn: asyncpg.Connection,
                    committed: list[tuple[Posting, list[TransferRecord]]]) -> None:
        records: list[SplitRecord] = []
        transfers: dict[int, list[TransferRecord]] = {}
        for posting, sent in committed:
            rec = posting.attachment
            invariant(isinstance(rec, SplitRecord), "the splits sink got a foreign attachment")
            rec.split_id = sent[0].transfer_id
            rec.created_at = sent[0].created_at
            transfers[id(rec)] = sent
            records.append(rec)
        splits = _split_columns(records)
        legs = _leg_columns(records, transfers)
        alerts = _alert_columns(records)
        row = await conn.fetchrow(  # integer columns as array literals (see int_array)
            _SQL_STORE, *_literals(splits, (0, 1, 5, 7, 9, 10, 11, 12, 13)),
            records[0].created_at, *_literals(legs, range(9)),
            *_literals(alerts, (0, 1, 3, 4)))
        invariant(row["splits"] == len(records), f"split rows written: {dict(row)}")


# ---- actions on splits (release, cancel) ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class LegDelta:
    """What an action does to one leg: posted from the hold, voided from it; `position`
    is its transfer's position in the posting (-1: none, a custodial hold)."""

    leg_index: int
    released_minor: int
    voided_minor: int
    position: int


@dataclass(slots=True)
class ActionRecord:
    """What the actions sink stores for one committed release or cancellation."""

    platform_id: int
    split_id: int
    request_id: str
    payload_hash: bytes
    body: bytes
    deltas: list[LegDelta]
    status: int


_SQL_ACTION_LEGS = """
UPDATE split_legs AS l
SET held_minor = l.held_minor - u.rel - u.vd, released_minor = l.released_minor + u.rel,
    voided_minor = l.voided_minor + u.vd,
    transfer_ids = CASE WHEN u.t = 0 THEN l.transfer_ids ELSE l.transfer_ids || u.t END
FROM unnest($2::integer[], $3::bigint[], $4::bigint[], $5::bigint[]) AS u(i, rel, vd, t)
WHERE l.split_id = $1 AND l.leg_index = u.i
"""
_SQL_ACTION_SPLIT = "UPDATE splits SET status = $2, updated_at = $3 WHERE split_id = $1"
_SQL_ACTION_INSERT = """
INSERT INTO split_actions (action_id, split_id, platform_id, request_id, payload_hash, body,
                           transfer_ids, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""


@dataclass(frozen=True, slots=True)
class RefundDelta:
    """What a refund does to one leg: `held_minor` voided from its hold, `posted_minor`
    taken back from what was posted; `positions`: its transfers in the posting;
    `pending_position`: the new pending transfer for what stays held (-1: none)."""

    leg_index: int
    held_minor: int
    posted_minor: int
    positions: tuple[int, ...]
    pending_position: int = -1


@dataclass(slots=True)
class RefundRecord:
    """What the actions sink stores for one committed refund. `body` gives the encoded
    SplitAction from the transfer ids of each delta (this module imports no protobuf)."""

    platform_id: int
    split_id: int
    request_id: str
    payload_hash: bytes
    body: Callable[[list[tuple[int, ...]]], bytes]
    deltas: list[RefundDelta]
    status: int
    refunded_minor: int


_SQL_REFUND_LEG = """
UPDATE split_legs
SET held_minor = held_minor - $3, voided_minor = voided_minor + $3,
    refunded_minor = refunded_minor + $3 + $4,
    refunded_posted_minor = refunded_posted_minor + $4,
    transfer_ids = transfer_ids || $5::bigint[],
    pending_transfer_id = CASE WHEN $6::bigint = 0 THEN pending_transfer_id ELSE $6 END
WHERE split_id = $1 AND leg_index = $2
"""
_SQL_REFUND_SPLIT = """
UPDATE splits SET status = $2, updated_at = $3, refunded_minor = refunded_minor + $4
WHERE split_id = $1
"""


class ActionSink:
    """Writes committed releases, cancellations and refunds: leg amounts, split status, the
    action."""

    async def write(self, conn: asyncpg.Connection,
                    committed: list[tuple[Posting, list[TransferRecord]]]) -> None:
        for posting, sent in committed:
            rec = posting.attachment
            if isinstance(rec, RefundRecord):
                await self._write_refund(conn, rec, sent)
                continue
            invariant(isinstance(rec, ActionRecord), "the actions sink got a foreign attachment")
            await self._write_one(conn, rec, sent)

    @staticmethod
    async def _write_refund(conn: asyncpg.Connection, rec: "RefundRecord",
                            sent: list[TransferRecord]) -> None:
        ids = [tuple(sent[p].transfer_id for p in d.positions) for d in rec.deltas]
        at = sent[0].created_at
        await conn.executemany(_SQL_REFUND_LEG, [
            (rec.split_id, d.leg_index, d.held_minor, d.posted_minor, list(t),
             sent[d.pending_position].transfer_id if d.pending_position >= 0 else 0)
            for d, t in zip(rec.deltas, ids)])
        status = await conn.execute(_SQL_REFUND_SPLIT, rec.split_id, rec.status, at,
                                    rec.refunded_minor)
        invariant(status == "UPDATE 1", f"split refunded: {status}")
        await conn.execute(_SQL_ACTION_INSERT, sent[0].transfer_id, rec.split_id,
                           rec.platform_id, rec.request_id, rec.payload_hash, rec.body(ids),
                           [0] * len(rec.deltas), at)

    @staticmethod
    async def _write_one(conn: asyncpg.Connection, rec: ActionRecord,
                         sent: list[TransferRecord]) -> None:
        ids = [sent[d.position].transfer_id if d.position >= 0 else 0 for d in rec.deltas]
        at = sent[0].created_at
        status = await conn.execute(
            _SQL_ACTION_LEGS, rec.split_id, [d.leg_index for d in rec.deltas],
            [d.released_minor for d in rec.deltas], [d.voided_minor for d in rec.deltas], ids)
        invariant(status == f"UPDATE {len(rec.deltas)}", f"split legs updated: {status}")
        await conn.execute(_SQL_ACTION_SPLIT, rec.split_id, rec.status, at)
        await conn.execute(_SQL_ACTION_INSERT, sent[0].transfer_id, rec.split_id,
                           rec.platform_id, rec.request_id, rec.payload_hash, rec.body, ids, at)


def after_action(split: "StoredSplit", rec: "ActionRecord | RefundRecord",
                 sent: list[TransferRecord]) -> tuple["StoredSplit", "StoredAction"]:
    """The split as the actions sink leaves it once `rec` committed as `sent`, and the
    action it records, computed in memory (the same changes as the sink's SQL): the first
    response of a release, cancellation or refund, made in the writer's batch. `split` is
    the state the action was planned from (its claim makes sure nothing changed since)."""
    at = sent[0].created_at
    legs = {leg.leg_index: leg for leg in split.legs}
    if isinstance(rec, RefundRecord):
        ids = [tuple(sent[p].transfer_id for p in d.positions) for d in rec.deltas]
        for d, t in zip(rec.deltas, ids):
            leg = legs[d.leg_index]
            legs[d.leg_index] = dataclasses.replace(
                leg, held_minor=leg.held_minor - d.held_minor,
                voided_minor=leg.voided_minor + d.held_minor,
                refunded_minor=leg.refunded_minor + d.held_minor + d.posted_minor,
                refunded_posted_minor=leg.refunded_posted_minor + d.posted_minor,
                transfer_ids=leg.transfer_ids + t,
                pending_transfer_id=(sent[d.pending_position].transfer_id
                                     if d.pending_position >= 0 else leg.pending_transfer_id))
        action = StoredAction(sent[0].transfer_id, rec.request_id, rec.payload_hash,
                              rec.body(ids), (0,) * len(rec.deltas), at)
        refunded = split.refunded_minor + rec.refunded_minor
    else:
        ids1 = [sent[d.position].transfer_id if d.position >= 0 else 0 for d in rec.deltas]
        for d, t1 in zip(rec.deltas, ids1):
            leg = legs[d.leg_index]
            legs[d.leg_index] = dataclasses.replace(
                leg, held_minor=leg.held_minor - d.released_minor - d.voided_minor,
                released_minor=leg.released_minor + d.released_minor,
                voided_minor=leg.voided_minor + d.voided_minor,
                transfer_ids=leg.transfer_ids + ((t1,) if t1 else ()))
        action = StoredAction(sent[0].transfer_id, rec.request_id, rec.payload_hash,
                              rec.body, tuple(ids1), at)
        refunded = split.refunded_minor
    after = dataclasses.replace(
        split, status=rec.status, refunded_minor=refunded, updated_at=at,
        legs=tuple(legs[leg.leg_index] for leg in split.legs),
        actions=split.actions + (action,))
    return after, action


# ---- reading stored splits --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredLeg:
    leg_index: int
    account_id: int
    debit_account_id: int
    amount_minor: int
    held_minor: int
    released_minor: int
    voided_minor: int
    refunded_minor: int
    hold_reason: int
    transfer_ids: tuple[int, ...]
    refunded_posted_minor: int = 0
    pending_transfer_id: int = 0

    @property
    def pending_id(self) -> int:
        """The leg's open pending transfer while it holds money (0: a custodial hold)."""
        return self.pending_transfer_id or (self.transfer_ids[0] if self.transfer_ids else 0)

    @property
    def left_minor(self) -> int:
        """What the leg still has: held, or posted and not refunded."""
        return self.held_minor + self.released_minor - self.refunded_posted_minor


@dataclass(frozen=True, slots=True)
class StoredAction:
    """A release or cancellation of a split, as stored (see 0004_split_actions.sql)."""

    action_id: int
    request_id: str
    payload_hash: bytes
    body: bytes
    transfer_ids: tuple[int, ...]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StoredSplit:
    split_id: int
    order_id: str
    request_id: str
    payload_hash: bytes
    status: int
    refunded_minor: int
    counter_values: list[dict]
    body: bytes
    created_at: dt.datetime
    updated_at: dt.datetime
    legs: tuple[StoredLeg, ...]
    actions: tuple[StoredAction, ...] = ()


_SPLIT_COLUMNS = ("split_id, order_id, request_id, payload_hash, status, refunded_minor,"
                  " counter_values, body, created_at, updated_at")
_SPLIT_KEYS = {"order_id": "order_id", "split_id": "split_id", "request_id": "request_id"}


async def load_split(conn: asyncpg.Connection, platform_id: int, key: str,
                     value: object) -> StoredSplit | None:
    """A stored split by order_id, split_id or request_id, with its legs; None if absent."""
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
        "SELECT action_id, request_id, payload_hash, body, transfer_ids, created_at"
        " FROM split_actions WHERE split_id = $1 ORDER BY action_id", row["split_id"])
    return StoredSplit(
        row["split_id"], row["order_id"], row["request_id"], row["payload_hash"],
        row["status"], row["refunded_minor"], json.loads(row["counter_values"]), row["body"],
        row["created_at"], row["updated_at"],
        tuple(StoredLeg(*(tuple(r.values())[:9]), tuple(r["transfer_ids"]),
                        r["refunded_posted_minor"], r["pending_transfer_id"]) for r in legs),
        tuple(StoredAction(a["action_id"], a["request_id"], a["payload_hash"], a["body"],
                           tuple(a["transfer_ids"]), a["created_at"]) for a in actions))


async def split_id_of_action(conn: asyncpg.Connection, platform_id: int,
                             request_id: str) -> int | None:
    """The split a release or cancellation request id acted on; None if unknown."""
    return await conn.fetchval(
        "SELECT split_id FROM split_actions WHERE platform_id = $1 AND request_id = $2",
        platform_id, request_id)


async def account_statuses(conn: asyncpg.Connection, account_ids: Iterable[int]) -> dict[int, int]:
    """Status by account id."""
    rows = await conn.fetch("SELECT account_id, status FROM accounts"
                            " WHERE account_id = ANY($1::bigint[])", sorted(set(account_ids)))
    return {r["account_id"]: r["status"] for r in rows}


async def account_spendable(conn: asyncpg.Connection,
                            account_ids: Iterable[int]) -> dict[int, int | None]:
    """Available balance by account id (posted, less pending debits and frozen); None for
    an account allowed to go negative."""
    rows = await conn.fetch(
        "SELECT account_id, allow_negative,"
        " credits_posted - debits_posted - debits_pending - frozen AS spendable"
        " FROM accounts WHERE account_id = ANY($1::bigint[])", sorted(set(account_ids)))
    return {r["account_id"]: None if r["allow_negative"] else r["spendable"] for r in rows}


async def record_alert(pool: asyncpg.Pool, platform_id: int, reason: str, message: str) -> None:
    """An alert about an order that could not be split (no split row exists for it)."""
    await pool.execute(
        "INSERT INTO split_alerts (platform_id, split_id, reason, account_id, leg_index,"
        " message, created_at) VALUES ($1, 0, $2, 0, -1, $3, now())",
        platform_id, reason, message[:ALERT_MESSAGE_LEN_MAX])
