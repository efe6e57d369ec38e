"""CI smoke of `make bench-unary` (bench/unary_bench.py) against the test run's PostgreSQL
and Redis: one round of the echo ceiling, unary Split call by call (grouping off) and grouped
(on), then the open loop of each, as the subprocess the make target runs. It fails on a
crash or an error response, never on a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 180

pytestmark = pytest.mark.bench_smoke


def test_unary_bench_off_and_on(pg_admin_dsn, redis_url, tmp_path):
    out = tmp_path / "unary"
    env = {**os.environ, "CLEARING_BENCH_DATABASE_URL": pg_admin_dsn,
           "CLEARING_BENCH_REDIS_URL": redis_url, "BENCH_QUICK": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.unary_bench", "--rounds", "1", "--duration", "1.5",
         "--warmup", "0.5", "--concurrency", "8", "--open-duration", "2", "--open-rate",
         "50", "--accounts", "2", "--out", str(out)],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    doc = json.loads((out / "unary.json").read_text())
    assert [(p["label"], p["grouping"]) for p in doc["phases"]] == [
        ("echo-1", None), ("off-1", False), ("on-1", True)]
    assert [(p["label"], p["grouping"]) for p in doc["open"]] == [
        ("open-off", False), ("open-on", True)]
    for phase in doc["phases"] + doc["open"]:
        assert phase["errors"] == {} and phase["ok"] > 0, phase
    on = [p for p in doc["phases"] + doc["open"] if p["grouping"]]
    assert all(p["group_size_mean"] >= 1 for p in on)  # the grouped server grouped
    off = [p for p in doc["phases"] + doc["open"] if p["grouping"] is False]
    assert all(p["group_size_mean"] is None for p in off)  # the other made no group
    assert doc["failed"] == [] and doc["verify"]["ok"] and doc["verify"]["chain_ok"]
    assert "mean x echo: off" in proc.stdout
