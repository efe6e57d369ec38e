"""The ledger writer's batch state machine (`clearing.ledger.batch`), in memory, without
PostgreSQL: exact balances after sequences of immediate, pending, post and void legs; a
refused posting leaves the others applied and no trace of itself; the status rule on both
sides; funds at the exact boundary; multi-leg postings all or nothing; idempotency records
and duplicates within a batch; and the encoding of a batch's writes as the write
statement's parameters (`clearing.ledger.batch_sql`)."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from clearing import idempotency
from clearing.errors import (AlreadyExists, ClearingError, FailedPrecondition,
                             InvalidArgument, InvariantViolation, NotFound)
from clearing.ledger import batch_sql, journal
from clearing.ledger.batch import (Batch, LockedAccount, PendingTransfer, PendingUpdate,
                                   RequestRecord, answer_duplicate)
from clearing.ledger.model import (AccountStatus, Claim, Leg, Mode, PendingState, Posting,
                                   Replay, TransferRecord)
from clearing.limits import BATCH_SPAN, INT64_MAX

NOW = dt.datetime(2026, 12, 4, 12, 0, 0, 250_000, tzinfo=dt.timezone.utc)
PID = 7
OTHER_PID = 8
BATCH_ID = 3
FIRST = BATCH_ID * BATCH_SPAN  # the first transfer id of the batch
# the accounts of platform PID: a custodial account that may go negative, three merchants
CUSTODIAL, M1, M2, M3 = 10, 11, 12, 13
USD = 14          # a merchant account in USD
FOREIGN = 20      # another platform's account
OLD_HOLD = 2 * BATCH_SPAN + 5  # a pending transfer of an earlier batch: M1 -> M2, 500 held


def _account(account_id: int, *, platform_id: int = PID, currency: str = "CNY",
             allow_negative: bool = False, credits_posted: int = 0, debits_posted: int = 0,
             debits_pending: int = 0, credits_pending: int = 0, frozen: int = 0,
             status: AccountStatus = AccountStatus.ACTIVE) -> LockedAccount:
    return LockedAccount(account_id, platform_id, currency, int(status), allow_negative,
                         debits_posted, credits_posted, debits_pending, credits_pending, frozen)


def _accounts(changes: dict[int, dict] | None = None) -> list[LockedAccount]:
    """The platform's accounts (and one of another platform), `changes` by account id."""
    base = {
        CUSTODIAL: dict(allow_negative=True),
        M1: dict(credits_posted=1_000, debits_pending=500),  # 500 held by OLD_HOLD
        M2: dict(credits_pending=500),
        M3: dict(),
        USD: dict(currency="USD", credits_posted=1_000),
        FOREIGN: dict(platform_id=OTHER_PID, credits_posted=1_000),
    }
    for account_id, change in (changes or {}).items():
        base[account_id].update(change)
    return [_account(i, **kw) for i, kw in base.items()]


def _old_hold(**changes) -> PendingTransfer:
    base = dict(transfer_id=OLD_HOLD, platform_id=PID, debit_account_id=M1,
                credit_account_id=M2, currency_code="CNY", remaining=500,
                state=PendingState.OPEN)
    base.update(changes)
    return PendingTransfer(**base)


def _batch(accounts: list[LockedAccount] | None = None,
           pendings: list[PendingTransfer] | None = None) -> Batch:
    return Batch(BATCH_ID, NOW, _accounts() if accounts is None else accounts,
                 [_old_hold()] if pendings is None else pendings)


_counter = iter(range(1, 1_000_000))


def _posting(*legs: Leg, request_id: str | None = None, method: str = "Transfer",
             payload: str | None = None, **kw) -> Posting:
    rid = request_id or f"r{next(_counter)}"
    digest = hashlib.sha256((payload or rid).encode()).digest()
    return Posting(PID, rid, method, digest, tuple(legs), **kw)


def _move(debit: int, credit: int, amount: int, currency: str = "CNY", memo: str = "") -> Leg:
    return Leg(debit, credit, amount, currency, Mode.IMMEDIATE, memo=memo)


