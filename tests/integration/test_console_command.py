"""`clearing console` as a process against the test server: it listens where told, a key
signs in over HTTP, its log lines are the JSON lines of the other commands (the access log
included) and never hold the key; SIGTERM stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx

from tests.console_support import sign_in
from tests.support import ROOT, free_port, wait_for


async def test_the_console_command_serves_and_never_logs_the_key(running, platform):
    port = free_port()
    env = {**os.environ, "CLEARING_LOG_LEVEL": "INFO"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clearing.cli", "console", "--addr",
        f"127.0.0.1:{running.port}", "--plaintext", "--listen", f"127.0.0.1:{port}",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            async def up() -> bool:
                try:
                    return (await http.get("/signin")).status_code == 200
                except httpx.TransportError:
                    return False
            await wait_for(up, timeout_s=30)
            signed = await sign_in(http, platform.key)
            assert signed.status_code == 303
            assert (await http.get("/accounts")).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    # uvicorn shuts down, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
    log = err.decode()
    assert "GET /accounts HTTP/1.1" in log and "signed in" in log and "Shutting down" in log
    assert platform.key not in log and platform.key not in out.decode()
