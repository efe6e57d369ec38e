"""The resolution of discrepancies, maker-checker: an operator proposes
(`propose`), another key with the approver role approves (`approve`: the money action is
carried out) or rejects (`reject`). Each call once per request id
(`clearing.idempotency`); every step an event row (the audit trail); nothing deleted.

States: a discrepancy OPEN -> RESOLUTION_PROPOSED (propose) -> RESOLVED (approve) or OPEN
again (reject); its resolution PROPOSED -> APPROVED or REJECTED.

Money: REFUND and WRITE_OFF are ONE ledger posting, SPLIT_NOW one split through the split
service, each under the resolution's own request id (`posting_request_id`: the resolution
and its attempt). `approve` holds the resolution locked (FOR UPDATE) in the transaction
that records its request id, submits the posting (the writer commits it in its own
transaction), then writes the review, the APPROVED event and the discrepancy RESOLVED (with its
discrepancy.resolved event in the feed, `clearing.recon.events`).
- A crash between the posting's commit and that transaction's leaves the resolution
  PROPOSED with its posting made: the next `approve` submits the same posting again, which
  the writer (or the split service) answers with what it committed, so nothing moves
  twice; `reject` refuses it meanwhile (RESOLUTION_POSTED: it looks the posting's request
  id up).
- A refusal of the posting (a business refusal, recorded under its request id) answers
  that refusal, leaves the resolution PROPOSED, records a POSTING_REFUSED event and moves
  the resolution to its next attempt: the next approval posts under a new request id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from clearing import audit, idempotency
from clearing.errors import (ClearingError, FailedPrecondition, FieldViolation,
                             InvalidArgument, NotFound, PermissionDenied, invariant)
from clearing.ledger.model import Claim, Leg, Mode, Posting
from clearing.reasons import Reason
from clearing.recon import accounts, events
from clearing.recon import resolution_store as rstore
from clearing.recon.model import (Discrepancy, DiscrepancyState, LineType, MatchClass,
                                  Resolution, ResolutionAction, ResolutionState,
                                  ResolutionStep)
from clearing.recon.service import ReconDeps

PROPOSE_METHOD = "ProposeResolution"
APPROVE_METHOD = "ApproveResolution"
REJECT_METHOD = "RejectResolution"
POSTING_METHOD = "ReconResolution"
MONEY_ACTIONS = frozenset({ResolutionAction.SPLIT_NOW, ResolutionAction.REFUND,
                           ResolutionAction.WRITE_OFF})
Encode = Callable[[Resolution], bytes]


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What the domain reads of SPLIT_NOW's order (the API layer serializes the rest)."""

    order_id: str
    amount_minor: int
    channel_fee_minor: int
    currency_code: str


@dataclass(frozen=True, slots=True)
class Proposal:
    """A validated ProposeResolution: SPLIT_NOW's order as the API layer serialized it,
    and its facts."""

    discrepancy_id: int
    action: ResolutionAction
    note: str
    amount_minor: int
    order_message: bytes | None
    order: OrderFacts | None


def posting_request_id(r: Resolution) -> str:
    """The request id of a resolution's money action, per attempt (not a client's: the
    claim prefix is not printable); '' for ACCEPT."""
    if r.action not in MONEY_ACTIONS:
        return ""
    return f"{Claim.PREFIX}recon-resolution:{r.resolution_id}:{r.attempt}"


def _not_applicable(message: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason=Reason.RESOLUTION_NOT_APPLICABLE)


async def _amount(conn, platform_id: int, d: Discrepancy, p: Proposal) -> int:
    """The resolution's amount (REFUND: asked; WRITE_OFF: the difference's absolute
    value; else 0) once the action is checked against the discrepancy."""
    if p.action is not ResolutionAction.ACCEPT and not _of_statement(d):
        raise _not_applicable(
            f"a {d.match_class.name} discrepancy (a bank payout file's or the 7x24 sweep's) "
            "moves no money here: fix its cause, then resolve it with ACCEPT and a note")
    if p.action is ResolutionAction.SPLIT_NOW:
        if d.match_class is not MatchClass.MISSING_SPLIT or d.line_type is not LineType.PAYMENT:
            raise _not_applicable("SPLIT_NOW resolves MISSING_SPLIT discrepancies of a "
                                  "payment line only")
        _check_order(d, p.order)
        if await rstore.order_is_split(conn, platform_id, d.order_id):
            raise _not_applicable(f"order {d.order_id!r} has a split now")
        return 0
    if p.action is ResolutionAction.REFUND:
        settled = d.statement_amount_minor - d.statement_fee_minor
        if d.line_number == 0 or d.line_type is not LineType.PAYMENT:
            raise _not_applicable("REFUND resolves discrepancies of a payment line only")
        if p.amount_minor > settled:
            raise _not_applicable(f"REFUND of {p.amount_minor}: the line settled {settled}")
        return p.amount_minor
    if p.action is ResolutionAction.WRITE_OFF:
        if d.difference_minor == 0 or not d.currency_code:
            raise _not_applicable("the discrepancy's difference is 0: nothing to write off")
        return abs(d.difference_minor)
    return 0