def _hold(debit: int, credit: int, amount: int) -> Leg:
    return Leg(debit, credit, amount, "CNY", Mode.PENDING)


def _post(pending_id: int, amount: int) -> Leg:
    return Leg(0, 0, amount, "", Mode.POST_PENDING, pending_id=pending_id)


def _void(pending_id: int) -> Leg:
    return Leg(0, 0, 0, "", Mode.VOID_PENDING, pending_id=pending_id)


def _totals_of(a: LockedAccount) -> tuple[int, int, int, int]:
    return a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending


def _totals(batch: Batch, account_id: int) -> tuple[int, int, int, int]:
    """(debits_posted, credits_posted, debits_pending, credits_pending)"""
    return _totals_of(batch.account(account_id))


def _refused(decision, kind: type, reason: str) -> ClearingError:
    assert isinstance(decision.outcome, kind), decision.outcome
    assert decision.outcome.reason == reason
    assert decision.response is None
    return decision.outcome


# ---- exact balances ---------------------------------------------------------------------------

def test_immediate_transfers_move_exact_amounts_and_number_the_journal():
    b = _batch()
    first = b.add(_posting(_move(CUSTODIAL, M3, 100, memo="fund")))
    second = b.add(_posting(_move(M3, M2, 30)))
    assert first.outcome == [TransferRecord(
        FIRST, PID, first.outcome[0].request_id, CUSTODIAL, M3, 100, "CNY", Mode.IMMEDIATE, 0,
        0, PendingState.NONE, "fund", NOW)]
    assert second.outcome[0].transfer_id == FIRST + 1
    assert _totals(b, CUSTODIAL) == (100, 0, 0, 0)
    assert _totals(b, M3) == (30, 100, 0, 0)
    assert b.account(M3).available() == 70
    assert _totals(b, M2) == (0, 30, 0, 500)
    writes = b.writes()
    assert [r.transfer_id for r in writes.journal] == [FIRST, FIRST + 1]
    assert {a.account_id for a in writes.balances} == {CUSTODIAL, M2, M3}
    assert writes.pending_updates == []


def test_a_hold_posted_in_two_parts_then_refused_a_third_time():
    b = _batch()
    hold = b.add(_posting(_hold(CUSTODIAL, M3, 100))).outcome[0]
    assert (hold.transfer_id, hold.pending_remaining, hold.pending_state) == \
        (FIRST, 100, PendingState.OPEN)
    assert _totals(b, CUSTODIAL) == (0, 0, 100, 0)
    assert _totals(b, M3) == (0, 0, 0, 100)
    assert b.account(M3).available() == 0  # money on its way in is not available yet
    part = b.add(_posting(_post(hold.transfer_id, 40))).outcome[0]
    assert (part.mode, part.amount_minor, part.pending_id, part.debit_account_id,
            part.credit_account_id) == (Mode.POST_PENDING, 40, FIRST, CUSTODIAL, M3)
    assert _totals(b, CUSTODIAL) == (40, 0, 60, 0)
    assert _totals(b, M3) == (0, 40, 0, 60)
    assert (b.pending(FIRST).remaining, b.pending(FIRST).state) == (60, PendingState.OPEN)
    b.add(_posting(_post(hold.transfer_id, 60)))
    assert _totals(b, CUSTODIAL) == (100, 0, 0, 0)
    assert _totals(b, M3) == (0, 100, 0, 0)
    _refused(b.add(_posting(_post(hold.transfer_id, 1))), FailedPrecondition,
             "PENDING_ALREADY_POSTED")
    writes = b.writes()
    # the hold is written once, as the batch leaves it; its caller got it as it was made
    assert (writes.journal[0].pending_remaining, writes.journal[0].pending_state) == \
        (0, PendingState.POSTED)
    assert writes.journal[0].amount_minor == 100
    assert [r.amount_minor for r in writes.journal] == [100, 40, 60]
    assert writes.pending_updates == []  # made in this batch: no UPDATE of it


