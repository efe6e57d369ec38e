"""`make bench-reports`: the split summary of a busy day and of a month, through the real
server's ExportReport, beside the raw aggregate query over the same rows, in one run.

    .venv/bin/python -m bench.reports_bench [--splits N] [--month-days D] [--raw-days R]

What it does (bench/README.md has the figures):

1. A fresh database `clearing_bench_<random>` and the real server (`clearing serve`, the
   roll-up job off: this run rolls days itself, and times it). Accounts of the B2B example
   plus `--merchants` suppliers; the b2b rule set filed; two real splits made through
   SplitService (a 3-leg base order and a 4-leg government purchase): the templates.
2. `--raw-days` days of `--splits` splits each, generated inside PostgreSQL (INSERT ...
   SELECT over generate_series) in the shape the server writes: `splits` rows carrying the
   templates' real `detail` (the server's own encoding of the evaluated order), `split_legs`
   (suppliers spread over the merchants, amounts in the templates' exact ratios) and one
   IMMEDIATE journal row per leg, then the accounts' balances moved to match. Not generated:
   journal batches (the hash chain: VerifyLedger is not run), idempotency records.
3. Timed:
   Figures over raw rows are timed `--raw-repeats` times (1: minutes each at full size),
   reports of rolled days `--repeats` times; the median is shown.
   - `raw day`: the raw aggregate query of the split summary (legs per receiver, rule and
     rule-set version: every split's detail parsed) over the first day's rows, asyncpg;
   - `report day (raw)`: ExportReport split_summary of that day before it is rolled (the
     report reads the same raw rows, plus encoding and streaming);
   - `roll-up day`: rolling that day (clearing.reports.rollup.roll_day, once);
   - `report day (rolled)`: the same report once the day is rolled;
   - `report month`: ExportReport split_summary of `--month-days` rolled days. The other
     days are rolled from raw rows when `--raw-days` covers them, else their roll-ups are
     copies of the first day's (a month of 2,000,000 splits a day is 60 million splits:
     more than this machine's run should generate);
   - `raw month`: the raw aggregate over the month's rows when they exist (`--raw-days` =
     `--month-days`), else 30 x the raw day, marked as an estimate.
4. Checks: every report's total equals the raw aggregate's (the month's: the raw month's,
   or the day's x the days copied).

Exit 0 when the run completed and the checks held.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
import uuid
from zoneinfo import ZoneInfo

from bench.harness import (Bench, RunFailed, begin, example_rule_set, finish, new_platform,
                           publish_and_activate, run_bounded)

PROG = "bench-reports"
SPLITS_DEFAULT = 2_000_000
BASE_AMOUNT = 1_000            # the base template order: 10.00, legs 10/70/20
GOV_AMOUNT = 50_000_000        # the government template: 500,000.00, 2% then 10/75/15


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--splits", type=int, default=SPLITS_DEFAULT, help="splits per raw day")
    p.add_argument("--month-days", type=int, default=30, help="days of the monthly report")
    p.add_argument("--raw-days", type=int, default=1,
                   help="days generated as raw rows (the rest of the month: roll-up copies)")
    p.add_argument("--merchants", type=int, default=200, help="suppliers the legs go to")
    p.add_argument("--repeats", type=int, default=3,
                   help="timings of each report of rolled days (the median is shown)")
    p.add_argument("--raw-repeats", type=int, default=1,
                   help="timings of each figure over raw rows (minutes each at full size)")
    p.add_argument("--out", help="results directory (default bench/results/<UTC>/)")
    p.add_argument("--timeout", type=float, default=7200, help="hard limit of the run, s")
    args = p.parse_args(argv)
    if not 1 <= args.raw_days <= args.month_days <= 31 or args.splits < 2:
        p.error("need 1 <= --raw-days <= --month-days <= 31 and --splits >= 2")
    # what bench.harness.Bench reads
    args.server_env = ["CLEARING_REPORT_ROLLUP=0"]
    args.warmup, args.call_timeout, args.profile, args.profile_native = 0, 600, None, False
    return args


class ReportBench(Bench):
    pass


def _md(xs: list[float]) -> float:
    return statistics.median(xs)


async def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = await fn()
        times.append(time.perf_counter() - t0)
    return _md(times), out


async def _setup(b: ReportBench) -> dict:
    """Database, server, accounts, rule set, the two template splits."""
    import grpc

    from clearing.v1 import ledger_pb2 as lpb
    from clearing.v1 import ledger_pb2_grpc, split_pb2, split_pb2_grpc

    async with b.new_database() as conn:
        platform_id, key, approver = await new_platform(conn, "reports-bench")
    b.server_addr, b.server = await b.start_server(b.dsn, 1)
    b.key = key
    auth = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(b.server_addr) as ch:
        ledger = ledger_pb2_grpc.LedgerServiceStub(ch)
        splits = split_pb2_grpc.SplitServiceStub(ch)

        async def open_(ref: str, kind: int, owner=lpb.OWNER_TYPE_ENTERPRISE, **kw) -> int:
            return (await ledger.CreateAccount(lpb.CreateAccountRequest(
                request_id=str(uuid.uuid4()), external_ref=ref, kind=kind, owner_type=owner,
                currency_code="CNY", **kw), metadata=auth, timeout=30)).account.account_id

        ids = {"custodial": await open_("custodial", lpb.ACCOUNT_KIND_CUSTODIAL,
                                        allow_negative=True),
               "PLAT_001": await open_("PLAT_001", lpb.ACCOUNT_KIND_PLATFORM),
               "SUP_2025001": await open_("SUP_2025001", lpb.ACCOUNT_KIND_MERCHANT),
               "LOGISTICS_B": await open_("LOGISTICS_B", lpb.ACCOUNT_KIND_ORDINARY,
                                          lpb.OWNER_TYPE_INDIVIDUAL),
               "GOV_ACCOUNT": await open_("GOV_ACCOUNT", lpb.ACCOUNT_KIND_FUNCTIONAL)}
        merchants = [await open_(f"SUP_{i:05d}", lpb.ACCOUNT_KIND_MERCHANT)
                     for i in range(b.args.merchants)]
        await publish_and_activate(splits, example_rule_set("b2b"), key, approver, "bench")
        made = []
        for amount, extra in ((BASE_AMOUNT, {}), (GOV_AMOUNT, {
                "tags": ["government purchase"], "attributes": {"customer_type": "enterprise"}})):
            made.append((await splits.Split(split_pb2.SplitRequest(
                request_id=str(uuid.uuid4()), order=split_pb2.Order(
                    order_id=str(uuid.uuid4()), amount_minor=amount, currency_code="CNY",
                    channel="WECHAT_PAY", rule_set_name="b2b", **extra)),
                metadata=auth, timeout=30)).split.split_id)
    return {"platform_id": platform_id, "ids": ids, "merchants": merchants,
            "templates": made}


_SQL_TEMPLATES = """
CREATE TEMP TABLE bench_t AS
SELECT (u.k1 - 1)::int AS k, s.* FROM unnest($1::bigint[]) WITH ORDINALITY AS u(split_id, k1)
JOIN splits s USING (split_id);
CREATE TEMP TABLE bench_tl AS
SELECT t.k, l.leg_index, l.kind, l.account_id, l.hold_reason,
       l.amount_minor * 1000 / t.amount_minor AS per_mille
