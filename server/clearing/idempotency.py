"""Request ids: the one meaning of idempotency in the clearing core (AIP-155, Stripe).

The rule, for every write method of every service:

- A request id is unique per platform (across methods). The request it is bound to is the
  method and the request's deterministic bytes (`api.validate.payload_hash`).
- A retry with the same request id and the same payload answers the FIRST response, byte
  for byte: the same response message, or the same failure (status code, reason, message
  and details). Nothing is done again. Current state is what the Get* methods are for.
- The same request id with another payload (or on another method) answers ALREADY_EXISTS,
  reason REQUEST_ID_REUSED, and does nothing.
- Which failures are recorded as a first response: business refusals, i.e.
  FAILED_PRECONDITION, NOT_FOUND and ALREADY_EXISTS (say INSUFFICIENT_FUNDS,
  ACCOUNT_NOT_FOUND, EXTERNAL_REF_TAKEN). A retry of those gets the same refusal even when
  the condition that caused it has changed since. Not recorded (nothing was accepted, and
  a retry with the same id goes through once the cause is gone): INVALID_ARGUMENT,
  UNAUTHENTICATED, PERMISSION_DENIED (about the caller, which is not part of the payload),
  RESOURCE_EXHAUSTED, UNAVAILABLE, INTERNAL, and the conflicts that say "retry with the
  same request id" (ALREADY_EXISTS SPLIT_CHANGED) or answer a reuse (REQUEST_ID_REUSED).

Storage: the `requests` table, one row per (platform, request id), written in the same
transaction as the effect of the request. `response` holds the first response as the
serialized message the servicer layer hands over (this module imports neither grpc nor
protobuf; it stores and returns bytes), `error` the recorded failure (`encode_error`).
Writes that go through the ledger writer (Transfer, Split, the split actions,
RequestPayout) have their row written by the writer in the batch's one statement, with
the response bytes the posting's `respond` callback made in memory from the committed
records (`clearing.ledger.model.Posting`). The others run through `run`.

Admin writes of PlatformService (CreatePlatform, CreateApiKey) run through `run` under
platform 0, the core's own: one namespace for every admin key. CreateApiKey records the
answer a replay gets, the key as listed without the key itself (never stored) and flagged
`key_shown_before`; the first call answers the key it made (clearing.api.platform).

A row with neither response nor error is "unfinished": a request whose work goes on after
its first transaction (a SplitBatch records its whole response once its orders are split).
A replay of an unfinished request does the (idempotent) work again and records the first
finished response (`finish`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

import asyncpg

from clearing.errors import (AlreadyExists, ClearingError, FailedPrecondition, FieldViolation,
                             InvalidArgument, NotFound, PermissionDenied, ResourceExhausted,
                             Unauthenticated, Unavailable, Unimplemented, invariant)
from clearing.reasons import Reason

log = logging.getLogger("clearing.idempotency")

# Failures recorded as the first response of a request id (see the module docstring).
RECORDED_CODES = frozenset({"FAILED_PRECONDITION", "NOT_FOUND", "ALREADY_EXISTS"})
# ALREADY_EXISTS reasons that are not a first response: retry (or reuse) answers.
RETRY_REASONS = frozenset({Reason.REQUEST_ID_REUSED, Reason.SPLIT_CHANGED})

_CLASSES: dict[str, type[ClearingError]] = {cls.code: cls for cls in (
    Unauthenticated, PermissionDenied, NotFound, AlreadyExists, FailedPrecondition,
    ResourceExhausted, Unavailable, Unimplemented)}


def recorded(exc: BaseException) -> bool:
    """Whether a failure is the first response of its request id (see the rule)."""
    return (isinstance(exc, ClearingError) and exc.code in RECORDED_CODES
            and exc.reason not in RETRY_REASONS)


def encode_error(exc: ClearingError) -> str:
    """A failure as stored: everything its status shows (code, reason, message, details)."""
    doc: dict[str, object] = {"code": exc.code, "reason": exc.reason, "message": exc.message,
                              "metadata": list(exc.metadata.items())}
    if isinstance(exc, InvalidArgument):
        doc["violations"] = [[v.field, v.description] for v in exc.violations]
    return json.dumps(doc, separators=(",", ":"))


def decode_error(text: str) -> ClearingError:
    """The recorded failure, to raise again: the same status on the wire."""
    doc = json.loads(text)
    if doc["code"] == "INVALID_ARGUMENT":
        exc: ClearingError = InvalidArgument(
            [FieldViolation(f, d) for f, d in doc.get("violations", [])], reason=doc["reason"])
    else:
        exc = _CLASSES.get(doc["code"], FailedPrecondition)(doc["message"],
                                                            reason=doc["reason"])
    exc.message = doc["message"]
    exc.args = (doc["message"],)
    exc.metadata = dict(doc["metadata"])
    return exc


def reused(request_id: str) -> AlreadyExists:
    return AlreadyExists(f"request_id {request_id!r} was already used with a different request",
                         reason=Reason.REQUEST_ID_REUSED, metadata={"request_id": request_id})


@dataclass(frozen=True, slots=True)
class Prior:
    """What is recorded for a request id."""

    request_id: str
    method: str
    payload_hash: bytes
    response: bytes | None
    error: str

    @property
    def finished(self) -> bool:
        return self.response is not None or bool(self.error)

    def check(self, method: str, payload_hash: bytes) -> None:
        """REQUEST_ID_REUSED unless this is the same request."""
        if self.method != method or self.payload_hash != payload_hash:
            raise reused(self.request_id)

    def answer(self, method: str, payload_hash: bytes) -> bytes | None:
        """The first response (None: unfinished); raises the recorded failure, or
        REQUEST_ID_REUSED for another request."""
        self.check(method, payload_hash)
        if self.error:
            raise decode_error(self.error)
        return self.response


_SQL_PRIOR = """
SELECT method, payload_hash, response, error, ok, error_code, error_reason, error_message
FROM requests WHERE platform_id = $1 AND request_id = $2
"""
_SQL_CLAIM = """
INSERT INTO requests (platform_id, request_id, method, payload_hash, ok)
VALUES ($1, $2, $3, $4, true) ON CONFLICT DO NOTHING RETURNING 1
"""
_SQL_RESPONSE = """
UPDATE requests SET response = $3 WHERE platform_id = $1 AND request_id = $2
  AND response IS NULL AND error = ''
