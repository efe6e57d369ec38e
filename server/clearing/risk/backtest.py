"""Backtesting a rule-set version: re-evaluate a rule set's recorded orders with a candidate
version's compiled plan and compare, per receiver, with the active version. Writes
nothing (no posting, no counter, no split); reads splits through one server-side cursor.

What is read
    The splits of the rule set (`splits.rule_set_name`) paid in [start, end) (by
    `paid_time_ns`, index splits_rule_set_paid_idx), the most recent first, at most
    `order_count_max` (one more is read to tell whether the period had more). Every status
    counts (a refunded order was still split so). Per split: its order id, the version
    that split it, its detail (`clearing.splits.detail`: the order as recorded, the legs
    and matched rules as evaluated) and its counter readings (the splits row's
    `counter_values`: every counter the order raised, its own contribution included).

The active side
    An order recorded under the active version counts with its recorded legs, so the
    backtest reproduces them exactly (tested); one recorded under another version is
    evaluated again with the active plan (if it refuses, `active_refused_count`).

The candidate side
    `evaluate(candidate, order, counters, accounts=...)`, the split path's own evaluator:
    counters are the order's recorded readings of the same counter and subject (a counter
    the order did not raise reads 0 and is counted in `counter_unrecorded_count`);
    accounts are the parties' accounts read now (by external_ref, a bounded cache). A
    refusal (NO_MATCHING_RULE, SHARES_EXCEED_AMOUNT, INVALID_ORDER...) is counted by reason
    and sampled; a broken invariant is a bug and raises.

Receivers
    Totals per receiving account (legs crediting the custodial account, subsidies into
    the split base, are no receiver's); shares and swings: `clearing.risk.swing`.

Speed: rows come through a server-side cursor in batches of BACKTEST_FETCH_ROWS, the next
batch fetched while this one is evaluated; the detail is decoded by msgspec into the few
fields needed (the recorded legs' accounts and amounts, the matched rules' names), the
Order is built once, and the loop yields to the event loop every YIELD_EVERY orders so
that a long backtest does not stall the server's other calls. `make bench-backtest`
(bench/backtest.py) measures it (bench/README.md).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg
import msgspec

from clearing.errors import ClearingError, invariant
from clearing.limits import (BACKTEST_ACCOUNTS_MAX, BACKTEST_FETCH_ROWS, BACKTEST_ORDERS_MAX,
                             BACKTEST_SAMPLE_MAX, RATIO_SWING_THRESHOLD_BPS)
from clearing.risk.swing import ReceiverSwing, receiver_swings
from clearing.rules.compile import Plan
from clearing.rules.evaluate import Evaluation, counter_requests, evaluate
from clearing.rules.model import AccountInfo, Coupon, CouponFunding, Order
from clearing.splits import detail
from clearing.splits.accounts import accounts_by_ref

YIELD_EVERY = 500

SQL_ORDERS = """
SELECT order_id, rule_set_version, detail, counter_values::text AS readings
FROM splits
WHERE platform_id = $1 AND rule_set_name = $2 AND paid_time_ns >= $3 AND paid_time_ns < $4
ORDER BY paid_time_ns DESC, split_id DESC
LIMIT $5
"""


class ChangedOrder(NamedTuple):
    """An order whose matched rules differ: its evaluation under each version."""

    order: Order
    active: Evaluation
    candidate: Evaluation


class RefusedOrder(NamedTuple):
    """An order the candidate refuses, and why (what Split would have answered)."""

    order_id: str
    error: ClearingError


@dataclass(slots=True)
class Backtest:
    """The result of one backtest (see the module docstring)."""

    rule_set_name: str
    active_version: int
    candidate_version: int
    currency_code: str
    start_ns: int
    end_ns: int
    threshold_bps: int
    order_count: int = 0
    truncated: bool = False
    candidate_split_count: int = 0
    candidate_refused_count: int = 0
    active_refused_count: int = 0
    changed_rule_count: int = 0
    counter_unrecorded_count: int = 0
    active_total_minor: int = 0
    candidate_total_minor: int = 0
    receivers: list[ReceiverSwing] = field(default_factory=list)
    changed: list[ChangedOrder] = field(default_factory=list)
    refused: list[RefusedOrder] = field(default_factory=list)
    refused_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def swing_exceeded(self) -> bool:
        return any(r.exceeded for r in self.receivers)

    @property
    def max_swing_bps(self) -> int:
        """The largest swing of a receiver the active version pays (rounded down)."""
        return max((r.swing_bps for r in self.receivers if not r.new_receiver), default=0)

    @property
    def largest(self) -> ReceiverSwing | None:
        """The receiver of the largest swing (a new receiver first), if any."""
        return self.receivers[0] if self.receivers else None


# ---- decoding a stored split cheaply ----------------------------------------------------------

class _OrderDoc(msgspec.Struct):
    channel: str
    tags: list[str]
    attributes: dict[str, str]
    parties: dict[str, str]
    coupons: list[dict[str, Any]]
    rule_set_name: str
    paid_time_ns: int | None
    channel_transaction_id: str = ""
    memo: str = ""


class _Totals(msgspec.Struct):
    currency_code: str
    amount_minor: int
    channel_fee_minor: int


class _Doc(msgspec.Struct):
    format: int
    order: _OrderDoc
    totals: _Totals
    legs: list[list[Any]]
    matched_rules: list[list[Any]]


class _Reading(msgspec.Struct):
    name: str
    subject: str
    value: int


_DECODE_DOC = msgspec.json.Decoder(_Doc).decode
_DECODE_READINGS = msgspec.json.Decoder(list[_Reading]).decode


class _Fields(NamedTuple):
    """Where the fields the backtest reads sit in a format's rows."""

    leg_account: int
    leg_ref: int
    leg_amount: int
    rule_set: int
    rule_level: int
    rule_name: int