def test_void_releases_what_is_left_of_a_hold():
    b = _batch()
    hold = b.add(_posting(_hold(M1, M3, 200))).outcome[0]  # M1: 1000 - 500 held = 500 free
    assert b.account(M1).available() == 300
    b.add(_posting(_post(hold.transfer_id, 50)))
    void = b.add(_posting(_void(hold.transfer_id))).outcome[0]
    assert void.amount_minor == 150  # the remainder, whatever the leg said
    assert _totals(b, M1) == (50, 1_000, 500, 0)
    assert _totals(b, M3) == (0, 50, 0, 0)
    assert b.account(M1).available() == 450
    _refused(b.add(_posting(_void(hold.transfer_id))), FailedPrecondition,
             "PENDING_ALREADY_VOIDED")
    assert (b.writes().journal[0].pending_remaining, b.writes().journal[0].pending_state) == \
        (0, PendingState.VOIDED)


def test_an_older_hold_is_updated_once_with_its_final_state():
    b = _batch()
    b.add(_posting(_post(OLD_HOLD, 300)))
    assert _totals(b, M1) == (300, 1_000, 200, 0)
    assert _totals(b, M2) == (0, 300, 0, 200)
    b.add(_posting(_void(OLD_HOLD)))
    assert _totals(b, M1) == (300, 1_000, 0, 0)
    assert _totals(b, M2) == (0, 300, 0, 0)
    writes = b.writes()
    assert writes.pending_updates == [PendingUpdate(OLD_HOLD, 0, PendingState.VOIDED)]
    assert [(r.mode, r.amount_minor, r.pending_id) for r in writes.journal] == \
        [(Mode.POST_PENDING, 300, OLD_HOLD), (Mode.VOID_PENDING, 200, OLD_HOLD)]


def test_post_of_exactly_the_remainder_and_one_more():
    b = _batch()
    error = _refused(b.add(_posting(_post(OLD_HOLD, 501))), InvalidArgument,
                     "AMOUNT_EXCEEDS_PENDING")
    assert [v.field for v in error.violations] == ["amount_minor"]
    assert b.add(_posting(_post(OLD_HOLD, 500))).outcome[0].amount_minor == 500
    assert (b.pending(OLD_HOLD).remaining, b.pending(OLD_HOLD).state) == \
        (0, PendingState.POSTED)


# ---- refusals ---------------------------------------------------------------------------------

def test_a_refused_posting_leaves_the_others_applied_and_no_trace():
    b = _batch()
    ok1 = b.add(_posting(_move(CUSTODIAL, M3, 100)))
    bad = b.add(_posting(_move(M2, M3, 1)))  # M2 has only money on its way in
    ok2 = b.add(_posting(_move(M3, M2, 25)))
    _refused(bad, FailedPrecondition, "INSUFFICIENT_FUNDS")
    assert bad.outcome.metadata == {"account_id": str(M2)}
    assert [ok1.outcome[0].transfer_id, ok2.outcome[0].transfer_id] == [FIRST, FIRST + 1]
    assert _totals(b, M3) == (25, 100, 0, 0)
    assert _totals(b, M2) == (0, 25, 0, 500)
    assert len(b.writes().journal) == 2


@pytest.mark.parametrize("account, available", [
    (dict(credits_posted=100), 100),
    (dict(credits_posted=100, frozen=30), 70),
    (dict(credits_posted=100, debits_posted=20, debits_pending=30), 50),
    (dict(credits_posted=100, credits_pending=1_000), 100),  # incoming holds do not count
])
def test_insufficient_funds_at_the_exact_boundary(account, available):
    b = _batch(_accounts({M3: account}))
    assert b.account(M3).available() == available
    error = _refused(b.add(_posting(_move(M3, M1, available + 1))), FailedPrecondition,
                     "INSUFFICIENT_FUNDS")
    assert error.message == f"account {M3} has {available} available, {available + 1} needed"
    b.add(_posting(_hold(M3, M1, available)))  # a hold needs the funds as well
    assert b.account(M3).available() == 0
    _refused(b.add(_posting(_move(M3, M1, 1))), FailedPrecondition, "INSUFFICIENT_FUNDS")


