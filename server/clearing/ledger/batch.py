"""One batch of the ledger writer, in memory: the state machine, with no I/O.

Given the batch's locked accounts (their balances) and the open pending transfers its
postings post or void, `Batch.add` applies each posting, in arrival order, or refuses it
alone (all legs or none: a refused posting leaves the state as it found it):

- legs are IMMEDIATE (posted at once), PENDING (held: pending balances), POST_PENDING
  (all or part of a hold becomes posted) or VOID_PENDING (what is left of a hold is let go);
- the checks of a leg, in order: the accounts exist in the posting's platform; for POST and
  VOID the pending transfer exists, is the posting's, matches the accounts and currency
  given, and is still OPEN; for IMMEDIATE and PENDING the currency of both accounts; the one
  status rule on both sides (`clearing.ledger.status`); funds (an account that may not go
  negative keeps `available >= 0`: credits_posted - debits_posted - debits_pending -
  frozen); no 64-bit total overflows; a POST of no more than is still pending;
- a later posting sees what the earlier ones did (a posting may spend what an earlier one
  of the batch credited, or post a hold an earlier one made);
- claims (`clearing.ledger.model.Claim`) taken by a committed posting refuse a later posting
  of the batch with the same claim;
- each posting's idempotency record is made with its outcome (`clearing.idempotency`): the
  first response (`Posting.respond`, in memory) or the recorded failure; none for a failure
  that is not recorded.

`Batch.writes` then hands over what the batch's one write statement stores
(`clearing.ledger.batch_sql`): the journal rows, the touched accounts' new totals, the
older pending transfers acted on, the idempotency records. `answer_duplicate` answers a
posting whose request id came twice in one batch (the writer applies only the first).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from clearing import idempotency
from clearing.errors import (AlreadyExists, ClearingError, FailedPrecondition,
                             FieldViolation, InvalidArgument, NotFound, invariant)
from clearing.ledger import status
from clearing.ledger.model import Claim, Leg, Mode, PendingState, Posting, Replay, TransferRecord
from clearing.limits import BATCH_SPAN, INT64_MAX
from clearing.reasons import Reason

# What a posting comes to: its committed records, or the error it was refused with.
Outcome = list[TransferRecord] | ClearingError

# The reason a post or void of a pending transfer that is no longer open is refused with.
_PENDING_DONE_REASONS = {PendingState.POSTED: Reason.PENDING_ALREADY_POSTED,
                         PendingState.VOIDED: Reason.PENDING_ALREADY_VOIDED}


@dataclass(slots=True)
class LockedAccount:
    """An account as the batch sees it (locked for the batch's transaction): its totals
    move as the batch's postings apply; `touched` when one of them moved it."""

    account_id: int
    platform_id: int
    currency_code: str
    status: int
    allow_negative: bool
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    frozen: int
    touched: bool = False

    def available(self) -> int:
        return (self.credits_posted - self.debits_posted - self.debits_pending
                - self.frozen)

    def _snapshot(self) -> tuple[int, int, int, int, bool]:
        return (self.debits_posted, self.credits_posted, self.debits_pending,
                self.credits_pending, self.touched)

    def _restore(self, snapshot: tuple[int, int, int, int, bool]) -> None:
        (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending,
         self.touched) = snapshot


@dataclass(slots=True)
class PendingTransfer:
    """A pending transfer as the batch sees it: one locked from the journal, or one a
    posting of this batch made. `remaining` is what is still held."""

    transfer_id: int
    platform_id: int
    debit_account_id: int
    credit_account_id: int
    currency_code: str
    remaining: int
    state: PendingState
    touched: bool = False


class PendingUpdate(NamedTuple):
    """A pending transfer written before this batch that one of its postings acted on."""

    transfer_id: int
    remaining: int
    state: PendingState


class RequestRecord(NamedTuple):
    """One idempotency record (a row of `requests`): a posting's first result, or a claim
    its committed posting took."""

    platform_id: int
    request_id: str
    method: str
    payload_hash: bytes
    ok: bool
    result_ids: tuple[int, ...]
    error_code: str
    error_reason: str
    error_message: str
    response: bytes | None
    error: str  # `idempotency.encode_error` of the recorded failure, "" if none


class Decision(NamedTuple):
    """What `Batch.add` made of a posting: its outcome, and the first response its
    `respond` made from the records (None if it has none or was refused)."""

    outcome: Outcome
    response: bytes | None


@dataclass(frozen=True, slots=True)
class BatchWrites:
    """Everything a batch stores, for its one write statement."""

    batch_id: int
    created_at: dt.datetime
    # In position order; a pending transfer made in this batch with its state at the end of
    # the batch (a later posting of the batch may have posted or voided it).
    journal: list[TransferRecord]
    balances: list[LockedAccount]  # the touched accounts, with their new totals
    pending_updates: list[PendingUpdate]
    requests: list[RequestRecord]


class Batch:
    """The postings of one batch, applied in memory (see the module docstring)."""

    def __init__(self, batch_id: int, created_at: dt.datetime,
                 accounts: Iterable[LockedAccount],
                 pendings: Iterable[PendingTransfer]) -> None:
        invariant(batch_id > 0, "journal batch ids start at 1")
        self.batch_id = batch_id
        self.created_at = created_at
        self._first_id = batch_id * BATCH_SPAN
        self._accounts = {a.account_id: a for a in accounts}
        self._pendings = {p.transfer_id: p for p in pendings}
        self._journal: list[TransferRecord] = []
        self._requests: list[RequestRecord] = []
        self._claimed: set[str] = set()
        self._seen: set[tuple[int, str]] = set()

    def account(self, account_id: int) -> LockedAccount:
        return self._accounts[account_id]

    def pending(self, transfer_id: int) -> PendingTransfer:
        return self._pendings[transfer_id]

    # ---- one posting ------------------------------------------------------------------

    def add(self, posting: Posting) -> Decision:
        """Apply the posting (all its legs) or refuse it alone; record its idempotency
        record. A request id comes once per batch (`answer_duplicate` answers the others).
        A `respond` that raises is a bug and fails the batch."""
        key = (posting.platform_id, posting.request_id)
        invariant(key not in self._seen, "a request id applied twice in one batch")
        self._seen.add(key)
        outcome = self._apply_claimed(posting)
        response = None
        if not isinstance(outcome, ClearingError):
            if posting.respond is not None:
                response = posting.respond(outcome)
        self._record(posting, outcome, response)
        return Decision(outcome, response)

    def _apply_claimed(self, posting: Posting) -> Outcome:
        """Apply a posting unless a posting earlier in this batch took one of its claims."""
        for claim in posting.claims:
            if claim.key in self._claimed:
                return claim_taken(claim)
        outcome = self._apply(posting)
        if not isinstance(outcome, ClearingError):
            self._claimed.update(c.key for c in posting.claims)
        return outcome

    def _apply(self, posting: Posting) -> Outcome:
        """Apply all legs or none: the new records, or the ClearingError of the first leg
        that failed (everything the posting changed is put back)."""
        account_snapshots, pending_snapshots = self._snapshots(posting)
        position_before = len(self._journal)
        try:
            return [self._apply_leg(posting, i, leg) for i, leg in enumerate(posting.legs)]
        except ClearingError as exc:
            for account_id, snapshot in account_snapshots.items():
                self._accounts[account_id]._restore(snapshot)
            for transfer_id, (remaining, state, touched) in pending_snapshots.items():
                pending = self._pendings[transfer_id]
                pending.remaining, pending.state, pending.touched = remaining, state, touched
            del self._journal[position_before:]
            first_new_id = self._first_id + position_before
            for transfer_id in [t for t in self._pendings if t >= first_new_id]:
                del self._pendings[transfer_id]  # held by this refused posting: never written
            return exc

    def _snapshots(self, posting: Posting) -> tuple[dict, dict]:
        """The state a refused posting must restore: only what its legs can touch."""
        account_snapshots: dict[int, tuple] = {}
        pending_snapshots: dict[int, tuple] = {}
        for leg in posting.legs:
            ids = [leg.debit_account_id, leg.credit_account_id]
            pending = self._pendings.get(leg.pending_id) if leg.pending_id else None
            if pending is not None:
                pending_snapshots[pending.transfer_id] = (pending.remaining, pending.state,
                                                          pending.touched)
                ids += [pending.debit_account_id, pending.credit_account_id]
            for account_id in ids:
                account = self._accounts.get(account_id)
                if account is not None and account_id not in account_snapshots:
                    account_snapshots[account_id] = account._snapshot()
        return account_snapshots, pending_snapshots

    def _account(self, platform_id: int, account_id: int, field: str) -> LockedAccount:
        account = self._accounts.get(account_id)
        if account is None or account.platform_id != platform_id:
            raise NotFound(f"account {account_id} not found", reason=Reason.ACCOUNT_NOT_FOUND,
                           metadata={"field": field, "account_id": str(account_id)})
        return account

    def _apply_leg(self, posting: Posting, index: int, leg: Leg) -> TransferRecord:
        prefix = f"legs[{index}]." if len(posting.legs) > 1 else ""
        remaining, state = 0, PendingState.NONE
        amount = leg.amount_minor
        if leg.mode in (Mode.POST_PENDING, Mode.VOID_PENDING):
            pending = self._pending_for(posting, leg, prefix)
            debit = self._account(posting.platform_id, pending.debit_account_id,
                                  prefix + "debit_account_id")
            credit = self._account(posting.platform_id, pending.credit_account_id,
                                   prefix + "credit_account_id")
            _check_status(posting, leg.mode, debit, credit, prefix)
            if leg.mode is Mode.POST_PENDING:
                amount = _post(pending, debit, credit, amount, prefix)
            else:
                amount = _void(pending, debit, credit)
        else:
            debit = self._account(posting.platform_id, leg.debit_account_id,
                                  prefix + "debit_account_id")
            credit = self._account(posting.platform_id, leg.credit_account_id,
                                   prefix + "credit_account_id")
            _check_currency(debit, credit, leg.currency_code, prefix)
            _check_status(posting, leg.mode, debit, credit, prefix)
            _check_funds(debit, amount)
            _check_overflow(credit.credits_posted + credit.credits_pending, amount)
            if leg.mode is Mode.IMMEDIATE:
                debit.debits_posted += amount
                credit.credits_posted += amount
            else:
                debit.debits_pending += amount
                credit.credits_pending += amount
                remaining, state = amount, PendingState.OPEN
        debit.touched = credit.touched = True
        position = len(self._journal)
        invariant(position < BATCH_SPAN, "journal batch overflow")
        transfer_id = self._first_id + position
        record = TransferRecord(
            transfer_id, posting.platform_id, posting.request_id, debit.account_id,
            credit.account_id, amount, debit.currency_code, leg.mode, leg.pending_id,
            remaining, state, leg.memo, self.created_at)
        self._journal.append(record)
        if leg.mode is Mode.PENDING:  # a later leg of this batch may post or void it
            self._pendings[transfer_id] = PendingTransfer(
                transfer_id, posting.platform_id, debit.account_id, credit.account_id,
                debit.currency_code, remaining, PendingState.OPEN)
        return record

    def _pending_for(self, posting: Posting, leg: Leg, prefix: str) -> PendingTransfer:
        pending = self._pendings.get(leg.pending_id)
        if pending is None or pending.platform_id != posting.platform_id:
            raise NotFound(f"pending transfer {leg.pending_id} not found",
                           reason=Reason.PENDING_TRANSFER_NOT_FOUND,
                           metadata={"field": prefix + "pending_transfer_id"})
        wrong = _pending_violations(pending, leg, prefix)
        if wrong:
            currency_only = all(v.field.endswith("currency_code") for v in wrong)
            raise InvalidArgument(wrong, reason=Reason.CURRENCY_MISMATCH if currency_only else None)
        if pending.state != PendingState.OPEN:
            name = PendingState(pending.state).name
            raise FailedPrecondition(
                f"pending transfer {pending.transfer_id} is already {name}",
                reason=_PENDING_DONE_REASONS[pending.state])
        return pending

    # ---- idempotency records ------------------------------------------------------------

    def _record(self, posting: Posting, outcome: Outcome, response: bytes | None) -> None:
        """The posting's first result, if it is one (`idempotency.recorded`, less the
        posting's `unrecorded_reasons`), and the claims a committed posting took."""
        ok = not isinstance(outcome, ClearingError)
        if ok:
            result_ids = tuple(r.transfer_id for r in outcome)
            self._requests.append(RequestRecord(
                posting.platform_id, posting.request_id, posting.method, posting.payload_hash,
                True, result_ids, "", "", "", response, ""))
            for claim in posting.claims:
                self._requests.append(RequestRecord(
                    posting.platform_id, claim.key, "Claim", posting.payload_hash, True,
                    result_ids, "", "", "", None, ""))
        elif idempotency.recorded(outcome) and outcome.reason not in posting.unrecorded_reasons:
            self._requests.append(RequestRecord(
                posting.platform_id, posting.request_id, posting.method, posting.payload_hash,
                False, (), outcome.code, outcome.reason, outcome.message, None,
                idempotency.encode_error(outcome)))

    # ---- the batch's writes -------------------------------------------------------------

    def writes(self) -> BatchWrites:
        """What the batch stores; checks the money invariants of every touched account."""
        balances = [a for a in self._accounts.values() if a.touched]
        for a in balances:
            invariant(a.debits_pending >= 0 and a.credits_pending >= 0,
                      "negative pending balance")
            invariant(a.allow_negative or a.available() >= 0, "overdraft slipped through")
        journal = [self._final(r) if r.mode == Mode.PENDING else r for r in self._journal]
        updates = [PendingUpdate(p.transfer_id, p.remaining, p.state)
                   for p in self._pendings.values()
                   if p.touched and p.transfer_id < self._first_id]
        return BatchWrites(self.batch_id, self.created_at, journal, balances, updates,
                           list(self._requests))

    def _final(self, record: TransferRecord) -> TransferRecord:
        """A pending transfer made in this batch, as the batch leaves it."""
        pending = self._pendings[record.transfer_id]
        if (pending.remaining, pending.state) == (record.pending_remaining,
                                                  record.pending_state):
            return record
        return dataclasses.replace(record, pending_remaining=pending.remaining,
                                   pending_state=pending.state)


# ---- duplicates, claims -------------------------------------------------------------------

def answer_duplicate(posting: Posting, first: Posting, first_outcome: object,
                     first_response: bytes | None) -> object:
    """The answer to a posting whose request id an earlier posting of the same batch has:
    the same request (method and payload) gets the first's answer (its first response if
    it made one); another request answers REQUEST_ID_REUSED."""
    if posting.payload_hash != first.payload_hash or posting.method != first.method:
        return idempotency.reused(posting.request_id)
    return first_outcome if first_response is None else Replay(first_response)


def claim_taken(claim: Claim) -> AlreadyExists:
    return AlreadyExists(claim.message, reason=claim.reason, metadata={"key": claim.key})


# ---- the checks and moves of one leg ------------------------------------------------------

def _post(pending: PendingTransfer, debit: LockedAccount, credit: LockedAccount, amount: int,
          prefix: str) -> int:
    if amount > pending.remaining:
        raise InvalidArgument([FieldViolation(
            prefix + "amount_minor",
            f"exceeds the {pending.remaining} still pending on transfer "
            f"{pending.transfer_id}")], reason=Reason.AMOUNT_EXCEEDS_PENDING)
    debit.debits_pending -= amount
    credit.credits_pending -= amount
    debit.debits_posted += amount
    credit.credits_posted += amount
    pending.remaining -= amount
    if pending.remaining == 0:
        pending.state = PendingState.POSTED
    pending.touched = True
    return amount


def _void(pending: PendingTransfer, debit: LockedAccount, credit: LockedAccount) -> int:
    amount = pending.remaining
    debit.debits_pending -= amount
    credit.credits_pending -= amount
    pending.remaining = 0
    pending.state = PendingState.VOIDED
    pending.touched = True
    return amount


def _pending_violations(pending: PendingTransfer, leg: Leg,
                        prefix: str) -> list[FieldViolation]:
    """Accounts and currency given with POST/VOID must be the pending transfer's."""
    wrong = []
    if leg.debit_account_id not in (0, pending.debit_account_id):
        wrong.append(FieldViolation(prefix + "debit_account_id",
                                    "differs from the pending transfer's debit account"))
    if leg.credit_account_id not in (0, pending.credit_account_id):
        wrong.append(FieldViolation(prefix + "credit_account_id",
                                    "differs from the pending transfer's credit account"))
    if leg.currency_code not in ("", pending.currency_code):
        wrong.append(FieldViolation(prefix + "currency_code",
                                    "differs from the pending transfer's currency"))
    return wrong


def _check_currency(debit: LockedAccount, credit: LockedAccount, currency: str,
                    prefix: str) -> None:
    wrong = []
    if debit.currency_code != currency:
        wrong.append(FieldViolation(
            prefix + "currency_code",
            f"debit account holds {debit.currency_code}, not {currency}"))
    if credit.currency_code != currency:
        wrong.append(FieldViolation(
            prefix + "currency_code",
            f"credit account holds {credit.currency_code}, not {currency}"))
    if wrong:
        raise InvalidArgument(wrong, reason=Reason.CURRENCY_MISMATCH)


def _check_status(posting: Posting, mode: Mode, debit: LockedAccount, credit: LockedAccount,
                  prefix: str) -> None:
    """The one status rule of `clearing.ledger.status`, on both sides of the leg."""
    status.check_leg(mode, debit.account_id, debit.status, credit.account_id, credit.status,
                     prefix=prefix, books_external=posting.books_external)


def _check_funds(debit: LockedAccount, amount: int) -> None:
    if not debit.allow_negative and debit.available() < amount:
        raise FailedPrecondition(
            f"account {debit.account_id} has {debit.available()} available, {amount} needed",
            reason=Reason.INSUFFICIENT_FUNDS, metadata={"account_id": str(debit.account_id)})
    _check_overflow(debit.debits_posted + debit.debits_pending, amount)


def _check_overflow(total: int, amount: int) -> None:
    if total + amount > INT64_MAX:
        raise FailedPrecondition("the transfer would overflow an account's 64-bit totals",
                                 reason=Reason.BALANCE_OVERFLOW)
