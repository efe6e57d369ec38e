"""The group-commit ledger writer.

Callers `submit()` postings; one task collects them into batches and commits each batch
in ONE PostgreSQL transaction:

1. idempotency (`clearing.idempotency`): request ids already recorded are answered
   their first response (`Replay`, or the records of a posting without `respond`) or
   their recorded failure;
2. the accounts touched are locked (`FOR UPDATE`, in id order: no deadlocks between
   processes), and open pending transfers that are posted or voided;
3. every posting is applied in memory, in arrival order: a posting that fails its own
   checks (insufficient funds, a frozen or closed account on either side:
   `clearing.ledger.status`, wrong currency) fails alone and leaves no trace but its
   idempotency record (none at all for a failure that is not a first response by
   `idempotency.recorded`, or whose reason is in the posting's `unrecorded_reasons`); the
   others go on; a committed posting's `respond` makes its first response, in memory;
4. the journal rows go in with COPY, each touched account gets one aggregated UPDATE,
   the idempotency records (with the first responses) one INSERT, and the batch is
   hash-chained to the previous one;
5. COMMIT (synchronous), and only then are the callers answered.

A batch is flushed `flush_ms_max` after its first posting arrived (what arrived meanwhile
joins it), or at once when `batch_size_max` postings are already waiting. While one batch
commits, the next one fills, so under load batches grow by themselves. The queue holds at most `queue_max` postings; beyond that
`submit()` raises ResourceExhausted at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol, Sequence

import asyncpg

from clearing import idempotency, metrics
from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import (ClearingError, FailedPrecondition, InvalidArgument,
                             InvariantViolation, NotFound, ResourceExhausted, Unavailable,
                             FieldViolation, error_from_record, invariant)
from clearing.ledger import journal, status
from clearing.ledger.model import Claim, Mode, PendingState, Posting, Replay, TransferRecord
from clearing.limits import BATCH_SPAN, INT64_MAX

log = logging.getLogger("clearing.ledger.writer")

# How often one batch is tried again after a transient database failure.
BATCH_ATTEMPTS_MAX = 4
BATCH_RETRY_BACKOFF_S = 0.05


class BatchSink(Protocol):
    """Writes the attachments of a batch's committed postings, in the batch's transaction,
    in one statement (no round trip per posting). It must not fail on business rules:
    those are checked before a posting is submitted."""

    async def write(self, conn: asyncpg.Connection,
                    committed: list[tuple[Posting, list[TransferRecord]]]) -> None: ...


class _RaceLost(Exception):
    """Another process recorded one of this batch's request ids first: redo the batch."""


class _Group:
    """One `submit_many` call: its postings' outcomes, in order, and the one future its
    caller waits on (set once every posting is answered)."""

    __slots__ = ("future", "outcomes", "left")

    def __init__(self, future: asyncio.Future, size: int) -> None:
        self.future = future
        self.outcomes: list[object] = [None] * size
        self.left = size

    def answer(self, index: int, outcome: object) -> None:
        self.outcomes[index] = outcome
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(self.outcomes)


class _Slot:
    """A posting's place in a `_Group`; answered like a future (see `_resolve`)."""

    __slots__ = ("group", "index", "answered")

    def __init__(self, group: _Group, index: int) -> None:
        self.group, self.index, self.answered = group, index, False

    def done(self) -> bool:
        return self.answered or self.group.future.done()

    def set_result(self, outcome: object) -> None:
        invariant(not self.answered, "a posting of a group answered twice")
        self.answered = True
        self.group.answer(self.index, outcome)

    def set_exception(self, exc: BaseException) -> None:
        self.set_result(exc)


@dataclass(slots=True)
class _Item:
    posting: Posting
    future: asyncio.Future | _Slot


class _Acct:
    """An account's state inside one batch (locked for the transaction)."""

    __slots__ = ("account_id", "platform_id", "currency", "status", "allow_negative",
                 "dp", "cp", "dpend", "cpend", "frozen", "dirty")

    def __init__(self, row: asyncpg.Record) -> None:
        (self.account_id, self.platform_id, self.currency, self.status,
         self.allow_negative, self.dp, self.cp, self.dpend, self.cpend,
         self.frozen) = row
        self.dirty = False

    def snapshot(self) -> tuple[int, int, int, int, bool]:
        return self.dp, self.cp, self.dpend, self.cpend, self.dirty

    def restore(self, snap: tuple[int, int, int, int, bool]) -> None:
        self.dp, self.cp, self.dpend, self.cpend, self.dirty = snap

    def spendable(self) -> int:
        return self.cp - self.dp - self.dpend - self.frozen