FROM bench_t t JOIN split_legs l USING (split_id);
"""

_SQL_SPLITS = """
INSERT INTO splits (split_id, platform_id, order_id, request_id, payload_hash, status,
                    rule_set_name, rule_set_version, currency_code, amount_minor,
                    channel_fee_minor, distributed_minor, subsidy_minor, fee_minor,
                    counter_values, detail, channel, channel_transaction_id, paid_time_ns,
                    created_at, updated_at)
SELECT ($2::bigint + g) * 65536, t.platform_id, 'bench-' || $3 || '-' || g, 'bench-' || $3 || '-' || g,
       t.payload_hash, t.status, t.rule_set_name, t.rule_set_version, 'CNY', x.amt, 0, x.amt,
       0, 0, '[]'::jsonb, t.detail, CASE WHEN g % 3 = 0 THEN 'ALIPAY' ELSE 'WECHAT_PAY' END,
       '', (extract(epoch FROM x.at) * 1e9)::bigint, x.at, x.at
FROM generate_series(0, $1 - 1) AS g
CROSS JOIN LATERAL (SELECT 1000 * (1 + g % 500) AS amt,
                           $4::timestamptz + (g * 86400.0 / $1) * interval '1 second' AS at) x
JOIN bench_t t ON t.k = g % 2
"""

_SQL_LEGS = """
INSERT INTO split_legs (split_id, leg_index, kind, account_id, debit_account_id, amount_minor,
                        held_minor, released_minor, hold_reason, transfer_ids)