def test_an_account_that_may_go_negative_is_not_limited():
    b = _batch()
    b.add(_posting(_move(CUSTODIAL, M3, 10**15)))
    assert b.account(CUSTODIAL).available() == -10**15


def test_balance_overflow_at_the_64_bit_boundary():
    b = _batch(_accounts({M3: dict(credits_posted=INT64_MAX - 10, credits_pending=5)}))
    _refused(b.add(_posting(_move(CUSTODIAL, M3, 6))), FailedPrecondition, "BALANCE_OVERFLOW")
    b.add(_posting(_move(CUSTODIAL, M3, 5)))
    assert b.account(M3).credits_posted + b.account(M3).credits_pending == INT64_MAX


@pytest.mark.parametrize("side, field", [("debit", "debit_account_id"),
                                         ("credit", "credit_account_id")])
@pytest.mark.parametrize("status", [AccountStatus.FROZEN, AccountStatus.CLOSED])
def test_the_status_rule_on_either_side(side, field, status):
    b = _batch(_accounts({M1 if side == "debit" else M3: dict(status=status)}))
    for leg in (_move(M1, M3, 1), _hold(M1, M3, 1)):
        error = _refused(b.add(_posting(leg)), FailedPrecondition, f"ACCOUNT_{status.name}")
        assert error.metadata["field"] == field
    # a multi-leg posting names the leg
    error = _refused(b.add(_posting(_move(CUSTODIAL, M2, 5), _move(M1, M3, 1))),
                     FailedPrecondition, f"ACCOUNT_{status.name}")
    assert error.metadata["field"] == f"legs[1].{field}"
    assert _totals(b, M2) == (0, 0, 0, 500)  # its first leg was put back


def test_both_sides_frozen_names_the_debit_first():
    b = _batch(_accounts({M1: dict(status=AccountStatus.FROZEN),
                          M3: dict(status=AccountStatus.CLOSED)}))
    error = _refused(b.add(_posting(_move(M1, M3, 1))), FailedPrecondition, "ACCOUNT_FROZEN")
    assert error.metadata == {"account_id": str(M1), "field": "debit_account_id"}


def test_frozen_accounts_a_void_always_goes_a_post_only_when_booked_external():
    frozen = dict(status=AccountStatus.FROZEN)
    b = _batch(_accounts({M1: frozen, M2: frozen}))
    _refused(b.add(_posting(_post(OLD_HOLD, 100))), FailedPrecondition, "ACCOUNT_FROZEN")
    assert b.add(_posting(_post(OLD_HOLD, 100), books_external=True)).outcome[0] \
        .amount_minor == 100
    assert b.add(_posting(_void(OLD_HOLD))).outcome[0].amount_minor == 400
    assert _totals(b, M1) == (100, 1_000, 0, 0)
    assert _totals(b, M2) == (0, 100, 0, 0)
    # books_external does not lift the other checks
    b2 = _batch(_accounts({M1: dict(status=AccountStatus.FROZEN, credits_posted=5,
                                    debits_pending=0)}), pendings=[])
    _refused(b2.add(_posting(_move(M1, M3, 6), books_external=True)), FailedPrecondition,
             "INSUFFICIENT_FUNDS")
    assert b2.add(_posting(_move(M1, M3, 5), books_external=True)).outcome[0] \
        .amount_minor == 5


