"""Test helpers: service discovery, a platform-scoped client over generated stubs, and
status-detail decoding. No mocks: everything here talks to real servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bench.harness import free_port, free_port_run  # noqa: F401 - the tests' too
from clearing.v1 import ledger_pb2 as pb
from clearing.v1 import ledger_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
CALL_TIMEOUT_S = 30.0
# Tests that edit or delete recorded rows play a superuser tampering with the database: the
# retention triggers (migration 0017) refuse that to everyone else, so the tampering
# connection turns them off first, as such a superuser would.
AS_TAMPERING_SUPERUSER = "SET session_replication_role = replica"
AS_TAMPERING_SUPERUSER_LOCAL = "SET LOCAL session_replication_role = replica"  # in a transaction


def rid() -> str:
    return str(uuid.uuid4())


@dataclass
class Platform:
    platform_id: int
    key: str
    name: str


class Client:
    """A platform's view of the server: generated stubs plus its bearer key."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def call(self, method: str, request, *, timeout: float = CALL_TIMEOUT_S):
        return await getattr(self.ledger, method)(request, metadata=self.metadata,
                                                  timeout=timeout)

    async def open(self, ref: str, kind: int = pb.ACCOUNT_KIND_MERCHANT,
                   currency: str = "CNY", owner: int = pb.OWNER_TYPE_ENTERPRISE,
                   **extra) -> pb.Account:
        response = await self.call("CreateAccount", pb.CreateAccountRequest(
            request_id=rid(), external_ref=ref, kind=kind, owner_type=owner,
            currency_code=currency, **extra))
        return response.account

    async def transfer(self, debit: int, credit: int, amount: int, *, currency: str = "CNY",
                       mode: int = pb.TRANSFER_MODE_IMMEDIATE, request_id: str | None = None,
                       **extra) -> pb.Transfer:
        response = await self.call("Transfer", pb.TransferRequest(
            request_id=request_id or rid(), debit_account_id=debit, credit_account_id=credit,
            amount_minor=amount, currency_code=currency, mode=mode, **extra))
        return response.transfer

    async def balance(self, account_id: int) -> pb.Balance:
        return (await self.call("GetBalance", pb.GetBalanceRequest(account_id=account_id))).balance

    async def verify(self) -> pb.VerifyLedgerResponse:
        return await self.call("VerifyLedger", pb.VerifyLedgerRequest())


def details(err: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo reason, BadRequest field paths) of an error status."""
    status = rpc_status.from_call(err)
    reason, fields = "", []
    if status is None:
        return reason, fields
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            assert info.domain == "clearing.v1"
            reason = info.reason
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            d.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


class ServerProcess:
    """The real server as a child process (`clearing serve`), for crash and shutdown tests."""

    START_TIMEOUT_S = 30.0
    # Every process started in this test process: tests/conftest.py stops those still running
    # when the session ends (a test whose second server fails to start never reaches the
    # finally that would stop its first one; one was found serving on after a run).
    started: list["ServerProcess"] = []

    def __init__(self, database_url: str, redis_url: str, port: int | None = None,
                 workers: int = 1, extra_env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, "CLEARING_DATABASE_URL": database_url,
                    "CLEARING_REDIS_URL": redis_url,
                    "CLEARING_GRPC_ADDR": f"127.0.0.1:{self.port}",
                    "CLEARING_METRICS_ADDR": "", "CLEARING_WORKERS": str(workers),
                    "CLEARING_LOG_LEVEL": "WARNING",
                    # the tests' bank, chosen explicitly (a plain `clearing serve` has none)
                    "CLEARING_BANK_CONNECTOR": "simulator",
                    # the reconciliation sweep checks every platform: its tests turn it on
                    "CLEARING_RECON_SWEEP": "0",
                    # plaintext, explicitly (TLS: tests/integration/test_tls.py)
                    "CLEARING_TLS_ALLOW_PLAINTEXT": "1", **(extra_env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "clearing.cli", "serve"],
                                     env=self.env, cwd=ROOT)
        ServerProcess.started.append(self)
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
                try:
                    grpc.channel_ready_future(ch).result(timeout=0.5)
                    return self
                except grpc.FutureTimeoutError:
                    continue
        self.kill()  # not ready: not left running
        raise RuntimeError("server did not start in time")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @classmethod
    def kill_leftovers(cls) -> int:
        """Kill every started server still running; how many were."""
        left = [p for p in cls.started if p.proc is not None and p.proc.poll() is None]
        for p in left:
            p.kill()
        cls.started.clear()
        return len(left)

    def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout=timeout_s)


async def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError("condition not met in time")


CLI_TIMEOUT_S = 60.0


async def cli(running, key: str, *argv: str) -> tuple[int, str, str]:
    """`python -m clearing.cli ARGV` against the server `running` (its port) with `key`:
    (exit status, stdout, stderr)."""
    env = {**os.environ, "CLEARING_GRPC_ADDR": f"127.0.0.1:{running.port}",
           "CLEARING_API_KEY": key, "CLEARING_CLIENT_PLAINTEXT": "1"}  # the test servers
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clearing.cli", *argv, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=CLI_TIMEOUT_S)
    return proc.returncode, out.decode(), err.decode()


async def new_admin_key(database_url: str) -> str:
    """An admin key (PlatformService), as `clearing admin init` makes it."""
    import secrets

    import asyncpg

    from clearing.tenancy import create_admin_key

    conn = await asyncpg.connect(database_url)
    try:
        return (await create_admin_key(conn, f"test-{secrets.token_hex(3)}"))[1]
    finally:
        await conn.close()


async def admin_cli(port: int, admin_key: str, *argv: str) -> tuple[int, str, str]:
    """`python -m clearing.cli ARGV` against the server on `port` with an admin key:
    (exit status, stdout, stderr)."""
    env = {**os.environ, "CLEARING_GRPC_ADDR": f"127.0.0.1:{port}",
           "CLEARING_ADMIN_KEY": admin_key, "CLEARING_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clearing.cli", *argv, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=CLI_TIMEOUT_S)
    return proc.returncode, out.decode(), err.decode()
