"""`make loadtest`: the sale-day Locust scenario (bench/locustfile.py), headless, against a
server this command sets up and starts.

    .venv/bin/python -m bench.loadtest [--rate 200] [--ramp 30] [--hold 120] [--processes 2]
    .venv/bin/python -m bench.loadtest --setup-only   # set up, start, print how to run Locust

One run:
1. a fresh database `clearing_bench_<random>` on the local PostgreSQL
   (CLEARING_BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres),
   migrated; --platforms platforms, each with a gateway+operator key and an approver key
   (as `clearing platform create` / `clearing keys create` do);
2. the real server (`clearing.cli serve`, Redis at 127.0.0.1:6379 under its own prefix);
3. through the API, per platform: the accounts (CUSTODIAL allowed negative, PLAT_001,
   SUP_2025001, LOGISTICS_B, GOV_ACCOUNT, and --merchants sellers SELLER_0001...), and the
   rule sets b2b, held and marketplace published by the operator key and activated by the
   approver key; all of it written to <out>/setup.json (CLEARING_LOCUST_SETUP);
4. `locust --headless --processes N` with the SaleDay shape (ramp to --rate calls/s over
   --ramp s, hold --hold s), writing Locust's CSV (<out>/locust_stats.csv,
   _stats_history.csv, _failures.csv, _exceptions.csv) and HTML report (<out>/locust.html);
5. VerifyLedger; <out>/loadtest.json (the totals per call, the parameters); the server
   stopped and the database dropped (also on failure or Ctrl-C).
<out> is bench/results/<UTC timestamp>/ unless --out.

Exit status: 0 when Locust ran with no failed call; 1 when a call failed, Locust or the
server died, or set-up failed; 130 on Ctrl-C. Timings never fail the run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.harness import (ROOT, Bench, RunFailed, _in_thread, _tail, begin, channel,
                           example_rule_set, finish, new_platform, publish_and_activate,
                           run_bounded, verify_ledger)

CURRENCY = "CNY"
SETUP_CONCURRENCY = 16
# ref -> (kind, allow_negative): the b2b and held rule sets' receivers.
FIXED_ACCOUNTS = {"CUSTODIAL": (1, True), "GOV_ACCOUNT": (7, False), "PLAT_001": (2, False),
                  "SUP_2025001": (3, False), "LOGISTICS_B": (4, False)}
# The rule sets published on every platform: the product's examples (the locustfile's
# RULE_SET_WEIGHTS names them).
RULE_SETS = ("b2b", "held", "marketplace")


class LoadTest(Bench):
    """Bench's children, database and server handling; the platforms of the scenario."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        super().__init__(args)
        self.out = out
        self.platforms: list[dict] = []

    async def setup(self) -> Path:
        async with self.new_database() as conn:
            keys = [await new_platform(conn, f"sale-day-{i + 1}")
                    for i in range(self.args.platforms)]
        self.server_addr, self.server = await self.start_server(self.dsn,
                                                                self.args.server_workers,
                                                                tls=True)
        self.key = keys[0][1]
        for pid, key, approver in keys:
            self.platforms.append(await self.populate(pid, key, approver))
        path = self.out / "setup.json"
        path.write_text(json.dumps({"target": self.server_addr, "ca": self.ca,
                                    "platforms": self.platforms}, indent=2) + "\n")
        return path

    async def populate(self, platform_id: int, key: str, approver: str) -> dict:
        """One platform's accounts and rule sets, through the API."""

        from clearing.v1 import ledger_pb2 as lpb
        from clearing.v1 import ledger_pb2_grpc
        from clearing.v1 import split_pb2_grpc

        md = (("authorization", f"Bearer {key}"),)
        sem = asyncio.Semaphore(SETUP_CONCURRENCY)
        sellers = [f"SELLER_{i + 1:04d}" for i in range(self.args.merchants)]
        specs = [(ref, kind, neg) for ref, (kind, neg) in FIXED_ACCOUNTS.items()]
        specs += [(ref, lpb.ACCOUNT_KIND_MERCHANT, False) for ref in sellers]
        async with channel(self.server_addr, self.ca) as ch:
            ledger = ledger_pb2_grpc.LedgerServiceStub(ch)

            async def open_one(ref: str, kind: int, neg: bool) -> int:
                async with sem:
                    r = await ledger.CreateAccount(lpb.CreateAccountRequest(
                        request_id=str(uuid.uuid4()), external_ref=ref, kind=kind,
                        owner_type=lpb.OWNER_TYPE_ENTERPRISE, currency_code=CURRENCY,
                        allow_negative=neg, display_name=f"sale day {ref}"),
                        metadata=md, timeout=30)
                    return r.account.account_id

            ids = await asyncio.gather(*(open_one(*s) for s in specs))
            splits = split_pb2_grpc.SplitServiceStub(ch)
            for name in RULE_SETS:
                await publish_and_activate(splits, example_rule_set(name), key, approver,
                                           "sale day")
        return {"platform_id": platform_id, "key": key, "sellers": sellers,
                "account_ids": list(ids), "rule_sets": list(RULE_SETS)}

    async def locust(self, setup_path: Path) -> int:
        a = self.args
        env = {**os.environ, "CLEARING_LOCUST_SETUP": str(setup_path),
               "CLEARING_LOADTEST_RATE": str(a.rate), "CLEARING_LOADTEST_RAMP_S": str(a.ramp),
               "CLEARING_LOADTEST_HOLD_S": str(a.hold),
               "CLEARING_LOADTEST_USER_RATE": str(a.user_rate),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                          os.environ.get("PYTHONPATH")]))}
        argv = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"),
                "--headless", "--processes", str(a.processes), "-H", self.server_addr,
                "--csv", str(self.out / "locust"), "--html", str(self.out / "locust.html"),
                "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5"]
        log = self.out / "locust.log"
        print(f"loadtest: locust --processes {a.processes}, ramp to {a.rate:g} calls/s over "
              f"{a.ramp:g} s, hold {a.hold:g} s (log {log})", file=sys.stderr, flush=True)
        with open(log, "wb") as out:
            proc = self.children.spawn_argv("locust", argv, env=env, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=out)
        try:
            code = await asyncio.wait_for(_in_thread(proc.wait), timeout=a.ramp + a.hold + 90)
        except asyncio.TimeoutError:
            raise RunFailed(f"locust did not finish in time:\n{_tail(log)}") from None
        self.check_alive()
        return code