def test_accounts_and_holds_of_another_platform_are_not_found():
    b = _batch(pendings=[_old_hold(), _old_hold(transfer_id=OLD_HOLD + 1,
                                                  platform_id=OTHER_PID)])
    error = _refused(b.add(_posting(_move(FOREIGN, M3, 1))), NotFound, "ACCOUNT_NOT_FOUND")
    assert error.metadata == {"field": "debit_account_id", "account_id": str(FOREIGN)}
    _refused(b.add(_posting(_move(M3, 999, 0))), NotFound, "ACCOUNT_NOT_FOUND")
    _refused(b.add(_posting(_post(OLD_HOLD + 1, 1))), NotFound, "PENDING_TRANSFER_NOT_FOUND")
    _refused(b.add(_posting(_void(OLD_HOLD + 99))), NotFound, "PENDING_TRANSFER_NOT_FOUND")


def test_currency_and_the_accounts_given_with_a_post():
    b = _batch()
    error = _refused(b.add(_posting(_move(M1, USD, 1))), InvalidArgument, "CURRENCY_MISMATCH")
    assert [v.description for v in error.violations] == ["credit account holds USD, not CNY"]
    error = _refused(b.add(_posting(_move(M1, M3, 1, "USD"))), InvalidArgument,
                     "CURRENCY_MISMATCH")
    assert len(error.violations) == 2
    _refused(b.add(_posting(Leg(0, 0, 1, "USD", Mode.POST_PENDING, pending_id=OLD_HOLD))),
             InvalidArgument, "CURRENCY_MISMATCH")
    error = _refused(b.add(_posting(Leg(M3, M2, 1, "CNY", Mode.POST_PENDING,
                                        pending_id=OLD_HOLD))), InvalidArgument,
                     "INVALID_ARGUMENT")
    assert [v.field for v in error.violations] == ["debit_account_id"]
    # the hold's own accounts and currency, given, are accepted
    assert b.add(_posting(Leg(M1, M2, 1, "CNY", Mode.POST_PENDING, pending_id=OLD_HOLD))) \
        .outcome[0].amount_minor == 1


# ---- multi-leg postings -------------------------------------------------------------------------

def test_a_multi_leg_posting_is_all_or_nothing():
    b = _batch()
    before = [_totals(b, i) for i in (CUSTODIAL, M1, M2, M3)]
    # each leg sees the earlier ones (M3 spends what the first leg gave it); the last fails
    refused = b.add(_posting(_move(CUSTODIAL, M3, 100), _move(M3, M2, 100),
                             _hold(M2, M3, 50), _post(FIRST + 2, 50), _post(OLD_HOLD, 10),
                             _move(M2, M3, 61)))
    error = _refused(refused, FailedPrecondition, "INSUFFICIENT_FUNDS")
    assert error.metadata == {"account_id": str(M2)}
    assert [_totals(b, i) for i in (CUSTODIAL, M1, M2, M3)] == before
    assert (b.pending(OLD_HOLD).remaining, b.pending(OLD_HOLD).state) == \
        (500, PendingState.OPEN)
    # the refused posting's hold is gone: its id is the next posting's, and it is not found
    _refused(b.add(_posting(_post(FIRST + 2, 1))), NotFound, "PENDING_TRANSFER_NOT_FOUND")
    ok = b.add(_posting(_move(CUSTODIAL, M3, 100), _move(M3, M2, 100), _hold(M2, M3, 50),
                        _post(FIRST + 2, 50), _post(OLD_HOLD, 10), _move(M2, M3, 60)))
    assert [r.transfer_id for r in ok.outcome] == list(range(FIRST, FIRST + 6))
    assert _totals(b, M2) == (110, 110, 0, 490)
    assert b.account(M2).available() == 0
    assert _totals(b, M3) == (100, 210, 0, 0)
    assert _totals(b, CUSTODIAL) == (100, 0, 0, 0)
    assert _totals(b, M1) == (10, 1_000, 490, 0)
    writes = b.writes()
    assert writes.pending_updates == [PendingUpdate(OLD_HOLD, 490, PendingState.OPEN)]
    assert (writes.journal[2].pending_remaining, writes.journal[2].pending_state) == \
        (0, PendingState.POSTED)
    assert len(writes.journal) == 6


# ---- idempotency records, claims, duplicates --------------------------------------------------

