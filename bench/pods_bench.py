"""PostgreSQL pods (issue 16 section 4, docs/scaling.md "Platform pods"): splits per second
with one pod against two pods, in the same run.

    .venv/bin/python -m bench.pods_bench [--duration 10] [--rounds 2] [--workers 2]
    make bench-pods

Starts two PostgreSQL instances of its own (embedded, pgserver: pod 0, the home, and pod 1;
loopback Unix sockets), one server (`clearing serve`, --workers processes, CLEARING_PODS
naming pod 1) and three platforms with the B2B rule set and accounts: A and A2 on pod 0, B
moved to pod 1 (`clearing pods move` while empty). Then, alternating for --rounds rounds, the
same closed-loop SplitBatch load (--callers callers per platform of --batch-size orders)
on two platforms:

- one pod:  A and A2, both on pod 0;
- two pods: A (pod 0) and B (pod 1).

Reported per window: durable splits/s (each platform's and the sum), the CPU cores of the
server's processes, of each PostgreSQL and of the load generators (from /proc), and per split
the server's and PostgreSQL's CPU in microseconds. Every platform's ledger is verified at
the end (VerifyLedger). On a machine of few cores every process shares the same CPUs: the
ratio two pods / one pod shows what a second PostgreSQL adds here, and the CPU per split is
what the arithmetic of docs/scaling.md scales.

Results: bench/results/<UTC>/pods.json and pods.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.driver import CURRENCY, RULE_SET, open_b2b_world
from bench.harness import (ROOT, begin, channel, cpu_cores, cpu_snapshot, drop_redis_keys,
                           finish, free_port, new_platform)

READY_S = 60.0
B2B_GOV_LEGS = [1_700_000, 8_330_000, 62_475_000, 12_495_000]


def _load(addr: str, key: str, platform: str, callers: int, batch_size: int, duration_s: float,
          start_at: float, queue) -> None:
    """A load process: `callers` SplitBatch loops on one platform until the window ends;
    puts (platform, durable splits, failed calls) on `queue`."""
    import uvloop

    from bench.loadgen import SplitRequests
    from clearing.v1 import split_pb2_grpc

    async def run() -> tuple[int, int]:
        done, failed = 0, 0
        md = (("authorization", f"Bearer {key}"),)
        async with channel(addr) as ch:
            stub = split_pb2_grpc.SplitServiceStub(ch)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            end = time.monotonic() + duration_s

            async def caller(i: int) -> None:
                nonlocal done, failed
                gen = SplitRequests({"seed": i, "rid_prefix": f"{secrets.token_hex(4)}{i}-",
                                     "kind": "batch", "batch_size": batch_size,
                                     "rule_set_name": RULE_SET, "gov_fraction": 0.5,
                                     "currency": CURRENCY})
                while time.monotonic() < end:
                    try:
                        r = await stub.SplitBatch(gen.next(), metadata=md, timeout=30)
                    except Exception:  # noqa: BLE001 - counted, the window goes on
                        failed += 1
                        continue
                    if time.monotonic() <= end:
                        done += sum(1 for o in r.outcomes if o.WhichOneof("result") == "split")

            await asyncio.gather(*(caller(i) for i in range(callers)))
        return done, failed

    queue.put((platform, *uvloop.run(run())))


class PodsBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="clearing-pods-bench-"))
        self.pgs: list = []
        self.server: subprocess.Popen | None = None
        self.addr = ""
        self.keys: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        self.redis_url = os.environ.get("CLEARING_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        self.redis_prefix = f"clearing-pods-bench:{secrets.token_hex(4)}:"  # cleanup deletes

    async def setup(self) -> None:
        import asyncpg

        from clearing import db, pods_move
        from clearing.dev.embedded_postgres import start_postgres

        from clearing.api import split_upgrade

        for name in ("pod0", "pod1"):
            self.pgs.append(await asyncio.to_thread(start_postgres, self.tmp / name))
        home, pod1 = self.pgs[0].dsn, self.pgs[1].dsn
        conn = await asyncpg.connect(home)
        try:
            await db.migrate(conn)
            await split_upgrade.upgrade(conn)
            approvers = {}
            for name in ("A", "A2", "B"):
                self.ids[name], self.keys[name], approvers[name] = await new_platform(
                    conn, f"pods-bench-{name}-{secrets.token_hex(3)}")
            p1 = await asyncpg.connect(pod1)
            try:
                await db.migrate(p1)
            finally:
                await p1.close()
            await pods_move.move(conn, {0: home, 1: pod1}, self.ids["B"], 1, settle_s=0)
        finally:
            await conn.close()
        self.addr = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "CLEARING_DATABASE_URL": home, "CLEARING_PODS": f"1={pod1}",
               "CLEARING_REDIS_URL": self.redis_url,
               "CLEARING_REDIS_PREFIX": self.redis_prefix,
               "CLEARING_GRPC_ADDR": self.addr, "CLEARING_METRICS_ADDR": "",
               "CLEARING_WORKERS": str(self.args.workers), "CLEARING_LOG_LEVEL": "WARNING",
               "CLEARING_GRACE_S": "2", "CLEARING_TLS_ALLOW_PLAINTEXT": "1",
               "CLEARING_PAYOUT_WORKER": "0", "CLEARING_RECON_SWEEP": "0"}
        log = open(self.tmp / "server.log", "wb")
        self.server = subprocess.Popen([sys.executable, "-m", "clearing.cli", "serve"],
                                       env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=log, cwd=ROOT)
        await self._ready()
        for name in ("A", "A2", "B"):
            await self._b2b(name, approvers[name])

    async def _ready(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + READY_S
        while True:
            if self.server.poll() is not None:
                raise SystemExit(f"server exited: {(self.tmp / 'server.log').read_text()[-2000:]}")
            try:
                async with channel(self.addr) as ch:
                    r = await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=2)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready")
            await asyncio.sleep(0.2)

    async def _b2b(self, name: str, approver: str) -> None:
        import grpc

        from clearing.v1 import split_pb2 as pb
        from clearing.v1 import split_pb2_grpc

        md = (("authorization", f"Bearer {self.keys[name]}"),)
        async with channel(self.addr) as ch:
            await open_b2b_world(ch, self.keys[name], approver, "pods bench")
            splits = split_pb2_grpc.SplitServiceStub(ch)
            for attempt in range(50):  # activation reaches the plan cache within a second
                try:
                    r = await splits.Split(pb.SplitRequest(
                        request_id=str(uuid.uuid4()), order=pb.Order(
                            order_id=f"probe-{uuid.uuid4()}", amount_minor=85_000_000,
                            currency_code=CURRENCY, channel="UNIONPAY",
                            tags=["enterprise purchase", "government purchase"],
                            attributes={"customer_type": "enterprise"},
                            rule_set_name=RULE_SET)), metadata=md, timeout=30)
                    break
                except grpc.aio.AioRpcError as err:
                    if attempt == 49 or err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                        raise
                    await asyncio.sleep(0.2)
        legs = [leg.amount_minor for leg in r.split.legs]
        if legs != B2B_GOV_LEGS:
            raise SystemExit(f"platform {name}: probe split gave {legs}")

    def window(self, label: str, platforms: tuple[str, str]) -> dict:
        """One load window on two platforms; splits/s and CPU."""
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        start_at = time.time() + 3.0  # the load processes start up first
        procs = [ctx.Process(target=_load, args=(
            self.addr, self.keys[p], p, self.args.callers, self.args.batch_size,
            self.args.duration, start_at, queue)) for p in platforms]
        for p in procs:
            p.start()
        time.sleep(max(0.0, start_at - time.time()) + 0.5)  # measure inside the window
        groups = {"server": [self.server.pid], "pg_pod0": [self.pgs[0].pid],
                  "pg_pod1": [self.pgs[1].pid], "clients": [p.pid for p in procs]}
        measured = self.args.duration - 1.0
        before = cpu_snapshot(groups)
        time.sleep(measured)
        after = cpu_snapshot(groups)
        results = [queue.get(timeout=self.args.duration + 120) for _ in procs]
        for p in procs:
            p.join()
        cores = cpu_cores(before, after, measured)
        per = {name: done / self.args.duration for name, done, _ in results}
        total = sum(per.values())
        pg = cores.get("pg_pod0", 0) + cores.get("pg_pod1", 0)
        return {"label": label, "platforms": list(platforms),
                "splits_per_s": {k: round(v) for k, v in per.items()},
                "total_splits_per_s": round(total),
                "failed_calls": sum(f for _, _, f in results), "cores": cores,
                "server_us_per_split": round(cores.get("server", 0) / total * 1e6, 1)
                if total else None,
                "postgres_us_per_split": round(pg / total * 1e6, 1) if total else None}

    async def verify(self) -> dict:
        from bench.harness import verify_ledger

        return {name: await verify_ledger(self.addr, key, 120) for name, key in self.keys.items()}

    def cleanup(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
        if self.server is not None:
            try:
                drop_redis_keys(self.redis_url, self.redis_prefix)
            except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                print(f"pods bench: could not delete Redis keys: {exc!r}", file=sys.stderr)
        for pg in self.pgs:
            pg.stop()


def summary(fig: dict) -> str:
    lines = [f"pods bench: {fig['workers']} server processes, SplitBatch of {fig['batch_size']}"
             f" orders, {fig['callers']} callers per platform, {fig['duration_s']} s windows,"
             f" {fig['cpus']} CPUs (load average at the end: {fig['load_average_1m_at_end']})"]
    for w in fig["windows"]:
        c = w["cores"]
        lines.append(
            f"  {w['label']:8s} {w['total_splits_per_s']:6d} splits/s ("
            + ", ".join(f"{k} {v}" for k, v in w["splits_per_s"].items())
            + f"); cores: server {c.get('server')}, pg pod0 {c.get('pg_pod0')}, pg pod1 "
              f"{c.get('pg_pod1')}, clients {c.get('clients')}, machine {c.get('machine')};"
              f" per split: server {w['server_us_per_split']} us, postgres "
              f"{w['postgres_us_per_split']} us; failed calls {w['failed_calls']}")
    lines.append(f"  two pods / one pod: {fig['ratio']:.2f} (mean of the rounds)")
    lines.append("  verified: " + ", ".join(f"{k} {'ok' if v['ok'] else 'FAILED'} "
                                            f"({v['transfer_count']} transfers)"
                                            for k, v in fig["verify"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.pods_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per window")
    ap.add_argument("--rounds", type=int, default=2, help="one pod / two pods alternations")
    ap.add_argument("--workers", type=int, default=2, help="server processes")
    ap.add_argument("--callers", type=int, default=4, help="SplitBatch callers per platform")
    ap.add_argument("--batch-size", type=int, default=100, help="orders per SplitBatch call")
    ap.add_argument("--out", help="results folder (default bench/results/<UTC>/)")
    args = ap.parse_args(argv)
    if not (1 <= args.duration <= 120 and 1 <= args.rounds <= 5):
        raise SystemExit("--duration 1..120 and --rounds 1..5 keep the run bounded")
    _, out = begin(args.out)
    bench = PodsBench(args)
    problems: list[str] = []
    try:
        asyncio.run(bench.setup())
        windows = []
        for _ in range(args.rounds):
            windows.append(bench.window("one pod", ("A", "A2")))
            windows.append(bench.window("two pods", ("A", "B")))
        verified = asyncio.run(bench.verify())
    finally:
        bench.cleanup()
    one = [w["total_splits_per_s"] for w in windows if w["label"] == "one pod"]
    two = [w["total_splits_per_s"] for w in windows if w["label"] == "two pods"]
    fig = {"workers": args.workers, "batch_size": args.batch_size, "callers": args.callers,
           "duration_s": args.duration, "cpus": os.cpu_count(), "windows": windows,
           "load_average_1m_at_end": round(os.getloadavg()[0], 1),
           "ratio": (sum(two) / len(two)) / (sum(one) / len(one)) if one and all(one) else 0.0,
           "verify": verified}
    problems += [f"{k}: VerifyLedger failed" for k, v in verified.items() if not v["ok"]]
    problems += [f"{w['label']}: {w['failed_calls']} failed calls" for w in windows
                 if w["failed_calls"]]
    out.mkdir(parents=True, exist_ok=True)
    text = summary(fig)
    print(text)
    (out / "pods.txt").write_text(text + "\n")
    (out / "pods.json").write_text(json.dumps(fig, indent=2) + "\n")
    return finish("bench.pods_bench", out, ("pods.json", "pods.txt"), problems)


if __name__ == "__main__":
    raise SystemExit(main())