def read_stats(path: Path) -> dict:
    """Locust's stats CSV: per call name and the aggregate."""
    out = {}
    if not path.exists():
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            def num(k: str) -> float | None:
                try:
                    return float(row[k])
                except (KeyError, ValueError, TypeError):
                    return None
            out[row["Name"]] = {"requests": int(num("Request Count") or 0),
                                "failures": int(num("Failure Count") or 0),
                                "rps": num("Requests/s"), "p50_ms": num("50%"),
                                "p95_ms": num("95%"), "p99_ms": num("99%"),
                                "p99.9_ms": num("99.9%"), "max_ms": num("Max Response Time")}
    return out


def summary_text(stats: dict, args: argparse.Namespace) -> str:
    total = stats.get("Aggregated", {}).get("requests") or 0
    lines = [f"{'call':<14}{'requests':>10}{'share':>8}{'failures':>10}{'rps':>9}{'p50':>8}"
             f"{'p95':>8}{'p99':>8}  (ms; the whole run, ramp included)"]
    for name in ("Split", "ReleaseSplit", "RefundSplit", "GetBalance", "Aggregated"):
        s = stats.get(name)
        if not s:
            continue
        share = f"{s['requests'] / total:.1%}" if total else "-"

        def f(x, spec=".0f"):
            return "-" if x is None else format(x, spec)
        lines.append(f"{name:<14}{s['requests']:>10}{share:>8}{s['failures']:>10}"
                     f"{f(s['rps'], '.1f'):>9}{f(s['p50_ms']):>8}{f(s['p95_ms']):>8}"
                     f"{f(s['p99_ms']):>8}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0, help="target calls per second")
    ap.add_argument("--ramp", type=float, default=30.0, help="seconds to reach the rate")
    ap.add_argument("--hold", type=float, default=120.0, help="seconds at the rate")
    ap.add_argument("--user-rate", type=float, default=5.0, help="calls per second per user")
    ap.add_argument("--processes", type=int, default=2, help="Locust processes (--processes)")
    ap.add_argument("--platforms", type=int, default=4, help="platforms (tenants)")
    ap.add_argument("--merchants", type=int, default=50, help="sellers per platform")
    ap.add_argument("--server-workers", type=int, default=1, help="server processes")
    ap.add_argument("--server-env", action="append", default=[], metavar="CLEARING_X=V",
                    help="extra environment of the server (repeatable)")
    ap.add_argument("--out", help="results directory (default bench/results/<UTC timestamp>)")
    ap.add_argument("--setup-only", action="store_true",
                    help="set up and start the server, print the Locust command, wait for "
                         "Ctrl-C")
    args = ap.parse_args(argv)
    if min(args.processes, args.platforms, args.merchants, args.server_workers) < 1:
        ap.error("counts must be >= 1")
    if min(args.rate, args.user_rate, args.hold) <= 0 or args.ramp < 0:
        ap.error("rates and durations must be positive")
    # What Bench reads and the load test does not offer.
    args.db_setting, args.writer_stats, args.profile, args.warmup = [], False, None, 0.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    now, out = begin(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lt = LoadTest(args, out)
    timeout = 240 + args.ramp + args.hold

    async def go() -> dict:
        t0 = time.monotonic()
        setup_path = await lt.setup()
        setup_s = round(time.monotonic() - t0, 1)
        if args.setup_only:
            print(f"server {lt.server_addr}; set-up {setup_path}\n"
                  f"CLEARING_LOCUST_SETUP={setup_path} .venv/bin/locust -f "
                  f"bench/locustfile.py -H {lt.server_addr}\n(Ctrl-C stops the server "
                  f"and drops the database)", flush=True)
            while True:
                await asyncio.sleep(3600)
        code = await lt.locust(setup_path)
        verify = await verify_ledger(lt.server_addr, lt.key, 60, lt.ca)
        return {"setup_s": setup_s, "locust_exit": code, "verify": verify}

    print(f"loadtest: database {lt.db_name}, {args.platforms} platforms x {args.merchants} "
          f"sellers, results in {out}", file=sys.stderr, flush=True)
    res, code = run_bounded("loadtest", lt, go, None if args.setup_only else timeout)
    if code:
        return code
    stats = read_stats(out / "locust_stats.csv")
    text = summary_text(stats, args) + (f"\nPostgreSQL {lt.services.get('postgresql')}, "
                                        f"Redis {lt.services.get('redis')}")
    print(text)
    problems = []
    agg = stats.get("Aggregated")
    if not agg or not agg["requests"]:
        problems.append(f"locust made no calls (exit {res['locust_exit']}):\n"
                        f"{_tail(out / 'locust.log')}")
    elif agg["failures"]:
        problems.append(f"{agg['failures']} failed calls (see {out}/locust_failures.csv):\n"
                        f"{_tail(out / 'locust_failures.csv', 10)}")
    elif res["locust_exit"] != 0:
        problems.append(f"locust exited with {res['locust_exit']}:\n"
                        f"{_tail(out / 'locust.log')}")
    v = res["verify"]
    if not (v["ok"] and v["chain_ok"]):
        problems.append(f"VerifyLedger failed: {v}")
    params = {k: v for k, v in vars(args).items()
              if k not in ("db_setting", "writer_stats", "profile", "warmup")}
    (out / "loadtest.json").write_text(json.dumps(
        {"timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "parameters": params,
         "services": lt.services, "stats": stats, "failed": problems, **res},
        indent=2) + "\n")
    return finish("loadtest", out, ("locust.html", "locust_stats.csv", "loadtest.json"),
                  problems)


if __name__ == "__main__":
    raise SystemExit(main())