def test_idempotency_records_of_committed_and_refused_postings():
    b = _batch()
    ok = _posting(_move(CUSTODIAL, M3, 10), _move(CUSTODIAL, M2, 5),
                  respond=lambda records: b"first:" + str(len(records)).encode())
    refused = _posting(_move(M3, M1, 11))          # recorded: a business refusal
    invalid = _posting(_move(M1, USD, 1))          # not recorded: INVALID_ARGUMENT
    unrecorded = _posting(_move(M2, M1, 100), unrecorded_reasons=frozenset(
        {"INSUFFICIENT_FUNDS"}))
    decisions = [b.add(p) for p in (ok, refused, invalid, unrecorded)]
    assert decisions[0].response == b"first:2"
    error = decisions[1].outcome
    assert b.writes().requests == [
        RequestRecord(PID, ok.request_id, "Transfer", ok.payload_hash, True,
                      (FIRST, FIRST + 1), "", "", "", b"first:2", ""),
        RequestRecord(PID, refused.request_id, "Transfer", refused.payload_hash, False, (),
                      "FAILED_PRECONDITION", "INSUFFICIENT_FUNDS", error.message, None,
                      idempotency.encode_error(error)),
    ]


def test_a_claim_taken_in_the_batch_refuses_the_later_posting():
    b = _batch()
    order = Claim.of("order", "ORD1", "ORDER_ALREADY_SPLIT", "order ORD1 is split already")
    refused_first = _posting(_move(M3, M1, 1), claims=(order,))  # refused: takes nothing
    first = _posting(_move(CUSTODIAL, M3, 10), claims=(order,))
    second = _posting(_move(CUSTODIAL, M3, 20), claims=(order,))
    _refused(b.add(refused_first), FailedPrecondition, "INSUFFICIENT_FUNDS")
    assert b.add(first).outcome[0].amount_minor == 10
    error = _refused(b.add(second), AlreadyExists, "ORDER_ALREADY_SPLIT")
    assert error.metadata == {"key": order.key}
    assert _totals(b, M3) == (0, 10, 0, 0)
    records = b.writes().requests
    assert [(r.request_id, r.method, r.ok, r.result_ids) for r in records] == [
        (refused_first.request_id, "Transfer", False, ()),
        (first.request_id, "Transfer", True, (FIRST,)),
        (order.key, "Claim", True, (FIRST,)),
        (second.request_id, "Transfer", False, ()),
    ]


def test_a_request_id_is_applied_once_per_batch():
    b = _batch()
    posting = _posting(_move(CUSTODIAL, M3, 10), request_id="twice")
    first = b.add(posting)
    with pytest.raises(InvariantViolation):
        b.add(posting)
    assert _totals(b, M3) == (0, 10, 0, 0)
    # what the writer answers the second one: the first's answer, never a second transfer
    assert answer_duplicate(posting, posting, first.outcome, None) is first.outcome
    assert answer_duplicate(posting, posting, first.outcome, b"resp") == Replay(b"resp")
    refusal = FailedPrecondition("no", reason="INSUFFICIENT_FUNDS")
    assert answer_duplicate(posting, posting, refusal, None) is refusal
    for other in (_posting(_move(CUSTODIAL, M3, 11), request_id="twice", payload="other"),
                  _posting(_move(CUSTODIAL, M3, 10), request_id="twice", method="Split")):
        reused = answer_duplicate(other, posting, first.outcome, b"resp")
        assert isinstance(reused, AlreadyExists) and reused.reason == "REQUEST_ID_REUSED"


def test_writes_check_the_money_invariants():
    b = _batch()
    b.add(_posting(_move(CUSTODIAL, M3, 10)))
    b.account(M3).debits_posted = 11  # as a bug in a move would leave it
    with pytest.raises(InvariantViolation, match="overdraft"):
        b.writes()
    b.account(M3).debits_posted = 0
    b.account(M3).debits_pending = -1
    with pytest.raises(InvariantViolation, match="negative pending"):
        b.writes()


