"""The bank simulator: the `BankConnector` (`clearing.payout.bank`) this project ships for
the dev stack and the tests, with fault injection. Never the bank of a production server
unless chosen (CLEARING_BANK_CONNECTOR=simulator).

Its books live in PostgreSQL, in a schema of its own, `banksim`, which `start()` creates if
missing (under a transaction-level advisory lock, so several processes may start at once).
All server processes on one database therefore share one bank, and tests read what it paid
with `books()`. The books never hold a full account number: only its masked form
(6225****1234); nothing here logs one either.

How an order fares:
1. The call is in transit for `latency_ms` (uniform jitter: 0.5x..1.5x).
2. A timeout fault (probability `timeout_rate`, per call) is one of two kinds:
   - NOT_REACHED (share 1 - `lost_answer_share`): nothing is recorded; query answers
     NOT_FOUND, and the key may be sent again, to be processed normally;
   - ANSWER_LOST (share `lost_answer_share`): the order is recorded (and will be paid if its
     fate is success; its callbacks are sent), but the caller gets no answer.
   Both raise `BankTimeout` after `timeout_ms`. A query times out with the same probability
   (nothing changes at the bank).
3. The bank checks the order: an amount outside 1..the bank's per-transfer limit of its
   currency (`BANK_TRANSFER_MAX_MINOR`) -> FAILED AMOUNT_ABOVE_BANK_LIMIT (or
   INVALID_AMOUNT below 1); a currency not in that table -> FAILED CURRENCY_NOT_SUPPORTED;
   an empty account number or holder -> FAILED INVALID_ACCOUNT. Rejected orders are recorded
   FAILED too (nothing paid), so query tells the truth about them.
4. Otherwise its fate is decided once, by the key (`decide`, a function of the seed and the
   key only): FAILED with probability `failure_rate` (ACCOUNT_FROZEN_AT_BANK, BANK_REJECTED
   or ACCOUNT_CLOSED), else SUCCEEDED; and how the result is told:
   - with probability `query_only_rate`: PROCESSING now, the result only by query (no callback
     ever), once `callback_delay_ms` has passed on the injected clock (`completes_at`);
   - with probability `processing_rate`: PROCESSING now, the result by callback after
     `callback_delay_ms` (jittered; the books turn final just before it is delivered) or by
     query once `completes_at` has passed, whichever comes first;
   - otherwise the final result at once (and a callback of it after `callback_delay_ms`).
   With probability `duplicate_callback_rate` a callback is delivered twice.
5. The same key again (from any process) returns what the books say now and pays nothing
   more; with a different amount, currency, account or holder -> FAILED
   IDEMPOTENCY_KEY_MISMATCH, and the recorded order is left as it was.

An order is paid when its state in the books is SUCCEEDED (`BookEntry.paid`); an order
still PROCESSING will end as its `final_state`.

Randomness: the fate of a key comes from `random.Random(f"{seed}:{key}")`; the per-call draws
(timeouts and latency) from one `random.Random(seed)` per simulator, three draws per submit
and two per query, in call order (`CallFaults`), so sequential runs with a seed are exactly
reproducible. Callback delivery is bounded: at most `callbacks_max` orders have callbacks
pending per simulator; beyond that a callback is dropped (logged) and the result stays
available by query, as with a real bank whose notification is lost. Handler errors are
logged, never raised into the simulator.

Settings: `clearing.config.BankSimSettings` (CLEARING_BANK_SIM_*, listed in the configuration
table of docs/operations.md). The simulator runs only when CLEARING_BANK_CONNECTOR=simulator, or
under `clearing serve --dev` (`make run`) when no connector is set.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import logging
import random
from dataclasses import dataclass
from typing import Mapping

import asyncpg

from clearing.clock import Clock
from clearing.config import BankSimSettings
from clearing.payout.bank import (BankConnector, BankOrder, BankResult, BankState,
                                  BankTimeout, ResultHandler, mask)

__all__ = ["BankSimSettings", "BankSimulator", "BookEntry", "CallFaults", "Fate", "Telling",
           "TimeoutKind", "decide", "BANK_TRANSFER_MAX_MINOR", "RANDOM_FAILURE_CODES"]

log = logging.getLogger("clearing.dev.bank_sim")

# The bank's limit per transfer, in minor units, per currency it supports.
BANK_TRANSFER_MAX_MINOR: Mapping[str, int] = {
    "CNY": 50_000_000,
    "HKD": 50_000_000,
    "USD": 50_000_000,
    "EUR": 50_000_000,
}
IDEMPOTENCY_KEY_LEN_MAX = 128
# Fields of an order kept in the books are cut to these lengths.
TEXT_LEN_MAX = 256
# Failure codes the simulator's random failures use.
RANDOM_FAILURE_CODES = ("ACCOUNT_FROZEN_AT_BANK", "BANK_REJECTED", "ACCOUNT_CLOSED")
FAILURE_MESSAGES: Mapping[str, str] = {
    "ACCOUNT_FROZEN_AT_BANK": "the receiving account is frozen at the bank",
    "BANK_REJECTED": "the bank rejected the transfer",
    "ACCOUNT_CLOSED": "the receiving account is closed",
    "AMOUNT_ABOVE_BANK_LIMIT": "the amount is above the bank's limit per transfer",
    "INVALID_AMOUNT": "the amount must be at least 1 minor unit",
    "CURRENCY_NOT_SUPPORTED": "the bank does not transfer this currency",
    "INVALID_ACCOUNT": "the account number or holder name is missing",
    "IDEMPOTENCY_KEY_MISMATCH": "this key was used for a different order; nothing was paid",
}
# books() returns at most this many entries.
BOOKS_MAX = 100_000
# Any fixed number: the advisory lock that serialises creating the banksim schema.
_SCHEMA_LOCK_KEY = 0x62616E6B73696D  # "banksim"

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS banksim;
CREATE TABLE IF NOT EXISTS banksim.transfers (
    idempotency_key      text PRIMARY KEY,
    amount_minor         bigint NOT NULL,
    currency_code        text NOT NULL,
    bank_code            text NOT NULL,
    masked_account       text NOT NULL,
    holder_name          text NOT NULL,
    account_type         integer NOT NULL,
    memo                 text NOT NULL,
    state                smallint NOT NULL CHECK (state BETWEEN 1 AND 3),  -- as told so far
    final_state          smallint NOT NULL CHECK (final_state BETWEEN 2 AND 3),
    bank_reference       text NOT NULL,
    failure_code         text NOT NULL,
    failure_message      text NOT NULL,
    created_at           timestamptz NOT NULL,
    completes_at         timestamptz NOT NULL,
    result_only_by_query boolean NOT NULL
);
"""


