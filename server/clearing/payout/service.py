"""Payouts: binding bank accounts, requesting a payout (checks, then ONE hold), reads. The
review of a payout (ApprovePayout, RejectPayout) is `clearing.payout.review`.

`create_payout` (the scheduler) and `request_payout` (RequestPayout) are the ways a payout
comes to exist:

1. idempotency: RequestPayout follows `clearing.idempotency` (a retry answers the first
   response, the payout as the hold left it, or the recorded refusal); the scheduler's
   run ids answer the payout they made, as it is now (its own deterministic ids);
2. the account's payouts are serialized: an asyncio lock per account in this process (so
   1,000 concurrent callers hold at most one pooled connection per account) and a
   transaction-scoped PostgreSQL advisory lock across processes, held while the hold
   commits (even when the caller goes away meanwhile), so the daily maximum holds under
   concurrency and across servers; a crash ends both the lock and the uncommitted hold;
3. the checks (account, bank account, currency, platform limits, fee, daily maximum);
4. ONE ledger posting of PENDING legs debiting the sub-account (net -> the platform's
   custodial account, fee -> the fee account) through the LedgerWriter; its attachment,
   written by the payouts sink in the same transaction, is the payout row and its bank
   transfers. Insufficient available funds fail in the writer: nothing is held.

Payout states are described in `clearing.payout.model`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import asyncpg

from clearing import audit, idempotency
from clearing.clock import Clock
from clearing.config import BANK_CONNECTOR_NONE, PayoutSettings
from clearing.errors import (AlreadyExists, ClearingError, FailedPrecondition, FieldViolation,
                             InvalidArgument, NotFound, ResourceExhausted)
from clearing.ledger import status
from clearing.ledger.model import (AccountKind, AccountStatus, Leg, Mode, OwnerType, Posting,
                                   Replay)
from clearing.ledger.writer import LedgerWriter
from clearing.limits import TRANSFERS_PER_PAYOUT_MAX
from clearing.payout import store
from clearing.payout.model import (SCHEDULER, BankAccount, BankAccountType, Payout, PayoutConfig,
                                   PayoutDraft, PayoutOrigin, PayoutState, cut, mask_number)
from clearing.reasons import Reason

# Namespace of the payout advisory locks (pg_advisory_xact_lock(namespace, account)).
ADVISORY_NAMESPACE = 0x5041  # "PA"
METHOD = "RequestPayout"
# The bank account type an owner type must be paid to.
ACCOUNT_TYPE_FOR_OWNER = {OwnerType.ENTERPRISE: BankAccountType.CORPORATE,
                          OwnerType.INDIVIDUAL: BankAccountType.PERSONAL}


class PayoutGate:
    """Bounds the request path's use of the pool: at most `limit` payouts checked at once
    in this process, one per account (the rest wait in line, holding no connection)."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._slots: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def account(self, account_id: int, limit: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(account_id) or (asyncio.Lock(), 0)
        self._locks[account_id] = (lock, users + 1)
        try:
            async with lock:
                if self._slots is None:
                    self._slots = asyncio.Semaphore(limit)
                async with self._slots:
                    yield
        finally:
            lock, users = self._locks[account_id]
            if users == 1:
                del self._locks[account_id]
            else:
                self._locks[account_id] = (lock, users - 1)


