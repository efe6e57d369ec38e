"""`make bench-recon`: a day of the seeds' volume reconciled through the real server, beside
the ceiling measured in the same run (a bare COPY of the same file into PostgreSQL).

    .venv/bin/python -m bench.recon [--lines 2000000] [--per-class N] [--out DIR]

One run (bench/README.md, "make bench-recon"):
1. a fresh database `clearing_bench_<random>`, migrated, a platform with a gateway+operator
   key and an approver key; the real server (`clearing.cli serve`) on a loopback port;
2. through the API: the accounts and two rule sets (CNY, USD), and the template splits of
   bench/recon_gen.py (one real split per amount and currency, one refunded);
3. the day (bench/recon_gen.py): --lines splits COPYed into `splits` as the server writes
   them (copies of the templates, order by order), the canonical statement of --lines lines
   written to a gzip file at the same time, then VACUUM ANALYZE splits (the state autovacuum
   leaves a day's table in);
4. the ceiling: the same file, inflated by this process, COPYed (CSV, header) into a plain
   table of the statement's columns;
5. the measured run: ImportStatement (client streaming, generated stubs) in chunks of
   --chunk-bytes of the gzip file, to the response (import and reconcile); meanwhile the
   server's RSS and PostgreSQL's activity (which statement the import's connection is in)
   are sampled; then the server's peak RSS (VmHWM);
6. the run's figures checked against the injected ones: every class's count, amount and
   difference, both flows' totals, the line count.

Prints a table of figures and the ratio to the ceiling, writes <out>/recon.json and
<out>/summary.txt (<out>: bench/results/<UTC timestamp>/ unless --out). Exit status: 0 when
the run completed and found exactly what was injected, whatever the times (a missed target is
a result); 1 when a figure differs, a call failed, set-up failed or the hard limit fired; 130
on Ctrl-C. The database is dropped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from bench import recon_gen as gen
from bench.harness import (_tail, begin, Bench, cpu_snapshot, new_platform,
                           publish_and_activate, run_and_report, RunFailed)

LINES_DEFAULT = 2_000_000
CHUNK_BYTES = 1 << 20  # STATEMENT_CHUNK_BYTES_MAX: the largest chunk the server takes
CALL_TIMEOUT_S = 900.0
HARD_TIMEOUT_S = 2400.0
SAMPLE_S = 0.1
TARGET_RATIO_MAX = 3.0
TARGET_WALL_S_MAX = 120.0
CEILING_TABLE = "bench_statement_copy"
RULE_SET = """
name: recon-{lower}
currency_code: {currency}
rules:
  - rule_name: all
    priority: 1
    shares:
      - label: platform
        type: SHARE_TYPE_RATIO
        ratio_bps: 1000
        receiver: {{account_ref: platform-{currency}}}
      - label: seller
        type: SHARE_TYPE_REMAINDER
        receiver: {{account_ref: seller-{currency}}}
