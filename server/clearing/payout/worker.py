"""The payout worker: it takes due bank transfers, submits them to the bank and settles their
results in the ledger, exactly once, with several server processes and a bank that fails,
times out and answers twice.

This docstring tells the whole protocol. The code is in three parts: this module runs the
loop (claim, send or query, stop, the repair sweep of failed payouts);
`clearing.payout.claim` claims due transfers and records their attempts before any bank
call; `clearing.payout.settle` applies the bank's results (from submit, query or callbacks).

States: TransferState and PayoutState (clearing.payout.model, checked against payout.proto's
enums); the SQL is built from their names (clearing.db.sql_list), never from numbers.

A bank transfer:
- QUEUED -> SUBMITTED: claimed; a new attempt (new key) is recorded before the bank call.
- SUBMITTED -> SUCCEEDED: the bank paid it (hold slice and fee posted first). Final.
- SUBMITTED -> QUEUED: the bank FAILED it and retries remain (due after the backoff).
- SUBMITTED -> FAILED: the bank FAILED it and the round's retries are spent; or a send
  (submit, or resend after NOT_FOUND) was not made because its account may not send: its
  current attempt then stays UNKNOWN, its key kept (see "Frozen accounts" below).
- SUBMITTED -> UNKNOWN: no answer (timeout); due again after retry_backoff_ms for a query.
- UNKNOWN / SUBMITTED past its lease -> query with the SAME key: SUCCEEDED or FAILED as
  above; PROCESSING -> SUBMITTED (wait for the callback, query after stuck_after_ms);
  NOT_FOUND -> resubmitted with the same key.
- FAILED -> QUEUED: retry_payout (`clearing.payout.lifecycle`: ApprovePayout of a
  MANUAL_REVIEW payout); FAILED ->
  UNKNOWN instead when its current attempt is still in doubt (a blocked send): queried
  first, with the same key.
- any but SUCCEEDED -> FAILED: fail_payout (`clearing.payout.lifecycle`: RejectPayout).

A payout (what the worker and the lifecycle's review actions change):
- QUEUED -> SUBMITTED: the first claim of one of its transfers.
- SUBMITTED -> SUCCEEDED: all its transfers SUCCEEDED.
- SUBMITTED -> MANUAL_REVIEW (BANK_RETRIES_EXHAUSTED, or ACCOUNT_FROZEN / ACCOUNT_CLOSED):
  a transfer FAILED for good and none of the others is still QUEUED, SUBMITTED or UNKNOWN.
  Funds stay held.
- MANUAL_REVIEW -> SUBMITTED: retry_payout. REQUESTED, PENDING_REVIEW, QUEUED (nothing at
  the bank yet) or MANUAL_REVIEW -> FAILED: fail_payout.

An attempt (bank_transfer_attempts) is SUBMITTED (UNKNOWN after a timeout or a blocked send)
until the bank gives its final answer, then SUCCEEDED or FAILED. Each attempt has its own bank-side
idempotency key `po{payout_id}-t{sequence}-a{attempt_number}`.

Why nothing is paid twice:

1. Outbox: the attempt row (SUBMITTED, with its key) is committed BEFORE the bank is called,
   in the same short transaction that claims the transfer (`FOR UPDATE SKIP LOCKED`: two
   processes never claim the same row). A claim also leases the row: `next_attempt_at` moves
   `stuck_after_ms` ahead, so no one else looks at it while this worker talks to the bank.
2. A new key (a new attempt, which the bank could pay again) is made only when the bank has
   answered FAILED for the previous one. After a timeout, a lost answer or a crash (an
   attempt left SUBMITTED or UNKNOWN past its lease), the bank is QUERIED with the same key:
   SUCCEEDED / FAILED are applied as if they had come from the submit; NOT_FOUND (it never
   reached the bank) is resubmitted with the SAME key, which the bank deduplicates. There is
   no other way to a new key: a send blocked by the account's status keeps its key too.
3. Results (from submit, query or callbacks, in any order, any number of times) are applied
   by conditional updates (`WHERE state IN IN_FLIGHT`, i.e. SUBMITTED or UNKNOWN) under the
   transfer's and then the payout's row lock: a second delivery finds the attempt final and
   does nothing.
4. The ledger is moved BEFORE the transfer is marked SUCCEEDED, with deterministic request
   ids (`\\x1fpayout:{id}:t{sequence}:post`, `\\x1fpayout:{id}:fee:post`): after a crash in
   between, the transfer is still in flight, is queried again, and the writer answers the
   repeated postings from their first result instead of posting twice. The ids start with
   the non-printable \\x1f (like claims), which client request ids can never contain, so a
   client can never take them first.

Ledger rules. RequestPayout holds the payout as PENDING transfers from the sub-account:
`hold_transfer_id` (the net) and `fee_transfer_id` (the fee; 0 if none). Each succeeded bank
transfer posts its own amount of the hold (a partial POST_PENDING); the fee is posted, whole,
with the first transfer that succeeds (every success submits the same fee posting; its
request id lets only the first one move money). fail_payout voids what is left of the hold;
the fee is voided only when nothing was paid (once money reached the bank the fee was
earned and is already posted). A payout goes to MANUAL_REVIEW only when none of its
transfers is in flight any more, so that a rejection never voids money the bank may still
pay. A failed payout whose release was cut short by a crash is finished by the worker's
repair sweep (the same deterministic void request ids).

Frozen accounts ("a frozen account never sends", `clearing.ledger.status`). Right before
every bank call that can send money (each submit, and each resend with the same key after
the bank answered NOT_FOUND), the worker reads the status of the account the payout debits.
Frozen or closed: nothing is sent; the transfer ends FAILED (no automatic retry) and its
attempt stays UNKNOWN with failure code ACCOUNT_FROZEN / ACCOUNT_CLOSED, so its key is not
abandoned: the bank never answered FAILED for it, and after a NOT_FOUND the original submit
may still reach the bank late. The payout goes to MANUAL_REVIEW with that reason once none
of its transfers is in flight, its funds still held. An approver retries it once the account
is active (ApprovePayout refuses while it is not): retry_payout makes such a transfer
UNKNOWN, so the next round QUERIES the kept key first and applies the bank's answer, or on
NOT_FOUND resubmits with that SAME key (after the status check again). A blocked first
submit is treated the same way, not given a new key: that its key never reached the bank
would rest on timing (a claim whose lease ran out while it waited could have been claimed,
queried and sent by another process meanwhile); keeping the key needs no such argument and
costs one query. A bank result for such a transfer while it waits (a late order's callback)
is not applied: the transfer is not in flight; the query after approval applies it. Or the
approver rejects the payout (the void is allowed on a frozen account: no money leaves).
Queries are not sends and go on.
A transfer the bank had already accepted when the account was frozen (one in flight, or a
freeze committed between the read and the call) is not recalled: the bank's answer is
applied as usual, and a success is booked (its POST_PENDING is `books_external`: the money
has left, and a ledger that refused to say so would only disagree with the bank).

Retries: a transfer gets 1 + retries_max attempts per round (`attempt_count` keeps counting
across rounds; a round ends when attempt_count is a multiple of 1 + retries_max); retry n of
a round waits retry_backoff_ms * 2^(n-1). retry_payout (ApprovePayout) starts a new round.
An attempt whose send was blocked is resumed after approval, not replaced: it keeps its
number, and so its place in its round.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from clearing import metrics
from clearing.config import WorkerSettings
from clearing.errors import ClearingError, InvariantViolation, invariant
from clearing.ledger import status
from clearing.ledger.model import PendingState
from clearing.payout.bank import BankConnector, BankResult, BankState, BankTimeout
from clearing.payout.claim import Job, claim
from clearing.payout.lifecycle import release_holds
from clearing.payout.model import PayoutState
from clearing.payout.settle import Settler
from clearing.tasks import cancel_and_wait

log = logging.getLogger("clearing.payout.worker")

# Failed payouts looked at per repair sweep, and how often the sweep runs.
REPAIR_BATCH_MAX = 100
REPAIR_INTERVAL_S = 60.0
# How long stop() lets in-flight bank calls finish before abandoning them (their attempts
# stay SUBMITTED and are queried after their lease).
STOP_GRACE_S = 5.0


# ---- the worker ------------------------------------------------------------------------------

class PayoutWorker:
    """Claims due bank transfers and works them, `concurrency_max` at a time; runs in every
    server process (see the module docstring). `deps` has pool, writer and clock. The
    bank's own start/close belong to whoever made it.

    Without a bank (`bank` None: CLEARING_BANK_CONNECTOR=none) it claims nothing and sends
    nothing: payouts stay QUEUED (GetPayout's waiting_reason says why); only the repair
    sweep of failed payouts runs, which moves no money out."""

    def __init__(self, deps: Any, bank: BankConnector | None,
                 settings: WorkerSettings) -> None:
        self._pool: asyncpg.Pool = deps.pool
        self._clock = deps.clock
        self._bank = bank
        self._settings = settings
        self.settler = Settler(deps, settings)
        self._deps = deps
        self._task: asyncio.Task | None = None
        self._jobs: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        if bank is not None:
            bank.on_result(self._on_callback)

    def start(self) -> None:
        invariant(self._task is None, "payout worker started twice")
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="payout-worker")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop claiming; give in-flight bank calls `grace_s`, then abandon them (their
        attempts stay SUBMITTED and are queried after their lease)."""
        self._stopping.set()
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        jobs = list(self._jobs)
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=grace_s)
            for job in pending:
                job.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    async def _run(self) -> None:
        last_repair = -REPAIR_INTERVAL_S
        poll_s = self._settings.poll_interval_ms / 1000.0
        while not self._stopping.is_set():
            if self._clock.monotonic() - last_repair >= REPAIR_INTERVAL_S:
                last_repair = self._clock.monotonic()
                await self._guard(repair_failed_payouts(self._deps), "repair sweep")
            free = self._settings.concurrency_max - len(self._jobs)
            claimed = 0
            if free > 0 and self._bank is not None:
                limit = min(free, self._settings.claim_batch_max)
                jobs = await self._guard(claim(self._pool, self._clock.now(), self._settings,
                                               limit), "claim") or []
                for job in jobs:
                    self._spawn(job)
                claimed = len(jobs)
                if claimed == limit:
                    continue  # more may be due: claim again at once
            if self._jobs and (free <= 0 or claimed):
                await asyncio.wait(list(self._jobs), timeout=poll_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(poll_s)

    async def _guard(self, coro, what: str):
        """Run a step of the loop; a database hiccup is logged and retried next poll."""
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except InvariantViolation:  # a bug: loudly; the transfer stays in flight, untouched
            log.critical("payout worker %s broke an invariant", what, exc_info=True)
            return None
        except Exception:  # noqa: BLE001 - the loop must survive; the rows wait for us
            log.exception("payout worker %s failed", what)
            return None

    def _spawn(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(
            self._guard(self.work(job), f"job {job.order.idempotency_key}"))
        self._jobs.add(task)
        metrics.PAYOUT_JOBS_IN_FLIGHT.inc()
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task) -> None:
        self._jobs.discard(task)
        metrics.PAYOUT_JOBS_IN_FLIGHT.dec()

    async def work(self, job: Job) -> None:
        """One claimed transfer: query first if its attempt is in doubt, then submit (a new
        attempt, or the same key again when the bank never got it), then apply."""
        if job.query_first:
            result = await self._call("query", self._bank.query(job.order.idempotency_key))
            if result is None:
                await self.settler.unknown(job)
                return
            if result.state is not BankState.NOT_FOUND:
                await self.settler.apply(result)
                return
        refusal = await self._send_refusal(job)  # read right before the call: each send
        if refusal is not None:
            await self.settler.not_sent(job, refusal)
            return
        result = await self._call("submit", self._bank.submit(job.order))
        if result is None or result.state is BankState.NOT_FOUND:
            await self.settler.unknown(job)
            return
        await self.settler.apply(result)

    async def _send_refusal(self, job: Job) -> ClearingError | None:
        """Why the job's account may not send money now (`clearing.ledger.status`), read
        from the database right before the bank call; None if it may."""
        account_status = await self._pool.fetchval(
            "SELECT status FROM accounts WHERE account_id = $1", job.account_id)
        invariant(account_status is not None, f"payout {job.payout_id} has no account")
        return status.refusal(job.account_id, account_status)

    async def _call(self, name: str, coro) -> BankResult | None:
        """A bank call bounded by submit_timeout_ms; None when no answer came. Counted in
        clearing_bank_calls_total by call and result."""
        try:
            result = await asyncio.wait_for(coro, self._settings.submit_timeout_ms / 1000.0)
        except (BankTimeout, asyncio.TimeoutError):
            metrics.BANK_CALLS.labels(name, "no_answer").inc()
            return None
        metrics.BANK_CALLS.labels(name, result.state.name.lower()).inc()
        return result

    async def _on_callback(self, result: BankResult) -> None:
        """A callback from the bank; duplicates and stale ones are no-ops. A failure to apply
        it is logged: the attempt stays in flight and is queried after its lease."""
        if result.state in (BankState.SUCCEEDED, BankState.FAILED):
            await self._guard(self.settler.apply(result),
                              f"callback {result.idempotency_key}")


# ---- repair ------------------------------------------------------------------------------------

_SQL_OPEN_HOLDS = f"""
SELECT p.payout_id FROM payouts p
JOIN transfers h ON h.transfer_id = p.hold_transfer_id
LEFT JOIN transfers f ON f.transfer_id = p.fee_transfer_id AND p.fee_transfer_id <> 0
WHERE p.state = {PayoutState.FAILED:d}
  AND (h.pending_state = {PendingState.OPEN:d}
       OR (p.paid_minor = 0 AND f.pending_state = {PendingState.OPEN:d}))
LIMIT $1
"""


async def repair_failed_payouts(deps: Any) -> int:
    """Finish releases a crash cut short: FAILED payouts whose hold (or unpaid fee) is still
    open. Returns how many were repaired."""
    rows = await deps.pool.fetch(_SQL_OPEN_HOLDS, REPAIR_BATCH_MAX)
    for row in rows:
        try:
            await release_holds(deps, row["payout_id"])
        except ClearingError:
            log.exception("release of failed payout %s failed", row["payout_id"])
    return len(rows)