class _Pending:
    """An open pending transfer's state inside one batch."""

    __slots__ = ("transfer_id", "platform_id", "debit", "credit", "currency", "remaining",
                 "state", "dirty")

    def __init__(self, row: asyncpg.Record) -> None:
        (self.transfer_id, self.platform_id, self.debit, self.credit, self.currency,
         self.remaining, self.state) = row
        self.dirty = False


# One primary-key probe per request id. The LATERAL ... LIMIT 1 keeps it a nested loop of
# index lookups under any (cached, generic) plan: a plain join with unnest() may get a plan
# that reads the whole idempotency table on every batch.
_SQL_PRIOR = """
SELECT r.platform_id, r.request_id, r.method, r.payload_hash, r.ok, r.result_ids,
       r.error_code, r.error_reason, r.error_message, r.response, r.error
FROM unnest($1::bigint[], $2::text[]) AS k(platform_id, request_id)
CROSS JOIN LATERAL (
  SELECT * FROM requests q
  WHERE q.platform_id = k.platform_id AND q.request_id = k.request_id LIMIT 1) AS r
"""
_SQL_PENDING_PEEK = f"""
SELECT transfer_id, debit_account_id, credit_account_id FROM transfers
WHERE transfer_id = ANY($1::bigint[]) AND mode = {Mode.PENDING:d}
"""
_SQL_LOCK_ACCOUNTS = """
SELECT account_id, platform_id, currency_code, status, allow_negative,
       debits_posted, credits_posted, debits_pending, credits_pending, frozen
FROM accounts WHERE account_id = ANY($1::bigint[]) ORDER BY account_id FOR UPDATE
"""
_SQL_LOCK_PENDING = f"""
SELECT transfer_id, platform_id, debit_account_id, credit_account_id, currency_code,
       pending_remaining, pending_state
FROM transfers WHERE transfer_id = ANY($1::bigint[]) AND mode = {Mode.PENDING:d}
ORDER BY transfer_id FOR UPDATE
"""
# Every write of a batch in ONE statement (one round trip): the journal rows, the
# aggregated balances, the pending transfers acted on, the idempotency records, and the
# hash-chain link. Data-modifying CTEs cannot see each other's rows, so a pending transfer
# created in this batch is inserted with its final remainder instead of being updated.
# Integer and boolean columns arrive as array literals (`int_array`, `$n::text::bigint[]`).
_SQL_WRITE = """
WITH t AS (
  INSERT INTO transfers (transfer_id, platform_id, batch_id, request_id, debit_account_id,
                         credit_account_id, amount, currency_code, mode, pending_id,
                         pending_remaining, pending_state, memo, created_at)
  SELECT u.id, u.p, $1, u.r, u.d, u.c, u.a, u.cur, u.m, u.pid, u.rem, u.st, u.memo, $2
  FROM unnest($3::text::bigint[], $4::text::bigint[], $5::text[], $6::text::bigint[],
              $7::text::bigint[], $8::text::bigint[], $9::text[], $10::text::smallint[],
              $11::text::bigint[], $12::text::bigint[], $13::text::smallint[], $14::text[])
       AS u(id, p, r, d, c, a, cur, m, pid, rem, st, memo)
  RETURNING 1
), acc AS (
  UPDATE accounts AS a
  SET debits_posted = u.dp, credits_posted = u.cp,
      debits_pending = u.dpend, credits_pending = u.cpend
  FROM unnest($15::text::bigint[], $16::text::bigint[], $17::text::bigint[],
              $18::text::bigint[], $19::text::bigint[])
       AS u(account_id, dp, cp, dpend, cpend)
  WHERE a.account_id = u.account_id
  RETURNING 1
), pend AS (
  UPDATE transfers AS x SET pending_remaining = u.remaining, pending_state = u.state
  FROM unnest($20::text::bigint[], $21::text::bigint[], $22::text::smallint[])
       AS u(transfer_id, remaining, state)
  WHERE x.transfer_id = u.transfer_id
  RETURNING 1
), req AS (
  INSERT INTO requests (platform_id, request_id, method, payload_hash, ok, result_ids,
                        error_code, error_reason, error_message, response, error)
  SELECT u.p, u.r, u.m, u.h, u.ok, string_to_array(u.ids, ',')::bigint[], u.c, u.rs, u.msg,
         u.resp, u.err
  FROM unnest($23::text::bigint[], $24::text[], $25::text[], $26::bytea[], $27::text::bool[],
              $28::text[], $29::text[], $30::text[], $31::text[], $34::bytea[], $35::text[])
       AS u(p, r, m, h, ok, ids, c, rs, msg, resp, err)
  ON CONFLICT DO NOTHING
  RETURNING 1
), head AS (
  UPDATE journal_head SET seq = seq + 1, hash = sha256(hash || $32::bytea)
  WHERE $33::integer > 0
  RETURNING seq, hash
), link AS (
  INSERT INTO journal_batches (seq, batch_id, transfer_count, rows_digest, hash)
  SELECT seq, $1, $33, $32, hash FROM head
  RETURNING 1
)
SELECT (SELECT count(*) FROM req) AS recorded, (SELECT count(*) FROM t) AS journal,
       (SELECT count(*) FROM acc) AS balances, (SELECT count(*) FROM pend) AS pendings,
       (SELECT count(*) FROM link) AS links
"""
_SQL_REPLAY_TRANSFERS = f"""
SELECT {journal.TRANSFER_COLUMNS} FROM transfers
WHERE transfer_id = ANY($1::bigint[]) ORDER BY transfer_id
"""