@dataclass(frozen=True)
class PayoutDeps:
    """What payout code needs: shared by the RPCs, the scheduler and the worker."""

    pool: asyncpg.Pool
    writer: LedgerWriter
    clock: Clock
    settings: PayoutSettings
    gate: PayoutGate = field(default_factory=PayoutGate, compare=False)

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency_max or max(1, self.pool.get_max_size() // 4)


# Payout.waiting_reason of a payout this process's payout worker will not work on.
WAITING_BANK_CONNECTOR_NOT_CONFIGURED = Reason.BANK_CONNECTOR_NOT_CONFIGURED


def waiting_reason(deps: PayoutDeps, state: PayoutState) -> str:
    """Why a payout in `state` is not moving, as far as this process knows: a QUEUED
    payout (nothing sent yet), or a SUBMITTED one (its transfers wait for a query or a
    send), while this process runs the payout worker without a bank connector
    (CLEARING_BANK_CONNECTOR=none), waits until a server with a bank runs; else ""."""
    if (state in (PayoutState.QUEUED, PayoutState.SUBMITTED) and deps.settings.worker
            and deps.settings.bank.chosen == BANK_CONNECTOR_NONE):
        return WAITING_BANK_CONNECTOR_NOT_CONFIGURED
    return ""


def payload_hash_of(*, account_id: int, amount_minor: int, currency_code: str, memo: str,
                    origin: int) -> bytes:
    """The payload a request id is bound to when the caller gives none (the scheduler)."""
    text = f"{METHOD}\0{account_id}\0{amount_minor}\0{currency_code}\0{memo}\0{origin}"
    return hashlib.sha256(text.encode()).digest()


async def create_payout(deps: PayoutDeps, *, platform_id: int, account_id: int,
                        amount_minor: int, currency_code: str, request_id: str, origin: int,
                        requested_by: str, memo: str = "", requested_key_id: int = 0,
                        payload_hash: bytes | None = None) -> Payout:
    """Check and hold a payout; see the module docstring. Raises ClearingError subclasses
    (nothing held). `requested_by` is the API key id, or "scheduler"."""
    if payload_hash is None:
        payload_hash = payload_hash_of(account_id=account_id, amount_minor=amount_minor,
                                       currency_code=currency_code, memo=memo, origin=origin)
    async with deps.pool.acquire() as conn:
        prior = await _replay(conn, platform_id, request_id, payload_hash)
    if prior is not None:
        return prior

    async def hold(conn) -> Payout | None:
        prior = await _replay(conn, platform_id, request_id, payload_hash)
        if prior is not None:
            return prior
        draft, legs = await _check(
            deps, conn, platform_id=platform_id, account_id=account_id,
            amount_minor=amount_minor, currency_code=currency_code,
            request_id=request_id, origin=PayoutOrigin(origin),
            requested_by=requested_by, memo=memo, requested_key_id=requested_key_id,
            payload_hash=payload_hash)
        await deps.writer.submit(Posting(platform_id, request_id, METHOD,
                                         payload_hash, tuple(legs),
                                         sink=store.SINK_NAME, attachment=draft))
        return None

    prior = await _serialized(deps, account_id, hold)
    if prior is not None:
        return prior
    async with deps.pool.acquire() as conn:
        found = await store.payout_by_request(conn, platform_id, request_id)
    if found is None:  # a prior posting of this request id that was not a payout
        raise _reused(request_id)
    return found[0]


async def request_payout(deps: PayoutDeps, *, platform_id: int, account_id: int,
                         amount_minor: int, currency_code: str, request_id: str,
                         requested_key_id: int, memo: str, payload_hash: bytes,
                         encode: Callable[[Payout], bytes]) -> bytes:
    """RequestPayout: check and hold a payout once per request id (`clearing.idempotency`);
    answers the first response, `encode` of the payout as its hold committed it (made in
    the writer's batch and recorded with the hold), or raises the recorded refusal."""
    prior = await idempotency.lookup(deps.pool, platform_id, request_id)
    if prior is not None:
        return await _first(deps.pool, prior, platform_id, payload_hash, encode)

    async def hold(conn) -> bytes:
        prior = await idempotency.lookup(conn, platform_id, request_id)
        if prior is not None:
            return await _first(conn, prior, platform_id, payload_hash, encode)
        draft, legs = await _check(
            deps, conn, platform_id=platform_id, account_id=account_id,
            amount_minor=amount_minor, currency_code=currency_code, request_id=request_id,
            origin=PayoutOrigin.REQUEST, requested_by=str(requested_key_id), memo=memo,
            requested_key_id=requested_key_id, payload_hash=payload_hash)
        made: list[bytes] = []

        def respond(sent) -> bytes:
            made[:] = [encode(store.payout_of_draft(draft, sent))]
            return made[0]

        sent = await deps.writer.submit(Posting(platform_id, request_id, METHOD, payload_hash,
                                                tuple(legs), sink=store.SINK_NAME,
                                                attachment=draft, respond=respond))
        if isinstance(sent, Replay):
            return sent.response
        if not made:  # a request id recorded without a response (a scheduler's run id)
            raise idempotency.reused(request_id)
        return made[0]

    try:
        return await _serialized(deps, account_id, hold)
    except ClearingError as exc:
        return await idempotency.settle_failure(deps.pool, platform_id, request_id, METHOD,
                                                payload_hash, exc)


async def _first(conn, prior: idempotency.Prior, platform_id: int, payload_hash: bytes,
                 encode: Callable[[Payout], bytes]) -> bytes:
    first = prior.answer(METHOD, payload_hash)
    if first is not None:
        return first
    # a payout held before first responses were recorded: the payout as it is now
    found = await store.payout_by_request(conn, platform_id, prior.request_id)
    if found is None or found[1] != payload_hash:
        raise idempotency.reused(prior.request_id)
    return encode(found[0])


async def _serialized(deps: PayoutDeps, account_id: int, step):
    """`step(conn)` with the account's payouts serialized (module docstring, step 2), in
    the transaction holding the advisory lock."""
    async def locked():
        async with deps.gate.account(account_id, deps.concurrency):
            async with deps.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", ADVISORY_NAMESPACE,
                                   account_id % 2**31)
                return await step(conn)

    # A caller that goes away (deadline, cancellation) must not release the account's locks
    # while its hold may still commit: the locked part runs to its end in a task of its own.
    task = asyncio.ensure_future(locked())
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Task) -> None:
    """Mark a shielded task's outcome as seen (its caller may have gone away)."""
    if not task.cancelled():
        task.exception()


