"""Split benchmarks in one run (issue 3, section 6):

    .venv/bin/python -m bench.split_bench [--concurrency 64] [--batch-size 500] ...

1. evaluation time per order of the compiled B2B plan, warm (the logic of
   tests/unit/rules/bench_evaluate.py, in this process, before any child starts);
   target < 20 us;
2. a fresh database `clearing_bench_<random>`, the real server and a bare grpc.aio
   Split echo (bench/split_echo_server.py, answering copies of real SplitResponses) as
   children; the B2B accounts opened, the B2B rule set published with the operator key
   and activated with a second (approver) key;
3. unary closed loop: --concurrency callers against the echo, then against Split (unique
   order and request ids, orders that match the B2B rules); ratio Split/echo, target >= 0.75;
4. SplitBatch closed loop: --batch-callers callers, --batch-size orders per call; then the
   bare asyncpg baseline (bench/split_baseline.py) inserting the rows the server wrote per
   split (counted in the database after step 4) with the same batch size and callers, one
   transaction per batch; ratio SplitBatch/baseline, target >= 0.7, and >= 25,000
   durable splits/s;
5. VerifyLedger; the table; bench/results/split-<UTC>.json; children killed, database
   dropped (also on failure, timeout or Ctrl-C).

Exit status as bench.ledger_bench: 0 when the run completed whatever the figures, 1 when
it failed (errors in a phase, a child died, hard timeout), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
import traceback
import uuid
from bench.ledger_bench import (READY_TIMEOUT_S, REDIS_URL, RESULTS_DIR, ROOT,
                                Bench, HardTimeout, RunFailed, _fmt, _replace_db, _split,
                                _wait_grpc_ready, free_port, merge, verify_ledger)

CURRENCY = "CNY"
SPLIT_METHOD = "/clearing.v1.SplitService/Split"
BATCH_METHOD = "/clearing.v1.SplitService/SplitBatch"
RULE_SET = "b2b"
TARGET_EVAL_US = 20.0
TARGET_UNARY_RATIO = 0.75
TARGET_BATCH_RATIO = 0.7
TARGET_BATCH_SPLITS_S = 25_000
# ref -> (kind, allow_negative), as tests/unit/rules/helpers.ACCOUNTS.
ACCOUNTS = {"CUSTODIAL": (1, True), "GOV_ACCOUNT": (7, False), "PLAT_001": (2, False),
            "SUP_2025001": (3, False), "LOGISTICS_B": (4, False)}


# ---- 1. evaluation micro-bench --------------------------------------------------------------

def eval_bench(orders: int, repeats: int) -> dict:
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


# ---- the run ----------------------------------------------------------------------------------

class SplitBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.platform_id = 0
        self.approver_key = ""
        self.account_ids: dict[str, int] = {}
        self.probe: dict = {}
        self.dsn = ""

    async def setup(self) -> None:
        import asyncpg
        import grpc

        from clearing import db
        from clearing.api.auth import create_key, create_platform
        from clearing.rules import proto
        from clearing.v1 import ledger_pb2 as lpb
        from clearing.v1 import ledger_pb2_grpc
        from clearing.v1 import split_pb2 as pb
        from clearing.v1 import split_pb2_grpc

        await db.ensure_database(self.admin_dsn, self.db_name)
        self.db_created = True
        self.dsn = _replace_db(self.admin_dsn, self.db_name)
        conn = await asyncpg.connect(self.dsn)
        try:
            await db.migrate(conn)
            self.platform_id, self.key = await create_platform(
                conn, f"bench-{self.run_tag}", frozenset({"gateway", "operator"}))
            self.approver_key = await create_key(conn, self.platform_id,
                                                 frozenset({"approver"}))
            for t in ("transfers", "splits", "split_legs", "requests"):
                await conn.execute(f"CREATE TABLE bl_{t} (LIKE {t} INCLUDING ALL)")
        finally:
            await conn.close()

        self.server_addr = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "CLEARING_DATABASE_URL": self.dsn, "CLEARING_REDIS_URL": REDIS_URL,
               "CLEARING_REDIS_PREFIX": f"clearing-bench:{self.run_tag}:",
               "CLEARING_GRPC_ADDR": self.server_addr, "CLEARING_METRICS_ADDR": "",
               "CLEARING_WORKERS": "1", "CLEARING_LOG_LEVEL": "WARNING",
               "CLEARING_GRACE_S": "2"}
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

        md = (("authorization", f"Bearer {self.key}"),)
        md_approver = (("authorization", f"Bearer {self.approver_key}"),)
        async with grpc.aio.insecure_channel(self.server_addr) as ch:
            ledger = ledger_pb2_grpc.LedgerServiceStub(ch)
            for ref, (kind, neg) in ACCOUNTS.items():
                r = await ledger.CreateAccount(lpb.CreateAccountRequest(
                    request_id=str(uuid.uuid4()), external_ref=ref, kind=kind,
                    owner_type=lpb.OWNER_TYPE_ENTERPRISE, currency_code=CURRENCY,
                    allow_negative=neg, display_name=f"bench {ref}"), metadata=md, timeout=30)
                self.account_ids[ref] = r.account.account_id
            splits = split_pb2_grpc.SplitServiceStub(ch)
            b2b = (ROOT / "server/clearing/rules/examples/b2b.yaml").read_text()
            published = (await splits.PublishRuleSet(pb.PublishRuleSetRequest(
                request_id=str(uuid.uuid4()), rule_set=proto.rule_set_proto_from_yaml(b2b)),
                metadata=md, timeout=30)).rule_set
            await splits.ActivateRuleSet(pb.ActivateRuleSetRequest(
                request_id=str(uuid.uuid4()), rule_set_name=published.name,
                rule_set_version=published.version, comment="bench"),
                metadata=md_approver, timeout=30)
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

        self.echo_addr = f"127.0.0.1:{free_port()}"
        elog = self.tmp / "echo.log"
        with open(elog, "wb") as out:
            self.echo = self.children.spawn(
                "echo", ["bench.split_echo_server", "--addr", self.echo_addr,
                         "--gov", str(self.tmp / "template-gov.bin"),
                         "--plain", str(self.tmp / "template-plain.bin")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        await _wait_grpc_ready(self.echo_addr, self.echo, "echo server", elog)

    async def phase(self, label: str, module: str, cfgs: list[dict], duration_s: float,
                    callers: list[int]) -> dict:
        """One closed-loop phase over load processes running `module`."""
        results, cores = await self.run_load(label, module, cfgs, duration_s)
        return merge(label, "closed", results, duration_s, 0.0, callers,
                     cfgs[0].get("channels", 0), cores)

    def load_cfgs(self, label: str, addr: str, kind: str, method: str, concurrency: int,
                  processes: int, channels: int) -> tuple[list[dict], list[int]]:
        a = self.args
        callers = _split(concurrency, processes)
        cfgs = [{"target": addr, "method": method, "key": self.key, "mode": "closed",
                 "kind": kind, "batch_size": a.batch_size, "rule_set_name": RULE_SET,
                 "gov_fraction": a.gov_fraction, "concurrency": max(1, callers[i]),
                 "channels": channels, "warmup_s": a.warmup, "duration_s": a.duration,
                 "call_timeout_s": a.call_timeout, "connect_timeout_s": READY_TIMEOUT_S,
                 "seed": secrets.randbits(32),
                 "rid_prefix": f"b{self.run_tag}{label[:2]}{i:02d}{secrets.token_hex(3)}-",
                 "currency": CURRENCY} for i in range(processes)]
        return cfgs, callers

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


async def run(bench: SplitBench) -> dict:
    a = bench.args
    try:
        t0 = time.monotonic()
        await bench.setup()
        setup_s = time.monotonic() - t0
        procs = a.client_processes
        cfgs, callers = bench.load_cfgs("echo", bench.echo_addr, "split", SPLIT_METHOD,
                                        a.concurrency, procs, a.channels)
        echo = await bench.phase("echo", "bench.split_loadgen", cfgs, a.duration, callers)
        cfgs, callers = bench.load_cfgs("split", bench.server_addr, "split", SPLIT_METHOD,
                                        a.concurrency, procs, a.channels)
        split = await bench.phase("split", "bench.split_loadgen", cfgs, a.duration, callers)
        cfgs, callers = bench.load_cfgs("batch", bench.server_addr, "batch", BATCH_METHOD,
                                        a.batch_callers, 1, min(a.channels, a.batch_callers))
        batch = await bench.phase("batch", "bench.split_loadgen", cfgs, a.duration, callers)
        rows = await bench.rows_written()
        bcfg = {**cfgs[0], "dsn": bench.dsn, "platform_id": bench.platform_id,
                "accounts": bench.account_ids, "body_bytes": rows["body_bytes_mean"],
                "requests_rows": rows["requests_per_split"] >= 0.5,
                "batch_span": 65536, "rid_prefix": f"bl{bench.run_tag}-"}
        baseline = await bench.phase("baseline", "bench.split_baseline", [bcfg], a.duration,
                                     callers)
        verify = None
        if not a.no_verify:
            verify = await verify_ledger(bench.server_addr, bench.key, a.call_timeout)
        bench.check_alive()
        return {"setup_s": round(setup_s, 1), "probe": bench.probe, "echo": echo,
                "split": split, "batch": batch, "baseline": baseline, "rows": rows,
                "verify": verify}
    finally:
        bench.children.kill_all()


def report(meta: dict, ev: dict, res: dict) -> tuple[str, list[str], dict]:
    e, s, b, bl = res["echo"], res["split"], res["batch"], res["baseline"]
    bs = meta["batch_size"]
    unary_ratio = s["rps"] / e["rps"] if e["rps"] else 0.0
    batch_sps = b["rps"] * bs
    base_sps = bl["rps"] * bs
    batch_ratio = batch_sps / base_sps if base_sps else 0.0
    problems = []
    for ph in (e, s, b, bl):
        errs = {**ph["errors"]}
        for k, v in ph["warmup_errors"].items():
            errs[k] = errs.get(k, 0) + v
        if errs:
            problems.append(f"{ph['label']}: errors {errs} e.g. {ph['error_samples'][:2]}")
    v = res.get("verify")
    if v is not None and not (v["ok"] and v["chain_ok"]):
        problems.append(f"VerifyLedger failed: {v}")

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

    def met(ok):
        return "MET" if ok else "MISSED"

    rows = res["rows"]
    w = 28
    lines = [
        f"clearing bench-split  {meta['timestamp']}  ({meta['cpus']} CPUs; unary: "
        f"{meta['client_processes']} client process(es) x {meta['concurrency']} callers, "
        f"{meta['channels']} channel(s)/process; batch: {meta['batch_callers']} callers x "
        f"{bs} orders; {meta['gov_fraction']:.0%} government orders (4 legs, else 3))",
        "",
        f"evaluation, compiled b2b plan, warm: {ev['mean_us']:.2f} us/order mean, "
        f"{ev['best_us']:.2f} best run ({ev['runs']} x {ev['orders_per_run']} orders; "
        f"arithmetic alone {ev['arith_mean_us']:.2f} us)   target < {TARGET_EVAL_US:.0f} us  "
        f"{met(ev['met'])}",
        "",
        f"{'unary closed loop':<{w}}{'echo':>14}{'Split':>14}",
        f"{'  throughput (rps)':<{w}}{e['rps']:>14.0f}{s['rps']:>14.0f}",
        f"{'  latency p50 (ms)':<{w}}{lat(e, 'p50'):>14}{lat(s, 'p50'):>14}",
        f"{'  latency p99 (ms)':<{w}}{lat(e, 'p99'):>14}{lat(s, 'p99'):>14}",
        f"{'  errors':<{w}}{errs(e):>14}{errs(s):>14}",
        f"{'  response bytes (first)':<{w}}{e['response_bytes']:>14}{s['response_bytes']:>14}",
        f"{'  cpu cores, echo':<{w}}{cpu(e)}",
        f"{'  cpu cores, Split':<{w}}{cpu(s)}",
        f"{'ratio Split/echo':<{w}}{unary_ratio:>14.3f}   target >= {TARGET_UNARY_RATIO}  "
        f"{met(unary_ratio >= TARGET_UNARY_RATIO)}",
        "",
        f"{'batch closed loop':<{w}}{'asyncpg':>14}{'SplitBatch':>14}",
        f"{'  splits/s (durable)':<{w}}{base_sps:>14.0f}{batch_sps:>14.0f}",
        f"{'  batches/s':<{w}}{bl['rps']:>14.1f}{b['rps']:>14.1f}",
        f"{'  batch latency p50 (ms)':<{w}}{lat(bl, 'p50'):>14}{lat(b, 'p50'):>14}",
        f"{'  batch latency p99 (ms)':<{w}}{lat(bl, 'p99'):>14}{lat(b, 'p99'):>14}",
        f"{'  errors':<{w}}{errs(bl):>14}{errs(b):>14}",
        f"{'  cpu cores, asyncpg':<{w}}{cpu(bl)}",
        f"{'  cpu cores, SplitBatch':<{w}}{cpu(b)}",
        f"{'ratio SplitBatch/asyncpg':<{w}}{batch_ratio:>14.3f}   target >= {TARGET_BATCH_RATIO}"
        f"  {met(batch_ratio >= TARGET_BATCH_RATIO)}",
        f"{'SplitBatch splits/s':<{w}}{batch_sps:>14.0f}   target >= {TARGET_BATCH_SPLITS_S}"
        f"  {met(batch_sps >= TARGET_BATCH_SPLITS_S)}",
        f"  baseline rows per split (as the server wrote them): {rows['transfers_per_split']}"
        f" transfers, 1 splits row (body {rows['body_bytes_mean']} B), "
        f"{rows['legs_per_split']} split_legs, {rows['requests_per_split']} requests; "
        f"server journal batches so far {rows['journal_batches']}",
        f"{'':<{w}}(other: processes not part of this run; the machine is shared)",
    ]
    if v is not None:
        lines.append("")
        lines.append(f"VerifyLedger: ok={v['ok']} chain_ok={v['chain_ok']} "
                     f"transfers={v['transfer_count']} batches={v['batch_count']}")
    summary = {"eval_us": ev["mean_us"], "eval_met": ev["met"],
               "unary_ratio": round(unary_ratio, 4),
               "unary_ratio_met": unary_ratio >= TARGET_UNARY_RATIO,
               "batch_splits_per_s": round(batch_sps, 1),
               "baseline_splits_per_s": round(base_sps, 1),
               "batch_ratio": round(batch_ratio, 4),
               "batch_ratio_met": batch_ratio >= TARGET_BATCH_RATIO,
               "batch_abs_met": batch_sps >= TARGET_BATCH_SPLITS_S}
    return "\n".join(lines), problems, summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.split_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=64, help="unary closed-loop callers")
    ap.add_argument("--channels", type=int, default=4, help="gRPC channels per client process")
    ap.add_argument("--client-processes", type=int, default=1,
                    help="load-generator processes of the unary phases")
    ap.add_argument("--batch-size", type=int, default=500, help="orders per SplitBatch call")
    ap.add_argument("--batch-callers", type=int, default=4,
                    help="concurrent SplitBatch callers (and baseline connections)")
    ap.add_argument("--gov-fraction", type=float, default=0.5,
                    help="share of orders with the government top-slice (4 legs, else 3)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per phase")
    ap.add_argument("--eval-orders", type=int, default=50_000, help="orders per evaluation run")
    ap.add_argument("--eval-repeats", type=int, default=5, help="evaluation runs")
    ap.add_argument("--call-timeout", type=float, default=30.0, help="deadline of each call")
    ap.add_argument("--server-env", action="append", default=[], metavar="CLEARING_X=V",
                    help="extra environment of the real server (repeatable)")
    ap.add_argument("--no-verify", action="store_true", help="skip VerifyLedger")
    ap.add_argument("--no-json", action="store_true", help="do not write the JSON results")
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="hard limit of the whole run in seconds (default: from durations)")
    args = ap.parse_args(argv)
    if min(args.concurrency, args.channels, args.client_processes, args.batch_callers) < 1:
        ap.error("counts must be >= 1")
    if not 1 <= args.batch_size <= 1000:
        ap.error("--batch-size is 1 to 1000")
    if args.duration <= 0 or args.warmup < 0:
        ap.error("durations must be positive")
    if not 0 <= args.gov_fraction <= 1:
        ap.error("--gov-fraction is between 0 and 1")
    if not args.timeout:
        args.timeout = 120 + 4 * (args.warmup + 5 + args.duration) + 2 * args.call_timeout
    # bench.ledger_bench.Bench reads these.
    args.db_setting, args.writer_stats, args.server_workers = [], False, 1
    args.profile, args.accounts, args.m2m_fraction = None, 0, 0.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    now = dt.datetime.now(dt.timezone.utc)
    meta = {"timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "cpus": os.cpu_count(),
            "python": platform.python_version(), "host": platform.node(),
            "concurrency": args.concurrency, "channels": args.channels,
            "client_processes": args.client_processes, "batch_size": args.batch_size,
            "batch_callers": args.batch_callers, "gov_fraction": args.gov_fraction,
            "warmup_s": args.warmup, "duration_s": args.duration,
            "server_env": args.server_env,
            "targets": {"eval_us_max": TARGET_EVAL_US, "unary_ratio_min": TARGET_UNARY_RATIO,
                        "batch_ratio_min": TARGET_BATCH_RATIO,
                        "batch_splits_per_s_min": TARGET_BATCH_SPLITS_S}}
    print(f"bench-split: evaluation micro-bench ({args.eval_repeats} x {args.eval_orders} "
          f"orders)", file=sys.stderr, flush=True)
    try:
        ev = eval_bench(args.eval_orders, args.eval_repeats)
    except RunFailed as exc:
        print(f"bench-split: FAILED: {exc}", file=sys.stderr)
        return 1
    bench = SplitBench(args)

    def on_alarm(signum, frame) -> None:
        bench.children.kill_all(gently=False)
        raise HardTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 30)
    print(f"bench-split: database {bench.db_name}, phases echo, Split, SplitBatch, asyncpg "
          f"baseline, {args.warmup:g}+{args.duration:g} s each (hard limit "
          f"{args.timeout:.0f} s)", file=sys.stderr, flush=True)
    try:
        res = asyncio.run(asyncio.wait_for(run(bench), timeout=args.timeout))
    except KeyboardInterrupt:
        print("bench-split: interrupted", file=sys.stderr)
        return 130
    except (asyncio.TimeoutError, HardTimeout):
        print(f"bench-split: FAILED: hard timeout of {args.timeout:.0f} s", file=sys.stderr)
        return 1
    except RunFailed as exc:
        print(f"bench-split: FAILED: {exc}", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - a failed run is reported, never hidden
        traceback.print_exc()
        print("bench-split: FAILED", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        bench.cleanup()
    table, problems, summary = report(meta, ev, res)
    print(table)
    if not args.no_json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"split-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps({**meta, **summary, "failed": problems, "eval": ev, **res},
                                   indent=2) + "\n")
        print(f"\nresults: {path.relative_to(ROOT)}")
    if problems:
        for p in problems:
            print(f"bench-split: FAILED: {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
