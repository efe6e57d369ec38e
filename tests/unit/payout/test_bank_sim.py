"""The bank simulator against real PostgreSQL: outcomes, callbacks, both kinds of timeout,
idempotency by key, the bank's limits, seeded fault rates and books shared by instances."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections import Counter

import asyncpg
import pytest

from clearing import db
from clearing.clock import Clock, ManualClock
from clearing.dev.bank_sim import (RANDOM_FAILURE_CODES, BankOrder, BankResult,
                                  BankSimSettings, BankSimulator, BankState, BankTimeout,
                                  CallFaults, Telling, TimeoutKind, decide)
from tests.conftest import _replace_db
from tests.support import wait_for

ACCOUNT = "6225880012341234"
T0 = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
async def pool(database_url):
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    yield p
    await p.close()


class Sims:
    """Simulators made by a test, closed at its end, each with a list of its callbacks."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.made: list[BankSimulator] = []
        self.prefix = f"t{secrets.token_hex(4)}-"

    async def make(self, clock: Clock | None = None, **settings) -> tuple[BankSimulator,
                                                                          list[BankResult]]:
        sim = BankSimulator(self.pool, BankSimSettings(**settings), clock or Clock())
        got: list[BankResult] = []

        async def handler(result: BankResult) -> None:
            got.append(result)

        sim.on_result(handler)
        await sim.start()
        self.made.append(sim)
        return sim, got

    def order(self, n: int | str, amount_minor: int = 98_600, **changes) -> BankOrder:
        base = dict(idempotency_key=f"{self.prefix}{n}", bank_code="ICBC",
                    account_number=ACCOUNT, holder_name="Li Wei", account_type=2,
                    amount_minor=amount_minor, currency_code="CNY", memo="payout")
        base.update(changes)
        return BankOrder(**base)


@pytest.fixture
async def sims(pool):
    s = Sims(pool)
    yield s
    for sim in s.made:
        await sim.close()


async def _row_count(pool: asyncpg.Pool, key: str) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM banksim.transfers WHERE idempotency_key = $1", key)


async def test_success_is_paid_once_with_one_callback_and_a_masked_account(sims):
    sim, got = await sims.make(callback_delay_ms=10)
    order = sims.order(1)
    result = await sim.submit(order)
    assert result.state == BankState.SUCCEEDED
    assert result.bank_reference.startswith("SIM") and len(result.bank_reference) == 23
    assert (result.failure_code, result.failure_message) == ("", "")
    await wait_for(lambda: _true(len(got) == 1))
    assert got == [result]
    assert await sim.query(order.idempotency_key) == result
    [entry] = await sim.books(sims.prefix)
    assert (entry.amount_minor, entry.currency_code, entry.masked_account, entry.holder_name,
            entry.state, entry.final_state, entry.paid, entry.result_only_by_query) == (
        98_600, "CNY", "6225****1234", "Li Wei", BankState.SUCCEEDED, BankState.SUCCEEDED,
        True, False)
    row = await sims.pool.fetchrow("SELECT * FROM banksim.transfers WHERE idempotency_key = $1",
                                   order.idempotency_key)
    assert all(ACCOUNT not in str(v) for v in row.values())
    assert ACCOUNT not in repr(order)
    await asyncio.sleep(0.05)
    assert len(got) == 1


async def _true(value: bool) -> bool:
    return value


async def test_failure_is_recorded_unpaid_with_a_code(sims):
    sim, got = await sims.make(failure_rate=1.0, callback_delay_ms=5)
    result = await sim.submit(sims.order(1))
    assert result.state == BankState.FAILED
    assert result.failure_code in RANDOM_FAILURE_CODES and result.failure_message
    assert await sim.query(result.idempotency_key) == result
    await wait_for(lambda: _true(len(got) == 1))
    assert got == [result]
    [entry] = await sim.books(sims.prefix)
    assert (entry.state, entry.paid, entry.failure_code) == (
        BankState.FAILED, False, result.failure_code)


