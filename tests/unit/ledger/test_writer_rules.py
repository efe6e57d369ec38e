"""The writer's posting rules at their boundaries, from the ledger contract: a debit may
spend exactly what is available (posted credits - posted debits - pending debits - frozen),
not one unit more, unless the account may go negative; a post may take exactly what is
still pending, not more, and posting all of it closes the pending transfer (POSTED); a void
releases what remains (VOIDED); a closed pending transfer cannot be posted or voided again;
accounts and currency given with a post must be the pending transfer's; totals stay within
int64. Each refusal leaves the balances as they were."""

from __future__ import annotations

import pytest

from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.errors import FailedPrecondition, InvalidArgument, NotFound
from clearing.ledger import store, verify
from clearing.ledger.model import Leg, Mode, Posting
from clearing.ledger.writer import LedgerWriter
from clearing.limits import INT64_MAX
from tests.unit.ledger.conftest import posting


@pytest.fixture
async def writer(pool, started):
    return started(LedgerWriter(pool, WriterSettings(flush_ms_max=0), Clock()))


async def balance(pool, pid: int, account_id: int):
    async with pool.acquire() as conn:
        return (await store.get_account(conn, pid, account_id=account_id)).balance


def legs(pid: int, *legs_: Leg, request_id: str | None = None) -> Posting:
    import secrets
    rid = request_id or secrets.token_hex(8)
    return Posting(pid, rid, "Transfer", rid.encode(), legs_)


async def refused(writer, p: Posting, error=FailedPrecondition):
    with pytest.raises(error) as err:
        await writer.submit(p)
    return err.value


async def test_exactly_the_available_amount_may_be_spent(pool, accounts, writer):
    pid, c, (m0, m1, _) = accounts
    await writer.submit(posting(pid, c, m0, 1_000))
    await writer.submit(legs(pid, Leg(m0, m1, 300, "CNY", Mode.PENDING)))  # 700 available
    await pool.execute("UPDATE accounts SET frozen = 100 WHERE account_id = $1", m0)  # 600
    err = await refused(writer, posting(pid, m0, m1, 601))
    assert err.reason == "INSUFFICIENT_FUNDS"
    assert err.message == f"account {m0} has 600 available, 601 needed"
    assert err.metadata == {"account_id": str(m0)}
    await writer.submit(posting(pid, m0, m1, 600))
    b = await balance(pool, pid, m0)
    assert (b.posted, b.debits_pending) == (400, 300)
    assert (await refused(writer, posting(pid, m0, m1, 1))).reason == "INSUFFICIENT_FUNDS"


async def test_an_account_allowed_negative_may_overdraw(pool, accounts, writer):
    pid, c, (m0, _, _) = accounts
    await writer.submit(posting(pid, c, m0, 5))  # the custodial account starts at 0
    assert (await balance(pool, pid, c)).posted == -5


async def test_a_post_takes_at_most_what_is_pending_and_closes_it_at_zero(pool, accounts,
                                                                          writer):
    pid, c, (m0, m1, _) = accounts
    await writer.submit(posting(pid, c, m0, 1_000))
    (hold,) = await writer.submit(legs(pid, Leg(m0, m1, 300, "CNY", Mode.PENDING)))
    err = await refused(writer, legs(pid, Leg(0, 0, 301, "", Mode.POST_PENDING,
                                              pending_id=hold.transfer_id)), InvalidArgument)
    assert err.reason == "AMOUNT_EXCEEDS_PENDING"
    assert [(v.field, v.description) for v in err.violations] == [
        ("amount_minor", f"exceeds the 300 still pending on transfer {hold.transfer_id}")]
    (part,) = await writer.submit(legs(pid, Leg(0, 0, 100, "", Mode.POST_PENDING,
                                                 pending_id=hold.transfer_id)))
    assert (part.amount_minor, part.debit_account_id, part.credit_account_id) == (100, m0, m1)
    row = await pool.fetchrow("SELECT pending_remaining, pending_state FROM transfers"
                              " WHERE transfer_id = $1", hold.transfer_id)
    assert tuple(row) == (200, 1)  # still OPEN
    await writer.submit(legs(pid, Leg(m0, m1, 200, "CNY", Mode.POST_PENDING,
                                      pending_id=hold.transfer_id)))
    row = await pool.fetchrow("SELECT pending_remaining, pending_state FROM transfers"
                              " WHERE transfer_id = $1", hold.transfer_id)
    assert tuple(row) == (0, 2)  # POSTED
    b0, b1 = await balance(pool, pid, m0), await balance(pool, pid, m1)
    assert (b0.posted, b0.debits_pending, b1.posted, b1.credits_pending) == (700, 0, 300, 0)
    err = await refused(writer, legs(pid, Leg(0, 0, 1, "", Mode.POST_PENDING,
                                              pending_id=hold.transfer_id)))
    assert err.reason == "PENDING_ALREADY_POSTED"
    assert err.message == f"pending transfer {hold.transfer_id} is already POSTED"
    assert (await verify.verify(pool, pid)).ok


