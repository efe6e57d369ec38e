"""The group-commit ledger writer.

Callers `submit()` postings; one task collects them into batches and commits each batch
in ONE PostgreSQL transaction:

1. idempotency (`clearing.idempotency`): request ids already recorded are answered
   their first response (`Replay`, or the records of a posting without `respond`) or
   their recorded failure;
2. the accounts touched are locked (`FOR UPDATE`, in id order: no deadlocks between
   processes), and open pending transfers that are posted or voided; with
   `lock_late` (CLEARING_WRITER_LOCK_LATE, the default) only the accounts whose funds the
   batch checks are locked here; the others (a platform's custodial account, debited by
   every split; the accounts splits only credit) are only read: their rows are locked in
   step 4's last statement (see "Lock late" below);
3. every posting is applied in memory, in arrival order (`clearing.ledger.batch`, the
   batch's state machine, no I/O): a posting that fails its own checks (insufficient
   funds, a frozen or closed account on either side: `clearing.ledger.status`, wrong
   currency) fails alone and leaves no trace but its idempotency record (none at all for a
   failure that is not a first response by `idempotency.recorded`, or whose reason is in
   the posting's `unrecorded_reasons`); the others go on; a committed posting's `respond`
   makes its first response, in memory;
4. ONE statement (`clearing.ledger.batch_sql`) inserts the journal rows, updates each
   touched account once, inserts the idempotency records (with the first responses) and
   hash-chains the batch to the previous one; the sinks write their attachments;
5. COMMIT (synchronous), and only then are the callers answered.

A request id that comes twice in one batch is applied once (`batch.answer_duplicate`).

Lock late (issue 16): the funds rule reads an account's balances only where the account
is debited and may not go negative. An account that may go negative, and an account the
batch only credits (IMMEDIATE and PENDING legs; both accounts of a pending transfer posted
or voided count as debited), has no funds check: nothing the batch decides depends on its
balances, only its status (frozen, closed) and the 64-bit bound of its totals. Its row is
read without a lock, and everything is computed, encoded and written (journal, pending
transfers, idempotency records, the sinks' attachments: `batch_sql.WRITE_ROWS`) before the
last statement (`batch_sql.WRITE_LATE`) locks the balance rows (id order), then the journal
head, and updates the balances by increments; it goes with COMMIT as one message
(`batch_sql.late_and_commit`), so the rows are unlocked without waiting for this event
loop to read the answer and send COMMIT. So the rows every
split of a platform contends for (its custodial account, its fee and supplier accounts)
are locked for one short statement and the COMMIT instead of the whole flush. Accounts the
batch debits and that may not go negative are locked first, as before: their funds are
checked on balances no one else can change, so an overdraft is refused alone, before
anything is written. If an account read without a lock changed its status meanwhile (a
freeze, a close), the late statement updates fewer rows than sent; if its totals would
pass 64 bits, PostgreSQL refuses the update; and an account debited in one writer's batch
and only credited in another's is locked early by one and late by the other, so two
writers can deadlock (PostgreSQL breaks it after deadlock_timeout). In all three cases the
transaction rolls back and the batch is redone with every account locked first (the old
order, one id order, no deadlock), which refuses the orders those accounts no longer take
and books the others. The statements that take the balance row locks are timed
(`metrics.WRITER_LOCK_*`).

A batch is flushed `flush_ms_max` after its first posting arrived (what arrived meanwhile
joins it), or at once when `batch_size_max` postings are already waiting. While one batch
commits, the next one fills, so under load batches grow by themselves. The queue holds at
most `queue_max` postings; beyond that `submit()` raises ResourceExhausted at once.

Pipelined flushes (issue 16): up to `pipeline` batches (CLEARING_WRITER_PIPELINE, 2 by
default) commit at once, each on a connection of its own: batch n+1 is collected, read,
applied, encoded and written while batch n waits for its statements and its COMMIT's WAL
flush. A batch that could decide differently on what an in-flight batch has not committed
yet (a shared request id or claim, pending transfers on both sides, an account it debits
that the other credits and that may not go negative: `clearing.ledger.pipeline`) waits for
that batch to end before its first statement. Each batch's callers are answered once its
own COMMIT returned, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import asyncpg

from clearing import idempotency, metrics
from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import (ClearingError, InvariantViolation, ResourceExhausted,
                             Unavailable, error_from_record, invariant)
from clearing.ledger import journal
from clearing.ledger.batch import answer_duplicate, claim_taken
from clearing.ledger.batch_commit import (BatchSink, LateRaceLost, LockTiming, RaceLost,
                                          commit_fresh)
from clearing.ledger.model import Claim, Mode, Posting, Replay, TransferRecord
from clearing.ledger.pipeline import Flight, learn_negative_ok
from clearing.limits import BATCH_SPAN
from clearing.reasons import Reason
from clearing.tasks import cancel_and_wait

log = logging.getLogger("clearing.ledger.writer")

# How often one batch is tried again after a transient database failure.
BATCH_ATTEMPTS_MAX = 4
BATCH_RETRY_BACKOFF_S = 0.05


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
        self._idle: list[asyncpg.Connection] = []  # the writer's own, held across batches
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(settings.pipeline)  # batches committing at once
        self._flights: dict[Flight, asyncio.Task] = {}
        self._negative_ok: set[int] = set()  # accounts known to allow a negative balance

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
        await cancel_and_wait(self._task)
        self._task = None
        await self._drop_connections()

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
                              reason=Reason.SHUTTING_DOWN)
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
            "retry with the same request_id", reason=Reason.WRITER_QUEUE_FULL)

    # ---- the flusher ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                await self._slots.acquire()  # at most `pipeline` batches committing
                try:
                    batch = await self._collect()
                except BaseException:
                    self._slots.release()
                    raise
                flight = Flight(item.posting for item in batch)
                after = [f for f in self._flights if flight.must_follow(f, self._negative_ok)]
                self._flights[flight] = self._loop.create_task(
                    self._fly(flight, after, batch), name="ledger-writer-flush")
        finally:  # stopped: a batch still committing is cancelled with the writer
            for task in list(self._flights.values()):
                task.cancel()
            if self._flights:
                await asyncio.gather(*self._flights.values(), return_exceptions=True)

    async def _fly(self, flight: Flight, after: list[Flight], batch: list[_Item]) -> None:
        """Flush a batch once the in-flight batches it must follow ended."""
        try:
            for earlier in after:
                await earlier.done.wait()
            await self._flush(batch)
        except Exception:  # a bug: answer everyone, keep the writer alive
            log.exception("ledger writer flush crashed")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(InvariantViolation("ledger writer crashed"))
        finally:
            flight.done.set()
            del self._flights[flight]
            self._slots.release()
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
            _resolve(item.future, answer_duplicate(item.posting, first.posting,
                                                   outcomes[id(first)],
                                                   responses.get(id(first))))
        metrics.WRITER_BATCH_SIZE.observe(len(batch))
        metrics.WRITER_FLUSH_SECONDS.observe(self._clock.monotonic() - started)

    async def _commit_with_retries(
            self, items: list[_Item]) -> tuple[dict[int, object], dict[int, bytes]]:
        """Each item's outcome, and the first responses made by committed postings."""
        error: Exception | None = None
        lock_late = self._settings.lock_late
        for attempt in range(BATCH_ATTEMPTS_MAX):
            try:
                return await self._commit(items, lock_late)
            except (LateRaceLost, asyncpg.NumericValueOutOfRangeError,
                    asyncpg.DeadlockDetectedError) as exc:
                if not lock_late and not isinstance(exc, asyncpg.DeadlockDetectedError):
                    raise
                error = exc  # redo it with every account locked first (module docstring)
                lock_late = False
            except (RaceLost, asyncpg.SerializationError,
                    asyncpg.UniqueViolationError) as exc:
                error = exc
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.CannotConnectNowError, OSError, asyncio.TimeoutError) as exc:
                error = exc  # that connection was dropped (`_commit`)
            except asyncpg.CheckViolationError as exc:
                log.critical("database refused a batch the writer accepted: %s", exc)
                raise InvariantViolation(f"database check failed: {exc}") from exc
            metrics.WRITER_BATCH_RETRIES.inc()
            log.warning("ledger batch attempt %d failed: %r", attempt + 1, error)
            await asyncio.sleep(BATCH_RETRY_BACKOFF_S * (attempt + 1))
        unavailable = Unavailable(
            "the ledger database is unavailable; nothing was committed for this request, "
            "retry with the same request_id", reason=Reason.DATABASE_UNAVAILABLE)
        return {id(item): unavailable for item in items}, {}

    async def _commit(self, items: list[_Item], lock_late: bool
                      ) -> tuple[dict[int, object], dict[int, bytes]]:
        """One attempt, on one of the writer's connections (kept for the next batch
        unless it broke: a connection error drops it)."""
        conn = await self._connection()
        healthy = False
        try:
            result = await self._commit_on(conn, items, lock_late)
            healthy = True
            return result
        except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError, OSError, asyncio.TimeoutError):
            raise
        except (asyncpg.PostgresError, RaceLost, LateRaceLost):
            healthy = True  # rolled back: the connection serves on
            raise
        finally:
            await self._put_back(conn, healthy)

    async def _commit_on(self, conn: asyncpg.Connection, items: list[_Item], lock_late: bool
                         ) -> tuple[dict[int, object], dict[int, bytes]]:
        timing = LockTiming()
        if lock_late:
            return await self._commit_late(conn, items, timing)
        async with conn.transaction():
            outcomes, responses, _ = await self._apply(conn, items, False, timing)
            committing = time.perf_counter()
        timing.observe_commit(committing)
        return outcomes, responses

    async def _commit_late(self, conn: asyncpg.Connection, items: list[_Item],
                           timing: LockTiming
                           ) -> tuple[dict[int, object], dict[int, bytes]]:
        """`_commit` in the late order. Its transaction is begun here and committed by the
        batch's last message (`batch_sql.late_and_commit`), so it is not an asyncpg
        Transaction; any failure rolls it back."""
        await conn.execute("BEGIN")
        try:
            outcomes, responses, any_fresh = await self._apply(conn, items, True, timing)
            if not any_fresh:  # nothing sent the late message, which commits
                await conn.execute("COMMIT")
        except BaseException:
            if not conn.is_closed() and conn.is_in_transaction():
                try:
                    await conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - never reuse a connection in that state
                    log.warning("writer rollback failed; connection dropped", exc_info=True)
                    conn.terminate()
            raise
        invariant(not conn.is_in_transaction(), "the late batch left its transaction open")
        timing.observe_commit(timing.asked)
        return outcomes, responses

    async def _apply(self, conn: asyncpg.Connection, items: list[_Item], lock_late: bool,
                     timing: LockTiming
                     ) -> tuple[dict[int, object], dict[int, bytes], bool]:
        """In the caller's transaction: each item's outcome (replays answered from their
        records, fresh postings committed by `batch_commit.commit_fresh`), the first
        responses committed postings made, and whether there were fresh postings."""
        outcomes, fresh = await self._replays(conn, items)
        responses: dict[int, bytes] = {}
        if fresh:
            decisions = await commit_fresh(conn, self._clock.now(), self._sinks,
                                           [item.posting for item in fresh], lock_late, timing,
                                           negative_ok=self._learn_negative_ok)
            for item, decision in zip(fresh, decisions):
                outcomes[id(item)] = decision.outcome
                if decision.response is not None:
                    responses[id(item)] = decision.response
        return outcomes, responses, bool(fresh)

    def _learn_negative_ok(self, account_ids) -> None:
        learn_negative_ok(self._negative_ok, account_ids)

    async def _connection(self) -> asyncpg.Connection:
        """One of the writer's own connections (one per batch committing), held across
        batches (no pool round trips). Their statements keep PostgreSQL's cached (generic)
        plans, so every lookup is written as `= ANY(array)` on a primary key, which plans
        as an index scan at any table size."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            await self._release(conn)
        return await self._pool.acquire()

    async def _put_back(self, conn: asyncpg.Connection, healthy: bool) -> None:
        if healthy and not conn.is_closed() and not conn.is_in_transaction():
            self._idle.append(conn)
        else:
            await self._release(conn)

    async def _drop_connections(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
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
                outcomes[id(item)] = claim_taken(taken)
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


def _resolve(future: asyncio.Future | _Slot, outcome: object) -> None:
    if future.done():  # the caller went away (cancelled); the outcome stands in the ledger
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
