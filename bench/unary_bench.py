"""Unary Split, call by call against grouped (issue 16, section 3), in one run.

    .venv/bin/python -m bench.unary_bench [driver options] [--rounds 2]
    make bench-unary

Sets up like the driver (bench/driver.py: a fresh database, the B2B accounts and rule set,
the echo server), then starts two more servers on that database: one with
CLEARING_SPLIT_UNARY_GROUPING=0 (each Split call split on its own: `off`) and one with =1
(concurrent calls of a platform split as a group, api/split_group.py: `on`). For each round,
closed loop (--concurrency callers, 64), alternating: unary Split against the echo server
(the transport ceiling: grpc.aio alone with the same messages), against `off`, against `on`.
Then the open loop (--open-rate, 1,500/s, for --open-duration) against `off` and `on`. Only
the server under load works; the others idle.

Reported per phase: splits/s, the ratio to the echo ceiling of the same round, the server's
CPU in microseconds per split (its cores in the window / splits per second), latency
percentiles; for `on`, the mean group size and the writer's postings per flush (from the
server's metrics endpoint). Results: bench/results/<UTC>/unary.json and unary.txt. The machine
is shared: compare phases of the same run (ratios), not figures of different runs.
"""

from __future__ import annotations

import json
import sys
import urllib.request

from bench import driver
from bench.harness import (_in_thread, begin_rounds, finish, free_port, run_bounded,
                           verify_ledger)
from bench.lock_bench import _metrics_up

ARGS = ["--scenarios", "closed,open", "--modes", "split", "--preset", "quick",
        "--duration", "10", "--warmup", "2", "--open-duration", "60"]  # flags after win
