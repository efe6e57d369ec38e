"""The ceiling driver: every mode of the clearing core under load, with the ceiling of each
layer measured beside it in the same run (`make bench`).

    .venv/bin/python -m bench.driver                 # the standard suite, ~10 minutes
    BENCH_QUICK=1 .venv/bin/python -m bench.driver   # the same scenarios, short (~4 minutes)
    .venv/bin/python -m bench.driver --preset smoke  # seconds, small rates (CI)
    .venv/bin/python -m bench.driver --scenarios closed,open --modes split,stream ...

Modes: `transfer` (unary LedgerService.Transfer), `split` (unary SplitService.Split), `batch`
(SplitBatch, --batch-size orders per call), `stream` (SplitStream, --streams streams with
--stream-window orders in flight each). One *unit* is one Transfer or one split (a batch of
500 is 500 units), so every mode's throughput is in the same unit.

Scenarios, in this order (--scenarios picks some):
  eval      evaluation time per order of the compiled B2B plan (in this process);
  ceilings  the transport ceiling: a bare grpc.aio server with the same methods and messages
            (bench/echo_server.py), closed loop, for each mode;
  closed    each mode against the real server, closed loop (N callers, as fast as it can);
            then the database ceiling: bare asyncpg inserting the same ledger rows in batches
            of --batch-size (bench/split_baseline.py), as many connections as batch callers;
  open      unary Split at a fixed arrival rate (--open-rate, 1500/s) for --open-duration
            (60 s), latency from each order's scheduled send time;
  hold      the sale-day hold: --hold-rate (3800/s) orders from a gateway, --hold-mode batch
            (SplitBatch calls of --hold-batch-size 40, the default) or stream (SplitStream),
            for --hold-duration (300 s), open loop, the server's RSS sampled every second;
  workers   the server with --scale-workers (2) processes: unary Split and SplitStream,
            closed loop, beside the 1-process figures;
  tls       what TLS costs: unary Split and SplitBatch, closed loop, against the server in
            plaintext and against a second server process over TLS, back to back; and the
            echo ceiling of both modes in plaintext and over TLS.
Then VerifyLedger (trial balance and hash chain) on the bench database.

Everything runs on this machine: a fresh database `clearing_bench_<random>` on the local
PostgreSQL (CLEARING_BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres),
Redis (CLEARING_BENCH_REDIS_URL, default redis://127.0.0.1:6379/0) under a prefix of its own
(neither set and no local service answering: the embedded ones `make run` uses, see
bench/README.md),
the real server (`clearing.cli serve`) and the echo server as child processes, and the load
from separate load-generator processes (bench/loadgen.py, bench/split_baseline.py) so the
driver's own CPU is not in the server's loop. Every child dies with the driver; the database
is dropped at the end.

Output: the table on stdout, and bench/results/<UTC timestamp>/ with results.json (every
figure, the machine, the git commit, the parameters), report.html (charts: throughput and p99
per mode with its ceiling beside it; RSS over the hold) and summary.txt (the table).

Exit status: 0 when the run completed with no error response, whatever the figures (a missed
target is a result, not a failure); 1 when a call answered an error, a child died, set-up
failed or the hard timeout fired; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.harness import (READY_TIMEOUT_S, ROOT, Bench, RunFailed, _proc_table, _quote_literal,
                           _split, _wait_grpc_ready, begin, example_rule_set, finish, free_port,
                           merge, new_platform, open_accounts, publish_and_activate,
                           run_bounded, verify_ledger, writer_delta)

CURRENCY = "CNY"
RULE_SET = "b2b"
TARGET_EVAL_US = 20.0
# ref -> (kind, allow_negative), as tests/unit/rules/helpers.ACCOUNTS.
ACCOUNTS = {"CUSTODIAL": (1, True), "GOV_ACCOUNT": (7, False), "PLAT_001": (2, False),
            "SUP_2025001": (3, False), "LOGISTICS_B": (4, False)}
METHODS = {"transfer": "/clearing.v1.LedgerService/Transfer",
           "split": "/clearing.v1.SplitService/Split",
           "batch": "/clearing.v1.SplitService/SplitBatch",
           "stream": "/clearing.v1.SplitService/SplitStream"}
MODES = tuple(METHODS)
NAMES = {"transfer": "Transfer", "split": "Split (unary)", "batch": "SplitBatch",
         "stream": "SplitStream"}
SCENARIOS = ("eval", "ceilings", "closed", "open", "hold", "workers", "tls")

# Issue 5, section 3.
TARGET_UNARY_RATIO = 0.8           # unary Split / echo Split
TARGET_BULK_UNITS_S = 25_000       # SplitBatch / SplitStream durable splits per second
TARGET_BULK_DB_RATIO = 0.7         # SplitBatch / SplitStream vs the asyncpg ceiling
TARGET_OPEN_P99_MS = 25.0          # open-loop unary Split at --open-rate
TARGET_HOLD_P99_MS = 50.0          # sale-day hold
TARGET_RSS_GROWTH = 0.10           # RSS after the hold's warm-up grows less than this

# name -> settings; BENCH_QUICK=1 is `--preset quick`. Explicit flags win over a preset.
PRESETS = {
    "standard": {},
    "quick": {"duration": 4.0, "warmup": 1.0, "open_duration": 10.0, "hold_duration": 30.0,
              "hold_warmup": 5.0, "accounts": 200, "eval_orders": 10_000, "eval_repeats": 3},
    "smoke": {"duration": 1.0, "warmup": 0.5, "open_duration": 2.0, "open_rate": 100.0,
              "hold_duration": 2.0, "hold_warmup": 0.5, "hold_rate": 200.0,
              "accounts": 20, "concurrency": 4, "channels": 2, "batch_size": 20,
              "batch_callers": 2, "streams": 2, "stream_window": 10,
              "eval_orders": 1_000, "eval_repeats": 1, "call_timeout": 15.0,
              "scenarios": "eval,ceilings,closed,open,hold"},
}
DEFAULTS = {"duration": 10.0, "warmup": 2.0, "open_duration": 60.0, "open_rate": 1500.0,
            "hold_duration": 300.0, "hold_warmup": 30.0, "hold_rate": 3800.0,
            "accounts": 1000, "concurrency": 64, "channels": 4, "batch_size": 500,
            "batch_callers": 4, "streams": 4, "stream_window": 250,
            "eval_orders": 50_000, "eval_repeats": 5, "call_timeout": 30.0,
            "scenarios": ",".join(SCENARIOS)}
RSS_INTERVAL_S = 1.0
RSS_SAMPLES_MAX = 10_000


# ---- evaluation micro-bench ------------------------------------------------------------------

async def open_b2b_world(ch, key: str, approver_key: str, note: str) -> dict[str, int]:
    """The B2B world on a platform through the API: ACCOUNTS opened and the rule set
    RULE_SET published and activated (`note` its publication note); the account ids by
    reference. Used by the driver, bench-events and bench-pods."""
    from clearing.v1 import ledger_pb2 as lpb
    from clearing.v1 import ledger_pb2_grpc, split_pb2_grpc

    md = (("authorization", f"Bearer {key}"),)
    ledger = ledger_pb2_grpc.LedgerServiceStub(ch)
    ids = {}
    for ref, (kind, neg) in ACCOUNTS.items():
        r = await ledger.CreateAccount(lpb.CreateAccountRequest(
            request_id=str(uuid.uuid4()), external_ref=ref, kind=kind,
            owner_type=lpb.OWNER_TYPE_ENTERPRISE, currency_code=CURRENCY,
            allow_negative=neg, display_name=f"bench {ref}"), metadata=md, timeout=30)
        ids[ref] = r.account.account_id
    await publish_and_activate(split_pb2_grpc.SplitServiceStub(ch), example_rule_set(RULE_SET),
                               key, approver_key, note)
    return ids


def eval_bench(orders: int, repeats: int) -> dict:
    """Evaluation time per order of the compiled B2B plan, warm (the logic of
    tests/unit/rules/bench_evaluate.py), beside the same four amounts by plain arithmetic."""
    sys.path.insert(0, str(ROOT))
    from clearing.rules.evaluate import evaluate
    from tests.unit.rules import bench_evaluate as be

    plan, order, accounts = be._setup()
    ev = evaluate(plan, order, {}, accounts=accounts)
    legs = [leg.amount_minor for leg in ev.legs]
    if legs != be._baseline(order):
        raise RunFailed(f"b2b evaluation gave {legs}, expected {be._baseline(order)}")
    counters: dict[str, int] = {}
    mean, best = be._per_order_us(lambda: evaluate(plan, order, counters, accounts=accounts),
                                  orders, repeats)
    base_mean, base_best = be._per_order_us(lambda: be._baseline(order), orders, repeats)
    return {"orders_per_run": orders, "runs": repeats, "rules": len(plan.units[0].rules),
            "legs": legs, "mean_us": round(mean, 3), "best_us": round(best, 3),
            "arith_mean_us": round(base_mean, 3), "arith_best_us": round(base_best, 3),
            "target_us": TARGET_EVAL_US, "met": mean < TARGET_EVAL_US}


# ---- the server's memory -----------------------------------------------------------------------

def tree_rss_bytes(root: int) -> int:
    """Resident set size of a process and all its descendants (workers), from /proc."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
        stack.extend(children.get(pid, ()))
    return total