"""


def statement_day() -> dt.date:
    """A day safely in the past (paid times may not be in the future)."""
    return dt.datetime.now(gen.ZONE).date() - dt.timedelta(days=3)


# ---- set-up through the API -------------------------------------------------------------------

async def open_world(ch, key: str, approver: str) -> None:
    """Per currency: custodial, platform and seller accounts, and the rule set recon-<cur>."""
    from clearing.v1 import ledger_pb2 as lpb
    from clearing.v1 import ledger_pb2_grpc, split_pb2_grpc

    md = (("authorization", f"Bearer {key}"),)
    ledger = ledger_pb2_grpc.LedgerServiceStub(ch)
    kinds = {"custodial": lpb.ACCOUNT_KIND_CUSTODIAL, "platform": lpb.ACCOUNT_KIND_PLATFORM,
             "seller": lpb.ACCOUNT_KIND_MERCHANT}
    for currency in ("CNY", "USD"):
        for ref, kind in kinds.items():
            await ledger.CreateAccount(lpb.CreateAccountRequest(
                request_id=str(uuid.uuid4()), external_ref=f"{ref}-{currency}", kind=kind,
                owner_type=lpb.OWNER_TYPE_ENTERPRISE, currency_code=currency,
                allow_negative=ref == "custodial"), metadata=md, timeout=30)
        await publish_and_activate(split_pb2_grpc.SplitServiceStub(ch),
                                   RULE_SET.format(currency=currency, lower=currency.lower()),
                                   key, approver, "recon bench")


def _template_order(currency: str, amount_minor: int, order_id: str):
    from clearing.v1 import split_pb2 as spb

    order = spb.Order(order_id=order_id, amount_minor=amount_minor, currency_code=currency,
                      channel=gen.CHANNEL_MARK, channel_fee_minor=gen.fee_of(amount_minor),
                      channel_transaction_id=gen.CTID_MARK,
                      rule_set_name=f"recon-{currency.lower()}")
    order.paid_time.FromNanoseconds(gen.PAID_NS_MARK)
    return order


async def make_templates(ch, key: str, seed: int) -> list[str]:
    """The template splits through the API (one per amount and currency, one more refunded
    by half); returns the refunded one's order id."""
    from clearing.v1 import split_pb2 as spb
    from clearing.v1 import split_pb2_grpc

    md = (("authorization", f"Bearer {key}"),)
    stub = split_pb2_grpc.SplitServiceStub(ch)
    orders = [_template_order(cur, a, f"TPL-{cur}-{a}")
              for cur in ("CNY", "USD") for a in gen.amounts(seed, cur)]
    refunded = _template_order("CNY", 10_000, "TPL-REFUNDED")
    r = await stub.SplitBatch(spb.SplitBatchRequest(
        request_id=str(uuid.uuid4()), requests=[
            spb.SplitRequest(request_id=str(uuid.uuid4()), order=o)
            for o in orders + [refunded]]), metadata=md, timeout=60)
    errors = [o.error for o in r.outcomes if o.HasField("error")]
    if errors:
        raise RunFailed(f"template splits refused: {errors[:3]}")
    await stub.RefundSplit(spb.RefundSplitRequest(
        request_id=str(uuid.uuid4()), order_id=refunded.order_id, amount_minor=5_000,
        currency_code="CNY", reason="bench template", refund_ref="RF"),
        metadata=md, timeout=30)
    return refunded.order_id


async def read_templates(conn, platform_id: int, refunded_order: str
                         ) -> tuple[dict[tuple[str, int], gen.Template], int, int]:
    """The templates by (currency, amount), the refunded split's status, the first split id
    of the day's rows."""
    rows = await conn.fetch("SELECT * FROM splits WHERE platform_id = $1", platform_id)
    templates, refunded_status = {}, 0
    for row in rows:
        if row["order_id"] == refunded_order:
            refunded_status = row["status"]
        else:
            templates[(row["currency_code"], row["amount_minor"])] = gen.Template.of_row(
                dict(row))
    return templates, refunded_status, gen.SPLIT_ID_BASE + platform_id * gen.SPLIT_IDS_PER_PLATFORM


async def _aiter(it: Iterator[bytes]) -> AsyncIterator[bytes]:
    for item in it:
        yield item


async def load_day(conn, plan: gen.Plan, templates, refunded_status: int, path: Path,
                   ) -> tuple[gen.Expected, float]:
    """The day's splits COPYed while its statement is written; VACUUM ANALYZE splits."""
    exp = gen.Expected()
    t0 = time.monotonic()
    await conn.copy_to_table("splits", source=_aiter(gen.generate(
        plan, templates, refunded_status, path, exp)), columns=gen.SPLIT_COLUMNS,
        format="text")
    await conn.execute("VACUUM (ANALYZE) splits")
    return exp, time.monotonic() - t0


# ---- the ceiling: a bare COPY of the same file --------------------------------------------