async def _replay(conn, platform_id: int, request_id: str, payload_hash: bytes) -> Payout | None:
    found = await store.payout_by_request(conn, platform_id, request_id)
    if found is None:
        return None
    payout, first_hash = found
    if first_hash != payload_hash:
        raise _reused(request_id)
    return payout


def _reused(request_id: str) -> AlreadyExists:
    return AlreadyExists(f"request_id {request_id!r} was already used with a different request",
                         reason=Reason.REQUEST_ID_REUSED, metadata={"request_id": request_id})


def _invalid(field_path: str, description: str, *, reason: Reason) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field_path, description)], reason=reason)


_SQL_ACCOUNT = """
SELECT account_id, external_ref, kind, owner_type, currency_code, status, allow_negative,
       credits_posted - debits_posted - debits_pending - frozen AS available
FROM accounts WHERE account_id = $1 AND platform_id = $2
"""
# The bank transfers' ids, taken before the hold (like the payout's): its first response
# is made in memory in the writer's batch (`store.payout_of_draft`).
_SQL_TRANSFER_IDS = """
SELECT nextval(pg_get_serial_sequence('bank_transfers', 'bank_transfer_id'))
FROM generate_series(1, $1)
"""
_SQL_CUSTODIAL = f"""
SELECT account_id FROM accounts
WHERE platform_id = $1 AND kind = {AccountKind.CUSTODIAL:d} AND currency_code = $2
ORDER BY account_id LIMIT 1
"""