async def test_a_void_releases_what_remains(pool, accounts, writer):
    pid, c, (m0, m1, _) = accounts
    await writer.submit(posting(pid, c, m0, 1_000))
    (hold,) = await writer.submit(legs(pid, Leg(m0, m1, 300, "CNY", Mode.PENDING)))
    await writer.submit(legs(pid, Leg(0, 0, 120, "", Mode.POST_PENDING,
                                      pending_id=hold.transfer_id)))
    (void,) = await writer.submit(legs(pid, Leg(0, 0, 180, "", Mode.VOID_PENDING,
                                                pending_id=hold.transfer_id)))
    assert void.amount_minor == 180
    b0, b1 = await balance(pool, pid, m0), await balance(pool, pid, m1)
    assert (b0.posted, b0.debits_pending, b1.posted, b1.credits_pending) == (880, 0, 120, 0)
    row = await pool.fetchrow("SELECT pending_remaining, pending_state FROM transfers"
                              " WHERE transfer_id = $1", hold.transfer_id)
    assert tuple(row) == (0, 3)  # VOIDED
    err = await refused(writer, legs(pid, Leg(0, 0, 0, "", Mode.VOID_PENDING,
                                              pending_id=hold.transfer_id)))
    assert err.reason == "PENDING_ALREADY_VOIDED"


async def test_a_post_must_name_the_pending_transfers_accounts_and_currency(pool, accounts,
                                                                            writer):
    pid, c, (m0, m1, m2) = accounts
    await writer.submit(posting(pid, c, m0, 1_000))
    (hold,) = await writer.submit(legs(pid, Leg(m0, m1, 300, "CNY", Mode.PENDING)))
    err = await refused(writer, legs(pid, Leg(m2, m2, 1, "USD", Mode.POST_PENDING,
                                              pending_id=hold.transfer_id)), InvalidArgument)
    assert err.reason == "INVALID_ARGUMENT"
    assert [(v.field, v.description) for v in err.violations] == [
        ("debit_account_id", "differs from the pending transfer's debit account"),
        ("credit_account_id", "differs from the pending transfer's credit account"),
        ("currency_code", "differs from the pending transfer's currency")]
    err = await refused(writer, legs(pid, Leg(0, 0, 1, "USD", Mode.POST_PENDING,
                                              pending_id=hold.transfer_id)), InvalidArgument)
    assert err.reason == "CURRENCY_MISMATCH"
    err = await refused(writer, legs(pid, Leg(0, 0, 1, "", Mode.POST_PENDING,
                                              pending_id=hold.transfer_id + 99)), NotFound)
    assert err.reason == "PENDING_TRANSFER_NOT_FOUND"
    assert err.metadata == {"field": "pending_transfer_id"}
    assert (await balance(pool, pid, m0)).debits_pending == 300


async def test_currency_and_unknown_accounts(pool, accounts, writer):
    pid, c, (m0, m1, _) = accounts
    err = await refused(writer, legs(pid, Leg(c, m0, 1, "USD", Mode.IMMEDIATE)), InvalidArgument)
    assert err.reason == "CURRENCY_MISMATCH"
    assert [(v.field, v.description) for v in err.violations] == [
        ("currency_code", "debit account holds CNY, not USD"),
        ("currency_code", "credit account holds CNY, not USD")]
    err = await refused(writer, legs(pid, Leg(c, 999_999_999, 1, "CNY", Mode.IMMEDIATE),
                                     Leg(c, m1, 1, "CNY", Mode.IMMEDIATE)), NotFound)
    assert err.reason == "ACCOUNT_NOT_FOUND"
    assert err.metadata == {"field": "legs[0].credit_account_id", "account_id": "999999999"}
    assert (await balance(pool, pid, m1)).posted == 0  # all legs or none