class LedgerWriter:
    """Commits postings in groups; see the module docstring."""

    def __init__(self, pool: asyncpg.Pool, settings: WriterSettings, clock: Clock,
                 sinks: Mapping[str, BatchSink] | None = None) -> None:
        invariant(settings.batch_size_max >= 1, "batch_size_max must be >= 1")
        self._pool = pool
        self._sinks = dict(sinks or {})
        self._settings = settings
        self._clock = clock
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=settings.queue_max)
        self._task: asyncio.Task | None = None
        self._accepting = False
        self._conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        invariant(self._task is None, "writer started twice")
        self._accepting = True
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="ledger-writer")

    async def drain_and_stop(self) -> None:
        """Refuse new postings, commit everything queued, then stop."""
        self._accepting = False
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        await self._drop_connection()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def has_room(self, postings: int) -> bool:
        """Whether the queue can take `postings` more now (a hint: others submit too)."""
        return self._accepting and self._queue.qsize() + postings <= self._settings.queue_max

    # ---- submitting -------------------------------------------------------------------

    async def submit(self, posting: Posting) -> list[TransferRecord]:
        """Commit a posting; answers after its batch is committed. Raises ClearingError."""
        self._check(posting)
        future = self._loop.create_future()
        try:
            self._queue.put_nowait(_Item(posting, future))
        except asyncio.QueueFull:
            raise self._full() from None
        return await future  # a cancelled caller cancels only its wait; the posting stands

    async def submit_many(self, postings: Sequence[Posting]) -> list[object]:
        """Commit postings each as if submitted alone (each succeeds or fails on its own, in
        the order given), with one wait for them all: answers, in order, each posting's
        committed records or the exception `submit` would have raised for it, once every
        one is committed or refused. All or none are queued: ResourceExhausted if the queue
        cannot take them all now."""
        if not postings:
            return []
        for posting in postings:
            self._check(posting)
        if self._queue.qsize() + len(postings) > self._settings.queue_max:
            raise self._full()
        group = _Group(self._loop.create_future(), len(postings))
        for index, posting in enumerate(postings):  # no await between: room was checked
            self._queue.put_nowait(_Item(posting, _Slot(group, index)))
        return await group.future  # a cancelled caller cancels only its wait

    def _check(self, posting: Posting) -> None:
        if not self._accepting:
            raise Unavailable("the ledger writer is shutting down; retry on another server",
                              reason="SHUTTING_DOWN")
        invariant(0 < len(posting.legs) <= BATCH_SPAN, "posting has no legs or too many")
        invariant(not posting.sink or posting.sink in self._sinks,
                  f"no sink named {posting.sink!r}")
        invariant(all(c.key.startswith(Claim.PREFIX) for c in posting.claims),
                  "claim keys are made with Claim.of")
        # refused here, this bug fails its own posting, not the batch it would share
        invariant(all(leg.debit_account_id != leg.credit_account_id for leg in posting.legs
                      if leg.mode in (Mode.IMMEDIATE, Mode.PENDING)),
                  "a leg debits and credits the same account")

    def _full(self) -> ResourceExhausted:
        metrics.WRITER_REJECTED.inc()
        return ResourceExhausted(
            f"ledger writer queue is full ({self._settings.queue_max} postings); "
            "retry with the same request_id", reason="WRITER_QUEUE_FULL")

    # ---- the flusher ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._flush(batch)
            except Exception:  # a bug: answer everyone, keep the writer alive
                log.exception("ledger writer flush crashed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(InvariantViolation("ledger writer crashed"))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _collect(self) -> list[_Item]:
        first = await self._queue.get()
        size_max = self._settings.batch_size_max
        if self._settings.flush_ms_max and self._queue.qsize() < size_max - 1:
            await asyncio.sleep(self._settings.flush_ms_max / 1000.0)  # let the batch fill
        batch = [first]
        legs = len(first.posting.legs)
        while len(batch) < size_max and not self._queue.empty():
            nxt = self._queue._queue[0]  # peek: keep a posting that would overflow the span
            if legs + len(nxt.posting.legs) > BATCH_SPAN:
                break
            batch.append(self._queue.get_nowait())
            legs += len(nxt.posting.legs)
        return batch

    async def _flush(self, batch: list[_Item]) -> None:
        started = self._clock.monotonic()
        firsts: dict[tuple[int, str], _Item] = {}
        followers: list[tuple[_Item, _Item]] = []
        for item in batch:
            key = (item.posting.platform_id, item.posting.request_id)
            if key in firsts:
                followers.append((item, firsts[key]))
            else:
                firsts[key] = item
        unique = list(firsts.values())
        outcomes, responses = await self._commit_with_retries(unique)
        for item in unique:
            _resolve(item.future, outcomes[id(item)])
        for item, first in followers:
            if item.posting.payload_hash == first.posting.payload_hash \
                    and item.posting.method == first.posting.method:
                response = responses.get(id(first))
                _resolve(item.future, outcomes[id(first)] if response is None
                         else Replay(response))
            else:
                _resolve(item.future, _reused(item.posting))
        metrics.WRITER_BATCH_SIZE.observe(len(batch))
        metrics.WRITER_FLUSH_SECONDS.observe(self._clock.monotonic() - started)

    async def _commit_with_retries(
            self, items: list[_Item]) -> tuple[dict[int, object], dict[int, bytes]]:
        """Each item's outcome, and the first responses made by committed postings."""
        error: Exception | None = None
        for attempt in range(BATCH_ATTEMPTS_MAX):
            try:
                return await self._commit(items)
            except (_RaceLost, asyncpg.SerializationError, asyncpg.DeadlockDetectedError,
                    asyncpg.UniqueViolationError) as exc:
                error = exc
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.CannotConnectNowError, OSError, asyncio.TimeoutError) as exc:
                error = exc
                await self._drop_connection()
            except asyncpg.CheckViolationError as exc:
                log.critical("database refused a batch the writer accepted: %s", exc)
                raise InvariantViolation(f"database check failed: {exc}") from exc
            metrics.WRITER_BATCH_RETRIES.inc()
            log.warning("ledger batch attempt %d failed: %r", attempt + 1, error)
            await asyncio.sleep(BATCH_RETRY_BACKOFF_S * (attempt + 1))
        unavailable = Unavailable(
            "the ledger database is unavailable; nothing was committed for this request, "
            "retry with the same request_id", reason="DATABASE_UNAVAILABLE")
        return {id(item): unavailable for item in items}, {}

    async def _commit(self, items: list[_Item]) -> tuple[dict[int, object], dict[int, bytes]]:
        conn = await self._connection()
        async with conn.transaction():
            outcomes, fresh = await self._replays(conn, items)
            responses: dict[int, bytes] = {}
            if fresh:
                batch = _Batch(conn, self._clock, self._sinks)
                outcomes.update(await batch.commit(fresh))
                responses = batch.responses
            return outcomes, responses

    async def _connection(self) -> asyncpg.Connection:
        """The writer's own connection, held across batches (no pool round trips). Its
        statements keep PostgreSQL's cached (generic) plans, so every lookup is written as
        `= ANY(array)` on a primary key, which plans as an index scan at any table size."""
        if self._conn is not None and self._conn.is_closed():
            await self._drop_connection()
        if self._conn is None:
            self._conn = await self._pool.acquire()
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self._pool.release(conn)
            except Exception:  # noqa: BLE001 - a broken connection is discarded anyway
                log.warning("writer connection could not be released cleanly", exc_info=True)

    async def _replays(self, conn: asyncpg.Connection,
                       items: list[_Item]) -> tuple[dict[int, object], list[_Item]]:
        keys = [(i.posting.platform_id, i.posting.request_id) for i in items]
        keys += [(i.posting.platform_id, c.key) for i in items for c in i.posting.claims]
        rows = await conn.fetch(_SQL_PRIOR, [k[0] for k in keys], [k[1] for k in keys])
        prior = {(r["platform_id"], r["request_id"]): r for r in rows}
        outcomes: dict[int, object] = {}
        fresh: list[_Item] = []
        for item in items:
            p = item.posting
            row = prior.get((p.platform_id, p.request_id))
            taken = next((c for c in p.claims if (p.platform_id, c.key) in prior), None)
            if row is not None:
                outcomes[id(item)] = await _replay(conn, p, row)
            elif taken is not None:
                outcomes[id(item)] = _claim_taken(taken)
            else:
                fresh.append(item)
        return outcomes, fresh