async def inflated(path: Path, chunk_bytes: int) -> AsyncIterator[bytes]:
    """The file's content, inflated as it is read (several gzip members in turn)."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as f:
        while data := f.read(chunk_bytes):
            while data:
                piece = inflate.decompress(data)
                if piece:
                    yield piece
                data = inflate.unused_data if inflate.eof else b""
                if inflate.eof:
                    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)


async def checkpoint(conn) -> None:
    """CHECKPOINT, so that a timed step does not pay for writing out the pages of the step
    before it; a role that may not (neither superuser nor pg_checkpoint) is told, and the
    run goes on without."""
    import asyncpg

    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        print("bench-recon: no CHECKPOINT (the role may not): a step may pay for the "
              "writing out of the one before", file=sys.stderr, flush=True)


async def bare_copy(conn, path: Path, chunk_bytes: int) -> tuple[float, int]:
    """Seconds to COPY the statement into a plain table of its columns; the rows copied."""
    await conn.execute(
        f"CREATE TABLE {CEILING_TABLE} (channel text, channel_transaction_id text,"
        " order_id text, paid_time timestamptz, amount_minor bigint,"
        " channel_fee_minor bigint, settled_minor bigint, currency_code text,"
        " settlement_date date, type text)")
    await checkpoint(conn)  # the day's load written out first (not this COPY's)
    t0 = time.monotonic()
    status = await conn.copy_to_table(CEILING_TABLE, source=inflated(path, chunk_bytes),
                                      format="csv", header=True)
    elapsed = time.monotonic() - t0
    await conn.execute(f"DROP TABLE {CEILING_TABLE}")
    return elapsed, int(status.split()[-1])


# ---- the measured import ----------------------------------------------------------------------

def _status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB (0 when it is gone)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in out:
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


class Sampler:
    """Every SAMPLE_S: the server's RSS, and what the bench database's connections are doing
    (the import's COPY, the match statement, the server's Python between two statements of
    its transaction)."""

    def __init__(self, admin_dsn: str, db_name: str, pid: int) -> None:
        self.admin_dsn, self.db_name, self.pid = admin_dsn, db_name, pid
        self.samples: list[tuple[float, str, int]] = []  # (t, activity, rss KiB)
        self._stop = asyncio.Event()

    async def run(self, t0: float) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT state, left(query, 40) AS q FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()"
                    " AND state <> 'idle'", self.db_name)
                self.samples.append((time.monotonic() - t0, _activity(rows),
                                     _status_kb(self.pid)["VmRSS"]))
                try:
                    await asyncio.wait_for(self._stop.wait(), SAMPLE_S)
                except asyncio.TimeoutError:
                    pass
        finally:
            await conn.close()

    def stop(self) -> None:
        self._stop.set()

    def phases(self, wall_s: float) -> dict:
        """Seconds per phase, from the samples: streaming (the server parsing, and COPYing
        its batches) up to the match statement, the match, the rest."""
        match_t = [t for t, a, _ in self.samples if a == "match"]
        stream = [a for t, a, _ in self.samples if not match_t or t < match_t[0]]
        n = max(1, len(stream))
        start = match_t[0] if match_t else wall_s
        end = min(wall_s, match_t[-1] + SAMPLE_S) if match_t else wall_s
        return {"streaming_s": round(start, 2),
                "streaming_copy_share": round(stream.count("copy") / n, 3),
                "streaming_python_share": round(stream.count("python") / n, 3),
                "streaming_lines_sql_share": round(stream.count("lines") / n, 3),
                "match_sql_s": round(end - start, 2),
                "after_match_s": round(wall_s - end, 2),
                "rss_max_kib": max((r for _, _, r in self.samples), default=0)}


def _activity(rows) -> str:
    queries = [(r["state"], r["q"] or "") for r in rows]
    if any(s == "active" and q.lstrip().startswith("COPY") for s, q in queries):
        return "copy"
    if any(s == "active" and "recon:lines" in q for s, q in queries):
        return "lines"
    if any(s == "active" and ("recon:match" in q or q.startswith("ANALYZE")) for s, q in queries):
        return "match"
    if any(s == "active" for s, _ in queries):
        return "other_sql"
    if any(s.startswith("idle in transaction") for s, _ in queries):
        return "python"
    return "none"


def _requests(path: Path, header, chunk_bytes: int) -> Iterator:
    from clearing.v1 import reconciliation_pb2 as rpb

    yield rpb.ImportStatementRequest(header=header)
    with open(path, "rb") as f:
        while data := f.read(chunk_bytes):
            yield rpb.ImportStatementRequest(chunk=data)


async def import_statement(addr: str, key: str, path: Path, day: dt.date, chunk_bytes: int):
    """The ImportStatement call; (its response, seconds)."""
    import grpc

    from clearing.v1 import reconciliation_pb2 as rpb
    from clearing.v1 import reconciliation_pb2_grpc

    header = rpb.StatementHeader(request_id=str(uuid.uuid4()), channel=gen.CHANNEL,
                                 settlement_date=day.isoformat(),
                                 format=rpb.STATEMENT_FORMAT_CANONICAL)
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = reconciliation_pb2_grpc.ReconciliationServiceStub(ch)
        t0 = time.monotonic()
        response = await stub.ImportStatement(
            _requests(path, header, chunk_bytes), metadata=(("authorization", f"Bearer {key}"),),
            timeout=CALL_TIMEOUT_S)
        return response, time.monotonic() - t0


async def explain_match(dsn: str, platform_id: int, run) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the match's statements of `run` again (the import's
    settings, its three steps and the totals), rolled back."""
    import asyncpg

    from clearing.recon import match, service

    st = run.statement
    day = dt.date.fromisoformat(st.settlement_date)
    start, end = service.day_bounds(day, run.time_zone)
    conn = await asyncpg.connect(dsn)
    out: list[str] = []

    async def explain(name: str, sql: str, *args) -> list:
        t0 = time.monotonic()
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        out.append(f"-- {name}: {time.monotonic() - t0:.2f} s")
        out.extend(r[0] for r in rows)
        return rows

    try:
        tx = conn.transaction()
        await tx.start()
        try:
            for sql in match.SQL_BEFORE_MATCH[:-2]:  # the import's settings (not ANALYZE)
                await conn.execute(sql)
            await conn.execute(match.SQL_ONE_PROCESS)
            await explain("duplicates", match.SQL_DUPLICATES, st.statement_id)
            for sql in match.SQL_IN_PARALLEL:
                await conn.execute(sql)
            await explain("unsure", match.SQL_UNSURE, st.statement_id, platform_id, st.channel,
                          service._ns(start), service._ns(end), start, end)
            await explain("totals", match.SQL_TOTALS, st.statement_id)
            t = await conn.fetchrow(match.SQL_TOTALS, st.statement_id)
            await explain("match", match.SQL_MATCH, platform_id, run.run_id, st.currency_code,
                          dt.datetime.now(dt.timezone.utc), t["line_count"], t["amount_minor"],
                          t["stated_minor"])
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    return "\n".join(out) + "\n"