class RssSampler:
    """Samples the server tree's RSS every RSS_INTERVAL_S (at most RSS_SAMPLES_MAX samples)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []  # (seconds since t0, bytes)
        self.t0 = time.monotonic()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.t0 = time.monotonic()

        async def loop() -> None:
            while len(self.samples) < RSS_SAMPLES_MAX:
                self.samples.append((round(time.monotonic() - self.t0, 2),
                                     tree_rss_bytes(self.pid)))
                await asyncio.sleep(RSS_INTERVAL_S)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def summary(self, warmup_s: float) -> dict:
        """Growth after the warm-up (`warmup_s` after t0): the largest sample after it vs the
        first sample at it."""
        after = [(t, b) for t, b in self.samples if t >= warmup_s]
        if not after:
            return {"samples": self.samples, "warmup_s": warmup_s, "growth": None}
        base = after[0][1]
        peak = max(b for _, b in after)
        return {"samples": self.samples, "warmup_s": round(warmup_s, 2),
                "after_warmup_bytes": base,
                "peak_bytes": peak, "last_bytes": after[-1][1],
                "growth": round((peak - base) / base, 4) if base else None}


# ---- the driver -----------------------------------------------------------------------------

class Driver(Bench):
    """The bench database, the real server and the echo server, the B2B accounts and rule
    set, the Transfer accounts; one `load` for every mode and loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.platform_id = 0
        self.approver_key = ""
        self.account_ids: dict[str, int] = {}
        self.probe: dict = {}

    async def setup(self) -> None:
        """A fresh database with copies of the ledger tables for the asyncpg baseline, a
        platform (gateway+operator key, approver key), the server; the B2B accounts, the B2B
        rule set published and activated, two probe Splits (with and without the government
        top-slice) whose responses the echo server copies; the Transfer accounts."""
        import grpc

        from clearing.v1 import split_pb2 as pb
        from clearing.v1 import split_pb2_grpc

        async with self.new_database() as conn:
            self.platform_id, self.key, self.approver_key = await new_platform(
                conn, f"bench-{self.run_tag}")
            for t in ("transfers", "splits", "split_legs", "requests"):
                await conn.execute(f"CREATE TABLE bl_{t} (LIKE {t} INCLUDING ALL)")
            for item in self.args.db_setting:  # on the bench's own database only
                name, sep, value = item.partition("=")
                if not sep or not name.replace("_", "").replace(".", "").isalnum():
                    raise RunFailed(f"--db-setting {item!r}: expected name=value")
                await conn.execute(f'ALTER DATABASE "{self.db_name}" SET {name} = '
                                   f"{_quote_literal(value)}")

        if self.args.writer_stats:
            self.metrics_port = free_port()
        self.server_addr, self.server = await self.start_server(self.dsn,
                                                                self.args.server_workers)

        md = (("authorization", f"Bearer {self.key}"),)
        async with grpc.aio.insecure_channel(self.server_addr) as ch:
            self.account_ids.update(await open_b2b_world(ch, self.key, self.approver_key,
                                                         "bench"))
            splits = split_pb2_grpc.SplitServiceStub(ch)
            # Probes: one split of each shape, the echo's templates (activation reaches
            # the server's cache within 1 s: retry briefly).
            templates = {}
            for name, tags in (("gov", ["enterprise purchase", "government purchase"]),
                               ("plain", ["enterprise purchase"])):
                for attempt in range(30):
                    try:
                        r = await splits.Split(pb.SplitRequest(
                            request_id=str(uuid.uuid4()), order=pb.Order(
                                order_id=f"probe-{name}-{uuid.uuid4()}",
                                amount_minor=85_000_000, currency_code=CURRENCY,
                                channel="UNIONPAY", tags=tags,
                                attributes={"customer_type": "enterprise"},
                                rule_set_name=RULE_SET)), metadata=md, timeout=30)
                        break
                    except grpc.aio.AioRpcError as err:
                        if attempt == 29 or err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                            raise
                        await asyncio.sleep(0.2)
                templates[name] = r
                path = self.tmp / f"template-{name}.bin"
                path.write_bytes(r.SerializeToString())
            self.probe = {"gov_legs": [leg.amount_minor for leg in templates["gov"].split.legs],
                          "plain_legs": [leg.amount_minor
                                         for leg in templates["plain"].split.legs],
                          "gov_response_bytes": templates["gov"].ByteSize(),
                          "plain_response_bytes": templates["plain"].ByteSize()}
        if self.probe["gov_legs"] != [1_700_000, 8_330_000, 62_475_000, 12_495_000]:
            raise RunFailed(f"B2B probe split gave legs {self.probe['gov_legs']}")
        self.accounts = await open_accounts(self.server_addr, self.key, self.args.accounts,
                                            fund=self.args.m2m_fraction > 0)

        self.echo_addr, self.echo = await self.spawn_echo("echo")

    async def spawn_echo(self, name: str, *, tls: bool = False
                         ) -> tuple[str, subprocess.Popen]:
        """The echo server (bench/echo_server.py) on a free port; over TLS with the run's
        certificate when `tls`."""
        addr = f"127.0.0.1:{free_port()}"
        elog = self.tmp / f"{name}.log"
        argv = ["bench.echo_server", "--addr", addr,
                "--gov", str(self.tmp / "template-gov.bin"),
                "--plain", str(self.tmp / "template-plain.bin"),
                "--workers", str(self.args.server_workers)]
        if tls:
            argv += ["--tls-cert", str(self.pki.server_cert),
                     "--tls-key", str(self.pki.server_key)]
        with open(elog, "wb") as out:
            proc = self.children.spawn(name, argv, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=out)
        await _wait_grpc_ready(addr, proc, f"{name} server", elog, self.ca if tls else None)
        return addr, proc

    async def rows_written(self) -> dict:
        """What the server wrote per split so far (all splits, probes included)."""
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM splits) AS splits,"
                " (SELECT count(*) FROM split_legs) AS legs,"
                " (SELECT count(*) FROM transfers) AS transfers,"
                " (SELECT count(*) FROM requests WHERE method ILIKE '%split%') AS requests,"
                " (SELECT coalesce(avg(length(body)), 0) FROM splits) AS body_bytes,"
                " (SELECT count(*) FROM journal_batches) AS journal_batches")
        finally:
            await conn.close()
        n = max(1, row["splits"])
        return {"splits": row["splits"], "split_legs": row["legs"],
                "transfers": row["transfers"], "requests_split_rows": row["requests"],
                "journal_batches": row["journal_batches"],
                "transfers_per_split": round(row["transfers"] / n, 3),
                "legs_per_split": round(row["legs"] / n, 3),
                "requests_per_split": round(row["requests"] / n, 3),
                "body_bytes_mean": int(row["body_bytes"])}

    def cfgs(self, label: str, addr: str, kind: str, mode: str, duration_s: float,
             warmup_s: float, rate: float = 0.0, batch_size: int | None = None,
             ca: str | None = None) -> tuple[list[dict], list[int]]:
        a = self.args
        if kind in ("transfer", "split"):
            concurrency, procs = a.concurrency, a.client_processes
        else:
            concurrency, procs = (a.batch_callers if kind == "batch" else a.streams), 1
        procs = min(procs, concurrency)
        callers = _split(concurrency, procs)
        out = []
        for i in range(procs):
            out.append({
                "target": addr, "ca": ca or "", "method": METHODS[kind], "key": self.key,
                "mode": mode,
                "kind": kind, "concurrency": callers[i],
                "channels": min(a.channels, callers[i]), "warmup_s": warmup_s,
                "duration_s": duration_s, "rate": rate / procs,
                "call_timeout_s": a.call_timeout, "connect_timeout_s": READY_TIMEOUT_S,
                "outstanding_max": a.outstanding_max, "seed": secrets.randbits(32),
                "rid_prefix": f"d{self.run_tag}{label[:10]}{i:02d}{secrets.token_hex(3)}-",
                "currency": CURRENCY,
                # transfer
                "custodial_id": self.accounts.get("custodial_id", 0),
                "merchant_ids": self.accounts.get("merchant_ids", []),
                "m2m_fraction": a.m2m_fraction,
                # split modes
                "batch_size": batch_size or a.batch_size, "rule_set_name": RULE_SET,
                "gov_fraction": a.gov_fraction, "stream_window": a.stream_window})
        return out, callers

    async def load(self, label: str, addr: str, kind: str, mode: str = "closed", *,
                   duration_s: float | None = None, warmup_s: float | None = None,
                   rate: float = 0.0, marks: dict | None = None,
                   batch_size: int | None = None, ca: str | None = None,
                   echo: bool | None = None) -> dict:
        """One phase: `kind` against `addr`, closed loop or open loop at `rate` units/s
        (over TLS trusting `ca` when given; `echo`: whether `addr` is an echo server).
        `marks["window_start"]` gets the time.monotonic() of the measured window's start."""
        a = self.args
        duration_s = a.duration if duration_s is None else duration_s
        warmup_s = a.warmup if warmup_s is None else warmup_s
        unit = (batch_size or a.batch_size) if kind == "batch" else 1
        call_rate = rate / unit  # open-loop batches are sent at units / batch size per second
        cfgs, callers = self.cfgs(label, addr, kind, mode, duration_s, warmup_s, call_rate,
                                  batch_size, ca)
        print(f"bench: {label}: {kind} {mode} loop, {warmup_s:g}+{duration_s:g} s"
              + (f" at {rate:g} units/s" if mode == "open" else ""), file=sys.stderr,
              flush=True)
        on_server = addr != self.echo_addr if echo is None else not echo
        seen: dict = {}

        async def window_start() -> None:
            if marks is not None:
                marks["window_start"] = time.monotonic()
            seen["stats"] = await self.writer_stats() if on_server else None
            if mode == "closed":  # --profile: the process under load, closed loops only
                pid = (self.server if on_server else self.echo).pid
                seen["profiler"] = self.start_profiler(label, pid, duration_s)

        async def window_end() -> None:
            seen["stats_after"] = await self.writer_stats() if on_server else None

        results, cores = await self.run_load(label, "bench.loadgen", cfgs, duration_s,
                                             window_start, window_end, warmup_s=warmup_s)
        out = merge(label, mode, results, duration_s, call_rate, callers,
                    cfgs[0]["channels"], cores)
        out.update({"kind": kind, "units_per_call": unit,
                    "units_per_s": round(out["rps"] * unit, 1), "warmup_s": warmup_s})
        if seen.get("profiler") is not None:
            out["profile"] = await self.finish_profiler(*seen["profiler"])
        if seen.get("stats") and seen.get("stats_after"):
            out["writer"] = writer_delta(seen["stats"], seen["stats_after"])
        if mode == "open":
            out["target_units_per_s"] = rate
        return out

    async def baseline(self, label: str = "asyncpg") -> dict:
        """The database ceiling: the rows the server wrote per split, bare asyncpg."""
        a = self.args
        rows = await self.rows_written()
        cfgs, callers = self.cfgs(label, "", "batch", "closed", a.duration, a.warmup)
        cfg = {**cfgs[0], "dsn": self.dsn, "platform_id": self.platform_id,
               "accounts": self.account_ids, "body_bytes": rows["body_bytes_mean"],
               "requests_rows": rows["requests_per_split"] >= 0.5, "batch_span": 65536,
               "rid_prefix": f"bl{self.run_tag}-"}
        print(f"bench: {label}: bare asyncpg batched insert, {a.warmup:g}+{a.duration:g} s",
              file=sys.stderr, flush=True)
        results, cores = await self.run_load(label, "bench.split_baseline", [cfg], a.duration)
        out = merge(label, "closed", results, a.duration, 0.0, callers, 0, cores)
        out.update({"kind": "asyncpg", "units_per_call": a.batch_size,
                    "units_per_s": round(out["rps"] * a.batch_size, 1), "rows": rows,
                    "warmup_s": a.warmup})
        return out

    async def hold(self) -> dict:
        a = self.args
        sampler = RssSampler(self.server.pid)
        sampler.start()
        marks: dict = {}
        try:
            out = await self.load("hold", self.server_addr, a.hold_mode, "open",
                                  duration_s=a.hold_duration, warmup_s=a.hold_warmup,
                                  rate=a.hold_rate, marks=marks,
                                  batch_size=a.hold_batch_size)
        finally:
            await sampler.stop()
        # The RSS reference is the first sample of the measured window (after the warm-up).
        out["rss"] = sampler.summary(marks.get("window_start", sampler.t0) - sampler.t0)
        return out

    async def tls_cost(self) -> dict[str, dict]:
        """What TLS costs, in one run: unary Split and SplitBatch, closed loop, against the
        server in plaintext (the run's server) and over TLS (a second server process of as
        many workers on the same database, serving TLS with the run's certificate), back to
        back; and the echo ceiling of both modes in plaintext and over TLS. Each measured
        server runs alone (the other idles)."""
        a = self.args
        kinds = [k for k in ("split", "batch") if k in a.modes]
        out: dict[str, dict] = {}
        for kind in kinds:
            out[f"plain.{kind}"] = await self.load(f"tls-off-{kind}", self.server_addr, kind)
        addr, proc = await self.start_server(self.dsn, a.server_workers, name="server-tls",
                                             tls=True)
        one = self.server
        self.server = proc  # CPU accounting and liveness checks follow the server under load
        try:
            for kind in kinds:
                out[f"tls.{kind}"] = await self.load(f"tls-on-{kind}", addr, kind, ca=self.ca,
                                                     echo=False)
        finally:
            self.server = one
            _stop(proc)
        echo_addr, echo = await self.spawn_echo("echo-tls", tls=True)
        plain_echo = self.echo
        try:
            for kind in kinds:
                out[f"echo_plain.{kind}"] = await self.load(f"echo-off-{kind}",
                                                            self.echo_addr, kind)
                self.echo = echo  # CPU accounting follows the echo server under load
                try:
                    out[f"echo_tls.{kind}"] = await self.load(f"echo-tls-{kind}", echo_addr,
                                                              kind, ca=self.ca, echo=True)
                finally:
                    self.echo = plain_echo
        finally:
            _stop(echo)
        return out

    async def scaled(self) -> dict[str, dict]:
        """Unary Split and SplitStream against a server of --scale-workers processes (same
        database); the 1-process server idles meanwhile."""
        a = self.args
        addr, proc = await self.start_server(self.dsn, a.scale_workers,
                                             name=f"server-w{a.scale_workers}")
        one = self.server
        self.server = proc  # CPU accounting and liveness checks follow the server under load
        try:
            out = {}
            for kind in ("split", "stream"):
                if kind in a.modes:
                    out[kind] = await self.load(f"w{a.scale_workers}-{kind}", addr, kind)
            return out
        finally:
            self.server = one
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def run(d: Driver) -> dict:
    """The run's phases, scenario by scenario, then VerifyLedger (the caller, run_bounded,
    kills the children and drops the database)."""
    a = d.args
    phases: dict[str, dict] = {}
    t0 = time.monotonic()
    await d.setup()
    setup_s = round(time.monotonic() - t0, 1)
    if "ceilings" in a.scenarios:
        for kind in a.modes:
            phases[f"echo.{kind}"] = await d.load(f"echo-{kind}", d.echo_addr, kind)
    if "closed" in a.scenarios:
        for kind in a.modes:
            phases[f"closed.{kind}"] = await d.load(kind, d.server_addr, kind)
        if {"batch", "stream"} & set(a.modes):
            phases["asyncpg"] = await d.baseline()
    if "open" in a.scenarios:
        rate = a.open_rate
        if rate <= 0:  # half the closed-loop figure of the same mode
            rate = phases.get(f"closed.{a.open_mode}", {}).get("units_per_s", 0.0) / 2
            if rate <= 0:
                raise RunFailed(f"--open-rate 0 needs the closed {a.open_mode} figure")
        phases[f"open.{a.open_mode}"] = await d.load(
            "open", d.server_addr, a.open_mode, "open", duration_s=a.open_duration,
            rate=round(rate, 1))
    if "hold" in a.scenarios:
        phases[f"hold.{a.hold_mode}"] = await d.hold()
    if "workers" in a.scenarios:
        for kind, ph in (await d.scaled()).items():
            phases[f"workers.{kind}"] = ph
    if "tls" in a.scenarios:
        for key, ph in (await d.tls_cost()).items():
            phases[f"tls.{key}"] = ph
    verify = None if a.no_verify else await verify_ledger(d.server_addr, d.key,
                                                          a.call_timeout)
    d.check_alive()
    return {"setup_s": setup_s, "probe": d.probe, "phases": phases, "verify": verify}