async def _replay(conn: asyncpg.Connection, posting: Posting, row: asyncpg.Record) -> object:
    if row["payload_hash"] != posting.payload_hash or row["method"] != posting.method:
        return _reused(posting)
    if row["error"]:
        return idempotency.decode_error(row["error"])
    if not row["ok"]:
        return error_from_record(row["error_code"], row["error_reason"], row["error_message"])
    if row["response"] is not None and posting.respond is not None:
        return Replay(bytes(row["response"]))
    if not row["result_ids"]:  # bound by a request that is not a posting (unfinished)
        return _reused(posting)
    records = await conn.fetch(_SQL_REPLAY_TRANSFERS, list(row["result_ids"]))
    return [journal.record_from_row(r) for r in records]


def _reused(posting: Posting) -> ClearingError:
    return idempotency.reused(posting.request_id)


def _claim_taken(claim: Claim) -> ClearingError:
    from clearing.errors import AlreadyExists
    return AlreadyExists(claim.message, reason=claim.reason, metadata={"key": claim.key})


def _resolve(future: asyncio.Future | _Slot, outcome: object) -> None:
    if future.done():  # the caller went away (cancelled); the outcome stands in the ledger
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class _Batch:
    """One transaction's worth of postings: lock, apply in memory, write, chain."""

    def __init__(self, conn: asyncpg.Connection, clock: Clock,
                 sinks: Mapping[str, BatchSink]) -> None:
        self._conn = conn
        self._sinks = sinks
        self._claimed: set[str] = set()
        self._now = clock.now()
        self._accts: dict[int, _Acct] = {}
        self._pendings: dict[int, _Pending] = {}
        self._rows: list[tuple] = []
        self._batch_id = 0
        self.responses: dict[int, bytes] = {}  # first responses of committed postings

    async def commit(self, items: list[_Item]) -> dict[int, object]:
        await self._lock(items)
        self._batch_id = await self._conn.fetchval("SELECT nextval('journal_batch_id_seq')")
        outcomes: dict[int, object] = {}
        for item in items:
            outcome = outcomes[id(item)] = self._apply_claimed(item.posting)
            if item.posting.respond is not None and not isinstance(outcome, BaseException):
                self.responses[id(item)] = item.posting.respond(outcome)
        await self._write(items, outcomes)
        await self._write_attachments(items, outcomes)
        return outcomes

    def _apply_claimed(self, posting: Posting) -> object:
        """Apply a posting unless a posting earlier in this batch took one of its claims."""
        for claim in posting.claims:
            if claim.key in self._claimed:
                return _claim_taken(claim)
        outcome = self._apply(posting)
        if not isinstance(outcome, BaseException):
            self._claimed.update(c.key for c in posting.claims)
        return outcome

    async def _write_attachments(self, items: list[_Item], outcomes: dict[int, object]) -> None:
        by_sink: dict[str, list[tuple[Posting, list[TransferRecord]]]] = {}
        for item in items:
            outcome = outcomes[id(item)]
            if item.posting.sink and not isinstance(outcome, BaseException):
                by_sink.setdefault(item.posting.sink, []).append((item.posting, outcome))
        for name, committed in by_sink.items():
            await self._sinks[name].write(self._conn, committed)

    async def _lock(self, items: list[_Item]) -> None:
        account_ids: set[int] = set()
        pending_ids: set[int] = set()
        for item in items:
            for leg in item.posting.legs:
                account_ids.add(leg.debit_account_id)
                account_ids.add(leg.credit_account_id)
                if leg.pending_id:
                    pending_ids.add(leg.pending_id)
        if pending_ids:  # learn the accounts of pending transfers (immutable columns)
            for r in await self._conn.fetch(_SQL_PENDING_PEEK, list(pending_ids)):
                account_ids.add(r["debit_account_id"])
                account_ids.add(r["credit_account_id"])
        account_ids.discard(0)
        for row in await self._conn.fetch(_SQL_LOCK_ACCOUNTS, sorted(account_ids)):
            self._accts[row[0]] = _Acct(row)
        if pending_ids:
            for row in await self._conn.fetch(_SQL_LOCK_PENDING, sorted(pending_ids)):
                self._pendings[row[0]] = _Pending(row)

    # ---- applying one posting in memory -------------------------------------------------

    def _apply(self, posting: Posting) -> object:
        """Apply all legs or none; returns the new records or the ClearingError."""
        acct_snaps, pend_snaps = self._snapshots(posting)
        rows_before = len(self._rows)
        try:
            return [self._apply_leg(posting, i, leg) for i, leg in enumerate(posting.legs)]
        except ClearingError as exc:
            for i, snap in acct_snaps.items():
                self._accts[i].restore(snap)
            for i, (remaining, state, dirty) in pend_snaps.items():
                p = self._pendings[i]
                p.remaining, p.state, p.dirty = remaining, state, dirty
            del self._rows[rows_before:]
            first_new_id = self._batch_id * BATCH_SPAN + rows_before
            for transfer_id in [t for t in self._pendings if t >= first_new_id]:
                del self._pendings[transfer_id]  # held by this failed posting: never written
            return exc

    def _snapshots(self, posting: Posting) -> tuple[dict, dict]:
        """The state a failing posting must restore: only what its legs can touch."""
        acct_snaps: dict[int, tuple] = {}
        pend_snaps: dict[int, tuple] = {}
        for leg in posting.legs:
            ids = [leg.debit_account_id, leg.credit_account_id]
            pending = self._pendings.get(leg.pending_id) if leg.pending_id else None
            if pending is not None:
                pend_snaps[pending.transfer_id] = (pending.remaining, pending.state,
                                                   pending.dirty)
                ids += [pending.debit, pending.credit]
            for i in ids:
                acct = self._accts.get(i)
                if acct is not None and i not in acct_snaps:
                    acct_snaps[i] = acct.snapshot()
        return acct_snaps, pend_snaps

    def _account(self, platform_id: int, account_id: int, field: str) -> _Acct:
        acct = self._accts.get(account_id)
        if acct is None or acct.platform_id != platform_id:
            raise NotFound(f"account {account_id} not found", reason="ACCOUNT_NOT_FOUND",
                           metadata={"field": field, "account_id": str(account_id)})
        return acct

    def _apply_leg(self, posting: Posting, index: int, leg) -> TransferRecord:
        prefix = f"legs[{index}]." if len(posting.legs) > 1 else ""
        pending_id, remaining, state = leg.pending_id, 0, PendingState.NONE
        amount = leg.amount_minor
        if leg.mode in (Mode.POST_PENDING, Mode.VOID_PENDING):
            pending = self._pending_for(posting, leg, prefix)
            debit = self._account(posting.platform_id, pending.debit, prefix + "debit_account_id")
            credit = self._account(posting.platform_id, pending.credit,
                                   prefix + "credit_account_id")
            _check_status(posting, leg.mode, debit, credit, prefix)
            if leg.mode is Mode.POST_PENDING:
                amount = self._post(pending, debit, credit, amount, prefix)
            else:
                amount = self._void(pending, debit, credit)
        else:
            debit = self._account(posting.platform_id, leg.debit_account_id,
                                  prefix + "debit_account_id")
            credit = self._account(posting.platform_id, leg.credit_account_id,
                                   prefix + "credit_account_id")
            _check_currency(debit, credit, leg.currency_code, prefix)
            _check_status(posting, leg.mode, debit, credit, prefix)
            _check_funds(debit, amount)
            _check_overflow(credit.cp + credit.cpend, amount)
            if leg.mode is Mode.IMMEDIATE:
                debit.dp += amount
                credit.cp += amount
            else:
                debit.dpend += amount
                credit.cpend += amount
                remaining, state = amount, PendingState.OPEN
        debit.dirty = credit.dirty = True
        position = len(self._rows)
        invariant(position < BATCH_SPAN, "journal batch overflow")
        transfer_id = self._batch_id * BATCH_SPAN + position
        record = TransferRecord(
            transfer_id, posting.platform_id, posting.request_id, debit.account_id,
            credit.account_id, amount, debit.currency, leg.mode, pending_id, remaining,
            state, leg.memo, self._now)
        self._rows.append(journal.copy_row(record, self._batch_id))
        if leg.mode is Mode.PENDING:  # a later leg of this batch may post or void it
            self._pendings[transfer_id] = _Pending(
                (transfer_id, posting.platform_id, debit.account_id, credit.account_id,
                 debit.currency, remaining, PendingState.OPEN))
        return record

    def _pending_for(self, posting: Posting, leg, prefix: str) -> _Pending:
        pending = self._pendings.get(leg.pending_id)
        if pending is None or pending.platform_id != posting.platform_id:
            raise NotFound(f"pending transfer {leg.pending_id} not found",
                           reason="PENDING_TRANSFER_NOT_FOUND",
                           metadata={"field": prefix + "pending_transfer_id"})
        wrong = _pending_violations(pending, leg, prefix)
        if wrong:
            currency_only = all(v.field.endswith("currency_code") for v in wrong)
            raise InvalidArgument(wrong, reason="CURRENCY_MISMATCH" if currency_only else None)
        if pending.state != PendingState.OPEN:
            name = PendingState(pending.state).name
            raise FailedPrecondition(
                f"pending transfer {pending.transfer_id} is already {name}",
                reason=f"PENDING_ALREADY_{name}")
        return pending

    @staticmethod
    def _post(pending: _Pending, debit: _Acct, credit: _Acct, amount: int, prefix: str) -> int:
        if amount > pending.remaining:
            raise InvalidArgument([FieldViolation(
                prefix + "amount_minor",
                f"exceeds the {pending.remaining} still pending on transfer "
                f"{pending.transfer_id}")], reason="AMOUNT_EXCEEDS_PENDING")
        debit.dpend -= amount
        credit.cpend -= amount
        debit.dp += amount
        credit.cp += amount
        pending.remaining -= amount
        if pending.remaining == 0:
            pending.state = PendingState.POSTED
        pending.dirty = True
        return amount

    @staticmethod
    def _void(pending: _Pending, debit: _Acct, credit: _Acct) -> int:
        amount = pending.remaining
        debit.dpend -= amount
        credit.cpend -= amount
        pending.remaining = 0
        pending.state = PendingState.VOIDED
        pending.dirty = True
        return amount

    # ---- writing the batch --------------------------------------------------------------

    async def _write(self, items: list[_Item], outcomes: dict[int, object]) -> None:
        first_new_id = self._batch_id * BATCH_SPAN
        journal_cols = _journal_columns(self._rows, self._pendings, first_new_id)
        dirty = [a for a in self._accts.values() if a.dirty]
        for a in dirty:
            invariant(a.dpend >= 0 and a.cpend >= 0, "negative pending balance")
            invariant(a.allow_negative or a.spendable() >= 0, "overdraft slipped through")
        older = [p for p in self._pendings.values() if p.dirty and p.transfer_id < first_new_id]
        digest = journal.rows_digest(self._rows) if self._rows else b""
        request_cols = _request_columns(items, outcomes, self.responses)
        for i in _JOURNAL_INT_COLUMNS:
            journal_cols[i] = int_array(journal_cols[i])
        requests = list(request_cols)
        requests[0] = int_array(requests[0])
        requests[4] = bool_array(requests[4])
        row = await self._conn.fetchrow(
            _SQL_WRITE, self._batch_id, self._now, *journal_cols,
            int_array(a.account_id for a in dirty), int_array(a.dp for a in dirty),
            int_array(a.cp for a in dirty), int_array(a.dpend for a in dirty),
            int_array(a.cpend for a in dirty),
            int_array(p.transfer_id for p in older), int_array(p.remaining for p in older),
            int_array(int(p.state) for p in older),
            *requests[:9], digest, len(self._rows), *requests[9:])
        if row["recorded"] != len(request_cols[0]):
            raise _RaceLost()
        invariant(row["journal"] == len(self._rows) and row["balances"] == len(dirty)
                  and row["pendings"] == len(older)
                  and row["links"] == (1 if self._rows else 0),
                  f"batch write counts differ: {dict(row)}")


