"""CI smoke of the load and benchmark harness: the ceiling driver in every mode and loop
(`bench.driver --preset smoke`: a second or two per phase at small rates) and the sale-day
Locust scenario (`bench.loadtest`, a few seconds), each as the subprocess `make bench` /
`make loadtest` would run, against the test run's PostgreSQL and Redis.

They fail on a crash or on any error response, never on a timing: the assertions are on exit
codes, on the phases and calls that must have run, and on error counts that must be 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER_TIMEOUT_S = 150
LOADTEST_TIMEOUT_S = 120

pytestmark = pytest.mark.bench_smoke


def _env(pg_admin_dsn: str, redis_url: str) -> dict:
    return {**os.environ, "CLEARING_BENCH_DATABASE_URL": pg_admin_dsn,
            "CLEARING_BENCH_REDIS_URL": redis_url, "BENCH_QUICK": ""}


def _run(argv: list[str], env: dict, timeout_s: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout_s)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


def test_driver_smoke_every_mode_and_loop(pg_admin_dsn, redis_url, tmp_path):
    out = tmp_path / "bench"
    _run(["bench.driver", "--preset", "smoke", "--out", str(out)],
         _env(pg_admin_dsn, redis_url), DRIVER_TIMEOUT_S)
    doc = json.loads((out / "results.json").read_text())
    phases = doc["phases"]
    modes = ("transfer", "split", "batch", "stream")
    expected = {f"echo.{m}" for m in modes} | {f"closed.{m}" for m in modes} | {
        "asyncpg", "open.split", "hold.batch"}
    assert set(phases) == expected
    for key, phase in phases.items():
        assert phase["errors"] == {}, (key, phase["error_samples"])
        assert phase["warmup_errors"] == {}, (key, phase["error_samples"])
        assert phase["ok"] > 0, key
        assert phase["latency_ms"]["count"] == phase["ok"], key
    for kind in ("batch", "asyncpg"):
        key = "closed.batch" if kind == "batch" else kind
        assert phases[key]["units_per_s"] == round(phases[key]["rps"] * 20, 1)
    assert phases["open.split"]["overflow"] == 0
    assert phases["hold.batch"]["rss"]["after_warmup_bytes"] > 0
    assert doc["failed"] == []
    assert doc["verify"]["ok"] and doc["verify"]["chain_ok"]
    assert doc["git"]["commit"] and doc["machine"]["cpus"] == os.cpu_count()
    names = [f["phase"] for f in doc["figures"]]
    assert names == ["closed.transfer", "closed.split", "closed.batch", "closed.stream",
                     "asyncpg", "open.split", "hold.batch"]
    assert all(f["errors"] == 0 for f in doc["figures"])
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 2 * len(names) + 1  # throughput, p99, the hold's RSS
    assert (out / "summary.txt").read_text().startswith("clearing bench")


def test_locust_sale_day_smoke(pg_admin_dsn, redis_url, tmp_path):
    out = tmp_path / "loadtest"
    _run(["bench.loadtest", "--rate", "40", "--ramp", "1", "--hold", "5", "--processes", "2",
          "--platforms", "2", "--merchants", "5", "--out", str(out)],
         _env(pg_admin_dsn, redis_url), LOADTEST_TIMEOUT_S)
    doc = json.loads((out / "loadtest.json").read_text())
    stats = doc["stats"]
    assert set(stats) <= {"Split", "ReleaseSplit", "RefundSplit", "GetBalance", "Aggregated"}
    assert stats["Aggregated"]["failures"] == 0
    assert all(s["failures"] == 0 for s in stats.values())
    assert stats["Split"]["requests"] > 0 and stats["GetBalance"]["requests"] > 0
    assert stats["ReleaseSplit"]["requests"] > 0
    assert stats["Aggregated"]["requests"] == sum(
        s["requests"] for name, s in stats.items() if name != "Aggregated")
    assert doc["failed"] == [] and doc["locust_exit"] == 0
    assert doc["verify"]["ok"] and doc["verify"]["chain_ok"]
    setup = json.loads((out / "setup.json").read_text())
    assert len(setup["platforms"]) == 2
    assert all(len(p["sellers"]) == 5 and len(p["account_ids"]) == 10
               for p in setup["platforms"])
    assert (out / "locust.html").stat().st_size > 0
    assert (out / "locust_stats_history.csv").exists()