class TimeoutKind(enum.IntEnum):
    NONE = 0
    NOT_REACHED = 1   # the request never reached the bank: nothing recorded
    ANSWER_LOST = 2   # recorded (possibly paid), the answer lost


class Telling(enum.IntEnum):
    """How the bank tells the result of an order it accepted."""

    AT_ONCE = 1       # final result in the answer (and a callback of it)
    CALLBACK = 2      # PROCESSING, then the result by callback (or query once complete)
    QUERY_ONLY = 3    # PROCESSING, the result only by query once complete; no callback


@dataclass(frozen=True)
class Fate:
    """What the bank does with an order it accepts: a function of the seed and the key."""

    final_state: BankState
    failure_code: str
    telling: Telling
    callbacks: int          # 0, 1 or 2
    delay_ms: int           # callback delay, and the time until completion


def decide(settings: BankSimSettings, key: str) -> Fate:
    """The fate of the key's order, the same in every process and every run with a seed."""
    rng = random.Random(f"{settings.seed}:{key}")
    u_fail, u_code, u_tell, u_dup, u_delay = (rng.random() for _ in range(5))
    failed = u_fail < settings.failure_rate
    code = RANDOM_FAILURE_CODES[int(u_code * len(RANDOM_FAILURE_CODES))] if failed else ""
    if u_tell < settings.query_only_rate:
        telling = Telling.QUERY_ONLY
    elif u_tell < settings.query_only_rate + settings.processing_rate:
        telling = Telling.CALLBACK
    else:
        telling = Telling.AT_ONCE
    callbacks = 0 if telling is Telling.QUERY_ONLY else (
        2 if u_dup < settings.duplicate_callback_rate else 1)
    return Fate(BankState.FAILED if failed else BankState.SUCCEEDED, code, telling, callbacks,
                _jitter(settings.callback_delay_ms, u_delay))


def _jitter(mean_ms: int, u: float) -> int:
    """A delay uniformly in 0.5x..1.5x the mean (integer ms)."""
    return int(mean_ms * (0.5 + u))


@dataclass(frozen=True)
class CallFate:
    timeout: TimeoutKind
    latency_ms: int


class CallFaults:
    """The per-call draws of one simulator: a seeded stream, consumed in call order."""

    def __init__(self, settings: BankSimSettings) -> None:
        self._settings = settings
        self._rng = random.Random(settings.seed)

    def submit(self) -> CallFate:
        s, r = self._settings, self._rng
        u_timeout, u_kind, u_latency = r.random(), r.random(), r.random()
        kind = TimeoutKind.NONE
        if u_timeout < s.timeout_rate:
            kind = (TimeoutKind.ANSWER_LOST if u_kind < s.lost_answer_share
                    else TimeoutKind.NOT_REACHED)
        return CallFate(kind, _jitter(s.latency_ms, u_latency))

    def query(self) -> CallFate:
        s, r = self._settings, self._rng
        u_timeout, u_latency = r.random(), r.random()
        kind = TimeoutKind.ANSWER_LOST if u_timeout < s.timeout_rate else TimeoutKind.NONE
        return CallFate(kind, _jitter(s.latency_ms, u_latency))


