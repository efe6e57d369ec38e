"""Events: the outbox's cost on SplitBatch throughput, and the event lag at the sale-day rate.

One fresh database, the real server (`clearing serve`, one process) started twice on it:

1. outbox off (CLEARING_EVENTS_OUTBOX=0, the baseline only) then on, --rounds times in turn
   (a restart each: a shared machine's load drifts): SplitBatch of --batch-size B2B orders
   from --callers closed-loop callers for --duration seconds; splits per second, the mean of
   each, and the cost of the outbox in percent;
2. (outbox on) SplitBatch calls of --hold-batch-size orders at --rate splits/s, open loop,
   for --duration seconds, with one WatchEvents stream open from the head: per event, the
   lag from its commit (Event.created_at, the server's clock, the same machine) to its
   arrival on the stream; p50/p90/p99/max; and the events received equal the splits made.

`make bench-events` (bench/README.md). Run it short on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

from bench.driver import CURRENCY, RULE_SET, open_b2b_world
from bench.harness import begin, Bench, new_platform, percentiles, run_and_report
from bench.loadgen import SplitRequests

CALL_TIMEOUT_S = 60.0
HARD_TIMEOUT_S = 900.0


class EventsBench(Bench):
    async def run(self, out: Path) -> dict:
        import grpc

        from clearing.v1 import split_pb2_grpc

        a = self.args
        async with self.new_database() as conn:
            _, self.key, approver = await new_platform(conn, f"bench-events-{self.run_tag}")
        figures: dict = {"args": {k: v for k, v in vars(a).items() if k != "server_env"},
                         "problems": []}
        md = (("authorization", f"Bearer {self.key}"),)
        runs = [("baseline", "0"), ("outbox", "1")] * a.rounds
        for i, (phase, outbox) in enumerate(runs):
            a.server_env = [f"CLEARING_EVENTS_OUTBOX={outbox}"]
            addr, proc = await self.start_server(self.dsn, 1, name=f"server-{i}-{phase}")
            async with grpc.aio.insecure_channel(addr) as ch:
                if i == 0:
                    await open_b2b_world(ch, self.key, approver, "bench")
                    await asyncio.sleep(1.5)  # the activation reaches the plan cache
                splits = split_pb2_grpc.SplitServiceStub(ch)
                print(f"bench-events: {phase}: closed-loop SplitBatch", file=sys.stderr,
                      flush=True)
                figures.setdefault(phase, []).append(await closed(splits, md, a, phase))
                if i == len(runs) - 1:
                    print("bench-events: event lag at the hold rate", file=sys.stderr,
                          flush=True)
                    figures["lag"] = await lag(ch, splits, md, a)
                    figures["lag"]["sequencer_ms"] = await sequencer_lag(self.dsn)
            proc.terminate()
            await asyncio.to_thread(proc.wait, 30)
        for phase in ("baseline", "outbox"):  # the rounds alternate: the mean of each
            figures[phase] = {"runs": figures[phase], "splits_per_s": round(
                sum(r["splits_per_s"] for r in figures[phase]) / len(figures[phase]), 1)}
        base, on = figures["baseline"]["splits_per_s"], figures["outbox"]["splits_per_s"]
        figures["outbox_cost_percent"] = round(100.0 * (base - on) / base, 1) if base else None
        if figures["lag"]["received"] != figures["lag"]["made"]:
            figures["problems"].append(
                f"{figures['lag']['made']} splits made, {figures['lag']['received']} events")
        return figures


async def closed(splits, md, a, phase: str) -> dict:
    requests = SplitRequests({"seed": 1, "rid_prefix": f"{phase}-{uuid.uuid4().hex[:6]}-",
                              "kind": "batch", "batch_size": a.batch_size,
                              "rule_set_name": RULE_SET, "gov_fraction": 0.5,
                              "currency": CURRENCY})
    done = [0]
    errors = [0]
    warm_end = time.monotonic() + a.warmup
    end = warm_end + a.duration

    async def caller() -> None:
        while time.monotonic() < end:
            r = await splits.SplitBatch(requests.next(), metadata=md, timeout=CALL_TIMEOUT_S)
            if time.monotonic() > warm_end:
                ok = sum(1 for o in r.outcomes if o.HasField("split"))
                done[0] += ok
                errors[0] += len(r.outcomes) - ok

    await asyncio.gather(*(caller() for _ in range(a.callers)))
    return {"splits_per_s": round(done[0] / a.duration, 1), "errors": errors[0]}


async def lag(ch, splits, md, a) -> dict:
    from clearing.v1 import event_pb2 as epb
    from clearing.v1 import event_pb2_grpc

    events = event_pb2_grpc.EventServiceStub(ch)
    head = 0
    while True:
        page = await events.ListEvents(epb.ListEventsRequest(cursor=head, page_size=1000),
                                       metadata=md, timeout=30)
        if page.next_cursor == head:
            break
        head = page.next_cursor
    requests = SplitRequests({"seed": 2, "rid_prefix": f"lag-{uuid.uuid4().hex[:6]}-",
                              "kind": "batch", "batch_size": a.hold_batch_size,
                              "rule_set_name": RULE_SET, "gov_fraction": 0.5,
                              "currency": CURRENCY})
    lags_us: list[int] = []
    calls_us: list[int] = []  # each SplitBatch call's own latency, from its due time
    made = [0]
    stream = events.WatchEvents(epb.WatchEventsRequest(cursor=head, types=["split.committed",
                                                                          "split.held"]),
                                metadata=md)
    interval = a.hold_batch_size / a.rate
    calls = int(a.duration / interval)

    async def send() -> None:
        start = time.monotonic()
        pending = set()
        for i in range(calls):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.add(asyncio.ensure_future(timed(start + i * interval, splits.SplitBatch(
                requests.next(), metadata=md, timeout=CALL_TIMEOUT_S))))
            done = {t for t in pending if t.done()}
            for t in done:
                made[0] += sum(1 for o in t.result().outcomes if o.HasField("split"))
            pending -= done
        for t in asyncio.as_completed(pending):
            made[0] += sum(1 for o in (await t).outcomes if o.HasField("split"))

    async def timed(due: float, call):
        response = await call
        calls_us.append(int((time.monotonic() - due) * 1e6))
        return response

    async def receive() -> None:
        async for response in stream:
            now_us = int(time.time() * 1e6)
            for e in response.events:
                lags_us.append(now_us - (e.created_at.seconds * 1_000_000
                                         + e.created_at.nanos // 1000))

    receiver = asyncio.ensure_future(receive())
    await send()
    deadline = time.monotonic() + 60  # an overloaded server catches up
    while len(lags_us) < made[0] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stream.cancel()
    receiver.cancel()
    return {"rate": a.rate, "made": made[0], "received": len(lags_us),
            "lag_ms": percentiles(lags_us), "split_batch_call_ms": percentiles(calls_us)}


async def sequencer_lag(dsn: str) -> dict:
    """Commit to numbering (the sequencer's part of the lag), from the events table:
    sequenced_at (the sequencer's transaction time) minus created_at."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY d) AS p50,"
            " percentile_disc(0.99) WITHIN GROUP (ORDER BY d) AS p99, max(d) AS max"
            " FROM (SELECT extract(epoch FROM sequenced_at - created_at) * 1000 AS d"
            "       FROM events WHERE type IN ('split.committed', 'split.held')"
            "       ORDER BY seq DESC LIMIT 200000) x")
    finally:
        await conn.close()
    return {k: round(float(v), 1) for k, v in row.items() if v is not None}


def summary(f: dict) -> str:
    lag = f["lag"]
    rows = [
        ("SplitBatch, outbox off (baseline)", _runs(f["baseline"])),
        ("SplitBatch, outbox on", _runs(f["outbox"])),
        ("outbox cost", f"{f['outbox_cost_percent']} %"),
        (f"event lag at {lag['rate']:,.0f} splits/s (commit -> stream)",
         ", ".join(f"{k} {v} ms" for k, v in lag["lag_ms"].items()
                   if k in ("p50", "p90", "p99", "max"))),
        ("  beside: a SplitBatch call's own latency (40 orders)",
         ", ".join(f"{k} {v} ms" for k, v in lag["split_batch_call_ms"].items()
                   if k in ("p50", "p90", "p99", "max"))),
        ("  of the lag, batch time -> numbered by the sequencer",
         ", ".join(f"{k} {v} ms" for k, v in lag.get("sequencer_ms", {}).items())),
        ("events received / splits made", f"{lag['received']:,} / {lag['made']:,}"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _runs(phase: dict) -> str:
    each = " / ".join(f"{r['splits_per_s']:,.0f}" for r in phase["runs"])
    return f"{phase['splits_per_s']:,.0f} splits/s (runs: {each})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.events_bench", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating baseline/outbox throughput runs of each")
    p.add_argument("--callers", type=int, default=4, help="closed-loop SplitBatch callers")
    p.add_argument("--batch-size", type=int, default=500, help="orders per closed-loop call")
    p.add_argument("--rate", type=float, default=3800.0, help="splits/s of the lag phase")
    p.add_argument("--hold-batch-size", type=int, default=40, help="orders per lag-phase call")
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--timeout", type=float, default=HARD_TIMEOUT_S, help="hard limit, s")
    a = p.parse_args(argv)
    a.server_env, a.call_timeout, a.profile, a.profile_native = [], CALL_TIMEOUT_S, None, False
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, out = begin(args.out)
    return run_and_report("bench-events", EventsBench(args), out, args.timeout, summary, "events.json")


if __name__ == "__main__":
    sys.exit(main())
