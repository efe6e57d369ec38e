"""`make bench-partitions` (bench/journal_partitions.py) at a tiny size, as the subprocess the
make target runs, against the test run's PostgreSQL: it builds both journals, measures every
figure, prints the table and drops its database. It fails on a crash, a missing figure or a
database left behind, never on a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60
TINY = ["--months", "3", "--rows-per-month", "3000", "--accounts", "10",
        "--insert-statements", "3", "--statements", "4", "--generic-statements", "2",
        "--page-size", "50", "--quiet"]

pytestmark = pytest.mark.bench_smoke


async def _bench_databases(admin_dsn: str) -> set[str]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return {r["datname"] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'clearing_bench_parts_%'")}
    finally:
        await conn.close()


async def test_partitions_bench_tiny(pg_admin_dsn, tmp_path):
    before = await _bench_databases(pg_admin_dsn)
    out = tmp_path / "partitions.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.journal_partitions", *TINY, "--json", str(out)],
        cwd=ROOT, env={**os.environ, "CLEARING_BENCH_DATABASE_URL": pg_admin_dsn}, text=True,
        capture_output=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert result["build"]["rows"] == 9_000
    assert result["build"]["partitions"] == 4          # three months and the next, ahead
    assert result["pages"]["journal_flat"] == result["pages"]["journal_parted"] >= 4
    figures = {f[0]: f for f in result["figures"]}
    assert len(figures) == 13
    assert all(f[1] > 0 and f[2] > 0 for f in figures.values())
    assert "| insert, 1000 rows a statement, current month" in proc.stdout
    assert await _bench_databases(pg_admin_dsn) == before