# ---- the write statement's parameters -----------------------------------------------------------

def test_write_arguments_encode_every_column_in_order():
    b = _batch()
    ok = _posting(_hold(CUSTODIAL, M3, 70), _post(FIRST, 20), _post(OLD_HOLD, 500),
                  request_id="ok", respond=lambda records: b"R")
    refused = _posting(_move(M3, M1, 21), request_id="no")  # M3 has 20
    b.add(ok)
    error = b.add(refused).outcome
    writes = b.writes()
    args = batch_sql.write_arguments(writes)
    assert len(args) == 35  # $1 .. $35 of WRITE_BATCH
    assert args[:2] == (BATCH_ID, NOW)
    ids = f"{FIRST},{FIRST + 1},{FIRST + 2}"  # result ids: text joined by commas
    assert args[2:14] == (
        "{" + ids.replace(",", ", ") + "}", "{7, 7, 7}", '{"ok","ok","ok"}',
        f"{{{CUSTODIAL}, {CUSTODIAL}, {M1}}}", f"{{{M3}, {M3}, {M2}}}", "{70, 20, 500}",
        '{"CNY","CNY","CNY"}', "{2, 3, 3}", f"{{0, {FIRST}, {OLD_HOLD}}}",
        "{50, 0, 0}", "{1, 0, 0}",  # the new hold as the batch leaves it: 50 left, OPEN
        '{"","",""}')
    touched = sorted(writes.balances, key=lambda a: a.account_id)
    assert [(a.account_id, a.debits_posted, a.credits_posted, a.debits_pending,
             a.credits_pending) for a in touched] == [
        (CUSTODIAL, 20, 0, 50, 0), (M1, 500, 1_000, 0, 0), (M2, 0, 500, 0, 0),
        (M3, 0, 20, 0, 50)]
    assert args[14] == batch_sql.int_array(a.account_id for a in writes.balances)
    assert args[19:22] == (f"{{{OLD_HOLD}}}", "{0}", "{2}")
    assert args[22:31] == (
        "{7, 7}", '{"ok","no"}', '{"Transfer","Transfer"}',
        batch_sql.bytea_array([ok.payload_hash, refused.payload_hash]), "{t,f}",
        f'{{"{ids}",""}}', '{"","FAILED_PRECONDITION"}', '{"","INSUFFICIENT_FUNDS"}',
        batch_sql.text_array(["", error.message]))
    assert args[31:33] == (journal.records_digest(writes.journal), 3)
    assert args[33:] == ([b"R", None],  # the first responses in binary (long values)
                         batch_sql.text_array(["", idempotency.encode_error(error)]))
    batch_sql.check_counts({"journal": 3, "balances": 4, "pendings": 1, "links": 1}, writes)
    with pytest.raises(InvariantViolation):
        batch_sql.check_counts({"journal": 3, "balances": 3, "pendings": 1, "links": 1},
                               writes)


def test_an_empty_batch_writes_no_link():
    b = _batch()
    b.add(_posting(_move(M2, M1, 1)))
    writes = b.writes()
    args = batch_sql.write_arguments(writes)
    assert args[2] == "{}" and args[31:33] == (b"", 0)
    batch_sql.check_counts({"journal": 0, "balances": 0, "pendings": 0, "links": 0}, writes)


# ---- a property: refusals leave no trace --------------------------------------------------------

