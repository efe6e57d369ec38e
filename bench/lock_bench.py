"""The custodial row lock of the split writer, before and after (issue 16, section 1).

    .venv/bin/python -m bench.lock_bench [driver options] [--rounds 2]
    make bench-lock

Sets up like the driver (bench/driver.py: a fresh database, the B2B accounts and rule set),
then, for each round, runs SplitBatch closed loop (--batch-callers callers of --batch-size
orders) against a server of --scale-workers processes (2) on that database, once with the
old lock order (CLEARING_WRITER_LOCK_LATE=0: every touched account locked FOR UPDATE first,
held through the apply, the column building, the INSERTs and COMMIT) and once with the late
order (=1, the default), alternating, in the same run. Every split debits the platform's
one custodial account, so every batch of every process takes that one row lock.

Measured in each window, summed over the server's processes (their Prometheus endpoints):

- the lock's hold time per batch (`clearing_writer_lock_hold_seconds`, time.perf_counter in
  the writer; old order: from the end of the FOR UPDATE statement to the end of COMMIT; late
  order: from sending the one message that takes it and commits to its answer, its wait
  counted as held: a bound above), per split, and the ceiling it implies for any number of
  processes: 1 / (hold per split), splits per second;
- the lock's busy fraction: sum of hold times / window (every hold is of the same row);
- the lock wait of each writer: the locking statement's time (`..._lock_wait_seconds`;
  late order: the whole last message, a bound above) / window / processes; and, from PostgreSQL, the share of pg_stat_activity samples (every
  20 ms) in which a backend of the bench database waits on a lock (wait_event_type 'Lock').

Results: bench/results/<UTC>/lock.json and lock.txt. The machine is shared: compare the
two orders of the same run (ratios), not figures of different runs.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
import sys
import time
import urllib.request

from bench import driver
from bench.harness import merge, verify_ledger
from bench.harness import (RunFailed, _in_thread, begin_rounds, finish, free_port_run,
                           run_bounded)

ARGS = ["--scenarios", "closed", "--modes", "batch", "--preset", "quick"]
_METRICS = ("clearing_writer_lock_hold_seconds_sum", "clearing_writer_lock_hold_seconds_count",
            "clearing_writer_lock_wait_seconds_sum", "clearing_writer_lock_wait_seconds_count",
            "clearing_writer_batch_size_sum", "clearing_writer_batch_size_count",
            "clearing_writer_lock_commit_seconds_sum",
            "clearing_writer_flush_seconds_sum", "clearing_writer_batch_retries_total")
_SAMPLE_S = 0.02
_SQL_WAITS = """
SELECT wait_event_type = 'Lock' AS waiting, state = 'active' AS active,
       CASE WHEN wait_event_type = 'Lock'
            THEN wait_event || ': ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 70) END
         AS what
FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = dict.fromkeys(_METRICS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in out:
            out[name] = float(value)
    return out


# How long the workers' metrics endpoints may take to answer after the server is up.
METRICS_UP_S = 60.0


async def _metrics_up(ports: list[int]) -> None:
    """Wait until every worker's metrics endpoint answers (the server's address answers as
    soon as one worker serves; the others may still be starting)."""
    deadline = time.monotonic() + METRICS_UP_S
    for port in ports:
        while True:
            try:
                await _in_thread(_scrape, port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


class LockBench(driver.Driver):
    async def stats(self, ports: list[int]) -> dict[str, float]:
        total = dict.fromkeys(_METRICS, 0.0)
        for port in ports:
            for k, v in (await _in_thread(_scrape, port)).items():
                total[k] += v
        return total

    async def phase(self, label: str, lock_late: bool) -> dict:
        """SplitBatch, closed loop, against a fresh server of --scale-workers processes with
        the given lock order; the lock figures of the measured window."""
        import asyncpg

        a = self.args
        workers = a.scale_workers
        port = free_port_run(workers)  # worker i serves its metrics on port + i
        saved = list(a.server_env)
        a.server_env = saved + [f"CLEARING_WRITER_LOCK_LATE={int(lock_late)}",
                                f"CLEARING_METRICS_ADDR=127.0.0.1:{port}"]
        try:
            addr, proc = await self.start_server(self.dsn, workers, name=f"server-{label}")
        finally:
            a.server_env = saved
        ports = [port + i for i in range(workers)]
        await _metrics_up(ports)  # a worker still starting has no metrics endpoint yet
        one, self.server = self.server, proc
        seen: dict = {}
        samples = {"n": 0, "waiting": 0, "any_waiting": 0, "active": 0, "what": Counter()}
        conn = await asyncpg.connect(self.dsn)

        async def sample() -> None:
            while True:
                rows = await conn.fetch(_SQL_WAITS)
                waiting = [r["what"] for r in rows if r["waiting"]]
                samples["n"] += 1
                samples["waiting"] += len(waiting)
                samples["any_waiting"] += 1 if waiting else 0
                samples["active"] += sum(1 for r in rows if r["active"])
                samples["what"].update(waiting)
                await asyncio.sleep(_SAMPLE_S)

        async def window_start() -> None:
            seen["before"] = await self.stats(ports)
            seen["t0"] = time.perf_counter()
            seen["sampler"] = asyncio.ensure_future(sample())

        async def window_end() -> None:
            seen["sampler"].cancel()
            await asyncio.gather(seen["sampler"], return_exceptions=True)
            seen["window_s"] = time.perf_counter() - seen["t0"]
            seen["after"] = await self.stats(ports)

        try:
            cfgs, callers = self.cfgs(label, addr, "batch", "closed", a.duration, a.warmup)
            print(f"bench: {label}: SplitBatch closed loop, {workers} server processes, "
                  f"CLEARING_WRITER_LOCK_LATE={int(lock_late)}, {a.warmup:g}+{a.duration:g} s",
                  file=sys.stderr, flush=True)
            results, cores = await self.run_load(label, "bench.loadgen", cfgs, a.duration,
                                                 window_start, window_end)
        finally:
            await conn.close()
            self.server = one
            driver._stop(proc)
        load = merge(label, "closed", results, a.duration, 0.0, callers,
                            cfgs[0]["channels"], cores)
        d = {k: seen["after"][k] - seen["before"][k] for k in _METRICS}
        return _figures(label, lock_late, workers, load, d, seen["window_s"], samples,
                        a.batch_size)


def _figures(label: str, lock_late: bool, workers: int, load: dict, d: dict,
             window_s: float, samples: dict, batch_size: int) -> dict:
    batches = d["clearing_writer_lock_hold_seconds_count"]
    postings = d["clearing_writer_batch_size_sum"]
    hold = d["clearing_writer_lock_hold_seconds_sum"]
    wait = d["clearing_writer_lock_wait_seconds_sum"]
    if not batches or not postings:
        raise RunFailed(f"{label}: no batch took the lock in the window")
    n = max(1, samples["n"])
    return {
        "label": label, "lock_late": lock_late, "server_processes": workers,
        "window_s": round(window_s, 2),
        "splits_per_s": round(load["rps"] * batch_size, 1),
        "errors": load.get("errors", {}),
        "batches": int(batches),
        "splits_per_batch": round(postings / d["clearing_writer_batch_size_count"], 1),
        "flush_ms_mean": round(d["clearing_writer_flush_seconds_sum"]
                               / d["clearing_writer_batch_size_count"] * 1e3, 3),
        "hold_ms_per_batch": round(hold / batches * 1e3, 3),
        "hold_us_per_split": round(hold / postings * 1e6, 3),
        "commit_ms_per_batch": round(d["clearing_writer_lock_commit_seconds_sum"]
                                     / batches * 1e3, 3),
        "implied_ceiling_splits_per_s": round(postings / hold, 0),
        "lock_busy_fraction": round(hold / window_s, 4),
        "lock_wait_fraction_per_writer": round(wait / window_s / workers, 4),
        "lock_wait_ms_per_batch": round(wait / batches * 1e3, 3),
        "pg_samples": samples["n"],
        "pg_lock_waiters_mean": round(samples["waiting"] / n, 4),
        "pg_share_of_samples_with_a_lock_waiter": round(samples["any_waiting"] / n, 4),
        "pg_lock_waits_top": [[w, round(c / n, 4)] for w, c in samples["what"].most_common(5)],
        "batch_retries": int(d["clearing_writer_batch_retries_total"]),
        "cpu_cores": load.get("cpu_cores"),
    }


async def run(b: LockBench, rounds: int) -> dict:
    await b.setup()
    phases = []
    for r in range(rounds):
        for lock_late in (False, True):
            label = f"{'late' if lock_late else 'early'}-{r + 1}"
            phases.append(await b.phase(label, lock_late))
    verify = await verify_ledger(b.server_addr, b.key, b.args.call_timeout)
    b.check_alive()
    return {"phases": phases, "verify": verify}


def _mean(phases: list[dict], lock_late: bool, key: str) -> float:
    values = [p[key] for p in phases if p["lock_late"] is lock_late]
    return sum(values) / len(values)


def summary(res: dict, meta: dict) -> tuple[str, dict]:
    phases = res["phases"]
    keys = ("splits_per_s", "splits_per_batch", "hold_ms_per_batch", "commit_ms_per_batch",
            "lock_wait_ms_per_batch", "hold_us_per_split",
            "implied_ceiling_splits_per_s", "lock_busy_fraction",
            "lock_wait_fraction_per_writer", "pg_share_of_samples_with_a_lock_waiter",
            "flush_ms_mean")
    before = {k: round(_mean(phases, False, k), 4) for k in keys}
    after = {k: round(_mean(phases, True, k), 4) for k in keys}
    ratios = {k: round(after[k] / before[k], 3) if before[k] else None for k in keys}
    lines = [f"lock bench {meta['timestamp']} on {meta['machine'].get('cpus')} cores "
             f"(shared machine: compare the two orders, not runs); "
             f"{meta['parameters']['scale_workers']} server processes, SplitBatch "
             f"{meta['parameters']['batch_callers']} x {meta['parameters']['batch_size']} "
             f"orders, {meta['parameters']['warmup']:g}+{meta['parameters']['duration']:g} s "
             f"per phase", ""]
    cols = ("label", *keys, "batch_retries")
    lines.append(" | ".join(cols))
    for p in phases:
        lines.append(" | ".join(str(p[c]) for c in cols))
    lines += ["", "mean early (old order) -> mean late; ratio late/early:"]
    for k in keys:
        lines.append(f"  {k}: {before[k]} -> {after[k]} (x{ratios[k]})")
    v = res.get("verify") or {}
    lines.append(f"VerifyLedger: ok={v.get('ok')} chain_ok={v.get('chain_ok')}")
    return "\n".join(lines), {"before": before, "after": after, "ratio_after_before": ratios}


def main(argv: list[str] | None = None) -> int:
    rounds, args, out_dir, meta = begin_rounds(
        sys.argv[1:] if argv is None else argv, ARGS,
        lambda a, n: 240 + n * 2 * (a.warmup + a.duration + 20))
    b = LockBench(args)
    print(f"bench: database {b.db_name}, {rounds} round(s) of early/late (hard limit "
          f"{args.timeout:.0f} s)", file=sys.stderr, flush=True)
    res, code = run_bounded("bench-lock", b, lambda: run(b, rounds), args.timeout)
    if code:
        return code
    meta["services"] = b.services
    text, means = summary(res, meta)
    text += f"\nPostgreSQL {b.services.get('postgresql')}, Redis {b.services.get('redis')}"
    print(text)
    problems = [f"{p['label']}: errors {p['errors']}" for p in res["phases"] if p["errors"]]
    if not (res.get("verify") or {}).get("ok"):
        problems.append(f"VerifyLedger: {res.get('verify')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "lock.json").write_text(json.dumps({**meta, **res, **means, "failed": problems},
                                                  indent=2, default=str) + "\n")
    (out_dir / "lock.txt").write_text(text + "\n")
    return finish("bench-lock", out_dir, ("lock.json", "lock.txt"), problems)


if __name__ == "__main__":
    raise SystemExit(main())