def int_array(values: Iterable[int]) -> str:
    """Integers as one PostgreSQL array literal, for a `$n::text::bigint[]` parameter:
    asyncpg encodes a list parameter element by element (an abc.Iterable check each), which
    costs the writer's process about twice the time of joining the digits, while the
    server parses the literal in C."""
    return "{" + ",".join(map(str, values)) + "}"


def bool_array(values: Iterable[bool]) -> str:
    """Booleans as one PostgreSQL array literal (see `int_array`)."""
    return "{" + ",".join("t" if v else "f" for v in values) + "}"


# The integer columns of `_journal_columns` (transfer ids ... pending states).
_JOURNAL_INT_COLUMNS = (0, 1, 3, 4, 5, 7, 8, 9, 10)


def _journal_columns(rows: list[tuple], pendings: dict[int, _Pending],
                     first_new_id: int) -> list[list]:
    """The journal rows as column arrays for unnest(); pending transfers created in this
    batch carry their state at the end of the batch."""
    cols: list[list] = [[] for _ in range(12)]
    (ids, plats, rids, debits, credits, amounts, curs, modes, pids, rems, states,
     memos) = cols
    for r in rows:
        ids.append(r[0]), plats.append(r[1]), rids.append(r[3]), debits.append(r[4])
        credits.append(r[5]), amounts.append(r[6]), curs.append(r[7]), modes.append(r[8])
        pids.append(r[9]), memos.append(r[12])
        pending = pendings.get(r[0]) if r[8] == Mode.PENDING else None
        if pending is not None and r[0] >= first_new_id:
            rems.append(pending.remaining), states.append(int(pending.state))
        else:
            rems.append(r[10]), states.append(r[11])
    return cols