def _fields(fmt: int) -> _Fields:
    legs, rules = detail.FORMATS[fmt]["legs"], detail.FORMATS[fmt]["matched_rules"]
    return _Fields(legs.index("account_id"), legs.index("external_ref"),
                   legs.index("amount_minor"), rules.index("rule_set_name"),
                   rules.index("level"), rules.index("rule_name"))


_FIELDS = {fmt: _fields(fmt) for fmt in detail.FORMATS}


def _order(order_id: str, doc: _Doc) -> Order:
    o, t = doc.order, doc.totals
    coupons = tuple(Coupon(c["coupon_id"], c["amount_minor"], CouponFunding(c["funding"]))
                    for c in o.coupons) if o.coupons else ()
    return Order(order_id, t.amount_minor, t.currency_code, o.channel, t.channel_fee_minor,
                 tuple(o.tags), o.attributes, o.parties, coupons, o.rule_set_name,
                 o.paid_time_ns, o.channel_transaction_id, o.memo)


def _rules_of(ev: Evaluation) -> tuple:
    return tuple((m.rule_set_name, m.level, m.rule_name) for m in ev.matched_rules)


# ---- the run ------------------------------------------------------------------------------

class _Run:
    """The state of one backtest."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, platform_id: int, active: Plan,
                 candidate: Plan, result: Backtest) -> None:
        self.db = db  # for the parties' accounts (not the cursor's connection)
        self.platform_id = platform_id
        self.active = active
        self.candidate = candidate
        self.result = result
        self.totals: dict[tuple[int, str], list[int]] = {}
        self.accounts: dict[str, AccountInfo] = {}
        self.missing: set[str] = set()  # refs looked up and not found

    async def accounts_for(self, docs: list[_Doc]) -> None:
        """Read the accounts the batch's parties name that are not known yet."""
        wanted = {ref for d in docs for ref in d.order.parties.values()}
        wanted -= self.accounts.keys()
        wanted -= self.missing
        if not wanted:
            return
        if len(self.accounts) + len(wanted) > BACKTEST_ACCOUNTS_MAX:
            self.accounts.clear()
            self.missing.clear()
        found = await accounts_by_ref(self.db, self.platform_id, wanted)
        self.accounts.update(found)
        self.missing |= wanted - found.keys()

    def counters(self, plan: Plan, order: Order,
                 readings: str) -> tuple[dict[str, int], frozenset[str]]:
        """The order's recorded values of the plan's counters, and the names of those it
        has no recorded value of (they read 0)."""
        if not plan.counters:
            return {}, frozenset()
        recorded = ({(r.name, r.subject): r.value for r in _DECODE_READINGS(readings)}
                    if readings != "[]" else {})
        values, missing = {}, set()
        for req in counter_requests(plan, order):
            value = recorded.get((req.counter_name, req.subject))
            if value is None:
                missing.add(req.counter_name)
            else:
                values[req.counter_name] = value
        return values, frozenset(missing)

    def evaluate(self, plan: Plan, order: Order, readings: str) -> Evaluation:
        values, missing = self.counters(plan, order, readings)
        ev = evaluate(plan, order, values, accounts=self.accounts)
        if missing and plan is self.candidate and any(
                use.counter_name in missing for use in ev.counter_values):
            self.result.counter_unrecorded_count += 1
        return ev

    def add(self, legs, index: int, account_at: int, ref_at: int, amount_at: int) -> None:
        totals = self.totals
        for leg in legs:
            account_id = leg[account_at]
            if account_id:
                key = (account_id, leg[ref_at])
                kept = totals.get(key)
                if kept is None:
                    kept = totals[key] = [0, 0]
                kept[index] += leg[amount_at]

    def one(self, order_id: str, version: int, text: str, readings: str, doc: _Doc) -> None:
        """Backtest one recorded order."""
        r = self.result
        r.order_count += 1
        order = _order(order_id, doc)
        active_ev: Evaluation | None = None
        if version == r.active_version:
            f = _FIELDS[doc.format]
            self.add(doc.legs, 0, f.leg_account, f.leg_ref, f.leg_amount)
            active_rules = tuple((m[f.rule_set], m[f.rule_level], m[f.rule_name])
                                 for m in doc.matched_rules)
        else:
            try:
                active_ev = self.evaluate(self.active, order, readings)
            except ClearingError:
                r.active_refused_count += 1
                active_rules = None
            else:
                self.add(active_ev.legs, 0, 2, 3, 5)
                active_rules = _rules_of(active_ev)
        try:
            ev = self.evaluate(self.candidate, order, readings)
        except ClearingError as exc:
            r.candidate_refused_count += 1
            r.refused_by_reason[exc.reason] = r.refused_by_reason.get(exc.reason, 0) + 1
            if len(r.refused) < BACKTEST_SAMPLE_MAX:
                r.refused.append(RefusedOrder(order_id, exc))
            return
        r.candidate_split_count += 1
        self.add(ev.legs, 1, 2, 3, 5)
        if active_rules is not None and active_rules != _rules_of(ev):
            r.changed_rule_count += 1
            if len(r.changed) < BACKTEST_SAMPLE_MAX:
                if active_ev is None:
                    active_ev = detail.decode_split(text, order_id=order_id)[1]
                r.changed.append(ChangedOrder(order, active_ev, ev))

    def finish(self) -> Backtest:
        r = self.result
        r.active_total_minor = sum(t[0] for t in self.totals.values())
        r.candidate_total_minor = sum(t[1] for t in self.totals.values())
        r.receivers = receiver_swings(
            ((account_id, ref, a, c) for (account_id, ref), (a, c) in self.totals.items()),
            r.active_total_minor, r.candidate_total_minor, r.threshold_bps)
        return r