# ---- figures --------------------------------------------------------------------------------

def _ratio(x: float | None, y: float | None) -> float | None:
    return round(x / y, 4) if x is not None and y else None


def figures(res: dict, args: argparse.Namespace) -> list[dict]:
    """One row per measured figure: its value, its ceiling and ratio, and its target."""
    ph = res["phases"]
    rows = []

    def units(key: str) -> float | None:
        return ph[key]["units_per_s"] if key in ph else None

    def p99(key: str) -> float | None:
        return ph[key]["latency_ms"].get("p99") if key in ph else None

    def row(key: str, name: str, ceilings: list[tuple[str, str]], target: str = "",
            met: bool | None = None, extra: dict | None = None) -> None:
        if key not in ph:
            return
        p = ph[key]
        cs = [{"name": cname, "phase": ckey, "units_per_s": units(ckey),
               "p99_ms": p99(ckey), "ratio": _ratio(p["units_per_s"], units(ckey))}
              for cname, ckey in ceilings if ckey in ph]
        server_cores = (p.get("cpu_cores") or {}).get("server")
        rows.append({"phase": key, "name": name, "kind": p["kind"], "loop": p["mode"],
                     "units_per_s": p["units_per_s"], "latency_ms": p["latency_ms"],
                     "errors": sum(p["errors"].values()) + sum(p["warmup_errors"].values()),
                     "ceilings": cs, "target": target, "met": met,
                     # the server's CPU time per unit (its processes' cores over the window)
                     "server_cpu_us_per_unit": round(server_cores * 1e6 / p["units_per_s"], 1)
                     if server_cores and p["units_per_s"] else None, **(extra or {})})

    echo = lambda k: ("transport (grpc.aio echo)", f"echo.{k}")  # noqa: E731
    db = ("database (asyncpg batched insert)", "asyncpg")
    r = _ratio(units("closed.split"), units("echo.split"))
    row("closed.transfer", "Transfer, closed loop", [echo("transfer")])
    row("closed.split", "Split (unary), closed loop", [echo("split")],
        f"ratio to transport >= {TARGET_UNARY_RATIO}", None if r is None else
        r >= TARGET_UNARY_RATIO)
    for kind, name in (("batch", "SplitBatch"), ("stream", "SplitStream")):
        u, rd = units(f"closed.{kind}"), _ratio(units(f"closed.{kind}"), units("asyncpg"))
        row(f"closed.{kind}", f"{name}, closed loop", [db, echo(kind)],
            f">= {TARGET_BULK_UNITS_S:,} splits/s and ratio to database >= "
            f"{TARGET_BULK_DB_RATIO}",
            None if u is None or rd is None else
            u >= TARGET_BULK_UNITS_S and rd >= TARGET_BULK_DB_RATIO)
    row("asyncpg", "bare asyncpg insert of the same rows (database ceiling)", [])
    for kind, name in NAMES.items():
        key = f"open.{kind}"
        if key not in ph:
            continue
        o = ph[key]
        ok = (o["latency_ms"].get("p99") is not None
              and o["latency_ms"]["p99"] < TARGET_OPEN_P99_MS
              and not o["errors"] and not o["warmup_errors"])
        row(key, f"{name}, open loop at {o['target_units_per_s']:g}/s",
            [("same mode, closed loop", f"closed.{kind}")],
            f"p99 < {TARGET_OPEN_P99_MS:g} ms, zero errors", ok)
    for kind in MODES:
        key = f"hold.{kind}"
        if key not in ph:
            continue
        h = ph[key]
        g = h["rss"].get("growth")
        ok = (h["latency_ms"].get("p99") is not None
              and h["latency_ms"]["p99"] < TARGET_HOLD_P99_MS
              and not h["errors"] and not h["warmup_errors"]
              and g is not None and g < TARGET_RSS_GROWTH)
        row(key, f"sale-day hold, {kind} at {h['target_units_per_s']:g}/s for "
            f"{h['window_s']:g} s", [("same mode, closed loop", f"closed.{kind}")],
            f"p99 < {TARGET_HOLD_P99_MS:g} ms, zero errors, RSS growth < "
            f"{TARGET_RSS_GROWTH:.0%}", ok, {"rss_growth": g})
    for kind in ("split", "stream"):
        row(f"workers.{kind}", f"{kind}, closed loop, --workers {args.scale_workers}",
            [("same mode, 1 worker", f"closed.{kind}")], "scaling (reported)")
    for kind, name in (("split", "Split (unary)"), ("batch", "SplitBatch")):
        row(f"tls.plain.{kind}", f"{name}, plaintext (TLS pair)",
            [("transport (echo, plaintext)", f"tls.echo_plain.{kind}")])
        row(f"tls.tls.{kind}", f"{name}, over TLS",
            [("same, plaintext", f"tls.plain.{kind}"),
             ("transport (echo over TLS)", f"tls.echo_tls.{kind}")], "TLS cost (reported)")
        row(f"tls.echo_tls.{kind}", f"echo {name} over TLS (ceiling)",
            [("echo, plaintext", f"tls.echo_plain.{kind}")])
    return rows