async def _check(deps: PayoutDeps, conn, *, platform_id: int, account_id: int,
                 amount_minor: int, currency_code: str, request_id: str, origin: PayoutOrigin,
                 requested_by: str, memo: str, requested_key_id: int,
                 payload_hash: bytes) -> tuple[PayoutDraft, list[Leg]]:
    """Every check before the hold but the funds (the writer's); the draft and its legs."""
    acct = await conn.fetchrow(_SQL_ACCOUNT, account_id, platform_id)
    if acct is None:
        raise NotFound(f"account {account_id} not found", reason=Reason.ACCOUNT_NOT_FOUND,
                       metadata={"field": "account_id", "account_id": str(account_id)})
    _check_account(acct, currency_code)
    bank = await store.active_bank_account(conn, platform_id, account_id)
    if bank is None:
        raise FailedPrecondition(f"account {account_id} has no bank account bound",
                                 reason=Reason.NO_BANK_ACCOUNT)
    if bank.account_type is not ACCOUNT_TYPE_FOR_OWNER[OwnerType(acct["owner_type"])]:
        raise FailedPrecondition(
            f"a {bank.account_type.name.lower()} bank account cannot receive payouts of a "
            f"{OwnerType(acct['owner_type']).name.lower()} account",
            reason=Reason.OWNER_TYPE_MISMATCH)
    if not bank.kyc_verified:
        raise FailedPrecondition("the bank account's holder has not passed KYC",
                                 reason=Reason.KYC_NOT_VERIFIED)
    config = await store.load_config(conn, deps.settings, platform_id, currency_code)
    fee = _check_amount(config, amount_minor)
    if not acct["allow_negative"] and acct["available"] < amount_minor:
        # early answer (this account's payouts are serialized); the writer checks again
        raise FailedPrecondition(
            f"account {account_id} has {acct['available']} available, {amount_minor} needed",
            reason=Reason.INSUFFICIENT_FUNDS, metadata={"account_id": str(account_id)})
    since = _day_start(deps.clock.now(), config.time_zone)
    today = await store.day_total(conn, account_id, since)
    if today + amount_minor > config.daily_max_minor:
        raise ResourceExhausted(
            f"the account's payouts today would reach {today + amount_minor}, above the daily "
            f"maximum of {config.daily_max_minor}", reason=Reason.DAILY_LIMIT_EXCEEDED,
            metadata={"daily_max_minor": str(config.daily_max_minor),
                      "used_minor": str(today)})
    custodial = await conn.fetchval(_SQL_CUSTODIAL, platform_id, currency_code)
    if custodial is None:
        raise FailedPrecondition(f"the platform has no custodial account in {currency_code}",
                                 reason=Reason.CUSTODIAL_ACCOUNT_MISSING)
    payout_id = await conn.fetchval("SELECT nextval('payout_id_seq')")
    net = amount_minor - fee
    review = amount_minor > config.review_threshold_minor
    amounts = cut(net, config.bank_transfer_max_minor)
    transfer_ids = [r[0] for r in await conn.fetch(_SQL_TRANSFER_IDS, len(amounts))]
    draft = PayoutDraft(
        payout_id, platform_id, request_id, payload_hash, account_id, bank.bank_account_id,
        currency_code, amount_minor, fee, net,
        PayoutState.PENDING_REVIEW if review else PayoutState.QUEUED, origin, review,
        requested_by, requested_key_id, config.fee_account_id if fee else 0, memo,
        amounts, deps.clock.now(), acct["external_ref"], bank.masked_number, transfer_ids)
    legs = [Leg(account_id, custodial, net, currency_code, Mode.PENDING, 0,
                f"payout {payout_id}")]
    if fee:
        legs.append(Leg(account_id, config.fee_account_id, fee, currency_code, Mode.PENDING, 0,
                        f"payout {payout_id} fee"))
    return draft, legs


def check_payable(acct, *, frozen_ok: bool = False) -> None:
    """A sub-account (row with account_id, kind, status) can be paid out: not the custodial
    account, not closed, and not frozen unless `frozen_ok` (a schedule may be set on a
    frozen account; its runs are refused until it is active)."""
    if acct["kind"] == AccountKind.CUSTODIAL:
        raise FailedPrecondition("a custodial account cannot be paid out",
                                 reason=Reason.ACCOUNT_KIND_NOT_PAYABLE)
    if acct["status"] == AccountStatus.FROZEN and frozen_ok:
        return
    status.check_can_move(acct["account_id"], acct["status"], "account_id")


def _check_account(acct, currency_code: str) -> None:
    check_payable(acct)
    if acct["currency_code"].strip() != currency_code:
        raise _invalid("currency_code",
                       f"the account holds {acct['currency_code'].strip()}, not {currency_code}",
                       reason=Reason.CURRENCY_MISMATCH)