@dataclass(frozen=True)
class BookEntry:
    """One order in the bank's books. `state` is the state as of the clock's now (a
    PROCESSING order past its completes_at is final); `paid` when SUCCEEDED."""

    idempotency_key: str
    amount_minor: int
    currency_code: str
    bank_code: str
    masked_account: str
    holder_name: str
    state: BankState
    final_state: BankState
    bank_reference: str
    failure_code: str
    created_at: dt.datetime
    completes_at: dt.datetime
    result_only_by_query: bool

    @property
    def paid(self) -> bool:
        return self.state is BankState.SUCCEEDED


def _reference(key: str) -> str:
    return "SIM" + hashlib.sha256(key.encode()).hexdigest()[:20].upper()


def _check(order: BankOrder) -> str:
    """The failure code of an order the bank rejects outright, or ""."""
    limit = BANK_TRANSFER_MAX_MINOR.get(order.currency_code)
    if limit is None:
        return "CURRENCY_NOT_SUPPORTED"
    if order.amount_minor < 1:
        return "INVALID_AMOUNT"
    if order.amount_minor > limit:
        return "AMOUNT_ABOVE_BANK_LIMIT"
    if not order.account_number.strip() or not order.holder_name.strip():
        return "INVALID_ACCOUNT"
    return ""


_COLUMNS = ("idempotency_key, amount_minor, currency_code, bank_code, masked_account, "
            "holder_name, state, final_state, bank_reference, failure_code, failure_message, "
            "created_at, completes_at, result_only_by_query")