SELECT ($2::bigint + g) * 65536, tl.leg_index, tl.kind,
       CASE WHEN tl.account_id = $3 THEN ($4::bigint[])[1 + g % cardinality($4::bigint[])]
            ELSE tl.account_id END,
       $5, (1 + g % 500) * tl.per_mille, 0, (1 + g % 500) * tl.per_mille, tl.hold_reason,
       ARRAY[($2::bigint + g) * 65536 + tl.leg_index]
FROM generate_series(0, $1 - 1) AS g
JOIN bench_tl tl ON tl.k = g % 2
"""

_SQL_TRANSFERS = """
INSERT INTO transfers (transfer_id, platform_id, batch_id, request_id, debit_account_id,
                       credit_account_id, amount, currency_code, mode, memo, created_at)
SELECT l.transfer_ids[1], $3, l.split_id / 65536, 'bench', l.debit_account_id, l.account_id,
       l.amount_minor, 'CNY', 1, '', s.created_at
FROM splits s JOIN split_legs l USING (split_id)
WHERE s.split_id >= $1::bigint * 65536 AND s.split_id < $2::bigint * 65536
"""

_SQL_BALANCES = """
UPDATE accounts a SET debits_posted = a.debits_posted + m.d,
                      credits_posted = a.credits_posted + m.c
FROM (SELECT account_id, sum(d) AS d, sum(c) AS c FROM (
        SELECT debit_account_id AS account_id, amount AS d, 0 AS c FROM transfers
        WHERE transfer_id >= $1::bigint * 65536 AND transfer_id < $2::bigint * 65536
        UNION ALL
        SELECT credit_account_id, 0, amount FROM transfers
        WHERE transfer_id >= $1::bigint * 65536 AND transfer_id < $2::bigint * 65536) x
      GROUP BY account_id) m
WHERE a.account_id = m.account_id
"""


async def _generate(b: ReportBench, s: dict, days: list[dt.date], zone: str) -> dict:
    """The raw days' rows (see the module docstring); seconds per table."""
    import asyncpg

    from clearing.reports.period import day_start

    n = b.args.splits
    conn = await asyncpg.connect(b.dsn)
    took: dict[str, float] = {"splits": 0.0, "split_legs": 0.0, "transfers": 0.0,
                              "balances": 0.0}
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute(_SQL_TEMPLATES.replace("$1::bigint[]", "'{%s}'::bigint[]" % ",".join(
            map(str, s["templates"]))))
        first_batch = await conn.fetchval("SELECT nextval('journal_batch_id_seq')") + 1000
        for i, day in enumerate(days):
            base = first_batch + i * n
            for table, q, args in (
                    ("splits", _SQL_SPLITS, (n, base, str(day), day_start(day, zone))),
                    ("split_legs", _SQL_LEGS, (n, base, s["ids"]["SUP_2025001"],
                                               s["merchants"], s["ids"]["custodial"])),
                    ("transfers", _SQL_TRANSFERS, (base, base + n, s["platform_id"])),
                    ("balances", _SQL_BALANCES, (base, base + n))):
                t0 = time.perf_counter()
                await conn.execute(q, *args)
                took[table] += time.perf_counter() - t0
                print(f"  day {day}: {table} {time.perf_counter() - t0:.1f} s", flush=True)
        await conn.execute("SELECT setval('journal_batch_id_seq', $1)",
                           first_batch + len(days) * n + 1)
        await conn.execute("ANALYZE splits; ANALYZE split_legs; ANALYZE transfers")
    finally:
        await conn.close()
    return took