def _check_amount(config: PayoutConfig, amount_minor: int) -> int:
    """The platform's limits on one payout; returns its fee."""
    if amount_minor < config.min_amount_minor:
        raise _invalid("amount_minor", f"below the minimum payout of {config.min_amount_minor}",
                       reason=Reason.AMOUNT_BELOW_MINIMUM)
    if amount_minor > config.max_amount_minor:
        raise _invalid("amount_minor", f"above the maximum payout of {config.max_amount_minor}",
                       reason=Reason.AMOUNT_ABOVE_MAXIMUM)
    fee = config.fee(amount_minor)
    if fee >= amount_minor:
        raise _invalid("amount_minor", f"not above the payout fee of {fee}",
                       reason=Reason.AMOUNT_NOT_ABOVE_FEE)
    if -(-(amount_minor - fee) // config.bank_transfer_max_minor) > TRANSFERS_PER_PAYOUT_MAX:
        raise _invalid("amount_minor", f"more than {TRANSFERS_PER_PAYOUT_MAX} bank transfers",
                       reason=Reason.AMOUNT_ABOVE_MAXIMUM)
    return fee


def _day_start(now: dt.datetime, time_zone: str) -> dt.datetime:
    """Midnight of `now`'s day in the time zone, as an aware datetime."""
    local = now.astimezone(ZoneInfo(time_zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


# ---- bank accounts --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BindRequest:
    account_id: int
    bank_code: str
    bank_name: str
    branch_code: str
    account_number: str
    holder_name: str
    account_type: BankAccountType
    kyc_verified: bool


async def bind_bank_account(deps: PayoutDeps, platform_id: int, request_id: str,
                            payload_hash: bytes, req: BindRequest,
                            encode: Callable[[BankAccount], bytes], *,
                            actor: audit.Actor) -> bytes:
    """Bind (replacing any earlier binding) once per request id (`clearing.idempotency`);
    answers the first response, `encode` of the binding made; see payout.proto. Recorded
    in the audit trail with the number masked."""
    async def op(conn) -> bytes:
        acct = await conn.fetchrow(_SQL_ACCOUNT + " FOR UPDATE", req.account_id,
                                   platform_id)
        if acct is None:
            raise NotFound(f"account {req.account_id} not found",
                           reason=Reason.ACCOUNT_NOT_FOUND,
                           metadata={"field": "account_id"})
        wanted = ACCOUNT_TYPE_FOR_OWNER[OwnerType(acct["owner_type"])]
        if req.account_type is not wanted:
            raise FailedPrecondition(
                f"a {OwnerType(acct['owner_type']).name.lower()} account needs a "
                f"{wanted.name.lower()} bank account", reason=Reason.OWNER_TYPE_MISMATCH,
                metadata={"field": "account_type"})
        if acct["status"] == AccountStatus.CLOSED:
            raise FailedPrecondition(f"account {req.account_id} is closed",
                                     reason=Reason.ACCOUNT_CLOSED)
        before = await store.active_bank_account(conn, platform_id, req.account_id)
        bank_account_id = await store.replace_bank_account(
            conn, platform_id=platform_id, account_id=req.account_id,
            bank_code=req.bank_code, bank_name=req.bank_name,
            branch_code=req.branch_code, account_number=req.account_number,
            masked_number=mask_number(req.account_number),
            holder_name=req.holder_name, account_type=req.account_type,
            kyc_verified=req.kyc_verified, now=deps.clock.now())
        bound = await store.get_bank_account(conn, platform_id, bank_account_id)

        def doc(b: BankAccount) -> dict:
            return {"bank_account_id": b.bank_account_id, "bank_code": b.bank_code,
                    "account_number": b.masked_number, "holder_name": b.holder_name,
                    "account_type": b.account_type.name}

        await audit.record(conn, actor, "BindBankAccount", f"account:{req.account_id}",
                           before=None if before is None else doc(before), after=doc(bound))
        return encode(bound)

    return await idempotency.run(deps.pool, platform_id, request_id, "BindBankAccount",
                                 payload_hash, op)


# ---- reads ----------------------------------------------------------------------------------

async def get_payout(deps: PayoutDeps, platform_id: int, payout_id: int) -> Payout:
    async with deps.pool.acquire() as conn:
        return await store.get_payout(conn, platform_id, payout_id)


async def list_payouts(deps: PayoutDeps, platform_id: int, *, page_size: int,
                       page_token: str, account_id: int, states: list[int],
                       start: dt.datetime | None, end: dt.datetime | None,
                       account_ids: frozenset[int] | None = None) -> tuple[list[Payout], str]:
    async with deps.pool.acquire() as conn:
        return await store.list_payouts(conn, platform_id, page_size=page_size,
                                        page_token=page_token, account_id=account_id,
                                        states=states, start=start, end=end,
                                        account_ids=account_ids)


__all__ = ["PayoutDeps", "create_payout", "request_payout", "SCHEDULER"]