async def test_processing_then_callback_turns_the_books_final(sims):
    clock = ManualClock(T0)
    sim, got = await sims.make(clock, processing_rate=1.0, callback_delay_ms=1000)
    first = await sim.submit(sims.order(1))
    assert first.state == BankState.PROCESSING and first.bank_reference
    assert first.failure_code == ""
    assert (await sim.query(first.idempotency_key)).state == BankState.PROCESSING
    [entry] = await sim.books(sims.prefix)
    assert (entry.state, entry.final_state, entry.paid) == (
        BankState.PROCESSING, BankState.SUCCEEDED, False)
    assert T0 + dt.timedelta(milliseconds=500) <= entry.completes_at <= T0 + dt.timedelta(
        milliseconds=1500)
    await wait_for(lambda: _true(len(got) == 1))
    assert got == [BankResult(first.idempotency_key, BankState.SUCCEEDED, first.bank_reference)]
    # the clock has not moved: the callback itself made the books final
    assert (await sim.query(first.idempotency_key)).state == BankState.SUCCEEDED
    assert (await sim.books(sims.prefix))[0].paid


async def test_query_only_result_never_comes_by_callback(sims):
    clock = ManualClock(T0)
    sim, got = await sims.make(clock, query_only_rate=1.0, failure_rate=1.0,
                               callback_delay_ms=20)
    first = await sim.submit(sims.order(1))
    assert first.state == BankState.PROCESSING
    assert sim.pending_callbacks == 0
    await asyncio.sleep(0.1)
    assert got == []
    assert (await sim.query(first.idempotency_key)).state == BankState.PROCESSING
    [entry] = await sim.books(sims.prefix)
    assert (entry.state, entry.final_state) == (BankState.PROCESSING, BankState.FAILED)
    assert T0 + dt.timedelta(milliseconds=10) <= entry.completes_at <= T0 + dt.timedelta(
        milliseconds=30)
    clock.advance(entry.completes_at - T0 - dt.timedelta(microseconds=1))
    assert (await sim.query(first.idempotency_key)).state == BankState.PROCESSING
    clock.advance(dt.timedelta(microseconds=1))
    final = await sim.query(first.idempotency_key)
    assert final.state == BankState.FAILED and final.failure_code in RANDOM_FAILURE_CODES
    [entry] = await sim.books(sims.prefix)
    assert (entry.result_only_by_query, entry.state, entry.paid) == (True, BankState.FAILED,
                                                                     False)
    assert got == []


async def test_duplicate_callbacks_deliver_the_same_result_twice_and_pay_once(sims):
    sim, got = await sims.make(duplicate_callback_rate=1.0, processing_rate=1.0,
                               callback_delay_ms=10)
    first = await sim.submit(sims.order(1))
    await wait_for(lambda: _true(len(got) == 2))
    assert got[0] == got[1] == BankResult(first.idempotency_key, BankState.SUCCEEDED,
                                          first.bank_reference)
    await asyncio.sleep(0.05)
    assert len(got) == 2
    assert await _row_count(sims.pool, first.idempotency_key) == 1


async def test_timeout_before_the_bank_records_nothing_and_the_key_can_be_sent_again(sims):
    lossy, lossy_got = await sims.make(timeout_rate=1.0, lost_answer_share=0.0,
                                       callback_delay_ms=5)
    clean, _ = await sims.make(callback_delay_ms=5)
    order = sims.order(1)
    with pytest.raises(BankTimeout):
        await lossy.submit(order)
    assert await clean.query(order.idempotency_key) == BankResult(order.idempotency_key,
                                                                 BankState.NOT_FOUND)
    assert await clean.books(sims.prefix) == []
    with pytest.raises(BankTimeout):  # queries time out on the lossy bank too
        await lossy.query(order.idempotency_key)
    again = await clean.submit(order)
    assert again.state == BankState.SUCCEEDED
    assert [e.paid for e in await clean.books(sims.prefix)] == [True]
    await asyncio.sleep(0.05)
    assert lossy_got == []