def _request_columns(items: list[_Item], outcomes: dict[int, object],
                     responses: dict[int, bytes]) -> list[list]:
    """The idempotency records (first results) as column arrays for unnest(): the nine
    columns of the first records, then their responses and recorded errors."""
    cols: list[list] = [[] for _ in range(11)]
    for item in items:
        p = item.posting
        outcome = outcomes[id(item)]
        ok = not isinstance(outcome, BaseException)
        err = outcome if isinstance(outcome, ClearingError) else None
        if not ok and (err is None or not idempotency.recorded(err)
                       or err.reason in p.unrecorded_reasons):
            continue
        values = (p.platform_id, p.request_id, p.method, p.payload_hash, ok,
                  ",".join(str(r.transfer_id) for r in outcome) if ok else "",
                  err.code if err else "", err.reason if err else "",
                  err.message if err else "", responses.get(id(item)),
                  idempotency.encode_error(err) if err else "")
        for col, value in zip(cols, values):
            col.append(value)
        for claim in p.claims if ok else ():  # a claim is taken only by a committed posting
            for col, value in zip(cols, (p.platform_id, claim.key, "Claim", p.payload_hash,
                                         True, values[5], "", "", "", None, "")):
                col.append(value)
    return cols


def _pending_violations(pending: _Pending, leg, prefix: str) -> list[FieldViolation]:
    """Accounts and currency given with POST/VOID must be the pending transfer's."""
    wrong = []
    if leg.debit_account_id not in (0, pending.debit):
        wrong.append(FieldViolation(prefix + "debit_account_id",
                                    "differs from the pending transfer's debit account"))
    if leg.credit_account_id not in (0, pending.credit):
        wrong.append(FieldViolation(prefix + "credit_account_id",
                                    "differs from the pending transfer's credit account"))
    if leg.currency_code not in ("", pending.currency):
        wrong.append(FieldViolation(prefix + "currency_code",
                                    "differs from the pending transfer's currency"))
    return wrong