async def _report(b: ReportBench, first: dt.date, last: dt.date) -> tuple[int, int, int]:
    """ExportReport split_summary as CSV: (CNY total amount_minor, legs, messages)."""
    import csv
    import io

    import grpc

    from clearing.v1 import report_pb2 as pb
    from clearing.v1 import report_pb2_grpc

    async with grpc.aio.insecure_channel(b.server_addr) as ch:
        stub = report_pb2_grpc.ReportServiceStub(ch)
        chunks, count = [], 0
        async for m in stub.ExportReport(pb.ExportReportRequest(
                report_name="split_summary", from_date=str(first), to_date=str(last),
                format=pb.REPORT_FORMAT_CSV), metadata=(("authorization", f"Bearer {b.key}"),),
                timeout=3600):
            chunks.append(m.chunk)
            count += 1
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    total = next(r for r in rows if r["line"] == "total")
    return int(total["amount_minor"]), int(total["leg_count"]), count


async def _raw(pool, platform_id: int, lo: dt.datetime, hi: dt.datetime) -> tuple[int, int]:
    from clearing.reports import sql

    q = sql.Query(platform_id)
    text = sql.split_legs_raw(q, "$1", [(lo, hi)])
    row = await pool.fetchrow(f"SELECT sum(amount_minor)::bigint AS a, sum(leg_count)::bigint"
                              f" AS n FROM ({text}) r", *q.args)
    return int(row["a"] or 0), int(row["n"] or 0)