def _of_statement(d: Discrepancy) -> bool:
    """Whether the discrepancy is a channel statement's (a payment or refund line, or a split
    missing from one): the only ones a resolution may move money for."""
    return d.run_id != 0 and d.line_type in (LineType.PAYMENT, LineType.REFUND)


def _check_order(d: Discrepancy, order: OrderFacts | None) -> None:
    """SPLIT_NOW's order is the line's: its order id, amount, channel fee and currency
    (so that the line matches the split); INVALID_ARGUMENT on the first field that is not."""
    invariant(order is not None, "SPLIT_NOW without its order")
    expected = (("order.order_id", order.order_id, d.order_id),
                ("order.amount_minor", order.amount_minor, d.statement_amount_minor),
                ("order.channel_fee_minor", order.channel_fee_minor, d.statement_fee_minor),
                ("order.currency_code", order.currency_code, d.statement_currency_code))
    for field, got, line in expected:
        if got != line:
            raise InvalidArgument([FieldViolation(
                field, f"must be the statement line's: {line!r}")])


async def propose(deps: ReconDeps, platform_id: int, key_id: int, request_id: str,
                  payload_hash: bytes, p: Proposal, encode: Encode, *,
                  actor: audit.Actor) -> bytes:
    """ProposeResolution: an OPEN discrepancy gets a PROPOSED resolution (nothing moves)."""
    async def op(conn: asyncpg.Connection) -> bytes:
        d = await rstore.lock_discrepancy(conn, platform_id, p.discrepancy_id)
        if d is None:
            raise NotFound(f"no discrepancy {p.discrepancy_id}",
                           reason=Reason.DISCREPANCY_NOT_FOUND,
                           metadata={"field": "discrepancy_id"})
        await _check_active(conn, platform_id, d)
        if d.state is not DiscrepancyState.OPEN:
            raise FailedPrecondition(
                f"discrepancy {d.discrepancy_id} is {d.state.name}, not OPEN",
                reason=Reason.DISCREPANCY_NOT_OPEN,
                metadata={"state": d.state.name, "resolution_id": str(d.resolution_id)})
        amount = await _amount(conn, platform_id, d, p)
        resolution_id = await rstore.insert(
            conn, platform_id, d, p.action, p.note, amount, d.currency_code, p.order_message,
            key_id, request_id, deps.clock.now())
        return await _recorded(conn, actor, PROPOSE_METHOD, platform_id, resolution_id,
                               d.state, encode)

    return await idempotency.run(deps.pool, platform_id, request_id, PROPOSE_METHOD,
                                 payload_hash, op)


async def _check_active(conn, platform_id: int, d: Discrepancy) -> None:
    """A discrepancy of a superseded statement is history: the superseding statement's run
    has its own (FAILED_PRECONDITION STATEMENT_SUPERSEDED). Holds the day's lock. The 7x24
    sweep's discrepancies belong to no statement."""
    if d.run_id == 0:  # the 7x24 sweep's: of no statement
        return
    if not await rstore.lock_active_run(conn, platform_id, d.run_id):
        raise FailedPrecondition(
            f"discrepancy {d.discrepancy_id} is of a superseded statement: resolve the "
            "active statement's discrepancies", reason=Reason.STATEMENT_SUPERSEDED)


async def _reviewable(conn, platform_id: int, resolution_id: int,
                      reviewer_key_id: int) -> Resolution:
    """The resolution locked, if this key may review it now."""
    r = await rstore.load(conn, platform_id, resolution_id, lock=True)
    if r is None:
        raise NotFound(f"no resolution {resolution_id}", reason=Reason.RESOLUTION_NOT_FOUND,
                       metadata={"field": "resolution_id"})
    if r.proposed_by_key_id == reviewer_key_id:
        raise PermissionDenied("the key that proposed a resolution cannot review it",
                               reason=Reason.MAKER_CHECKER)
    if r.state is not ResolutionState.PROPOSED:
        raise FailedPrecondition(f"resolution {resolution_id} is {r.state.name}, not PROPOSED",
                                 reason=Reason.RESOLUTION_NOT_PROPOSED,
                                 metadata={"state": r.state.name})
    return r


async def _discrepancy(conn, platform_id: int, r: Resolution) -> Discrepancy:
    d = await rstore.lock_discrepancy(conn, platform_id, r.discrepancy_id)
    invariant(d is not None and d.state is DiscrepancyState.RESOLUTION_PROPOSED
              and d.resolution_id == r.resolution_id,
              f"resolution {r.resolution_id} is PROPOSED, its discrepancy is not")
    return d


