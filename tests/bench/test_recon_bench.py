"""`make bench-recon` kept working: its generator (a small day: the statement read by the
server's own parser adds up to what the generator says it injected), and the whole command at
2,000 lines as a subprocess, as `make bench-recon LINES=2000` runs it (its own database and
server; exit 0 only when the run found exactly the injected figures of every class). Never a
timing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import recon_gen as gen
from clearing.recon.model import ImportHeader, StatementFormat
from clearing.recon.parse import StatementParser

ROOT = Path(__file__).resolve().parents[2]
LINES = 2_000
RUN_TIMEOUT_S = 90

pytestmark = pytest.mark.bench_smoke


def _templates() -> dict[tuple[str, int], gen.Template]:
    """Templates as read back from splits, for rows that are not written anywhere here."""
    detail = (f'{{"format":1,"order":{{"channel":"{gen.CHANNEL_MARK}",'
              f'"channel_transaction_id":"{gen.CTID_MARK}","paid_time_ns":{gen.PAID_NS_MARK}}}}}')
    row = {"split_id": 1, "platform_id": 7, "status": 1, "rule_set_name": "recon-cny",
           "rule_set_version": 1, "channel_fee_minor": 0, "distributed_minor": 0,
           "subsidy_minor": 0, "fee_minor": 0, "counter_values": "[]", "detail": detail}
    return {(cur, a): gen.Template.of_row({**row, "currency_code": cur, "amount_minor": a})
            for cur in ("CNY", "USD") for a in gen.amounts(11, cur)}


def test_the_generated_day_adds_up(tmp_path):
    day = dt.date(2026, 12, 4)
    plan = gen.Plan(LINES, 3, day, gen.SPLIT_ID_BASE)
    exp = gen.Expected()
    path = tmp_path / "statement.csv.gz"
    rows = b"".join(gen.generate(plan, _templates(), 2, path, exp)).decode().splitlines()
    assert exp.line_count == LINES and exp.split_count == LINES == len(rows)
    assert all(len(r.split("\t")) == len(gen.SPLIT_COLUMNS) for r in rows)
    assert len({r.split("\t")[2] for r in rows}) == LINES  # one split per order
    for cls in gen.CLASS_NAMES:
        if cls != gen.MATCHED:
            want = 2 * 3 if cls == gen.AMOUNT_MISMATCH else 3  # payments and refunds
            assert exp.counts[cls] == want, gen.CLASS_NAMES[cls]
    assert sum(n for c, n in exp.counts.items() if c != gen.MISSING_IN_STATEMENT) == LINES
    parser = StatementParser(ImportHeader("r", gen.CHANNEL, day, StatementFormat.CANONICAL))
    data = path.read_bytes()
    count = sum(len(parser.feed(data[i:i + 4096])) for i in range(0, len(data), 4096))
    count += len(parser.finish())
    assert not parser.problems and count == LINES
    assert parser.totals.settled_minor == exp.statement_settled_minor


def test_bench_recon_at_two_thousand_lines(pg_admin_dsn, redis_url, tmp_path):
    out = tmp_path / "recon"
    env = {**os.environ, "CLEARING_BENCH_DATABASE_URL": pg_admin_dsn,
           "CLEARING_BENCH_REDIS_URL": redis_url}
    proc = subprocess.run([sys.executable, "-m", "bench.recon", "--lines", str(LINES),
                           "--out", str(out)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    doc = json.loads((out / "recon.json").read_text())
    assert doc["problems"] == [] and doc["lines"] == doc["splits"] == LINES
    assert set(doc["expected"]) == set(gen.CLASS_NAMES.values())  # every class injected
    assert doc["ceiling_copy_s"] > 0 and doc["import_wall_s"] > 0
    assert doc["rss_peak_kib"] >= doc["rss_before_kib"] > 0
    assert "found exactly, every class" in (out / "summary.txt").read_text()
