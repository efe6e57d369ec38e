"""`make bench-ledger`: unary Transfer throughput and latency vs a bare grpc.aio echo baseline.

    .venv/bin/python -m bench.ledger_bench [--concurrency 64] [--client-processes 1] ...

One run:
1. creates a fresh database `clearing_bench_<random>` on the local PostgreSQL (admin DSN:
   CLEARING_BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres),
   migrates it, creates a platform and its key;
2. starts the real server (`python -m clearing.cli serve`) and the echo baseline
   (bench/echo_server.py) as child processes on free loopback ports;
3. opens one custodial account (allow_negative) and --accounts merchant accounts through
   the API;
4. closed loop against the echo server, then the same closed loop against Transfer
   (--concurrency callers on --channels channels per client process, --warmup s not
   counted, then --duration s measured);
5. open loop against Transfer at half the measured Transfer throughput (--open-duration s,
   latency from each request's scheduled send time);
6. prints the table, writes bench/results/ledger-<UTC timestamp>.json, kills the children
   and drops the database (also on failure, timeout or Ctrl-C).

Exit status: 0 when the run completed, whatever the figures (a missed target is a result,
not a failure); 1 when the run failed: a call answered with an error, a child process died,
setup failed or the hard timeout (--timeout) fired; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
METHOD = "/clearing.v1.LedgerService/Transfer"
CURRENCY = "CNY"
TARGET_RATIO = 0.8
TARGET_P99_MS = 25.0
START_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0
SETUP_CONCURRENCY = 32
MERCHANT_FUNDING_MINOR = 100_000_000
TERM_WAIT_S = 5.0


class RunFailed(Exception):
    """The run itself failed (not a missed target)."""


class HardTimeout(BaseException):
    """The backstop alarm fired."""


# ---- child processes ----------------------------------------------------------------------

class Children:
    """Every process the bench starts; all of them are killed at the end."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._lock = threading.Lock()

    def spawn(self, name: str, module_args: list[str], **kw) -> subprocess.Popen:
        """`python -m MODULE ARGS` through bench._child: the child gets SIGKILL if this
        process dies, even by SIGKILL."""
        return self.spawn_argv(name, [sys.executable, "-m", "bench._child", *module_args], **kw)

    def spawn_argv(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd=ROOT, **kw)
        with self._lock:
            self._procs.append((name, proc))
        return proc

    def kill_all(self, *, gently: bool = True) -> None:
        with self._lock:
            procs = list(self._procs)
        alive = [p for _, p in procs if p.poll() is None]
        if gently:
            for p in alive:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + TERM_WAIT_S
            for p in alive:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for p in alive:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in alive:
            try:
                p.wait(timeout=TERM_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        for _, p in procs:
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass


def _in_thread(fn, *args) -> asyncio.Future:
    """Run a blocking call in a daemon thread (never blocks interpreter or loop shutdown)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(result, exc) -> None:
        if not fut.done():
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def work() -> None:
        try:
            result, exc = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, exc = None, e
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:  # loop closed: nobody waits any more
            pass

    threading.Thread(target=work, daemon=True).start()
    return fut


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- CPU accounting from /proc ------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, comm, cpu seconds) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        head, _, rest = raw.rpartition(")")
        comm = head.partition("(")[2]
        fields = rest.split()
        try:
            table[int(entry)] = (int(fields[1]), comm,
                                 (int(fields[11]) + int(fields[12])) / CLK_TCK)
        except (IndexError, ValueError):
            continue
    return table


def _machine_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def cpu_snapshot(groups: dict[str, list[int]]) -> dict:
    """CPU seconds used so far by every process of each group of process trees (pid ->
    seconds), and by the machine."""
    if not Path("/proc/stat").exists():
        return {}
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    snap: dict = {}
    for name, roots in groups.items():
        per_pid: dict[int, float] = {}
        stack = list(roots)
        while stack:
            pid = stack.pop()
            if pid in per_pid or pid not in table:
                continue
            per_pid[pid] = table[pid][2]
            stack.extend(children.get(pid, ()))
        snap[name] = per_pid
    busy, total = _machine_jiffies()
    snap["machine_busy"] = busy / CLK_TCK
    snap["machine_total"] = total / CLK_TCK
    return snap


def cpu_cores(before: dict[str, float], after: dict[str, float], window_s: float) -> dict:
    if not before or not after or window_s <= 0:
        return {}
    # A process that started in the window counts from 0; one that ended is lost.
    out = {k: round(sum(max(0.0, cpu - before.get(k, {}).get(pid, 0.0))
                        for pid, cpu in after[k].items()) / window_s, 2)
           for k in after if not k.startswith("machine_")}
    total = after["machine_total"] - before["machine_total"]
    if total > 0:
        out["machine"] = round((after["machine_busy"] - before["machine_busy"]) / total
                               * (os.cpu_count() or 1), 2)
        ours = sum(v for k, v in out.items() if k in ("server", "echo", "clients", "postgres"))
        out["other"] = round(max(0.0, out["machine"] - ours), 2)
    return out


# ---- statistics -------------------------------------------------------------------------

def percentiles(lat_us: list[int]) -> dict[str, float]:
    if not lat_us:
        return {}
    xs = sorted(lat_us)
    n = len(xs)

    def pct(p: float) -> float:  # nearest rank
        k = max(0, min(n - 1, int(-(-p * n // 100)) - 1))
        return round(xs[k] / 1000.0, 3)

    return {"p50": pct(50), "p90": pct(90), "p95": pct(95), "p99": pct(99),
            "p99.9": pct(99.9), "max": round(xs[-1] / 1000.0, 3),
            "mean": round(sum(xs) / n / 1000.0, 3), "count": n}


# ---- setup -------------------------------------------------------------------------------

def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _replace_db(dsn: str, name: str) -> str:
    head, sep, tail = dsn.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}{sep}{tail}"


async def _wait_grpc_ready(addr: str, proc: subprocess.Popen, name: str, log: Path) -> None:
    import grpc

    deadline = time.monotonic() + START_TIMEOUT_S
    async with grpc.aio.insecure_channel(addr) as ch:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RunFailed(f"{name} exited with {proc.returncode} at start:\n{_tail(log)}")
            try:
                await asyncio.wait_for(ch.channel_ready(), timeout=0.5)
                return
            except asyncio.TimeoutError:
                continue
    raise RunFailed(f"{name} did not listen on {addr} within {START_TIMEOUT_S:.0f} s")


async def open_accounts(addr: str, key: str, merchants: int, fund: bool) -> dict:
    """The custodial account, the merchants (and their funds when merchants pay each
    other), and one probe Transfer for the size of a real response."""
    import grpc

    from clearing.v1 import ledger_pb2 as pb
    from clearing.v1 import ledger_pb2_grpc

    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = ledger_pb2_grpc.LedgerServiceStub(ch)
        custodial = (await stub.CreateAccount(pb.CreateAccountRequest(
            request_id=str(uuid.uuid4()), external_ref="bench-custodial",
            kind=pb.ACCOUNT_KIND_CUSTODIAL, owner_type=pb.OWNER_TYPE_ENTERPRISE,
            currency_code=CURRENCY, allow_negative=True, display_name="bench custodial"),
            metadata=md, timeout=30)).account.account_id
        sem = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def merchant(i: int) -> int:
            async with sem:
                r = await stub.CreateAccount(pb.CreateAccountRequest(
                    request_id=str(uuid.uuid4()), external_ref=f"bench-merchant-{i}",
                    kind=pb.ACCOUNT_KIND_MERCHANT, owner_type=pb.OWNER_TYPE_ENTERPRISE,
                    currency_code=CURRENCY), metadata=md, timeout=30)
                return r.account.account_id

        ids = list(await asyncio.gather(*(merchant(i) for i in range(merchants))))

        async def fund_one(account_id: int) -> None:
            async with sem:
                await stub.Transfer(pb.TransferRequest(
                    request_id=str(uuid.uuid4()), debit_account_id=custodial,
                    credit_account_id=account_id, amount_minor=MERCHANT_FUNDING_MINOR,
                    currency_code=CURRENCY, mode=pb.TRANSFER_MODE_IMMEDIATE),
                    metadata=md, timeout=30)

        if fund:
            await asyncio.gather(*(fund_one(a) for a in ids))
        probe = await stub.Transfer(pb.TransferRequest(
            request_id=str(uuid.uuid4()), debit_account_id=custodial, credit_account_id=ids[0],
            amount_minor=1, currency_code=CURRENCY, mode=pb.TRANSFER_MODE_IMMEDIATE),
            metadata=md, timeout=30)
    return {"custodial_id": custodial, "merchant_ids": ids,
            "transfer_response_bytes": probe.ByteSize()}


async def verify_ledger(addr: str, key: str, timeout_s: float) -> dict:
    import grpc

    from clearing.v1 import ledger_pb2 as pb
    from clearing.v1 import ledger_pb2_grpc

    async with grpc.aio.insecure_channel(addr) as ch:
        r = await ledger_pb2_grpc.LedgerServiceStub(ch).VerifyLedger(
            pb.VerifyLedgerRequest(), metadata=(("authorization", f"Bearer {key}"),),
            timeout=timeout_s)
    return {"ok": r.ok, "chain_ok": r.chain_ok, "transfer_count": r.transfer_count,
            "batch_count": r.batch_count, "account_count": r.account_count}


# ---- one load phase -----------------------------------------------------------------------

def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children = Children()
        self.admin_dsn = os.environ.get("CLEARING_BENCH_DATABASE_URL") or LOCAL_PG
        self.db_name = f"clearing_bench_{secrets.token_hex(4)}"
        self.db_created = False
        self.tmp = Path(tempfile.mkdtemp(prefix="clearing-bench-"))
        self.server: subprocess.Popen | None = None
        self.echo: subprocess.Popen | None = None
        self.server_addr = ""
        self.echo_addr = ""
        self.key = ""
        self.accounts: dict = {}
        self.run_tag = secrets.token_hex(6)
        self.metrics_port = 0

    # ---- life cycle ----

    async def setup(self) -> None:
        import asyncpg

        from clearing import db
        from clearing.api.auth import create_platform

        await db.ensure_database(self.admin_dsn, self.db_name)
        self.db_created = True
        dsn = _replace_db(self.admin_dsn, self.db_name)
        conn = await asyncpg.connect(dsn)
        try:
            await db.migrate(conn)
            _, self.key = await create_platform(conn, f"bench-{self.run_tag}",
                                                frozenset({"gateway", "operator"}))
            for item in self.args.db_setting:  # on the bench's own database only
                name, sep, value = item.partition("=")
                if not sep or not name.replace("_", "").replace(".", "").isalnum():
                    raise RunFailed(f"--db-setting {item!r}: expected name=value")
                await conn.execute(f'ALTER DATABASE "{self.db_name}" SET {name} = '
                                   f"{_quote_literal(value)}")
        finally:
            await conn.close()

        port = free_port()
        self.server_addr = f"127.0.0.1:{port}"
        env = {**os.environ, "CLEARING_DATABASE_URL": dsn, "CLEARING_REDIS_URL": REDIS_URL,
               "CLEARING_REDIS_PREFIX": f"clearing-bench:{self.run_tag}:",
               "CLEARING_GRPC_ADDR": self.server_addr, "CLEARING_METRICS_ADDR": "",
               "CLEARING_WORKERS": str(self.args.server_workers),
               "CLEARING_LOG_LEVEL": "WARNING", "CLEARING_GRACE_S": "2"}
        if self.args.writer_stats:
            self.metrics_port = free_port()
            env["CLEARING_METRICS_ADDR"] = f"127.0.0.1:{self.metrics_port}"
        for item in self.args.server_env:
            k, sep, v = item.partition("=")
            if not sep or not k.startswith("CLEARING_"):
                raise RunFailed(f"--server-env {item!r}: expected CLEARING_NAME=value")
            env[k] = v
        log = self.tmp / "server.log"
        with open(log, "wb") as out:
            self.server = self.children.spawn("server", ["clearing.cli", "serve"], env=env,
                                              stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        await _wait_grpc_ready(self.server_addr, self.server, "server", log)

        echo_port = free_port()
        self.echo_addr = f"127.0.0.1:{echo_port}"
        elog = self.tmp / "echo.log"
        with open(elog, "wb") as out:
            self.echo = self.children.spawn(
                "echo", ["bench.echo_server", "--addr", self.echo_addr,
                         "--workers", str(self.args.server_workers)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        await _wait_grpc_ready(self.echo_addr, self.echo, "echo server", elog)

        self.accounts = await open_accounts(self.server_addr, self.key, self.args.accounts,
                                            fund=self.args.m2m_fraction > 0)

    async def pg_pids(self) -> list[int]:
        """PostgreSQL processes working for the bench: the backends connected to its
        database, and the cluster's WAL writer, checkpointer and background writer (shared
        with whoever else uses the cluster)."""
        import asyncpg

        try:
            conn = await asyncpg.connect(self.admin_dsn, timeout=5)
            try:
                rows = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR backend_type IN"
                    " ('walwriter', 'checkpointer', 'background writer')", self.db_name)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            return []
        return [r["pid"] for r in rows if r["pid"]]

    def check_alive(self) -> None:
        for name, proc, log in (("server", self.server, "server.log"),
                                ("echo server", self.echo, "echo.log")):
            if proc is not None and proc.poll() is not None:
                raise RunFailed(f"{name} died (exit {proc.returncode}):\n"
                                f"{_tail(self.tmp / log)}")

    def cleanup(self) -> None:
        self.children.kill_all()
        if self.db_created:
            from clearing import db

            try:
                asyncio.run(asyncio.wait_for(db.drop_database(self.admin_dsn, self.db_name),
                                             timeout=30))
                self.db_created = False
            except BaseException as exc:  # noqa: BLE001 - report, keep cleaning up
                print(f"bench: could not drop database {self.db_name}: {exc!r}",
                      file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- load ----

    async def phase(self, label: str, addr: str, mode: str, duration_s: float,
                    rate: float = 0.0) -> dict:
        a = self.args
        procs_n = a.client_processes
        callers = _split(a.concurrency, procs_n)
        cfgs = []
        for i in range(procs_n):
            cfgs.append({"target": addr, "method": METHOD, "key": self.key, "mode": mode,
                         "concurrency": max(1, callers[i]), "channels": a.channels,
                         "warmup_s": a.warmup, "duration_s": duration_s, "rate": rate / procs_n,
                         "call_timeout_s": a.call_timeout, "connect_timeout_s": READY_TIMEOUT_S,
                         "outstanding_max": a.outstanding_max, "seed": secrets.randbits(32),
                         "rid_prefix": f"b{self.run_tag}{label[:1]}{i:03d}{secrets.token_hex(3)}-",
                         "custodial_id": self.accounts["custodial_id"],
                         "merchant_ids": self.accounts["merchant_ids"],
                         "m2m_fraction": a.m2m_fraction, "currency": CURRENCY})
        seen: dict = {}

        async def window_start() -> None:
            seen["stats"] = await self.writer_stats() if label != "echo" else None
            seen["profiler"] = self.start_profiler(label, duration_s)

        async def window_end() -> None:
            seen["stats_after"] = await self.writer_stats() if label != "echo" else None

        results, cores = await self.run_load(label, "bench.loadgen", cfgs, duration_s,
                                             window_start, window_end)
        out = merge(label, mode, results, duration_s, rate, callers, a.channels, cores)
        if seen["profiler"] is not None:
            out["profile"] = await self.finish_profiler(*seen["profiler"])
        if seen["stats"] and seen["stats_after"]:
            out["writer"] = writer_delta(seen["stats"], seen["stats_after"])
        return out

    async def run_load(self, label: str, module: str, cfgs: list[dict], duration_s: float,
                       window_start=None, window_end=None) -> tuple[list[dict], dict]:
        """Run one load process per config (`module` speaks bench.loadgen's protocol: config,
        READY, GO, result); returns their results and the CPU cores of server, echo, load
        processes and PostgreSQL in the measured window. `window_start` / `window_end` are
        awaited at the window's edges."""
        a = self.args
        procs: list[subprocess.Popen] = []
        logs: list[Path] = []
        for i, cfg in enumerate(cfgs):
            log = self.tmp / f"loadgen-{label}-{i}.log"
            logs.append(log)
            with open(log, "wb") as err:
                p = self.children.spawn(f"loadgen-{label}-{i}", [module],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=err)
            procs.append(p)
            p.stdin.write((json.dumps(cfg) + "\n").encode())
            p.stdin.flush()

        def failed(why: str) -> RunFailed:
            tails = "\n".join(f"--- {log.name}\n{_tail(log, 15)}" for log in logs)
            return RunFailed(f"{label}: {why}\n{tails}")

        try:
            lines = await asyncio.wait_for(
                asyncio.gather(*(_in_thread(p.stdout.readline) for p in procs)),
                timeout=READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise failed("load generators not ready in time") from None
        if any(line.strip() != b"READY" for line in lines):
            raise failed(f"load generator did not start: {lines!r}")
        start = time.monotonic() + 0.2
        for p in procs:
            p.stdin.write(f"GO {start!r}\n".encode())
            p.stdin.flush()
        results_f = asyncio.gather(*(_in_thread(p.stdout.read) for p in procs))
        groups = {"server": [self.server.pid], "echo": [self.echo.pid],
                  "clients": [p.pid for p in procs]}
        pg_before = await self.pg_pids()
        await asyncio.sleep(max(0.0, start + a.warmup - time.monotonic()))
        before = cpu_snapshot({**groups, "postgres": pg_before})
        if window_start is not None:
            await window_start()
        pg_after = await self.pg_pids()
        await asyncio.sleep(max(0.0, start + a.warmup + duration_s - time.monotonic()))
        after = cpu_snapshot({**groups, "postgres": sorted(set(pg_before) | set(pg_after))})
        if window_end is not None:
            await window_end()
        try:
            outs = await asyncio.wait_for(results_f, timeout=a.call_timeout + 30)
        except asyncio.TimeoutError:
            raise failed("load generators did not finish in time") from None
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        results = []
        for p, out in zip(procs, outs):
            if p.returncode != 0 or not out.strip():
                raise failed(f"a load generator exited with {p.returncode}")
            results.append(json.loads(out))
        self.check_alive()
        return results, cpu_cores(before, after, duration_s)

    async def writer_stats(self) -> dict[str, float] | None:
        """The server's writer histograms (--writer-stats), from its Prometheus endpoint."""
        if not self.metrics_port:
            return None
        import urllib.request

        def fetch() -> str:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()

        try:
            text = await _in_thread(fetch)
        except OSError:
            return None
        wanted = ("clearing_writer_batch_size_count", "clearing_writer_batch_size_sum",
                  "clearing_writer_flush_seconds_count", "clearing_writer_flush_seconds_sum")
        out: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                out[name] = float(value)
            elif name.startswith("clearing_writer_batch_size_bucket{") or \
                    name.startswith("clearing_writer_flush_seconds_bucket{"):
                out[name] = float(value)
        return out

    # ---- profiling (--profile DIR) ----

    def start_profiler(self, label: str, duration_s: float):
        """py-spy on the process under load (server, or echo server) for the measurement
        window of the closed-loop phases."""
        a = self.args
        if not a.profile or label == "open":
            return None
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(pyspy).exists():
            print("bench-ledger: --profile needs py-spy (.venv/bin/pip install py-spy)",
                  file=sys.stderr)
            return None
        pid = (self.echo if label == "echo" else self.server).pid
        out_dir = Path(a.profile)
        out_dir.mkdir(parents=True, exist_ok=True)
        raw = out_dir / f"{label}-{pid}.txt"
        argv = [pyspy, "record", "--pid", str(pid), "--duration", str(max(1, int(duration_s))),
                "--rate", "100", "--format", "raw", "--output", str(raw), "--subprocesses"]
        # Native stacks need the process paused at each sample; Python-only ones do not.
        argv.append("--native" if a.profile_native else "--nonblocking")
        proc = self.children.spawn_argv(f"py-spy-{label}", argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, raw, duration_s

    async def finish_profiler(self, proc: subprocess.Popen, raw: Path, duration_s: float) -> dict:
        try:
            await asyncio.wait_for(_in_thread(proc.wait), timeout=duration_s + 30)
        except asyncio.TimeoutError:
            proc.kill()
        if not raw.exists():
            return {"error": f"py-spy wrote nothing (exit {proc.returncode})"}
        return {"raw": str(raw), **summarize_profile(raw)}


# Frames on every stack of a thread (process start-up, the event loop's entry): not news.
_PROFILE_WRAPPERS = re.compile(
    r"<frozen runpy>|bench/_child\.py|clearing/cli\.py|\(clearing/server\.py\)$"
    r"|^<module> |uvloop/__init__\.py|^Runner\.run |^run \(asyncio/runners|"
    r"^Thread\._bootstrap|^(main|run_process) \(bench/echo_server")


def summarize_profile(raw: Path, top: int = 15) -> dict:
    """Top functions of py-spy collapsed stacks: by own samples and by samples on the stack
    (each function counted once per stack)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    strip_line = re.compile(r":\d+\)$")
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [strip_line.sub(")", f) for f in stack.split(";")]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    def pct(c: Counter, skip=None) -> list[list]:
        rows = [(f, n) for f, n in c.most_common() if not (skip and skip.search(f))]
        return [[f, round(100.0 * n / total, 1)] for f, n in rows[:top]]

    return {"samples": total, "self_pct": pct(own),
            "inclusive_pct": pct(incl, _PROFILE_WRAPPERS)}


def writer_delta(before: dict[str, float], after: dict[str, float]) -> dict:
    """Batches committed in the window, their mean size and mean/p50/p99 flush time
    (bucket bounds of the server's histograms)."""
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    batches = d.get("clearing_writer_batch_size_count", 0.0)
    if not batches:
        return {"batches": 0}

    def quantile(prefix: str, q: float) -> float | None:
        buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in d.items()
                         if k.startswith(prefix) and 'le="+Inf"' not in k)
        for bound, count in buckets:
            if count >= q * batches:
                return bound
        return None

    return {"batches": int(batches),
            "mean_batch_size": round(d["clearing_writer_batch_size_sum"] / batches, 1),
            "mean_flush_ms": round(d["clearing_writer_flush_seconds_sum"] / batches * 1e3, 2),
            "flush_ms_p50_le": (lambda v: v and v * 1e3)(
                quantile("clearing_writer_flush_seconds_bucket{", 0.5)),
            "flush_ms_p99_le": (lambda v: v and v * 1e3)(
                quantile("clearing_writer_flush_seconds_bucket{", 0.99)),
            "batch_size_p50_le": quantile("clearing_writer_batch_size_bucket{", 0.5)}


def merge(label: str, mode: str, results: list[dict], window_s: float, rate: float,
          callers: list[int], channels: int, cpu: dict) -> dict:
    codes: Counter[str] = Counter()
    warmup_codes: Counter[str] = Counter()
    lat: list[int] = []
    samples: list[str] = []
    for r in results:
        codes.update(r["codes"])
        warmup_codes.update(r["warmup_codes"])
        lat.extend(r["lat_us"])
        samples.extend(r["error_samples"])
    ok = codes.pop("OK", 0)
    out = {"label": label, "mode": mode, "client_processes": len(results),
           "callers_per_process": callers, "channels_per_process": channels,
           "window_s": window_s, "ok": ok, "rps": round(ok / window_s, 1),
           "errors": dict(codes), "warmup_errors": dict(warmup_codes),
           "error_samples": samples[:10], "latency_ms": percentiles(lat),
           "response_bytes": max(r["resp_bytes"] for r in results),
           "client_cpu_s": round(sum(r["cpu_s"] for r in results), 2), "cpu_cores": cpu}
    if mode == "open":
        out["target_rate"] = round(rate, 1)
        out["scheduled"] = sum(r["sent"] for r in results)
        out["late_max_ms"] = round(max(r["late_max_ms"] for r in results), 3)
        out["overflow"] = sum(r["overflow"] for r in results)
        out["outstanding_peak"] = max(r["outstanding_peak"] for r in results)
    return out


# ---- the run -----------------------------------------------------------------------------

async def run(bench: Bench) -> dict:
    a = bench.args
    try:
        t0 = time.monotonic()
        await bench.setup()
        setup_s = time.monotonic() - t0
        echo = await bench.phase("echo", bench.echo_addr, "closed", a.duration)
        transfer = await bench.phase("transfer", bench.server_addr, "closed", a.duration)
        rate = a.open_rate or transfer["rps"] / 2
        if rate <= 0:
            raise RunFailed("Transfer throughput is zero; no open-loop rate")
        open_ = await bench.phase("open", bench.server_addr, "open", a.open_duration, rate)
        verify = None
        if not a.no_verify:
            verify = await verify_ledger(bench.server_addr, bench.key, a.call_timeout)
        bench.check_alive()
        return {"setup_s": round(setup_s, 1), "echo": echo, "transfer": transfer,
                "open": open_, "verify": verify}
    finally:
        # Kill the children here, before the loop closes: nothing waits on their pipes.
        bench.children.kill_all()


def _fmt(x, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def report(meta: dict, res: dict) -> tuple[str, list[str]]:
    """The table, and the reasons the run counts as failed (errors in the load)."""
    e, t, o = res["echo"], res["transfer"], res["open"]
    ratio = t["rps"] / e["rps"] if e["rps"] else 0.0
    p99 = o["latency_ms"].get("p99")
    ok_ratio = ratio >= TARGET_RATIO
    ok_p99 = p99 is not None and p99 < TARGET_P99_MS
    problems = []
    for ph in (e, t, o):
        errs = {**ph["errors"]}
        for k, v in ph["warmup_errors"].items():
            errs[k] = errs.get(k, 0) + v
        if errs:
            problems.append(f"{ph['label']}: errors {errs} e.g. {ph['error_samples'][:2]}")
    if res.get("verify") is not None and not (res["verify"]["ok"] and res["verify"]["chain_ok"]):
        problems.append(f"VerifyLedger failed: {res['verify']}")

    def lat(ph, k):
        return _fmt(ph["latency_ms"].get(k), ".2f")

    def cpu(ph):
        c = ph["cpu_cores"]
        srv = c.get("echo") if ph["label"] == "echo" else c.get("server")
        return (f"server {_fmt(srv, '.2f')}  pg {_fmt(c.get('postgres'), '.2f')}  "
                f"clients {_fmt(c.get('clients'), '.2f')}  other {_fmt(c.get('other'), '.2f')}"
                f"  machine {_fmt(c.get('machine'), '.2f')}/{meta['cpus']}")

    def errs(ph):
        total = sum(ph["errors"].values()) + sum(ph["warmup_errors"].values())
        return "0" if not total else f"{total} {dict(ph['errors'])}"

    w = 26
    lines = [
        f"clearing bench-ledger  {meta['timestamp']}  ({meta['cpus']} CPUs, "
        f"{meta['client_processes']} client process(es) x {meta['concurrency']} callers total, "
        f"{meta['channels']} channel(s) per process, {meta['server_workers']} server "
        f"worker(s), {meta['accounts']} merchants, m2m {meta['m2m_fraction']:.0%})",
        "",
        f"{'closed loop':<{w}}{'echo':>14}{'Transfer':>14}",
        f"{'  throughput (rps)':<{w}}{e['rps']:>14.0f}{t['rps']:>14.0f}",
        f"{'  latency p50 (ms)':<{w}}{lat(e, 'p50'):>14}{lat(t, 'p50'):>14}",
        f"{'  latency p99 (ms)':<{w}}{lat(e, 'p99'):>14}{lat(t, 'p99'):>14}",
        f"{'  errors':<{w}}{errs(e):>14}{errs(t):>14}",
        f"{'  response bytes':<{w}}{e['response_bytes']:>14}{t['response_bytes']:>14}",
        f"{'  cpu cores, echo':<{w}}{cpu(e)}",
        f"{'  cpu cores, Transfer':<{w}}{cpu(t)}",
        f"{'':<{w}}(other: processes not part of this run; the machine is shared)",
        "",
        f"{'ratio Transfer/echo':<{w}}{ratio:>14.3f}   target >= {TARGET_RATIO}  "
        f"{'MET' if ok_ratio else 'MISSED'}",
        "",
        f"open loop, Transfer at {o['target_rate']:.0f} rps"
        f"{' (half the closed-loop Transfer rps)' if not meta['open_rate'] else ' (--open-rate)'}"
        f" for {o['window_s']:.0f} s: {o['ok']} ok ({o['rps']:.0f} rps answered)",
        f"{'  latency p50 (ms)':<{w}}{lat(o, 'p50'):>14}",
        f"{'  latency p95 (ms)':<{w}}{lat(o, 'p95'):>14}",
        f"{'  latency p99 (ms)':<{w}}{lat(o, 'p99'):>14}   target < {TARGET_P99_MS:.0f} ms  "
        f"{'MET' if ok_p99 else 'MISSED'}",
        f"{'  latency p99.9 (ms)':<{w}}{lat(o, 'p99.9'):>14}",
        f"{'  latency max (ms)':<{w}}{lat(o, 'max'):>14}",
        f"{'  errors':<{w}}{errs(o):>14}",
        f"{'  send lag max (ms)':<{w}}{o['late_max_ms']:>14.2f}   (client timer lateness; "
        f"counted in the latency)",
        f"{'  cpu cores':<{w}}{cpu(o)}",
    ]
    for ph in (t, o):
        wr = ph.get("writer")
        if wr and wr.get("batches"):
            if ph is t:
                lines.append("")
            lines.append(f"writer during {ph['label']}: {wr['batches']} batches, mean "
                         f"{wr['mean_batch_size']} postings, flush mean {wr['mean_flush_ms']} ms "
                         f"(p50 <= {_fmt(wr['flush_ms_p50_le'], 'g')} ms, p99 <= "
                         f"{_fmt(wr['flush_ms_p99_le'], 'g')} ms)")
    for ph in (e, t):
        prof = ph.get("profile")
        if not prof:
            continue
        lines.append("")
        if "error" in prof:
            lines.append(f"profile of the {ph['label']} server: {prof['error']}")
            continue
        lines.append(f"profile of the {ph['label']} server ({prof['samples']} samples, "
                     f"py-spy, {prof['raw']}):")
        lines.append(f"  {'self %':>7}  function")
        for f, pc in prof["self_pct"][:12]:
            lines.append(f"  {pc:>7.1f}  {f}")
        lines.append(f"  {'incl %':>7}  function")
        for f, pc in prof["inclusive_pct"][:15]:
            lines.append(f"  {pc:>7.1f}  {f}")
        lines.append("  (Runner.run self: native code under the event loop - grpc Cython/C-core, "
                     "uvloop, asyncpg protocol, syscalls;")
        lines.append("   Thread.run: grpc's poller thread; --profile-native splits them)")
    if res.get("verify") is not None:
        v = res["verify"]
        lines.append("")
        lines.append(f"VerifyLedger: ok={v['ok']} chain_ok={v['chain_ok']} "
                     f"transfers={v['transfer_count']} batches={v['batch_count']}")
    return "\n".join(lines), problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.ledger_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=64,
                    help="closed-loop callers in all (split over the client processes)")
    ap.add_argument("--channels", type=int, default=4, help="gRPC channels per client process")
    ap.add_argument("--client-processes", type=int, default=1,
                    help="load-generator processes")
    ap.add_argument("--duration", type=float, default=10.0,
                    help="measured seconds of each closed-loop phase")
    ap.add_argument("--warmup", type=float, default=2.0,
                    help="unmeasured seconds before each phase")
    ap.add_argument("--open-duration", type=float, default=10.0,
                    help="measured seconds of the open-loop phase")
    ap.add_argument("--open-rate", type=float, default=0.0,
                    help="open-loop rate in rps (default: half the closed-loop Transfer rps)")
    ap.add_argument("--accounts", type=int, default=1000, help="merchant accounts")
    ap.add_argument("--m2m-fraction", type=float, default=0.0,
                    help="fraction of Transfers merchant -> merchant (merchants are funded "
                         "first); the rest custodial -> merchant")
    ap.add_argument("--server-workers", type=int, default=1,
                    help="processes of the real server (CLEARING_WORKERS) and of the echo "
                         "server")
    ap.add_argument("--call-timeout", type=float, default=30.0, help="deadline of each call")
    ap.add_argument("--outstanding-max", type=int, default=20_000,
                    help="open loop: calls in flight per client process before sends are "
                         "counted as CLIENT_OVERFLOW errors")
    ap.add_argument("--no-verify", action="store_true", help="skip VerifyLedger at the end")
    ap.add_argument("--db-setting", action="append", default=[], metavar="NAME=VALUE",
                    help="ALTER DATABASE <bench db> SET NAME = VALUE before the server starts "
                         "(repeatable; experiments such as plan_cache_mode=force_custom_plan)")
    ap.add_argument("--writer-stats", action="store_true",
                    help="turn on the server's metrics endpoint and report the ledger writer's "
                         "batches (count, size, flush time) of each Transfer phase")
    ap.add_argument("--server-env", action="append", default=[], metavar="CLEARING_X=V",
                    help="extra environment of the real server (repeatable), e.g. "
                         "CLEARING_WRITER_FLUSH_MS_MAX=5")
    ap.add_argument("--profile", metavar="DIR",
                    help="py-spy the echo server and the real server during their closed-loop "
                         "windows; raw stacks go to DIR, top functions to the table (sampling "
                         "costs the profiled process a little)")
    ap.add_argument("--profile-native", action="store_true",
                    help="with --profile: native frames too (Cython/C of grpc, asyncpg, "
                         "uvloop); py-spy then pauses the process at each sample")
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="hard limit of the whole run in seconds (default: from the durations)")
    ap.add_argument("--no-json", action="store_true",
                    help="do not write bench/results/ledger-<timestamp>.json")
    args = ap.parse_args(argv)
    if args.concurrency < 1 or args.channels < 1 or args.client_processes < 1:
        ap.error("--concurrency, --channels and --client-processes must be >= 1")
    if args.client_processes > args.concurrency:
        ap.error("--client-processes must not exceed --concurrency")
    if args.duration <= 0 or args.open_duration <= 0 or args.warmup < 0:
        ap.error("durations must be positive")
    if not 0 <= args.m2m_fraction <= 1:
        ap.error("--m2m-fraction is between 0 and 1")
    if args.accounts < 2:
        ap.error("--accounts must be >= 2")
    if not args.timeout:
        phases = 3 * (args.warmup + 5) + 2 * args.duration + args.open_duration
        args.timeout = 120 + phases + 2 * args.call_timeout
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    now = dt.datetime.now(dt.timezone.utc)
    meta = {"timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "cpus": os.cpu_count(),
            "python": platform.python_version(), "host": platform.node(),
            "concurrency": args.concurrency, "channels": args.channels,
            "client_processes": args.client_processes, "server_workers": args.server_workers,
            "server_env": args.server_env, "db_settings": args.db_setting,
            "accounts": args.accounts, "m2m_fraction": args.m2m_fraction,
            "warmup_s": args.warmup, "duration_s": args.duration,
            "open_duration_s": args.open_duration, "open_rate": args.open_rate,
            "targets": {"ratio_min": TARGET_RATIO, "open_p99_ms_max": TARGET_P99_MS}}
    bench = Bench(args)

    def on_alarm(signum, frame) -> None:
        bench.children.kill_all(gently=False)
        raise HardTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 30)  # backstop; the wait_for below fires first
    print(f"bench-ledger: database {bench.db_name}, {args.client_processes} client "
          f"process(es), {args.concurrency} callers, {args.channels} channel(s)/process, "
          f"phases {args.warmup:g}+{args.duration:g} s echo, {args.warmup:g}+{args.duration:g} s "
          f"Transfer, {args.warmup:g}+{args.open_duration:g} s open loop "
          f"(hard limit {args.timeout:.0f} s)", file=sys.stderr, flush=True)
    try:
        res = asyncio.run(asyncio.wait_for(run(bench), timeout=args.timeout))
    except KeyboardInterrupt:
        print("bench-ledger: interrupted", file=sys.stderr)
        return 130
    except (asyncio.TimeoutError, HardTimeout):
        print(f"bench-ledger: FAILED: hard timeout of {args.timeout:.0f} s", file=sys.stderr)
        return 1
    except RunFailed as exc:
        print(f"bench-ledger: FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - a failed run is reported, never hidden
        traceback.print_exc()
        print("bench-ledger: FAILED", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        bench.cleanup()
    table, problems = report(meta, res)
    meta.update({"ratio": round(res["transfer"]["rps"] / res["echo"]["rps"], 4)
                 if res["echo"]["rps"] else None,
                 "ratio_met": None, "open_p99_met": None, "failed": problems})
    meta["ratio_met"] = meta["ratio"] is not None and meta["ratio"] >= TARGET_RATIO
    p99 = res["open"]["latency_ms"].get("p99")
    meta["open_p99_met"] = p99 is not None and p99 < TARGET_P99_MS
    print(table)
    if not args.no_json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"ledger-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps({**meta, **res}, indent=2) + "\n")
        print(f"\nresults: {path.relative_to(ROOT)}")
    if problems:
        for p in problems:
            print(f"bench-ledger: FAILED: {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
