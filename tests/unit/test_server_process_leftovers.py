"""A server process a test started and left running is killed by
ServerProcess.kill_leftovers (tests/conftest.py calls it when the session ends); one that
never became ready is not left running."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ServerProcess


def test_a_leftover_process_is_killed():
    p = ServerProcess("postgresql://unused", "redis://unused")
    p.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ServerProcess.started.append(p)
    done = ServerProcess(("postgresql://unused"), "redis://unused")
    done.proc = subprocess.Popen([sys.executable, "-c", "pass"])
    done.proc.wait(timeout=30)
    ServerProcess.started.append(done)
    assert ServerProcess.kill_leftovers() == 1
    assert p.proc.poll() is not None
    assert ServerProcess.started == []


def test_a_server_not_ready_in_time_is_not_left_running(monkeypatch):
    p = ServerProcess("postgresql://127.0.0.1:1/none", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(ServerProcess, "START_TIMEOUT_S", 0.0)
    try:
        p.start()
    except RuntimeError as exc:
        assert "did not start" in str(exc) or "exited" in str(exc)
    assert p.proc is not None and p.proc.poll() is not None
    ServerProcess.started.remove(p)
