"""A canonical statement's two ways in (recon/fast_import.py): the fast path (PostgreSQL
parses and checks the lines) writes exactly the lines, totals and run the general path
(the Python reader) writes for the same statement; and every file the fast path does not
take for certain (a quote, a carriage return, a form only the general path reads, a file
cut into tiny chunks) gives way to the general path, replayed from the spool and read on
from the stream, with the same outcome."""

from __future__ import annotations

import gzip

import asyncpg
import grpc
import pytest

from clearing.recon import fast_import
from tests.recon_support import (ReconWorld, class_totals, expected_totals, generate_day,
                                 statement_day)
from tests.support import Client, details


@pytest.fixture
async def world(channel, client: Client, database_url, platform) -> ReconWorld:
    return await ReconWorld.make(channel, client, database_url, platform.platform_id,
                                 platform.key)


@pytest.fixture
async def day(world: ReconWorld):
    return await generate_day(world, statement_day(), matched=30, per_class=2, seed=23)


@pytest.fixture
def paths(monkeypatch) -> list[str]:
    """'fast' or 'general' for each canonical import, in turn."""
    taken: list[str] = []
    original = fast_import.import_lines

    async def import_lines(*args, **kwargs):
        done = await original(*args, **kwargs)
        taken.append("general" if done is None else "fast")
        return done

    monkeypatch.setattr(fast_import, "import_lines", import_lines)
    return taken


async def _lines(database_url: str, statement_id: int) -> list[tuple]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT line_number, platform_id, line_type, channel_transaction_id, order_id,"
            " paid_at, amount_minor, channel_fee_minor, settled_minor, currency_code,"
            " payout_id FROM recon_statement_lines WHERE statement_id = $1"
            " ORDER BY line_number", statement_id)
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


def _summary(run) -> tuple:
    st = run.statement
    return (class_totals(run), run.statement_settled_minor, run.split_settled_minor,
            run.explained_minor, run.discrepancy_count, st.line_count, st.settled_minor,
            st.currency_code)


def _gzip_members(data: bytes, parts: int) -> bytes:
    step = len(data) // parts + 1
    return b"".join(gzip.compress(data[i:i + step]) for i in range(0, len(data), step))


async def test_the_fast_path_writes_what_the_general_path_writes(world, day, paths,
                                                                 database_url):
    plain = day.csv()
    fast = (await world.import_file(plain, day=day.day)).run
    # the same statement, with a carriage return before every line break: the fast path
    # does not take it, the Python reader reads the same lines
    general = (await world.import_file(plain.replace(b"\n", b"\r\n"), day=day.day)).run
    assert paths == ["fast", "general"]
    assert class_totals(fast) == expected_totals(day.expected)
    assert _summary(general) == _summary(fast)
    assert len(day.lines) > 40
    lines = await _lines(database_url, fast.statement.statement_id)
    assert len(lines) == len(day.lines) and lines[0][0] == 2 and lines[-1][0] == len(day.lines) + 1
    assert await _lines(database_url, general.statement.statement_id) == lines
    # gzip in several members, a byte order mark, chunks of 7 bytes: still the fast path,
    # and the same content hash as the plain file (an identical statement: a replay)
    again = await world.import_file(_gzip_members(b"\xef\xbb\xbf" + plain, 3), day=day.day,
                                    chunk_bytes=7)
    assert paths[2] == "fast" and not again.replayed
    assert _summary(again.run) == _summary(fast)
    assert await _lines(database_url, again.run.statement.statement_id) == lines
    replay = await world.import_file(gzip.compress(b"\xef\xbb\xbf" + plain), day=day.day)
    assert paths[3] == "fast" and replay.replayed
    assert replay.run.run_id == again.run.run_id


def _field(line: bytes, index: int, value: bytes) -> bytes:
    fields = line.split(b",")
    fields[index] = value
    return b",".join(fields)


@pytest.mark.parametrize("change", [
    "quoted",        # a quoted field: PostgreSQL's CSV and Python's csv could differ
    "lower_t",       # 2026-12-06t10:00:00+08:00: only the general path reads it
    "fraction",      # a fraction of a second
    "header_space",  # the header with spaces around a name
])
async def test_what_the_fast_path_does_not_take_goes_the_general_way(world, day, paths,
                                                                     database_url, change):
    reference = (await world.import_file(day.csv(), day=day.day)).run
    rows = day.csv().split(b"\n")
    n = len(rows) // 2  # a line in the middle: the general path replays what came before
    if change == "quoted":
        rows[n] = _field(rows[n], 2, b'"' + rows[n].split(b",")[2] + b'"')
    elif change == "lower_t":
        rows[n] = _field(rows[n], 3, rows[n].split(b",")[3].replace(b"T", b"t"))
    elif change == "fraction":
        paid = rows[n].split(b",")[3]
        rows[n] = _field(rows[n], 3, paid[:19] + b".000" + paid[19:])
    else:
        rows[0] = rows[0].replace(b"order_id", b" order_id ")
    run = (await world.import_file(b"\n".join(rows), day=day.day, chunk_bytes=64)).run
    assert paths == ["fast", "general"]
    assert _summary(run) == _summary(reference)
    assert (await _lines(database_url, run.statement.statement_id)
            == await _lines(database_url, reference.statement.statement_id))


@pytest.mark.parametrize("index, value, field", [
    (4, b"01000", "amount_minor"),                        # a leading zero: not of the forms
    (4, b"+1000", "amount_minor"),                        # a sign PostgreSQL's bigint takes
    (4, b"1_000", "amount_minor"),                        # so are digit separators
    (3, b"2026-02-30T10:00:00+08:00", "paid_time"),       # of the forms; the COPY's cast fails
    (3, b"2026-12-06T24:00:00+08:00", "paid_time"),       # PostgreSQL reads 24:00:00
    (3, b"1999-12-31T10:00:00+08:00", "paid_time"),       # before PAID_TIME_MIN: SQL_CHECK
    (5, b"999999999", "channel_fee_minor"),               # a fee above the amount: SQL_CHECK
    (6, b"1", "settled_minor"),                           # not amount - fee: SQL_CHECK
])
async def test_a_line_the_fast_checks_refuse_is_reported_by_the_general_path(
        world, day, paths, index, value, field):
    rows = day.csv().split(b"\n")
    rows[5] = _field(rows[5], index, value)  # nothing of the fast path's COPY is kept
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.import_file(b"\n".join(rows), day=day.day, chunk_bytes=100)
    assert paths == ["general"]
    assert details(err.value) == ("STATEMENT_MALFORMED", [f"lines[6].{field}"])


async def test_a_second_currency_makes_the_fast_path_give_way(world, day, paths):
    rows = day.csv().split(b"\n")
    rows[5] = _field(rows[5], 7, b"USD")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.import_file(b"\n".join(rows), day=day.day, chunk_bytes=100)
    assert paths == ["general"]
    assert details(err.value)[0] == "STATEMENT_MALFORMED"


async def test_the_database_refuses_a_line_whose_settled_is_not_amount_less_fee(database_url):
    """The match's totals rely on settled = amount - fee for every line (both import paths
    refuse other lines); the database keeps it too (migration 0029)."""
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO recon_statement_lines (statement_id, line_number, platform_id,"
                " line_type, channel_transaction_id, order_id, paid_at, amount_minor,"
                " channel_fee_minor, settled_minor, currency_code)"
                " VALUES (-1, 2, -1, 1, 't', 'o', now(), 1000, 6, 995, 'CNY')")
    finally:
        await conn.close()