async def test_lost_answer_is_recorded_and_paid_and_query_tells_the_truth(sims):
    lossy, lossy_got = await sims.make(timeout_rate=1.0, lost_answer_share=1.0,
                                       callback_delay_ms=5)
    clean, _ = await sims.make(callback_delay_ms=5)
    order = sims.order(1)
    with pytest.raises(BankTimeout):
        await lossy.submit(order)
    truth = await clean.query(order.idempotency_key)
    assert truth.state == BankState.SUCCEEDED and truth.bank_reference
    assert await clean.submit(order) == truth        # resent with the same key: not paid again
    assert [(e.amount_minor, e.paid) for e in await clean.books(sims.prefix)] == [(98_600, True)]
    await wait_for(lambda: _true(len(lossy_got) == 1))  # the bank still sends its callback
    assert lossy_got == [truth]


async def test_same_key_twice_pays_once_and_calls_back_once(sims):
    sim, got = await sims.make(callback_delay_ms=10)
    order = sims.order(1)
    first, second = await sim.submit(order), await sim.submit(order)
    assert first == second and first.state == BankState.SUCCEEDED
    await wait_for(lambda: _true(len(got) == 1))
    await asyncio.sleep(0.05)
    assert len(got) == 1
    assert [e.amount_minor for e in await sim.books(sims.prefix)] == [98_600]


async def test_same_key_with_another_order_fails_without_paying(sims):
    sim, _ = await sims.make(callback_delay_ms=5)
    first = await sim.submit(sims.order(1, amount_minor=100))
    mismatch = await sim.submit(sims.order(1, amount_minor=200))
    assert (mismatch.state, mismatch.failure_code, mismatch.bank_reference) == (
        BankState.FAILED, "IDEMPOTENCY_KEY_MISMATCH", "")
    other_account = await sim.submit(sims.order(1, amount_minor=100,
                                                account_number="6222000099998888"))
    assert other_account.failure_code == "IDEMPOTENCY_KEY_MISMATCH"
    assert await sim.query(first.idempotency_key) == first
    assert [(e.amount_minor, e.paid) for e in await sim.books(sims.prefix)] == [(100, True)]


async def test_bank_limits_reject_without_paying(sims):
    sim, _ = await sims.make(callback_delay_ms=5)
    at_limit = await sim.submit(sims.order("max", amount_minor=50_000_000))
    above = await sim.submit(sims.order("above", amount_minor=50_000_001))
    zero = await sim.submit(sims.order("zero", amount_minor=0))
    xxx = await sim.submit(sims.order("xxx", amount_minor=100, currency_code="XXX"))
    no_holder = await sim.submit(sims.order("holder", amount_minor=100, holder_name=" "))
    assert at_limit.state == BankState.SUCCEEDED
    assert [(r.state, r.failure_code) for r in (above, zero, xxx, no_holder)] == [
        (BankState.FAILED, "AMOUNT_ABOVE_BANK_LIMIT"), (BankState.FAILED, "INVALID_AMOUNT"),
        (BankState.FAILED, "CURRENCY_NOT_SUPPORTED"), (BankState.FAILED, "INVALID_ACCOUNT")]
    assert await sim.query(above.idempotency_key) == above
    paid = sorted((e.idempotency_key.removeprefix(sims.prefix), e.amount_minor)
                  for e in await sim.books(sims.prefix) if e.paid)
    assert paid == [("max", 50_000_000)]