def _check_currency(debit: _Acct, credit: _Acct, currency: str, prefix: str) -> None:
    wrong = []
    if debit.currency != currency:
        wrong.append(FieldViolation(prefix + "currency_code",
                                    f"debit account holds {debit.currency}, not {currency}"))
    if credit.currency != currency:
        wrong.append(FieldViolation(prefix + "currency_code",
                                    f"credit account holds {credit.currency}, not {currency}"))
    if wrong:
        raise InvalidArgument(wrong, reason="CURRENCY_MISMATCH")


def _check_status(posting: Posting, mode: Mode, debit: _Acct, credit: _Acct,
                  prefix: str) -> None:
    """The one status rule of `clearing.ledger.status`, on both sides of the leg."""
    status.check_leg(mode, debit.account_id, debit.status, credit.account_id, credit.status,
                     prefix=prefix, books_external=posting.books_external)


def _check_funds(debit: _Acct, amount: int) -> None:
    if not debit.allow_negative and debit.spendable() < amount:
        raise FailedPrecondition(
            f"account {debit.account_id} has {debit.spendable()} available, {amount} needed",
            reason="INSUFFICIENT_FUNDS", metadata={"account_id": str(debit.account_id)})
    _check_overflow(debit.dp + debit.dpend, amount)


def _check_overflow(total: int, amount: int) -> None:
    if total + amount > INT64_MAX:
        raise FailedPrecondition("the transfer would overflow an account's 64-bit totals",
                                 reason="BALANCE_OVERFLOW")