async def _copy_rollup(pool, platform_id: int, src: dt.date, dst: dt.date) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for table in ("report_split_days", "report_account_days", "report_channel_days"):
            cols = [r["attname"] for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum", table)]
            rest = ", ".join(c for c in cols if c not in ("platform_id", "day"))
            await conn.execute(f"INSERT INTO {table} (platform_id, day, {rest})"
                               f" SELECT platform_id, $3::date, {rest} FROM {table}"
                               f" WHERE platform_id = $1 AND day = $2", platform_id, src, dst)
        await conn.execute(
            "INSERT INTO report_rollup_days SELECT platform_id, $3::date, time_zone, split_count,"
            " split_id_max, transfer_count, transfer_id_max, roll_count, rolled_at"
            " FROM report_rollup_days WHERE platform_id = $1 AND day = $2",
            platform_id, src, dst)


async def run(b: ReportBench) -> dict:
    import asyncpg

    from clearing.clock import Clock
    from clearing.limits import DEFAULT_TIME_ZONE
    from clearing.reports.period import day_start
    from clearing.reports.rollup import roll_day

    a = b.args
    zone = DEFAULT_TIME_ZONE
    today = dt.datetime.now(ZoneInfo(zone)).date()
    first = today - dt.timedelta(days=a.month_days + 1)
    month = [first + dt.timedelta(days=i) for i in range(a.month_days)]
    print(f"{PROG}: set-up (server, accounts, b2b, 2 template splits)", flush=True)
    s = await _setup(b)
    pid = s["platform_id"]
    print(f"{PROG}: generating {a.raw_days} day(s) of {a.splits} splits", flush=True)
    t0 = time.perf_counter()
    gen = await _generate(b, s, month[:a.raw_days], zone)
    gen_s = time.perf_counter() - t0
    pool = await asyncpg.create_pool(b.dsn, min_size=1, max_size=2, command_timeout=3600)
    res: dict = {"splits_per_day": a.splits, "month_days": a.month_days,
                 "raw_days": a.raw_days, "merchants": a.merchants, "repeats": a.repeats,
                 "raw_repeats": a.raw_repeats,
                 "generate_s": round(gen_s, 2), "generate_s_by_table": gen}
    try:
        day0 = month[0]
        lo, hi = day_start(day0, zone), day_start(day0 + dt.timedelta(days=1), zone)
        raw_day_s, (raw_amount, raw_legs) = await _timed(lambda: _raw(pool, pid, lo, hi),
                                                         a.raw_repeats)
        rep_raw_s, (amount, legs, msgs) = await _timed(lambda: _report(b, day0, day0),
                                                       a.raw_repeats)
        check = [("report day (raw) = raw day", (amount, legs) == (raw_amount, raw_legs))]
        t0 = time.perf_counter()
        rolled = await roll_day(pool, Clock(), pid, day0)
        roll_s = time.perf_counter() - t0
        check.append(("roll-up rolled the day's splits", rolled.split_count == a.splits))
        rep_rolled_s, (amount2, legs2, _) = await _timed(lambda: _report(b, day0, day0),
                                                         a.repeats)
        check.append(("report day (rolled) = raw day", (amount2, legs2) == (raw_amount, raw_legs)))
        for day in month[1:]:
            if day in month[:a.raw_days]:
                await roll_day(pool, Clock(), pid, day)
            else:
                await _copy_rollup(pool, pid, day0, day)
        rep_month_s, (m_amount, m_legs, m_msgs) = await _timed(
            lambda: _report(b, month[0], month[-1]), a.repeats)
        if a.raw_days == a.month_days:
            mlo, mhi = day_start(month[0], zone), day_start(month[-1] + dt.timedelta(days=1), zone)
            raw_month_s, (rm_amount, rm_legs) = await _timed(
                lambda: _raw(pool, pid, mlo, mhi), a.raw_repeats)
            estimated = False
        else:
            raw_month_s = raw_day_s * a.month_days
            rm_amount, rm_legs = raw_amount * a.month_days, raw_legs * a.month_days
            estimated = True
        check.append(("report month = raw month", (m_amount, m_legs) == (rm_amount, rm_legs)))
    finally:
        await pool.close()
    res.update({
        "raw_day_s": raw_day_s, "report_day_raw_s": rep_raw_s, "rollup_day_s": roll_s,
        "report_day_rolled_s": rep_rolled_s, "report_month_s": rep_month_s,
        "raw_month_s": raw_month_s, "raw_month_estimated": estimated,
        "day_total_minor": raw_amount, "day_legs": raw_legs, "month_total_minor": m_amount,
        "month_legs": m_legs, "report_day_messages": msgs, "report_month_messages": m_msgs,
        "ratio_raw_day_to_report_day_rolled": raw_day_s / rep_rolled_s,
        "ratio_raw_month_to_report_month": raw_month_s / rep_month_s,
        "checks": {name: ok for name, ok in check}})
    return res


def table(res: dict) -> str:
    est = " (estimate: days x raw day)" if res["raw_month_estimated"] else ""
    lines = [
        f"split summary, {res['splits_per_day']:,} splits a day ({res['day_legs']:,} legs), "
        f"month of {res['month_days']} days, {res['raw_days']} raw; median of "
        f"{res['raw_repeats']} (raw rows) and {res['repeats']} (rolled) timings",
        f"  raw aggregate, one day            {res['raw_day_s']:9.3f} s",
        f"  report, one day, not rolled       {res['report_day_raw_s']:9.3f} s",
        f"  roll-up of the day (once)         {res['rollup_day_s']:9.3f} s",
        f"  report, one day, rolled           {res['report_day_rolled_s']:9.3f} s"
        f"   raw / rolled = {res['ratio_raw_day_to_report_day_rolled']:,.0f}x",
        f"  raw aggregate, the month          {res['raw_month_s']:9.3f} s{est}",
        f"  report, the month, rolled         {res['report_month_s']:9.3f} s"
        f"   raw / rolled = {res['ratio_raw_month_to_report_month']:,.0f}x",
        f"  generating the raw rows           {res['generate_s']:9.1f} s",
    ]
    lines += [f"  check: {name}: {'ok' if ok else 'FAILED'}" for name, ok in res["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, out = begin(args.out)
    b = ReportBench(args)
    try:
        res, status = run_bounded(PROG, b, lambda: run(b), args.timeout)
    finally:
        b.cleanup()
    if status:
        return status
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    print(table(res))
    problems = [name for name, ok in res["checks"].items() if not ok]
    return finish(PROG, out, ("results.json",), problems)


if __name__ == "__main__":
    sys.exit(main())
