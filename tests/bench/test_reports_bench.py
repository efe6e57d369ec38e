"""`make bench-reports` at a tiny size (`bench.reports_bench`, as make runs it): it runs to
the end against the test run's PostgreSQL and Redis and its checks hold (each report's total
equals the raw aggregate's). Never a timing assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.bench_smoke


def test_reports_bench_tiny(pg_admin_dsn, redis_url, tmp_path):
    env = {**os.environ, "CLEARING_BENCH_DATABASE_URL": pg_admin_dsn,
           "CLEARING_BENCH_REDIS_URL": redis_url}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.reports_bench", "--splits", "300", "--month-days", "3",
         "--raw-days", "2", "--merchants", "5", "--repeats", "1", "--out", str(tmp_path)],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=180)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    res = json.loads((tmp_path / "results.json").read_text())
    assert all(res["checks"].values()) and len(res["checks"]) == 4
    assert res["day_legs"] == 300 // 2 * 3 + 300 // 2 * 4
    assert res["month_legs"] == 3 * res["day_legs"] and res["raw_month_estimated"]
    assert "raw / rolled" in proc.stdout
