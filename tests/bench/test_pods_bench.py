"""CI smoke of `make bench-pods` (bench/pods_bench.py): two embedded PostgreSQL pods of its
own, one server, a window on one pod and one on two; every window books splits on both of
its platforms, every platform's ledger verifies, and the PostgreSQL servers are stopped at
the end. It fails on a crash, an error or an unverified ledger, never on a timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240

pytestmark = pytest.mark.bench_smoke


def test_pods_bench_one_pod_then_two(tmp_path):
    out = tmp_path / "pods"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.pods_bench", "--duration", "2", "--rounds", "1",
         "--workers", "1", "--callers", "1", "--batch-size", "10", "--out", str(out)],
        cwd=ROOT, text=True, capture_output=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    doc = json.loads((out / "pods.json").read_text())
    assert [(w["label"], sorted(w["platforms"])) for w in doc["windows"]] == [
        ("one pod", ["A", "A2"]), ("two pods", ["A", "B"])]
    for w in doc["windows"]:
        assert all(n > 0 for n in w["splits_per_s"].values()), w
        assert w["failed_calls"] == 0
    assert {k: v["ok"] for k, v in doc["verify"].items()} == {"A": True, "A2": True, "B": True}
    assert doc["verify"]["B"]["transfer_count"] > 0  # pod 1's platform booked splits
    assert "two pods / one pod" in (out / "pods.txt").read_text()