@dataclass(frozen=True, slots=True)
class _Accounts:
    """The accounts a REFUND or WRITE_OFF posts to (opened before the posting)."""

    other_id: int  # REFUND: the channel's clearing account; WRITE_OFF: suspense


async def _open_accounts(deps: ReconDeps, platform_id: int, resolution_id: int) -> _Accounts:
    """The server's account a resolution's posting needs, opened and committed before the
    writer's transaction looks for it (0 for SPLIT_NOW and ACCEPT)."""
    async with deps.pool.acquire() as conn:
        r = await rstore.load(conn, platform_id, resolution_id)
        if r is None or r.action not in (ResolutionAction.REFUND, ResolutionAction.WRITE_OFF):
            return _Accounts(0)
        d = await conn.fetchrow("SELECT run_id FROM recon_discrepancies"
                                " WHERE discrepancy_id = $1", r.discrepancy_id)
        channel = await rstore.channel_of_run(conn, d["run_id"])
    if r.action is ResolutionAction.REFUND:
        return _Accounts(await accounts.ensure_clearing(deps.pool, platform_id, channel,
                                                        r.currency_code))
    return _Accounts(await accounts.ensure_suspense(deps.pool, platform_id, r.currency_code))


def _legs(r: Resolution, d: Discrepancy, custodial_id: int, other_id: int) -> tuple[Leg, ...]:
    memo = f"reconciliation resolution {r.resolution_id} ({r.action.name}) of discrepancy " \
           f"{d.discrepancy_id}"
    if r.action is ResolutionAction.REFUND or d.difference_minor > 0:
        # the money back to the channel, or the surplus into suspense
        return (Leg(custodial_id, other_id, r.amount_minor, r.currency_code, Mode.IMMEDIATE,
                    memo=memo),)
    return (Leg(other_id, custodial_id, r.amount_minor, r.currency_code, Mode.IMMEDIATE,
                memo=memo),)


async def _carry_out(deps: ReconDeps, conn, platform_id: int, r: Resolution, d: Discrepancy,
                     found: _Accounts) -> tuple[int, int]:
    """(transfer id, split id) of the resolution's money action, made (or, made before,
    answered) under its posting request id."""
    request_id = posting_request_id(r)
    if r.action is ResolutionAction.SPLIT_NOW:
        invariant(deps.split_now is not None and r.order_message is not None,
                  "SPLIT_NOW needs the split service and the order")
        return 0, await deps.split_now(platform_id, request_id, r.order_message)
    if r.action is ResolutionAction.ACCEPT:
        return 0, 0
    invariant(found.other_id != 0, f"resolution {r.resolution_id}: its account is not open")
    custodial_id = await accounts.custodial(conn, platform_id, r.currency_code)
    sent = await deps.writer.submit(resolution_posting(platform_id, r, d, custodial_id,
                                                       found.other_id))
    invariant(len(sent) == 1, f"a resolution posting made {len(sent)} transfers")
    return sent[0].transfer_id, 0


def resolution_posting(platform_id: int, r: Resolution, d: Discrepancy, custodial_id: int,
                       other_id: int) -> Posting:
    """The ledger posting of a REFUND or WRITE_OFF (`other_id`: the channel's clearing
    account, or suspense), under the resolution's posting request id."""
    request_id = posting_request_id(r)
    legs = _legs(r, d, custodial_id, other_id)
    leg = legs[0]
    digest = hashlib.sha256(f"{POSTING_METHOD}\0{request_id}\0{leg.debit_account_id}\0"
                            f"{leg.credit_account_id}\0{leg.amount_minor}\0{leg.currency_code}"
                            .encode()).digest()
    return Posting(platform_id, request_id, POSTING_METHOD, digest, legs)