_IDS = (CUSTODIAL, M1, M2, M3)
_legs = st.one_of(
    st.builds(_move, st.sampled_from(_IDS), st.sampled_from(_IDS), st.integers(0, 1_200)),
    st.builds(_hold, st.sampled_from(_IDS), st.sampled_from(_IDS), st.integers(0, 1_200)),
    st.builds(_post, st.sampled_from((OLD_HOLD, FIRST, FIRST + 1, FIRST + 3)),
              st.integers(0, 600)),
    st.builds(_void, st.sampled_from((OLD_HOLD, FIRST, FIRST + 2))),
)
_postings = st.lists(st.lists(_legs, min_size=1, max_size=3), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_postings)
def test_refused_postings_leave_no_trace_and_money_is_conserved(leg_lists):
    legs_of = [tuple(leg for leg in legs if not (leg.mode in (Mode.IMMEDIATE, Mode.PENDING)
                                                  and leg.debit_account_id
                                                  == leg.credit_account_id))
               for legs in leg_lists]
    postings = [_posting(*legs) for legs in legs_of if legs]
    b = _batch()
    decisions = [b.add(p) for p in postings]
    accepted = [p for p, d in zip(postings, decisions) if not isinstance(d.outcome,
                                                                           ClearingError)]
    writes = b.writes()  # its invariants hold: no overdraft, no negative pending total
    # the same batch made of the accepted postings alone ends the same, row for row
    # (a hold's id is its position, so a refused posting must not take one either)
    again = _batch()
    assert all(not isinstance(again.add(p).outcome, ClearingError) for p in accepted)
    redone = again.writes()
    assert (redone.journal, redone.balances, redone.pending_updates) == \
        (writes.journal, writes.balances, writes.pending_updates)
    # the balances are what the journal rows say, from the starting balances
    expected = {a.account_id: list(_totals_of(a)) for a in _accounts() if a.account_id in _IDS}
    for r in writes.journal:
        debit, credit, amount = expected[r.debit_account_id], expected[r.credit_account_id], \
            r.amount_minor
        if r.mode in (Mode.IMMEDIATE, Mode.POST_PENDING):
            debit[0] += amount
            credit[1] += amount
        if r.mode is Mode.PENDING:
            debit[2] += amount
            credit[3] += amount
        if r.mode in (Mode.POST_PENDING, Mode.VOID_PENDING):
            debit[2] -= amount
            credit[3] -= amount
    assert {i: list(_totals(b, i)) for i in _IDS} == expected
    # double entry: money is neither made nor lost
    assert sum(b.account(i).credits_posted - b.account(i).debits_posted for i in _IDS) == 1_000
    assert sum(b.account(i).credits_pending - b.account(i).debits_pending for i in _IDS) == 0


def test_the_batch_module_does_no_io():
    """The state machine imports no database, network or event-loop module (what it uses of
    `clearing.idempotency` is its pure encoding of records)."""
    import ast
    import inspect

    from clearing.ledger import batch
    tree = ast.parse(inspect.getsource(batch))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "dataclasses", "datetime", "typing", "clearing",
                        "clearing.errors", "clearing.ledger", "clearing.ledger.model",
                        "clearing.limits", "clearing.reasons"}
    assert {name for name in vars(batch) if name in ("asyncpg", "asyncio", "grpc")} == set()


def test_a_hold_made_in_the_batch_is_posted_with_its_own_currency_named():
    b = _batch()
    (hold,) = b.add(_posting(_hold(CUSTODIAL, M3, 40))).outcome
    # the hold's currency, given with the post, is accepted; another one is not
    _refused(b.add(_posting(Leg(0, 0, 1, "USD", Mode.POST_PENDING,
                                pending_id=hold.transfer_id))), InvalidArgument,
             "CURRENCY_MISMATCH")
    (post,) = b.add(_posting(Leg(CUSTODIAL, M3, 10, "CNY", Mode.POST_PENDING,
                                 pending_id=hold.transfer_id))).outcome
    assert (post.amount_minor, post.currency_code) == (10, "CNY")
    assert _totals(b, M3) == (0, 10, 0, 30)


def test_journal_batch_ids_start_at_1():
    with pytest.raises(InvariantViolation) as err:
        Batch(0, NOW, _accounts(), [])
    assert str(err.value) == "journal batch ids start at 1"
    assert Batch(1, NOW, _accounts(), []).add(_posting(_move(CUSTODIAL, M3, 1))) \
        .outcome[0].transfer_id == BATCH_SPAN  # batch 1's first row