# ---- the check -------------------------------------------------------------------------------

def check(run, exp: gen.Expected) -> list[str]:
    """Where the run differs from what was injected (empty: it found exactly that)."""
    found = {t.reconciliation_class: (t.item_count, t.amount_minor, t.difference_minor)
             for t in run.class_totals}
    want = exp.totals()
    problems = [f"{gen.CLASS_NAMES.get(c, c)}: (count, amount, difference) found "
                f"{found.get(c)}, injected {want.get(c)}"
                for c in sorted(set(found) | set(want)) if found.get(c) != want.get(c)]
    for name, got, wanted in (
            ("statement_settled_minor", run.statement_settled_minor,
             exp.statement_settled_minor),
            ("split_settled_minor", run.split_settled_minor, exp.split_settled_minor),
            ("difference_minor", run.difference_minor,
             exp.statement_settled_minor - exp.split_settled_minor),
            ("explained_minor", run.explained_minor,
             exp.statement_settled_minor - exp.split_settled_minor),
            ("discrepancy_count", run.discrepancy_count, exp.discrepancy_count),
            ("statement.line_count", run.statement.line_count, exp.line_count),
            ("statement.settled_minor", run.statement.settled_minor,
             exp.statement_settled_minor)):
        if got != wanted:
            problems.append(f"{name}: found {got}, injected {wanted}")
    return problems


# ---- the run ---------------------------------------------------------------------------------

