"""`make bench-backtest` kept working: the whole command at 2,000 orders as a subprocess, as
`make bench-backtest ORDERS=2000` runs it (its own database and server; exit 0 only when
SimulateRuleSet found exactly the totals the templates give). Never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 2_000
RUN_TIMEOUT_S = 120

pytestmark = pytest.mark.bench_smoke


def test_bench_backtest_at_two_thousand_orders(pg_admin_dsn, redis_url, tmp_path):
    out = tmp_path / "backtest"
    env = {**os.environ, "CLEARING_BENCH_DATABASE_URL": pg_admin_dsn,
           "CLEARING_BENCH_REDIS_URL": redis_url}
    proc = subprocess.run([sys.executable, "-m", "bench.backtest", "--orders", str(ORDERS),
                           "--out", str(out)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    doc = json.loads((out / "backtest.json").read_text())
    assert doc["problems"] == [] and doc["orders"] == ORDERS
    # a quarter of the orders (the 99.99 template) is refused by version 2
    assert doc["candidate_refused_count"] == ORDERS // 4
    assert doc["bare_read_s"] > 0 and doc["backtest_wall_s"] > 0 and doc["decode_evaluate_us"] > 0
    assert "every total as expected" in (out / "summary.txt").read_text()
