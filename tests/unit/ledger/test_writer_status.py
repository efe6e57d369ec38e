"""The writer applies the one status rule (`clearing.ledger.status`) to every posting:
both sides of immediate, pending and post-pending legs; never to a void; not to a posting
that books money already moved (`books_external`). A closed account cannot hold an open
pending transfer through the API (it closes with zero balances), so its status is set here
directly, as a corrupted or migrated row would be, to check the writer itself refuses."""

from __future__ import annotations

import hashlib
import secrets

import pytest

from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import FailedPrecondition, InvalidArgument
from clearing.ledger import status, store, verify
from clearing.ledger.model import AccountStatus, Leg, Mode, Posting
from clearing.ledger.writer import LedgerWriter
from tests.unit.ledger.conftest import posting as _posting


@pytest.fixture
async def writer(pool):
    w = LedgerWriter(pool, WriterSettings(batch_size_max=100, flush_ms_max=1, queue_max=100),
                     Clock())
    w.start()
    try:
        yield w
    finally:
        await w.drain_and_stop()


def _leg_posting(pid: int, leg: Leg, *, books_external: bool = False) -> Posting:
    rid = secrets.token_hex(8)
    return Posting(pid, rid, "Transfer", hashlib.sha256(rid.encode()).digest(), (leg,),
                   books_external=books_external)


def _post(pid: int, pending_id: int, amount: int, **kw) -> Posting:
    return _leg_posting(pid, Leg(0, 0, amount, "", Mode.POST_PENDING, pending_id), **kw)


def _void(pid: int, pending_id: int) -> Posting:
    return _leg_posting(pid, Leg(0, 0, 0, "", Mode.VOID_PENDING, pending_id))


async def _set_status(pool, account_id: int, st: AccountStatus) -> None:
    await pool.execute("UPDATE accounts SET status = $2 WHERE account_id = $1", account_id,
                       int(st))


async def _balance(pool, pid: int, account_id: int) -> tuple[int, int, int]:
    async with pool.acquire() as conn:
        b = (await store.get_account(conn, pid, account_id=account_id)).balance
    return b.posted, b.debits_pending, b.credits_pending


async def _held(writer, pid: int, debit: int, credit: int, amount: int) -> int:
    [record] = await writer.submit(_leg_posting(pid, Leg(debit, credit, amount, "CNY",
                                                         Mode.PENDING)))
    return record.transfer_id


@pytest.mark.parametrize("side", ["debit", "credit"])
@pytest.mark.parametrize("st", [AccountStatus.FROZEN, AccountStatus.CLOSED])
async def test_post_pending_out_of_or_into_an_inactive_account_is_refused(
        pool, accounts, writer, side, st):
    pid, custodial, (m0, m1, _) = accounts
    await writer.submit(_posting(pid, custodial, m0, 1_000))
    pending = await _held(writer, pid, m0, m1, 600)
    target = m0 if side == "debit" else m1
    await _set_status(pool, target, st)
    with pytest.raises(FailedPrecondition) as err:
        await writer.submit(_post(pid, pending, 600))
    assert err.value.reason == f"ACCOUNT_{st.name}"
    assert err.value.metadata == {"account_id": str(target),
                                  "field": f"{side}_account_id"}
    assert await _balance(pool, pid, m0) == (1_000, 600, 0)
    assert await _balance(pool, pid, m1) == (0, 0, 600)
    # a void moves nothing: allowed whatever the status
    await writer.submit(_void(pid, pending))
    assert await _balance(pool, pid, m0) == (1_000, 0, 0)
    assert await _balance(pool, pid, m1) == (0, 0, 0)
    assert (await verify.verify(pool, pid)).ok


async def test_both_sides_inactive_names_the_debit_side_first(pool, accounts, writer):
    pid, custodial, (m0, m1, _) = accounts
    await writer.submit(_posting(pid, custodial, m0, 100))
    pending = await _held(writer, pid, m0, m1, 100)
    await _set_status(pool, m0, AccountStatus.FROZEN)
    await _set_status(pool, m1, AccountStatus.CLOSED)
    with pytest.raises(FailedPrecondition) as err:
        await writer.submit(_post(pid, pending, 1))
    assert (err.value.reason, err.value.metadata["field"]) == ("ACCOUNT_FROZEN",
                                                               "debit_account_id")


async def test_a_posting_that_books_money_already_moved_is_not_refused_by_status(
        pool, accounts, writer):
    """A payout's bank-paid slice: the money left; the ledger must say so."""
    pid, custodial, (m0, _, _) = accounts
    await writer.submit(_posting(pid, custodial, m0, 1_000))
    pending = await _held(writer, pid, m0, custodial, 700)
    await _set_status(pool, m0, AccountStatus.FROZEN)
    await _set_status(pool, custodial, AccountStatus.FROZEN)
    with pytest.raises(FailedPrecondition):
        await writer.submit(_post(pid, pending, 300))
    [record] = await writer.submit(_post(pid, pending, 300, books_external=True))
    assert (record.amount_minor, record.pending_remaining) == (300, 0)
    assert await _balance(pool, pid, m0) == (700, 400, 0)
    # the other checks still hold: more than is pending is refused
    with pytest.raises(InvalidArgument) as err:
        await writer.submit(_post(pid, pending, 401, books_external=True))
    assert err.value.reason == "AMOUNT_EXCEEDS_PENDING"
    # an ordinary posting out of the frozen account is still refused
    with pytest.raises(FailedPrecondition) as err:
        await writer.submit(_leg_posting(pid, Leg(m0, custodial, 1, "CNY", Mode.IMMEDIATE)))
    assert err.value.reason == "ACCOUNT_FROZEN"
    assert (await verify.verify(pool, pid)).ok


@pytest.mark.parametrize("mode", [Mode.IMMEDIATE, Mode.PENDING, Mode.POST_PENDING,
                                  Mode.VOID_PENDING])
@pytest.mark.parametrize("debit_st", list(AccountStatus))
@pytest.mark.parametrize("credit_st", list(AccountStatus))
def test_the_rule_table(mode, debit_st, credit_st):
    """Written from the rule: a moving leg needs both sides ACTIVE, the debit side's
    refusal first; a void is never refused; a booked external movement never."""
    expected = None
    if mode is not Mode.VOID_PENDING:
        if debit_st is not AccountStatus.ACTIVE:
            expected = (f"ACCOUNT_{debit_st.name}", "legs[2].debit_account_id", "7")
        elif credit_st is not AccountStatus.ACTIVE:
            expected = (f"ACCOUNT_{credit_st.name}", "legs[2].credit_account_id", "9")
    try:
        status.check_leg(mode, 7, debit_st, 9, credit_st, prefix="legs[2].")
        got = None
    except FailedPrecondition as exc:
        got = (exc.reason, exc.metadata["field"], exc.metadata["account_id"])
    assert got == expected
    status.check_leg(mode, 7, debit_st, 9, credit_st, books_external=True)
    assert status.can_move(debit_st) is (debit_st is AccountStatus.ACTIVE)
    assert status.can_move(None) is False