class ReconBench(Bench):
    """Bench's database, server and clean-up; the day, the ceiling and the measured run."""

    async def run(self, out: Path) -> dict:
        import grpc

        a = self.args
        day = statement_day()
        async with self.new_database() as conn:
            platform_id, key, approver = await new_platform(conn, "recon-bench")
        self.server_addr, self.server = await self.start_server(self.dsn, 1)
        async with grpc.aio.insecure_channel(self.server_addr) as ch:
            await open_world(ch, key, approver)
            refunded_order = await make_templates(ch, key, a.seed)
        path = self.tmp / f"statement-{day.isoformat()}.csv.gz"
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            templates, refunded_status, next_id = await read_templates(
                conn, platform_id, refunded_order)
            plan = gen.Plan(a.lines, a.per_class or max(1, a.lines // 1000), day, next_id,
                            a.seed)
            print(f"bench-recon: generating {plan.lines:,} splits and statement lines "
                  f"({plan.per_class:,} per class)", file=sys.stderr, flush=True)
            exp, load_s = await load_day(conn, plan, templates, refunded_status, path)
            print(f"bench-recon: day loaded in {load_s:.1f} s; bare COPY", file=sys.stderr,
                  flush=True)
            ceiling_s, copied = await bare_copy(conn, path, a.chunk_bytes)
        finally:
            await conn.close()
        if copied != exp.line_count:
            raise RunFailed(f"the bare COPY copied {copied} rows of {exp.line_count}")
        print(f"bench-recon: bare COPY {ceiling_s:.1f} s; ImportStatement", file=sys.stderr,
              flush=True)
        measured = await self.measure(key, path, day)
        response = measured.pop("response")
        problems = check(response.run, exp)
        if a.explain:
            (out / "explain.txt").parent.mkdir(parents=True, exist_ok=True)
            (out / "explain.txt").write_text(await explain_match(self.dsn, platform_id,
                                                                 response.run))
        return self.figures(plan, exp, path, load_s, ceiling_s, measured, problems)

    async def measure(self, key: str, path: Path, day: dt.date) -> dict:
        import asyncpg
        import grpc

        pid = self.server.pid
        admin = await asyncpg.connect(self.dsn)
        try:  # the bare COPY's pages written out first, as the day's were before it
            await checkpoint(admin)
        finally:
            await admin.close()
        rss_before = _status_kb(pid)
        sampler = Sampler(self.admin_dsn, self.db_name, pid)
        pg = await self.pg_pids()
        cpu_before = cpu_snapshot({"server": [pid], "postgres": pg})
        t0 = time.monotonic()
        sampling = asyncio.create_task(sampler.run(t0))
        try:
            response, wall_s = await import_statement(self.server_addr, key, path, day,
                                                      self.args.chunk_bytes)
        except grpc.aio.AioRpcError as exc:
            raise RunFailed(f"ImportStatement answered {exc.code().name} {exc.details()!r}; "
                            f"the server's log:\n{_tail(self.tmp / 'server.log', 40)}") from None
        finally:
            sampler.stop()
            await sampling
        cpu_after = cpu_snapshot({"server": [pid], "postgres": sorted(
            set(pg) | set(await self.pg_pids()))})
        self.check_alive()
        cpu = {k: round(sum(v.values()) - sum(cpu_before[k].get(p, 0.0) for p in v), 1)
               for k, v in cpu_after.items() if not k.startswith("machine_")}
        machine = cpu_after["machine_busy"] - cpu_before["machine_busy"]
        return {"response": response, "wall_s": wall_s, "phases": sampler.phases(wall_s),
                "rss_before_kib": rss_before["VmRSS"],
                "rss_peak_kib": _status_kb(pid)["VmHWM"], "cpu_s": cpu,
                "machine_cpu_s": round(machine, 1),
                "replayed": response.replayed, "run_id": response.run.run_id}

    def figures(self, plan: gen.Plan, exp: gen.Expected, path: Path, load_s: float,
                ceiling_s: float, m: dict, problems: list[str]) -> dict:
        wall = m["wall_s"]
        return {
            "lines": exp.line_count, "splits": exp.split_count, "per_class": plan.per_class,
            "day": plan.day.isoformat(), "statement_gzip_bytes": path.stat().st_size,
            "setup_load_s": round(load_s, 1), "ceiling_copy_s": round(ceiling_s, 4),
            "import_wall_s": round(wall, 2), "ratio": round(wall / ceiling_s, 2),
            "lines_per_s": round(exp.line_count / wall), **{k: v for k, v in m.items()
                                                           if k != "wall_s"},
            "expected": {gen.CLASS_NAMES[c]: list(v) for c, v in sorted(exp.totals().items())},
            "statement_settled_minor": exp.statement_settled_minor,
            "split_settled_minor": exp.split_settled_minor,
            "problems": problems,
            "targets": {"ratio_max": TARGET_RATIO_MAX, "wall_s_max": TARGET_WALL_S_MAX,
                        "met": wall <= TARGET_RATIO_MAX * ceiling_s
                        and wall < TARGET_WALL_S_MAX},
            "machine": {"cpus": os.cpu_count(), "load_1m_after": os.getloadavg()[0]},
            "parameters": {k: v for k, v in vars(self.args).items() if k != "server_env"},
        }


def summary(f: dict) -> str:
    mib = 1024.0
    ph = f["phases"]
    rows = [
        ("statement", f"{f['lines']:,} lines ({f['per_class']:,} per class), "
                      f"{f['statement_gzip_bytes'] / 1e6:.1f} MB gzip; {f['splits']:,} splits"),
        ("ceiling: bare COPY of the file", f"{f['ceiling_copy_s']:.1f} s"),
        ("ImportStatement (import + reconcile)",
         f"{f['import_wall_s']:.1f} s, {f['lines_per_s']:,} lines/s, "
         f"{f['ratio']:.2f} x the ceiling"),
        ("  streaming: COPY + lines checked", f"{ph['streaming_s']:.1f} s (PostgreSQL in COPY "
                                              f"{ph['streaming_copy_share']:.0%} of it, "
                                              f"checking lines in SQL "
                                              f"{ph['streaming_lines_sql_share']:.0%})"),
        ("  match SQL", f"{ph['match_sql_s']:.1f} s"),
        ("  after the match (run written)", f"{ph['after_match_s']:.1f} s"),
        ("CPU seconds in the import", f"server {f['cpu_s'].get('server')}, PostgreSQL "
                                      f"{f['cpu_s'].get('postgres')}, machine "
                                      f"{f['machine_cpu_s']}"),
        ("server RSS", f"{f['rss_before_kib'] / mib:.0f} MiB before, "
                       f"{ph['rss_max_kib'] / mib:.0f} MiB max sampled, "
                       f"peak (VmHWM) {f['rss_peak_kib'] / mib:.0f} MiB"),
        ("target: <= 3x the ceiling and < 120 s", "met" if f["targets"]["met"] else "missed"),
    ]
    width = max(len(r[0]) for r in rows)
    out = [f"{name:<{width}}  {value}" for name, value in rows]
    out.append("")
    out.append(f"{'class':<22}{'count':>12}{'amount_minor':>20}{'difference_minor':>20}")
    for name, (count, amount, diff) in f["expected"].items():
        out.append(f"{name:<22}{count:>12,}{amount:>20,}{diff:>20,}")
    out.append(f"funds {f['statement_settled_minor']:,} / information "
               f"{f['split_settled_minor']:,} (minor units): "
               + ("found exactly, every class" if not f["problems"] else "MISMATCH"))
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.recon", description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=LINES_DEFAULT,
                   help="statement lines, and splits of the day (default %(default)s)")
    p.add_argument("--per-class", type=int, default=0,
                   help="orders of each special kind (default lines // 1000)")
    p.add_argument("--chunk-bytes", type=int, default=CHUNK_BYTES)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", default=None, help="results directory")
    p.add_argument("--explain", action="store_true",
                   help="write <out>/explain.txt: EXPLAIN ANALYZE of the match statement run "
                        "again after the import (rolled back)")
    p.add_argument("--timeout", type=float, default=HARD_TIMEOUT_S, help="hard limit, s")
    p.add_argument("--server-env", action="append", default=[], metavar="CLEARING_X=V")
    a = p.parse_args(argv)
    a.warmup, a.call_timeout, a.profile, a.profile_native = 0.0, CALL_TIMEOUT_S, None, False
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, out = begin(args.out)
    return run_and_report("bench-recon", ReconBench(args), out, args.timeout, summary, "recon.json")


if __name__ == "__main__":
    raise SystemExit(main())