async def approve(deps: ReconDeps, platform_id: int, key_id: int, request_id: str,
                  payload_hash: bytes, resolution_id: int, note: str,
                  encode: Encode, *, actor: audit.Actor) -> bytes:
    """ApproveResolution: the money action, then APPROVED and the discrepancy RESOLVED
    (see the module docstring)."""
    invariant(deps.writer is not None, "ApproveResolution needs the ledger writer")
    found = await _open_accounts(deps, platform_id, resolution_id)
    refused: list[tuple[int, ClearingError]] = []

    async def op(conn: asyncpg.Connection) -> bytes:
        r = await _reviewable(conn, platform_id, resolution_id, key_id)
        d = await _discrepancy(conn, platform_id, r)
        posting = posting_request_id(r)
        prior = await idempotency.lookup(conn, platform_id, posting) if posting else None
        if prior is None or prior.error:
            await _check_active(conn, platform_id, d)
        # else its money moved already (the approval was cut off after the posting): finish
        # the approval even if a correction has superseded the statement since, or the
        # resolution would stay PROPOSED with its money moved (found in review)
        try:
            transfer_id, split_id = await _carry_out(deps, conn, platform_id, r, d, found)
        except ClearingError as exc:
            if idempotency.recorded(exc):
                refused.append((r.attempt, exc))
            raise
        now = deps.clock.now()
        await rstore.review(conn, platform_id, r, ResolutionState.APPROVED, key_id, note,
                            transfer_id, split_id, now)
        await rstore.event(conn, platform_id, resolution_id, ResolutionStep.APPROVED, key_id,
                           request_id, note, transfer_id or split_id, now)
        await rstore.set_discrepancy(conn, platform_id, d.discrepancy_id,
                                     DiscrepancyState.RESOLVED, resolution_id)
        await events.resolved(conn, platform_id, d, resolution_id, request_id, now)
        return await _recorded(conn, actor, APPROVE_METHOD, platform_id, resolution_id,
                               r.state, encode)

    try:
        return await idempotency.run(deps.pool, platform_id, request_id, APPROVE_METHOD,
                                     payload_hash, op)
    except ClearingError:
        if refused:
            await _posting_refused(deps, platform_id, resolution_id, key_id, request_id,
                                   *refused[0])
        raise


async def _posting_refused(deps: ReconDeps, platform_id: int, resolution_id: int, key_id: int,
                           request_id: str, attempt: int, exc: ClearingError) -> None:
    """The POSTING_REFUSED event and the next attempt, once per refused attempt."""
    async with deps.pool.acquire() as conn, conn.transaction():
        if await rstore.next_attempt(conn, platform_id, resolution_id, attempt):
            await rstore.event(conn, platform_id, resolution_id, ResolutionStep.POSTING_REFUSED,
                               key_id, request_id, f"{exc.reason}: {exc.message}", 0,
                               deps.clock.now())


async def reject(deps: ReconDeps, platform_id: int, key_id: int, request_id: str,
                 payload_hash: bytes, resolution_id: int, note: str, encode: Encode, *,
                 actor: audit.Actor) -> bytes:
    """RejectResolution: REJECTED, its discrepancy OPEN again; refused once its posting
    committed (RESOLUTION_POSTED)."""
    async def op(conn: asyncpg.Connection) -> bytes:
        r = await _reviewable(conn, platform_id, resolution_id, key_id)
        d = await _discrepancy(conn, platform_id, r)
        posting = posting_request_id(r)
        prior = await idempotency.lookup(conn, platform_id, posting) if posting else None
        if prior is not None and not prior.error:
            raise FailedPrecondition(
                f"resolution {resolution_id}'s posting committed while its approval did not "
                "finish: ApproveResolution finishes it", reason=Reason.RESOLUTION_POSTED)
        now = deps.clock.now()
        await rstore.review(conn, platform_id, r, ResolutionState.REJECTED, key_id, note, 0, 0,
                            now)
        await rstore.event(conn, platform_id, resolution_id, ResolutionStep.REJECTED, key_id,
                           request_id, note, 0, now)
        await rstore.set_discrepancy(conn, platform_id, d.discrepancy_id, DiscrepancyState.OPEN,
                                     resolution_id)
        return await _recorded(conn, actor, REJECT_METHOD, platform_id, resolution_id,
                               r.state, encode)

    return await idempotency.run(deps.pool, platform_id, request_id, REJECT_METHOD,
                                 payload_hash, op)


async def get(deps: ReconDeps, platform_id: int, resolution_id: int) -> Resolution:
    async with deps.pool.acquire() as conn:
        r = await rstore.load(conn, platform_id, resolution_id)
    if r is None:
        raise NotFound(f"no resolution {resolution_id}", reason=Reason.RESOLUTION_NOT_FOUND,
                       metadata={"field": "resolution_id"})
    return r


async def _recorded(conn: asyncpg.Connection, actor: audit.Actor, method: str, platform_id: int,
                    resolution_id: int, before, encode: Encode) -> bytes:
    """The step's audit record (in its transaction) and its response. `before`: the
    resolution's state (the discrepancy's, for a proposal)."""
    r = await rstore.load(conn, platform_id, resolution_id)
    await audit.record(conn, actor, method, f"recon_resolution:{resolution_id}",
                       before={"state": before.name},
                       after={"state": r.state.name, "discrepancy_id": r.discrepancy_id,
                              "action": r.action.name, "amount_minor": r.amount_minor,
                              "currency_code": r.currency_code,
                              "note": r.review_note or r.note,
                              "transfer_id": r.transfer_id, "split_id": r.split_id})
    return encode(r)
