"""`python -m bench.long_values` (bench/README.md "Long values in binary") runs, measures
every case both ways on a database of its own, and drops that database."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bench import long_values


def test_a_smoke_run_measures_every_case_both_ways_and_leaves_no_database(capsys, pg_admin_dsn,
                                                                          monkeypatch):
    monkeypatch.setenv("CLEARING_BENCH_DATABASE_URL", pg_admin_dsn)
    assert long_values.main(["--rows", "50", "--statements", "3", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for label, *_ in long_values.CASES:
        line = next(x for x in out.splitlines() if label in x)
        numbers = [float(x) for x in line.split(label)[1].replace("/", " ").split()]
        assert len(numbers) == 4 and all(n >= 0 for n in numbers), line

    async def left() -> list[str]:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            return [r[0] for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE"
                " 'clearing_bench_longvalues_%'")]
        finally:
            await conn.close()

    assert asyncio.run(left()) == []


def test_out_of_range_arguments_are_refused():
    with pytest.raises(SystemExit) as err:
        long_values.main(["--rows", "0"])
    assert err.value.code == 2
