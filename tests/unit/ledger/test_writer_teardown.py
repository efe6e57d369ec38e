"""A failing writer test fails, and does not hang the run: the `started` fixture stops the
writer in its teardown, before the pool closes (a writer left running holds a connection,
and closing the pool would wait for it until the run's timeout)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

INNER = '''
from clearing.clock import Clock
from clearing.config import WriterSettings
from clearing.ledger.writer import LedgerWriter
from tests.unit.ledger.conftest import posting


async def test_fails_with_a_running_writer(pool, accounts, started):
    pid, custodial, (m0, *_) = accounts
    writer = started(LedgerWriter(pool, WriterSettings(flush_ms_max=1), Clock()))
    await writer.submit(posting(pid, custodial, m0, 1))
    assert 1 == 2, "this test fails on purpose"
'''
CONFTEST = '''
from tests.conftest import *  # noqa: F401,F403 (the session's database and services)
from tests.unit.ledger.conftest import accounts, pool, started  # noqa: F401
'''


def test_a_failing_writer_test_fails_and_does_not_hang(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT), "-o", "timeout=60",
         str(tmp_path / "test_inner.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=90)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out  # tests failed (not 0, not an internal error or timeout)
    assert "1 failed" in out and "this test fails on purpose" in out, out
    assert "Timeout" not in out and "error" not in out.splitlines()[-1], out