_METRICS = ("clearing_split_unary_group_size_sum", "clearing_split_unary_group_size_count",
            "clearing_writer_batch_size_sum", "clearing_writer_batch_size_count")


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = dict.fromkeys(_METRICS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in out:
            out[name] = float(value)
    return out


class UnaryBench(driver.Driver):
    async def start_ab(self) -> None:
        """The `off` and `on` servers (one process each, metrics on a port of their own)."""
        a = self.args
        self.ab: dict[bool, tuple[str, object, int]] = {}
        saved = list(a.server_env)
        try:
            for grouping in (False, True):
                port = free_port()
                a.server_env = saved + [f"CLEARING_SPLIT_UNARY_GROUPING={int(grouping)}",
                                        f"CLEARING_METRICS_ADDR=127.0.0.1:{port}"]
                addr, proc = await self.start_server(
                    self.dsn, 1, name=f"server-{'on' if grouping else 'off'}")
                self.ab[grouping] = (addr, proc, port)
                await _metrics_up([port])
        finally:
            a.server_env = saved

    async def phase(self, label: str, grouping: bool, mode: str = "closed") -> dict:
        a = self.args
        addr, proc, port = self.ab[grouping]
        one, self.server = self.server, proc  # CPU accounting follows the server under load
        try:
            before = await _in_thread(_scrape, port)
            if mode == "open":
                out = await self.load(label, addr, "split", "open", echo=False,
                                      duration_s=a.open_duration, rate=a.open_rate)
            else:
                out = await self.load(label, addr, "split", echo=False)
            after = await _in_thread(_scrape, port)
        finally:
            self.server = one
        d = {k: after[k] - before[k] for k in _METRICS}
        groups = d["clearing_split_unary_group_size_count"]
        flushes = d["clearing_writer_batch_size_count"]
        out["grouping"] = grouping
        out["group_size_mean"] = (round(d["clearing_split_unary_group_size_sum"] / groups, 2)
                                  if groups else None)
        out["postings_per_flush"] = (round(d["clearing_writer_batch_size_sum"] / flushes, 2)
                                     if flushes else None)
        return out


def _us_per_split(p: dict) -> float | None:
    """CPU microseconds per split of the process under load (the echo server's for echo)."""
    server = (p.get("cpu_cores") or {}).get("echo" if p["grouping"] is None else "server")
    return round(server / p["units_per_s"] * 1e6, 1) if server and p["units_per_s"] else None


async def run(b: UnaryBench, rounds: int) -> dict:
    await b.setup()
    await b.start_ab()
    phases = []
    for r in range(rounds):
        echo = await b.load(f"echo-{r + 1}", b.echo_addr, "split")
        echo["grouping"] = None  # the ceiling
        phases.append(echo)
        for grouping in (False, True):
            p = await b.phase(f"{'on' if grouping else 'off'}-{r + 1}", grouping)
            p["ratio_to_echo"] = round(p["units_per_s"] / echo["units_per_s"], 3)
            phases.append(p)
    opens = [await b.phase(f"open-{'on' if g else 'off'}", g, "open") for g in (False, True)]
    verify = await verify_ledger(b.server_addr, b.key, b.args.call_timeout)
    b.check_alive()
    return {"phases": phases, "open": opens, "verify": verify}


def _row(p: dict) -> str:
    lat = p.get("latency_ms") or {}
    cores = p.get("cpu_cores") or {}
    return (f"{p['label']:>10} | {p['units_per_s']:>8.0f} | {p.get('ratio_to_echo', ''):>5} | "
            f"{_us_per_split(p) or '':>6} | "
            f"{cores.get('echo' if p['grouping'] is None else 'server', '')!s:>5} | "
            f"{cores.get('other', '')!s:>5} | {lat.get('p50', '')!s:>7} | "
            f"{lat.get('p99', '')!s:>7} | {p.get('group_size_mean') or '':>5} | "
            f"{p.get('postings_per_flush') or '':>6} | {sum(p['errors'].values())}")


def summary(res: dict, meta: dict) -> str:
    a = meta["parameters"]
    lines = [f"unary bench {meta['timestamp']} on {meta['machine'].get('cpus')} cores "
             f"(shared machine: compare phases of this run); unary Split, closed loop "
             f"{a['concurrency']} callers, {a['warmup']:g}+{a['duration']:g} s per phase; "
             f"open loop {a['open_rate']:g}/s for {a['open_duration']:g} s", "",
             "     phase | splits/s | x echo | us/split (server CPU) | server (echo) cores | other "
             "cores | p50 ms | p99 ms | group | postings/flush | errors"]
    lines += [_row(p) for p in res["phases"]]
    lines.append("")
    lines += [_row(p) for p in res["open"]]
    on = [p for p in res["phases"] if p["grouping"] is True]
    off = [p for p in res["phases"] if p["grouping"] is False]
    if on and off:
        def mean(ps: list[dict], f) -> float:
            xs = [f(p) for p in ps if f(p) is not None]
            return sum(xs) / len(xs) if xs else 0.0
        lines += ["", f"mean x echo: off {mean(off, lambda p: p['ratio_to_echo']):.3f} -> on "
                  f"{mean(on, lambda p: p['ratio_to_echo']):.3f}; server us/split: off "
                  f"{mean(off, _us_per_split):.0f} -> on {mean(on, _us_per_split):.0f}"]
    v = res.get("verify") or {}
    lines.append(f"VerifyLedger: ok={v.get('ok')} chain_ok={v.get('chain_ok')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    rounds, args, out_dir, meta = begin_rounds(
        sys.argv[1:] if argv is None else argv, ARGS,
        lambda a, n: 300 + n * 3 * (a.warmup + a.duration + 20) + 2 * (a.open_duration + 30))
    b = UnaryBench(args)
    print(f"bench: database {b.db_name}, {rounds} round(s) of echo/off/on, then open loops "
          f"(hard limit {args.timeout:.0f} s)", file=sys.stderr, flush=True)
    res, code = run_bounded("bench-unary", b, lambda: run(b, rounds), args.timeout)
    if code:
        return code
    meta["services"] = b.services
    text = summary(res, meta)
    text += f"\nPostgreSQL {b.services.get('postgresql')}, Redis {b.services.get('redis')}"
    print(text)
    problems = [f"{p['label']}: errors {p['errors']}" for p in res["phases"] + res["open"]
                if p["errors"]]
    if not (res.get("verify") or {}).get("ok"):
        problems.append(f"VerifyLedger: {res.get('verify')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "unary.json").write_text(json.dumps({**meta, **res, "failed": problems},
                                                   indent=2, default=str) + "\n")
    (out_dir / "unary.txt").write_text(text + "\n")
    return finish("bench-unary", out_dir, ("unary.json", "unary.txt"), problems)


if __name__ == "__main__":
    raise SystemExit(main())