async def test_a_frozen_account_neither_sends_nor_receives(pool, accounts, writer):
    pid, c, (m0, m1, _) = accounts
    await writer.submit(posting(pid, c, m0, 100))
    await pool.execute("UPDATE accounts SET status = 2 WHERE account_id = $1", m1)
    err = await refused(writer, posting(pid, m0, m1, 1))
    assert (err.reason, err.metadata) == ("ACCOUNT_FROZEN",
                                          {"field": "credit_account_id", "account_id": str(m1)})
    assert err.message == f"account {m1} is frozen"
    err = await refused(writer, posting(pid, m1, m0, 1))
    assert (err.reason, err.metadata["field"]) == ("ACCOUNT_FROZEN", "debit_account_id")


async def test_totals_may_reach_int64_exactly(pool, accounts, writer):
    pid, c, (m0, _, _) = accounts
    # the custodial account may go negative; its debit total may reach INT64_MAX, not pass it
    await pool.execute("UPDATE accounts SET debits_posted = $2, credits_posted = $2"
                       " WHERE account_id = $1", c, INT64_MAX - 10)
    await pool.execute("UPDATE accounts SET credits_posted = $2, debits_posted = $2"
                       " WHERE account_id = $1", m0, 0)
    err = await refused(writer, posting(pid, c, m0, 11))
    assert err.reason == "BALANCE_OVERFLOW"
    (done,) = await writer.submit(posting(pid, c, m0, 10))
    assert done.amount_minor == 10
    b = await balance(pool, pid, c)
    assert b.posted == (INT64_MAX - 10) - INT64_MAX  # credits - debits


async def test_what_the_writer_refuses_before_queueing(pool, accounts, writer):
    from clearing.errors import InvariantViolation, Unavailable
    from clearing.ledger.model import Claim
    from clearing.limits import BATCH_SPAN
    pid, c, (m0, _, _) = accounts
    one = Leg(c, m0, 1, "CNY", Mode.IMMEDIATE)
    # at most BATCH_SPAN legs, at least one (a bug otherwise)
    for bad in ((), (one,) * (BATCH_SPAN + 1)):
        with pytest.raises(InvariantViolation) as err:
            await writer.submit(legs(pid, *bad))
        assert str(err.value) == "posting has no legs or too many"
    with pytest.raises(InvariantViolation) as err:
        await writer.submit(Posting(pid, "s", "Transfer", b"s", (one,), sink="nowhere"))
    assert str(err.value) == "no sink named 'nowhere'"
    with pytest.raises(InvariantViolation) as err:
        await writer.submit(Posting(pid, "k", "Transfer", b"k", (one,),
                                    claims=(Claim("order:1", "R", "m"),)))
    assert str(err.value) == "claim keys are made with Claim.of"
    await writer.drain_and_stop()
    with pytest.raises(Unavailable) as err:
        await writer.submit(posting(pid, c, m0, 1))
    assert err.value.reason == "SHUTTING_DOWN"
    assert err.value.message == "the ledger writer is shutting down; retry on another server"


async def test_a_taken_claim_names_its_key(pool, accounts, writer):
    from clearing.errors import AlreadyExists
    from clearing.ledger.model import Claim
    pid, c, (m0, _, _) = accounts
    claim = Claim.of("order", "ORD9", "ORDER_ALREADY_SPLIT", "split once")
    await writer.submit(Posting(pid, "a1", "Split", b"1", (Leg(c, m0, 1, "CNY", Mode.IMMEDIATE),),
                                claims=(claim,)))
    with pytest.raises(AlreadyExists) as err:
        await writer.submit(Posting(pid, "a2", "Split", b"2",
                                    (Leg(c, m0, 1, "CNY", Mode.IMMEDIATE),), claims=(claim,)))
    assert (err.value.reason, err.value.message) == ("ORDER_ALREADY_SPLIT", "split once")
    assert err.value.metadata == {"key": claim.key}


async def test_pending_debits_count_towards_the_int64_total(pool, accounts, writer):
    pid, c, (m0, _, _) = accounts
    # posted debits 0 and pending debits INT64_MAX - 10: ten more may be debited, not eleven
    await pool.execute("UPDATE accounts SET debits_pending = $2, credits_pending = 0"
                       " WHERE account_id = $1", c, INT64_MAX - 10)
    err = await refused(writer, posting(pid, c, m0, 11))
    assert err.reason == "BALANCE_OVERFLOW"
    assert err.message == "the transfer would overflow an account's 64-bit totals"
    await writer.submit(posting(pid, c, m0, 10))