async def test_seeded_rates_give_the_predicted_counts(sims):
    settings = dict(failure_rate=0.3, timeout_rate=0.1, duplicate_callback_rate=0.2,
                    query_only_rate=0.1, processing_rate=0.3, seed=20261122,
                    callback_delay_ms=3_600_000)
    sim, _ = await sims.make(**settings)
    n = 2000
    orders = [sims.order(i, amount_minor=1 + i) for i in range(n)]
    outcomes: Counter[str] = Counter()

    async def one(order: BankOrder) -> None:
        try:
            outcomes[(await sim.submit(order)).state.name] += 1
        except BankTimeout:
            outcomes["TIMEOUT"] += 1

    for start in range(0, n, 50):  # each chunk's calls draw in the order they are started
        await asyncio.gather(*(one(o) for o in orders[start:start + 50]))

    # the same seeded decisions, replayed
    s = BankSimSettings(**settings)
    faults = CallFaults(s)
    calls = [faults.submit().timeout for _ in range(n)]
    fates = [decide(s, o.idempotency_key) for o in orders]
    recorded = [f for f, c in zip(fates, calls) if c is not TimeoutKind.NOT_REACHED]
    answered = [f for f, c in zip(fates, calls) if c is TimeoutKind.NONE]
    expected = Counter(
        TIMEOUT=sum(c is not TimeoutKind.NONE for c in calls),
        PROCESSING=sum(f.telling is not Telling.AT_ONCE for f in answered),
        SUCCEEDED=sum(f.telling is Telling.AT_ONCE and f.final_state == BankState.SUCCEEDED
                      for f in answered),
        FAILED=sum(f.telling is Telling.AT_ONCE and f.final_state == BankState.FAILED
                   for f in answered))
    assert outcomes == expected
    assert sim.pending_callbacks == sum(f.callbacks > 0 for f in recorded)
    books = await sim.books(sims.prefix)
    assert len(books) == len(recorded)
    assert sum(e.final_state == BankState.FAILED for e in books) == sum(
        f.final_state == BankState.FAILED for f in recorded)
    assert sum(e.result_only_by_query for e in books) == sum(
        f.telling is Telling.QUERY_ONLY for f in recorded)
    # and the rates are honoured (generous bounds around the configured shares)
    assert 150 <= expected["TIMEOUT"] <= 250
    assert 0.25 <= sum(f.final_state == BankState.FAILED for f in fates) / n <= 0.35
    assert 0.07 <= sum(f.telling is Telling.QUERY_ONLY for f in fates) / n <= 0.13
    assert 0.25 <= sum(f.telling is Telling.CALLBACK for f in fates) / n <= 0.35
    with_cb = [f for f in fates if f.callbacks]
    assert 0.15 <= sum(f.callbacks == 2 for f in with_cb) / len(with_cb) <= 0.25
    kinds = Counter(calls)
    assert 0.3 <= kinds[TimeoutKind.ANSWER_LOST] / expected["TIMEOUT"] <= 0.7
    await sim.close()
    assert sim.pending_callbacks == 0


async def test_two_simulators_share_the_books(sims):
    a, a_got = await sims.make(callback_delay_ms=10)
    b, b_got = await sims.make(callback_delay_ms=10)
    order = sims.order(1)
    paid_by_a = await a.submit(order)
    assert await b.query(order.idempotency_key) == paid_by_a
    assert await b.submit(order) == paid_by_a
    race = sims.order(2)
    ra, rb = await asyncio.gather(a.submit(race), b.submit(race))
    assert ra == rb and ra.state == BankState.SUCCEEDED
    await wait_for(lambda: _true(len(a_got) + len(b_got) == 2))
    await asyncio.sleep(0.05)
    assert len(a_got) + len(b_got) == 2          # each order called back once, by its receiver
    assert [e.idempotency_key for e in await b.books(sims.prefix)] == [
        order.idempotency_key, race.idempotency_key]