async def run(pool: asyncpg.Pool, platform_id: int, active: Plan, candidate: Plan, *,
              start_ns: int, end_ns: int, order_count_max: int = BACKTEST_ORDERS_MAX,
              threshold_bps: int = RATIO_SWING_THRESHOLD_BPS,
              fetch_rows: int = BACKTEST_FETCH_ROWS) -> Backtest:
    """Backtest `candidate` against `active` (two versions of one rule set) on the rule
    set's orders paid in [start_ns, end_ns), the most recent `order_count_max` first.

    One connection of `pool` holds the read-only transaction and its cursor; the next
    batch is fetched while this one is evaluated (PostgreSQL reads as Python works);
    parties' accounts are read through another connection of the pool."""
    invariant(active.rule_set_name == candidate.rule_set_name,
              "a backtest compares two versions of one rule set")
    invariant(1 <= order_count_max <= BACKTEST_ORDERS_MAX and fetch_rows >= 1,
              f"order_count_max {order_count_max}, fetch_rows {fetch_rows}")
    result = Backtest(candidate.rule_set_name, active.rule_set_version,
                      candidate.rule_set_version, candidate.currency_code, start_ns, end_ns,
                      threshold_bps)
    state = _Run(pool, platform_id, active, candidate, result)
    fetched = 0
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = await conn.cursor(SQL_ORDERS, platform_id, candidate.rule_set_name,
                                   start_ns, end_ns, order_count_max + 1)
        pending: asyncio.Future | None = asyncio.ensure_future(cursor.fetch(fetch_rows))
        try:
            while pending is not None:
                rows = await pending
                pending = None
                fetched += len(rows)
                if len(rows) == fetch_rows:  # maybe more: read them meanwhile
                    pending = asyncio.ensure_future(cursor.fetch(fetch_rows))
                    await asyncio.sleep(0)  # the FETCH goes out now
                take = rows[:order_count_max - result.order_count]
                if take:
                    await _batch(state, take)
        finally:
            if pending is not None:  # a failure: let the statement finish, then unwind
                await asyncio.gather(pending, return_exceptions=True)
    result.truncated = fetched > order_count_max
    return state.finish()


