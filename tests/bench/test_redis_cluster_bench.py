"""CI smoke of bench/redis_cluster.py: a short run on a private Redis and a private
three-node cluster prints both rows and the ratio, finds every reservation in the counters
(the bench checks the sums and exits non-zero otherwise), and leaves no redis-server behind.

It fails on a crash or a lost count, never on a timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120

pytestmark = pytest.mark.bench_smoke


def _servers_under(folder: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(folder) in part for part in proc.info["cmdline"] or ()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_redis_cluster_bench_runs_and_counts_everything(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench.redis_cluster", "--seconds", "0.3", "--callers", "8",
         "--platforms", "20", "--work-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("tier counter reservations, 8 callers, 20 platforms")
    assert [line.split()[0] for line in lines[2:4]] == ["single", "cluster"]
    assert lines[4].startswith("cluster / single, reservations: ")
    assert _servers_under(tmp_path) == []