async def test_callbacks_are_bounded_cancelled_by_close_and_handler_errors_logged(sims, caplog):
    sim, _ = await sims.make(callbacks_max=3, callback_delay_ms=3_600_000)
    for i in range(5):
        assert (await sim.submit(sims.order(i))).state == BankState.SUCCEEDED
    assert sim.pending_callbacks == 3
    await sim.close()
    assert sim.pending_callbacks == 0
    with pytest.raises(BankTimeout):
        await sim.submit(sims.order(9))
    assert await sims.pool.fetchval("SELECT count(*) FROM banksim.transfers "
                                    "WHERE idempotency_key LIKE $1", sims.prefix + "%") == 5

    failing, _ = await sims.make(duplicate_callback_rate=1.0, callback_delay_ms=5)
    calls: list[BankResult] = []

    async def broken(result: BankResult) -> None:
        calls.append(result)
        raise RuntimeError("handler down")

    failing.on_result(broken)
    with caplog.at_level(logging.ERROR, logger="clearing.dev.bank_sim"):
        await failing.submit(sims.order("h"))
        await wait_for(lambda: _true(len(calls) == 2 and failing.pending_callbacks == 0))
    assert sum("result handler failed" in r.getMessage() for r in caplog.records) == 2


async def test_concurrent_start_creates_the_schema_once(pg_admin_dsn):
    name = f"clearing_test_banksim_{secrets.token_hex(4)}"
    await db.ensure_database(pg_admin_dsn, name)
    try:
        p = await asyncpg.create_pool(_replace_db(pg_admin_dsn, name), min_size=1, max_size=6)
        try:
            made = [BankSimulator(p, BankSimSettings(), Clock()) for _ in range(6)]
            await asyncio.gather(*(s.start() for s in made))
            result = await made[5].submit(BankOrder("k1", "ICBC", ACCOUNT, "Li Wei", 2, 5,
                                                    "CNY", ""))
            assert result.state == BankState.SUCCEEDED
            assert await made[0].query("k1") == result
            for s in made:
                await s.close()
        finally:
            await p.close()
    finally:
        await db.drop_database(pg_admin_dsn, name)


def test_settings_are_validated_and_read_from_the_environment():
    with pytest.raises(ValueError, match="failure_rate"):
        BankSimSettings(failure_rate=1.5)
    with pytest.raises(ValueError, match="processing_rate"):
        BankSimSettings(query_only_rate=0.6, processing_rate=0.5)
    with pytest.raises(ValueError, match="latency_ms"):
        BankSimSettings(latency_ms=-1)
    env = {"CLEARING_BANK_SIM_FAILURE_RATE": "0.3", "CLEARING_BANK_SIM_TIMEOUT_RATE": "0.1",
           "CLEARING_BANK_SIM_LATENCY_MS": "20", "CLEARING_BANK_SIM_SEED": "7",
           "CLEARING_BANK_SIM_DUPLICATE_CALLBACK_RATE": "0.2",
           "CLEARING_BANK_SIM_QUERY_ONLY_RATE": "0.05", "CLEARING_BANK_SIM_CALLBACKS_MAX": ""}
    assert BankSimSettings.from_env(env) == BankSimSettings(
        failure_rate=0.3, timeout_rate=0.1, latency_ms=20, seed=7,
        duplicate_callback_rate=0.2, query_only_rate=0.05)
    assert BankSimSettings.from_env({}) == BankSimSettings()
    with pytest.raises(SystemExit, match="CLEARING_BANK_SIM_LATENCY_MS"):
        BankSimSettings.from_env({"CLEARING_BANK_SIM_LATENCY_MS": "fast"})
    with pytest.raises(SystemExit, match="timeout_rate"):
        BankSimSettings.from_env({"CLEARING_BANK_SIM_TIMEOUT_RATE": "2"})


def test_fate_depends_only_on_seed_and_key():
    s = BankSimSettings(failure_rate=0.5, processing_rate=0.5, seed=3)
    assert decide(s, "k") == decide(BankSimSettings(failure_rate=0.5, processing_rate=0.5,
                                                    seed=3), "k")
    fates = {decide(BankSimSettings(failure_rate=0.5, seed=seed), "k").final_state
             for seed in range(40)}
    assert fates == {BankState.SUCCEEDED, BankState.FAILED}


def test_mask_never_shows_most_of_a_number():
    from clearing.payout.bank import mask
    assert mask("6225880012341234") == "6225****1234"
    assert mask("123456789") == "1234****6789"
    assert mask("12345678") == "****5678"
    assert mask("123456") == "****"
    assert mask("") == "****"