async def _batch(state: _Run, rows: list) -> None:
    docs = [_DECODE_DOC(row["detail"]) for row in rows]
    await state.accounts_for(docs)
    for i, (row, doc) in enumerate(zip(rows, docs)):
        state.one(row["order_id"], row["rule_set_version"], row["detail"], row["readings"], doc)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)


async def read_only(conn: asyncpg.Connection, platform_id: int, rule_set_name: str, *,
                    start_ns: int, end_ns: int, order_count_max: int = BACKTEST_ORDERS_MAX,
                    fetch_rows: int = BACKTEST_FETCH_ROWS) -> int:
    """The bare read of a backtest's rows (the same statement and cursor, nothing
    decoded): the baseline `bench/backtest.py` prints beside the backtest."""
    count = 0
    async with conn.transaction(readonly=True):
        cursor = await conn.cursor(SQL_ORDERS, platform_id, rule_set_name, start_ns, end_ns,
                                   order_count_max + 1)
        while rows := await cursor.fetch(fetch_rows):
            count += len(rows)
    return min(count, order_count_max)


async def recorded_and_again(conn: asyncpg.Connection, platform_id: int, plan: Plan, *,
                             start_ns: int, end_ns: int) -> list[tuple[Evaluation, Evaluation]]:
    """Each order of the period recorded under `plan`'s version: (its recorded evaluation,
    `plan`'s evaluation of it again) by the backtest's own reading and decoding: the check
    that a backtest reproduces recorded legs (`reproduces`)."""
    state = _Run(conn, platform_id, plan, plan, Backtest(
        plan.rule_set_name, plan.rule_set_version, plan.rule_set_version, plan.currency_code,
        start_ns, end_ns, RATIO_SWING_THRESHOLD_BPS))
    out = []
    async with conn.transaction(readonly=True):
        rows = await conn.fetch(SQL_ORDERS, platform_id, plan.rule_set_name, start_ns, end_ns,
                                BACKTEST_ORDERS_MAX)
        rows = [r for r in rows if r["rule_set_version"] == plan.rule_set_version]
        docs = [_DECODE_DOC(r["detail"]) for r in rows]
        await state.accounts_for(docs)
        for row, doc in zip(rows, docs):
            recorded = detail.decode_split(row["detail"], order_id=row["order_id"])[1]
            again = state.evaluate(plan, _order(row["order_id"], doc), row["readings"])
            out.append((recorded, again))
    return out


def reproduces(recorded: Evaluation, again: Evaluation) -> bool:
    """Whether an evaluation gives a recorded one's legs: every leg's receiver, debit
    account, kind, amount, hold and rule (exact integers)."""
    def key(ev: Evaluation) -> list[tuple]:
        return [(leg.kind, leg.account_id, leg.external_ref, leg.debit_account_id,
                 leg.amount_minor, leg.rule_set_name, leg.rule_name, leg.label, leg.level,
                 leg.ratio_bps) for leg in ev.legs]
    return key(recorded) == key(again)