def _f(x, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def _ms(x: float | None) -> str:
    """A latency in ms, to 3 or 4 significant digits."""
    if x is None:
        return "-"
    return format(x, ".2f" if x < 100 else ".1f" if x < 1000 else ".0f")


def table(meta: dict, res: dict, rows: list[dict], ev: dict | None) -> str:
    lines = [f"clearing bench  {meta['timestamp']}  {meta['machine']['cpus']} CPUs  "
             f"commit {meta['git']['commit'][:12]}{' (dirty)' if meta['git']['dirty'] else ''}"
             f"  preset {meta['preset']}", ""]
    if ev:
        lines.append(f"evaluation, compiled b2b plan, warm: {ev['mean_us']:.2f} us/order "
                     f"(target < {ev['target_us']:g} us {'MET' if ev['met'] else 'MISSED'})")
        lines.append("")
    hdr = (f"{'figure':<44}{'units/s':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'p99.9':>9}"
           f"{'err':>7}  ceiling -> ratio")
    lines += [hdr, "-" * len(hdr)]
    for r in rows:
        lat = r["latency_ms"]
        ceil = "; ".join(f"{c['name'].split(' (')[0]} {_f(c['units_per_s'])} -> "
                         f"{_f(c['ratio'], '.3f')}" for c in r["ceilings"])
        lines.append(f"{r['name'][:44]:<44}{_f(r['units_per_s']):>9}"
                     + "".join(f"{_ms(lat.get(k)):>9}" for k in ("p50", "p95", "p99", "p99.9"))
                     + f"{r['errors']:>7}  {ceil}")
        if r.get("server_cpu_us_per_unit") is not None:
            lines.append(f"{'':<4}server CPU {r['server_cpu_us_per_unit']:.0f} us per unit")
        if r["target"]:
            verdict = {True: "MET", False: "MISSED", None: ""}[r["met"]]
            extra = f"  (RSS growth {r['rss_growth']:.1%})" if r.get("rss_growth") is not None \
                else ""
            lines.append(f"{'':<4}target: {r['target']}  {verdict}{extra}")
    lines.append("")
    lines.append("units/s: Transfers or durable splits answered OK per second in the measured "
                 "window; latency in ms (open loop: from the scheduled send time; batch: per "
                 "call).")
    errs = {k: v for k, v in ((k, {**p["errors"], **{f"warmup {c}": n for c, n in
                                                      p["warmup_errors"].items()}})
                              for k, p in res["phases"].items()) if v}
    if errs:
        lines.append(f"errors by status code: {errs}")
    for key, p in res["phases"].items():
        wr = p.get("writer")
        if wr and wr.get("batches"):
            lines.append(f"writer during {key}: {wr['batches']} batches, mean "
                         f"{wr['mean_batch_size']} postings, flush mean {wr['mean_flush_ms']} ms")
        prof = p.get("profile")
        if prof:
            lines.append(f"profile of {key}: " + (prof["error"] if "error" in prof else
                         f"{prof['samples']} samples ({prof['raw']}); self %: " + ", ".join(
                             f"{f} {pc}" for f, pc in prof["self_pct"][:8])))
    v = res.get("verify")
    if v:
        lines.append(f"VerifyLedger: ok={v['ok']} chain_ok={v['chain_ok']} "
                     f"transfers={v['transfer_count']} batches={v['batch_count']}")
    return "\n".join(lines)


def problems_of(res: dict) -> list[str]:
    out = []
    for key, p in res["phases"].items():
        errs = {**p["errors"]}
        for k, v in p["warmup_errors"].items():
            errs[k] = errs.get(k, 0) + v
        if errs:
            out.append(f"{key}: errors {errs} e.g. {p['error_samples'][:2]}")
    v = res.get("verify")
    if v is not None and not (v["ok"] and v["chain_ok"]):
        out.append(f"VerifyLedger failed: {v}")
    return out


# ---- machine and provenance -----------------------------------------------------------------

def machine_info() -> dict:
    info = {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "host": platform.node()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_bytes"] = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    try:
        import grpc

        info["grpcio"] = grpc.__version__
    except ImportError:
        pass
    return info


def git_info() -> dict:
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


async def pg_version(dsn: str) -> str:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
    except Exception as exc:  # noqa: BLE001 - provenance only
        return f"unknown ({type(exc).__name__})"


# ---- command line ---------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.driver", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="standard (default), quick (BENCH_QUICK=1) or smoke; flags win")
    ap.add_argument("--scenarios", help=f"comma-separated, of {','.join(SCENARIOS)}")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of "
                    f"{','.join(MODES)}")
    ap.add_argument("--duration", type=float, help="measured seconds of each closed loop (10)")
    ap.add_argument("--warmup", type=float, help="unmeasured seconds before each phase (2)")
    ap.add_argument("--concurrency", type=int, help="unary closed-loop callers (64)")
    ap.add_argument("--channels", type=int, help="gRPC channels per load process (4)")
    ap.add_argument("--client-processes", type=int, default=1,
                    help="load processes of the unary modes")
    ap.add_argument("--batch-size", type=int, help="orders per SplitBatch call (500)")
    ap.add_argument("--batch-callers", type=int, help="SplitBatch callers and asyncpg "
                    "connections (4)")
    ap.add_argument("--streams", type=int, help="SplitStream streams (4)")
    ap.add_argument("--stream-window", type=int, help="closed loop: orders in flight per "
                    "stream (250)")
    ap.add_argument("--gov-fraction", type=float, default=0.5,
                    help="share of orders with the government top-slice (4 legs, else 3)")
    ap.add_argument("--accounts", type=int, help="merchant accounts of the Transfers (1000)")
    ap.add_argument("--open-mode", choices=MODES, default="split",
                    help="open scenario: the mode (split)")
    ap.add_argument("--open-rate", type=float, help="open scenario: units per second (1500); "
                    "0: half the closed-loop figure of the mode")
    ap.add_argument("--open-duration", type=float, help="open scenario: measured s (60)")
    ap.add_argument("--hold-mode", choices=("stream", "batch"), default="batch",
                    help="hold: a gateway's SplitBatch calls (default) or SplitStream")
    ap.add_argument("--hold-batch-size", type=int, default=40,
                    help="hold, batch mode: orders per SplitBatch call (40: ~95 calls/s)")
    ap.add_argument("--hold-rate", type=float, help="hold: splits per second (3800)")
    ap.add_argument("--hold-duration", type=float, help="hold: measured seconds (300)")
    ap.add_argument("--hold-warmup", type=float, help="hold: warm-up seconds before the RSS "
                    "reference and the measurement (30)")
    ap.add_argument("--scale-workers", type=int, default=2, help="workers scenario: processes")
    ap.add_argument("--server-workers", type=int, default=1,
                    help="processes of the real server and the echo server")
    ap.add_argument("--server-env", action="append", default=[], metavar="CLEARING_X=V",
                    help="extra environment of the real server (repeatable)")
    ap.add_argument("--eval-orders", type=int, help="orders per evaluation run")
    ap.add_argument("--eval-repeats", type=int, help="evaluation runs")
    ap.add_argument("--call-timeout", type=float, help="deadline of each call (30)")
    ap.add_argument("--outstanding-max", type=int, default=20_000,
                    help="open loop: units in flight per load process before CLIENT_OVERFLOW")
    ap.add_argument("--m2m-fraction", type=float, default=0.0,
                    help="share of Transfers merchant -> merchant (merchants are funded first)")
    ap.add_argument("--db-setting", action="append", default=[], metavar="NAME=VALUE",
                    help="ALTER DATABASE <bench db> SET NAME = VALUE before the server starts "
                         "(repeatable; experiments such as plan_cache_mode=force_custom_plan)")
    ap.add_argument("--writer-stats", action="store_true",
                    help="turn on the server's metrics endpoint and report the ledger writer's "
                         "batches (count, size, flush time) of each phase on the server")
    ap.add_argument("--profile", metavar="DIR",
                    help="py-spy the process under load in every closed-loop window; raw "
                         "stacks in DIR, top functions in results.json and the table")
    ap.add_argument("--profile-native", action="store_true",
                    help="with --profile: native frames too (grpc C-core, uvloop, asyncpg); "
                         "py-spy then pauses the process at each sample")
    ap.add_argument("--out", help="results directory (default bench/results/<UTC timestamp>)")
    ap.add_argument("--no-verify", action="store_true", help="skip VerifyLedger")
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="hard limit of the whole run in seconds (default: from durations)")
    args = ap.parse_args(argv)
    preset = args.preset or ("quick" if os.environ.get("BENCH_QUICK", "") not in ("", "0")
                             else "standard")
    args.preset = preset
    for k, v in {**DEFAULTS, **PRESETS[preset]}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    if bad := [s for s in args.scenarios if s not in SCENARIOS]:
        ap.error(f"unknown scenario(s) {bad}; known: {','.join(SCENARIOS)}")
    if bad := [m for m in args.modes if m not in MODES]:
        ap.error(f"unknown mode(s) {bad}; known: {','.join(MODES)}")
    if min(args.concurrency, args.channels, args.client_processes, args.batch_callers,
           args.streams, args.stream_window, args.scale_workers, args.server_workers) < 1:
        ap.error("counts must be >= 1")
    if not 1 <= args.batch_size <= 1000:
        ap.error("--batch-size is 1 to 1000")
    if min(args.duration, args.open_duration, args.hold_duration, args.hold_rate) <= 0 \
            or min(args.warmup, args.hold_warmup, args.open_rate) < 0:
        ap.error("durations and rates must be positive")
    if not 0 <= args.gov_fraction <= 1:
        ap.error("--gov-fraction is between 0 and 1")
    if args.accounts < 2:
        ap.error("--accounts must be >= 2")
    if not args.timeout:
        per = args.warmup + args.duration + 8
        args.timeout = (180 + per * (2 * len(args.modes) + 3)
                        + args.open_duration + args.hold_duration + args.hold_warmup
                        + 4 * args.call_timeout)
    if not 0 <= args.m2m_fraction <= 1:
        ap.error("--m2m-fraction is between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    now, out_dir = begin(args.out)
    params = dict(vars(args))
    meta = {"timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "preset": args.preset,
            "machine": machine_info(), "git": git_info(), "parameters": params,
            "targets": {"unary_ratio_min": TARGET_UNARY_RATIO,
                        "bulk_units_s_min": TARGET_BULK_UNITS_S,
                        "bulk_db_ratio_min": TARGET_BULK_DB_RATIO,
                        "open_p99_ms_max": TARGET_OPEN_P99_MS,
                        "hold_p99_ms_max": TARGET_HOLD_P99_MS,
                        "rss_growth_max": TARGET_RSS_GROWTH}}
    ev = None
    if "eval" in args.scenarios:
        print(f"bench: evaluation micro-bench ({args.eval_repeats} x {args.eval_orders} "
              f"orders)", file=sys.stderr, flush=True)
        try:
            ev = eval_bench(args.eval_orders, args.eval_repeats)
        except RunFailed as exc:
            print(f"bench: FAILED: {exc}", file=sys.stderr)
            return 1
    driver = Driver(args)
    print(f"bench: database {driver.db_name}, preset {args.preset}, scenarios "
          f"{','.join(args.scenarios)}, modes {','.join(args.modes)} (hard limit "
          f"{args.timeout:.0f} s)", file=sys.stderr, flush=True)

    async def go() -> dict:
        meta["machine"]["postgresql"] = await pg_version(driver.admin_dsn)
        return await run(driver)

    res, code = run_bounded("bench", driver, go, args.timeout)
    if code:
        return code
    rows = figures(res, args)
    problems = problems_of(res)
    meta["services"] = driver.services
    text = table(meta, res, rows, ev) + (f"\nPostgreSQL {driver.services.get('postgresql')}, "
                                         f"Redis {driver.services.get('redis')}")
    print(text)
    from bench import report

    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "failed": problems, "eval": ev, "figures": rows, **res}
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "summary.txt").write_text(text + "\n")
    (out_dir / "report.html").write_text(report.render(doc))
    return finish("bench", out_dir, ("results.json", "summary.txt", "report.html"), problems)


if __name__ == "__main__":
    raise SystemExit(main())