"""
_SQL_FAILED = """
INSERT INTO requests (platform_id, request_id, method, payload_hash, ok, error_code,
                      error_reason, error_message, error)
VALUES ($1, $2, $3, $4, false, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING 1
"""
_SQL_FAIL_CLAIMED = """
UPDATE requests SET ok = false, error_code = $3, error_reason = $4, error_message = $5,
  error = $6 WHERE platform_id = $1 AND request_id = $2
"""


async def lookup(conn, platform_id: int, request_id: str) -> Prior | None:
    """The record of a request id (`conn`: a connection or the pool), or None."""
    row = await conn.fetchrow(_SQL_PRIOR, platform_id, request_id)
    if row is None:
        return None
    error = row["error"]
    if not error and not row["ok"]:  # a failure recorded before the error column existed
        error = json.dumps({"code": row["error_code"], "reason": row["error_reason"],
                            "message": row["error_message"], "metadata": []})
    return Prior(request_id, row["method"], bytes(row["payload_hash"]),
                 None if row["response"] is None else bytes(row["response"]), error)


async def run(pool: asyncpg.Pool, platform_id: int, request_id: str, method: str,
              payload_hash: bytes, op: Callable[[asyncpg.Connection], Awaitable[bytes]]) -> bytes:
    """Run `op` once per request id, in ONE transaction with the record of its first
    response: `op` does the work and returns the serialized response (built inside the
    transaction, so it is the state the work left). A recorded failure (see `recorded`)
    rolls `op`'s work back and is stored instead; any other failure leaves no trace.
    A replay answers the recorded response or failure; another payload REQUEST_ID_REUSED.

    A transaction PostgreSQL aborts for a deadlock or a serialization failure left nothing
    (claim and work roll back together) and is run again, CONFLICT_ATTEMPTS_MAX times in
    all; then UNAVAILABLE DATABASE_UNAVAILABLE (retry with the same request id), never
    INTERNAL. Such a deadlock is expected: an operator action locks its rows, then the
    platform's audit_head; the ledger writer's late order takes audit_head (a sink's audit
    record) before the balance rows (clearing.ledger.writer, "Lock late")."""
    for attempt in range(CONFLICT_ATTEMPTS_MAX):
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    outcome = await run_in(conn, platform_id, request_id, method,
                                           payload_hash, op)
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
            log.warning("%s aborted by the database (%r), attempt %d", method, exc, attempt + 1)
            await asyncio.sleep(CONFLICT_BACKOFF_S * (attempt + 1))
            continue
        return outcome.answer()
    raise Unavailable(
        "the database aborted this request's transaction (a lock conflict); nothing was "
        "committed, retry with the same request_id", reason=Reason.DATABASE_UNAVAILABLE)


# `run`: attempts of a transaction the database aborts (deadlock, serialization failure).
CONFLICT_ATTEMPTS_MAX = 4
CONFLICT_BACKOFF_S = 0.05


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `run_in` did: the response, or the failure to raise once the caller's
    transaction committed (raising inside it would roll the record back)."""

    response: bytes | None
    error: ClearingError | None = None

    def answer(self) -> bytes:
        if self.error is not None:
            raise self.error
        invariant(self.response is not None, "an outcome with neither response nor error")
        return self.response


async def run_in(conn: asyncpg.Connection, platform_id: int, request_id: str, method: str,
                 payload_hash: bytes,
                 op: Callable[[asyncpg.Connection], Awaitable[bytes]]) -> Outcome:
    """`run` inside the caller's transaction (which must commit for the record to stand):
    returns the Outcome; raises what is not recorded (REQUEST_ID_REUSED, validation...)."""
    if not await conn.fetchval(_SQL_CLAIM, platform_id, request_id, method, payload_hash):
        prior = await lookup(conn, platform_id, request_id)
        try:
            data = prior.answer(method, payload_hash)
        except ClearingError as exc:
            if exc.reason == Reason.REQUEST_ID_REUSED:
                raise
            return Outcome(None, exc)
        if data is None:  # unfinished: only `start` / `finish` requests have such rows
            raise reused(request_id)
        return Outcome(data)
    try:
        async with conn.transaction():
            response = await op(conn)
    except ClearingError as exc:
        if not recorded(exc):
            raise  # the caller's transaction rolls the claim back
        await conn.execute(_SQL_FAIL_CLAIMED, platform_id, request_id, exc.code, exc.reason,
                           exc.message, encode_error(exc))
        return Outcome(None, exc)
    await conn.execute(_SQL_RESPONSE, platform_id, request_id, response)
    return Outcome(response)


async def settle_failure(pool: asyncpg.Pool, platform_id: int, request_id: str, method: str,
                         payload_hash: bytes, exc: ClearingError) -> bytes:
    """A request failed before (or in) the ledger writer: record the failure if it is a
    first response and none is recorded yet, then answer what is recorded (the failure, or
    the first response of a retry that got there first). Unrecorded failures are raised
    unless a first response exists."""
    if recorded(exc):
        if await pool.fetchval(_SQL_FAILED, platform_id, request_id, method, payload_hash,
                               exc.code, exc.reason, exc.message, encode_error(exc)):
            raise exc
    prior = await lookup(pool, platform_id, request_id)
    if prior is None or (not prior.finished and exc.reason != Reason.REQUEST_ID_REUSED):
        raise exc
    data = prior.answer(method, payload_hash)
    if data is None:
        raise exc
    return data


async def start(pool: asyncpg.Pool, platform_id: int, request_id: str, method: str,
                payload_hash: bytes) -> bytes | None:
    """Bind a request id whose work spans several transactions (SplitBatch): records it
    unfinished, or answers the first response of a finished one (None: do the work, then
    `finish`). Another payload: REQUEST_ID_REUSED."""
    if await pool.fetchval(_SQL_CLAIM, platform_id, request_id, method, payload_hash):
        return None
    prior = await lookup(pool, platform_id, request_id)
    if prior is None:  # the row went away meanwhile (never: rows are not deleted)
        raise reused(request_id)
    return prior.answer(method, payload_hash)


async def finish(pool: asyncpg.Pool, platform_id: int, request_id: str, response: bytes) -> bytes:
    """Record the response of a started request unless a retry finished first; answers the
    first one recorded."""
    await pool.execute(_SQL_RESPONSE, platform_id, request_id, response)
    prior = await lookup(pool, platform_id, request_id)
    invariant(prior is not None and prior.response is not None, "finished without a response")
    return prior.response