class BankSimulator(BankConnector):
    """The simulated bank (semantics: the module docstring). One per process; its books are
    shared by every process on the database."""

    def __init__(self, pool: asyncpg.Pool, settings: BankSimSettings, clock: Clock) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._faults = CallFaults(settings)
        self._handler: ResultHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    @property
    def settings(self) -> BankSimSettings:
        return self._settings

    @property
    def pending_callbacks(self) -> int:
        """Orders whose callbacks are not all delivered yet (at most callbacks_max)."""
        return len(self._tasks)

    async def start(self) -> None:
        """Create the banksim schema if missing (serialised across processes)."""
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
                await conn.execute(_SCHEMA)
        self._started = True
        self._closed = False

    async def close(self) -> None:
        """Cancel the callbacks not delivered yet; later calls raise BankTimeout."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def on_result(self, handler: ResultHandler) -> None:
        self._handler = handler

    def _usable(self) -> None:
        if self._closed or not self._started:
            raise BankTimeout("the bank simulator is not running")

    async def submit(self, order: BankOrder) -> BankResult:
        self._usable()
        key = order.idempotency_key
        if not key or len(key) > IDEMPOTENCY_KEY_LEN_MAX:
            raise ValueError(f"idempotency_key must have 1..{IDEMPOTENCY_KEY_LEN_MAX} characters")
        call = self._faults.submit()
        await _sleep_ms(call.latency_ms)
        if call.timeout is TimeoutKind.NOT_REACHED:
            return await self._time_out("submit never reached the bank", key)
        result = await self._record(order)
        if call.timeout is TimeoutKind.ANSWER_LOST:
            return await self._time_out("submit answer lost", key)
        return result

    async def query(self, idempotency_key: str) -> BankResult:
        self._usable()
        call = self._faults.query()
        await _sleep_ms(call.latency_ms)
        if call.timeout is not TimeoutKind.NONE:
            return await self._time_out("query answer lost", idempotency_key)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM banksim.transfers WHERE idempotency_key = $1",
                idempotency_key)
        if row is None:
            return BankResult(idempotency_key, BankState.NOT_FOUND)
        return self._result(row)

    async def books(self, key_prefix: str = "", limit: int = BOOKS_MAX) -> list[BookEntry]:
        """The bank's own record (keys starting with key_prefix), oldest first, at most
        `limit` (1..BOOKS_MAX) entries."""
        if not 1 <= limit <= BOOKS_MAX:
            raise ValueError(f"limit must be in 1..{BOOKS_MAX}")
        pattern = key_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM banksim.transfers WHERE idempotency_key LIKE $1 "
                "ORDER BY created_at, idempotency_key LIMIT $2", pattern + "%", limit)
        return [BookEntry(
            idempotency_key=r["idempotency_key"], amount_minor=r["amount_minor"],
            currency_code=r["currency_code"], bank_code=r["bank_code"],
            masked_account=r["masked_account"], holder_name=r["holder_name"],
            state=self._state(r), final_state=BankState(r["final_state"]),
            bank_reference=r["bank_reference"], failure_code=r["failure_code"],
            created_at=r["created_at"], completes_at=r["completes_at"],
            result_only_by_query=r["result_only_by_query"]) for r in rows]

    # -- internals ------------------------------------------------------------------------

    async def _time_out(self, what: str, key: str) -> BankResult:
        log.info("bank simulator timeout: %s", what, extra={"idempotency_key": key})
        await _sleep_ms(self._settings.timeout_ms)
        raise BankTimeout(f"{what} ({key})")

    def _state(self, row: asyncpg.Record) -> BankState:
        """The state as of now: PROCESSING past completes_at has become final."""
        state = BankState(row["state"])
        if state is BankState.PROCESSING and row["completes_at"] <= self._clock.now():
            return BankState(row["final_state"])
        return state

    def _result(self, row: asyncpg.Record) -> BankResult:
        state = self._state(row)
        failed = state is BankState.FAILED
        return BankResult(row["idempotency_key"], state, row["bank_reference"],
                          row["failure_code"] if failed else "",
                          row["failure_message"] if failed else "")

    async def _record(self, order: BankOrder) -> BankResult:
        """Record the order once (by key) and answer; schedule its callbacks if new."""
        key = order.idempotency_key
        now = self._clock.now()
        rejected = _check(order)
        fate = decide(self._settings, key)
        if rejected:
            fate = Fate(BankState.FAILED, rejected, Telling.AT_ONCE, fate.callbacks,
                        fate.delay_ms)
        state = fate.final_state if fate.telling is Telling.AT_ONCE else BankState.PROCESSING
        masked = mask(order.account_number)
        holder = order.holder_name[:TEXT_LEN_MAX]
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO banksim.transfers ({_COLUMNS}, account_type, memo) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) "
                f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_COLUMNS}",
                key, order.amount_minor, order.currency_code, order.bank_code[:TEXT_LEN_MAX],
                masked, holder, int(state), int(fate.final_state), _reference(key),
                fate.failure_code, FAILURE_MESSAGES.get(fate.failure_code, ""), now,
                now + dt.timedelta(milliseconds=fate.delay_ms),
                fate.telling is Telling.QUERY_ONLY, order.account_type,
                order.memo[:TEXT_LEN_MAX])
            if row is None:
                existing = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM banksim.transfers WHERE idempotency_key = $1", key)
        if row is None:
            if existing is None:  # not possible: rows are never deleted
                raise BankTimeout(f"the bank lost the order ({key})")
            if (existing["amount_minor"], existing["currency_code"],
                    existing["masked_account"], existing["holder_name"]) != (
                    order.amount_minor, order.currency_code, masked, holder):
                log.warning("bank simulator: idempotency key reused for another order",
                            extra={"idempotency_key": key})
                code = "IDEMPOTENCY_KEY_MISMATCH"
                return BankResult(key, BankState.FAILED, "", code, FAILURE_MESSAGES[code])
            return self._result(existing)
        self._schedule(key, fate)
        return self._result(row)

    def _schedule(self, key: str, fate: Fate) -> None:
        if fate.callbacks == 0:
            return
        if len(self._tasks) >= self._settings.callbacks_max:
            log.warning("bank simulator: callbacks_max reached, callback dropped",
                        extra={"idempotency_key": key})
            return
        task = asyncio.get_running_loop().create_task(self._deliver(key, fate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, key: str, fate: Fate) -> None:
        """After the delay: turn the order final in the books, then tell the handler (twice
        for a duplicate), re-reading the books so a callback never contradicts a query."""
        for n in range(fate.callbacks):
            await _sleep_ms(fate.delay_ms)
            try:
                async with self._pool.acquire() as conn:
                    row = await conn.fetchrow(
                        "UPDATE banksim.transfers SET state = final_state "
                        f"WHERE idempotency_key = $1 RETURNING {_COLUMNS}", key)
            except Exception:  # a pool closing under it, the database away: the callback is lost
                log.exception("bank simulator: callback could not read the books",
                              extra={"idempotency_key": key})
                return
            handler = self._handler
            if row is None or handler is None:
                log.info("bank simulator: callback without a handler dropped",
                         extra={"idempotency_key": key})
                return
            try:
                await handler(self._result(row))
            except Exception:
                log.exception("bank simulator: result handler failed",
                              extra={"idempotency_key": key, "delivery": n + 1})


async def _sleep_ms(ms: int) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)
