"""The journal partitioned by month against the journal as it is, measured in one run
(`make bench-partitions`; docs/scaling.md, "The journal by month").

Builds, in a database of its own (`clearing_bench_parts_<random>`, dropped at the end, also
on failure or Ctrl-C), two tables with the columns of `transfers`:

- `journal_flat`: as the real one (primary key transfer_id, indexes (debit_account_id,
  transfer_id) and (credit_account_id, transfer_id));
- `journal_parted`: PARTITION BY RANGE (created_at), one partition a month created ahead of
  time as a job would, primary key (transfer_id, created_at), the same two indexes on every
  partition (declared once on the parent);

with the same rows: `--months` months of `--rows-per-month` rows ending with the current
month, in batches of 1000 rows whose transfer ids are batch_id * 65536 + position, as the
writer makes them; debits from `--platforms` custodial accounts, credits spread over
`--accounts` receivers. Then, alternating between the two tables so that both see the same
machine:

- insert: `--insert-statements` statements of `--insert-rows` rows (the writer's INSERT ...
  SELECT FROM unnest, one committed transaction each) into the current month;
- statement: an account's entries of one past month, newest first, in pages of
  `--page-size`, every page (the SQL of ListEntries with the month's bounds: created_at, which
  prunes the partitions, and the month's transfer ids, which bound the index scan of the flat
  table), for `--statements` random (receiver, month) pairs;
- latest page: ListEntries as it is today (no month bound), first page, same receivers;
- point reads: rows by transfer id alone (the idempotency probe and GetSplit's reads), 10
  random ids a statement.

Prints the figures and the ratio partitioned / flat. Exit status 0 when the run completed
(whatever the figures), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import statistics
import sys
import time

import asyncpg

from clearing.ledger.batch_sql import int_array

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH_ROWS = 1000                    # rows per generated journal batch
BATCH_SPAN = 65_536                  # clearing.limits.BATCH_SPAN
RECEIVER_FIRST_ID = 1_000_000        # receivers' account ids start here
SEED = 20261207

COLUMNS = """
    transfer_id        bigint NOT NULL,
    platform_id        bigint NOT NULL,
    batch_id           bigint NOT NULL,
    request_id         text NOT NULL,
    debit_account_id   bigint NOT NULL,
    credit_account_id  bigint NOT NULL,
    amount             bigint NOT NULL CHECK (amount > 0),
    currency_code      char(3) NOT NULL,
    mode               smallint NOT NULL CHECK (mode BETWEEN 1 AND 4),
    pending_id         bigint NOT NULL DEFAULT 0,
    pending_remaining  bigint NOT NULL DEFAULT 0,
    pending_state      smallint NOT NULL DEFAULT 0,
    memo               text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
"""
NAMES = ("transfer_id, platform_id, batch_id, request_id, debit_account_id, credit_account_id,"
         " amount, currency_code, mode, pending_id, pending_remaining, pending_state, memo,"
         " created_at")

# Row g of the run (0-based, in time order): batch g / 1000 + 1, position g % 1000.
GENERATE = """
INSERT INTO journal_parted ({names})
SELECT (g / {batch} + 1) * {span} + g % {batch}, 1 + g % $3, g / {batch} + 1,
       lpad(g::text, 36, '0'), 1 + g % $3, {first} + (g * 7919) % $4, 1 + (g * 31) % 100000,
       'CNY', 1, 0, 0, 0, '', $5::timestamptz + (g - $1) * $6::interval
FROM generate_series($1::bigint, $2::bigint - 1) AS g
"""

INSERT = """
INSERT INTO {table} ({names})
SELECT u.id, 1, u.b, u.r, u.d, u.c, u.a, 'CNY', 1, 0, 0, 0, '', $1
FROM unnest($2::text::bigint[], $3::text::bigint[], $4::text[], $5::text::bigint[],
            $6::text::bigint[], $7::text::bigint[]) AS u(id, b, r, d, c, a)
"""

# ListEntries (clearing/ledger/store.py) with a month's bounds.
STATEMENT = """
SELECT * FROM (
  (SELECT {names}, 1 AS side FROM {table}
   WHERE debit_account_id = $1 AND transfer_id < $2 AND transfer_id >= $3
     AND created_at >= $4 AND created_at < $5 ORDER BY transfer_id DESC LIMIT $6)
  UNION ALL
  (SELECT {names}, 2 AS side FROM {table}
   WHERE credit_account_id = $1 AND transfer_id < $2 AND transfer_id >= $3
     AND created_at >= $4 AND created_at < $5 ORDER BY transfer_id DESC LIMIT $6)
) e ORDER BY transfer_id DESC LIMIT $6
"""
# ListEntries as it is (no month bound).
LATEST = """
SELECT * FROM (
  (SELECT {names}, 1 AS side FROM {table}
   WHERE debit_account_id = $1 AND transfer_id < $2 ORDER BY transfer_id DESC LIMIT $3)
  UNION ALL
  (SELECT {names}, 2 AS side FROM {table}
   WHERE credit_account_id = $1 AND transfer_id < $2 ORDER BY transfer_id DESC LIMIT $3)
) e ORDER BY transfer_id DESC LIMIT $3
"""
POINT = "SELECT {names} FROM {table} WHERE transfer_id = ANY($1::bigint[])"
TABLES = ("journal_flat", "journal_parted")
PAGES_MAX = 10_000                   # pages of one statement read (a bound, never reached)


def _next_month(d: dt.datetime) -> dt.datetime:
    return d.replace(year=d.year + 1, month=1) if d.month == 12 else d.replace(month=d.month + 1)


def transfer_id(g: int) -> int:
    return (g // BATCH_ROWS + 1) * BATCH_SPAN + g % BATCH_ROWS


def partition_sql(start: dt.datetime) -> str:
    """What the partition job runs for a month, ahead of time."""
    return (f"CREATE TABLE journal_parted_{start:%Y%m} PARTITION OF journal_parted"
            f" FOR VALUES FROM ('{start.isoformat()}') TO ('{_next_month(start).isoformat()}')")


class Plan:
    """The generated journal: month m holds rows [m * rows_per_month, (m + 1) * ...)."""

    def __init__(self, args: argparse.Namespace, now: dt.datetime) -> None:
        self.args = args
        # months + 1 starts (the last is the month after the current one); the current
        # month is the last of `months`.
        starts = [dt.datetime(now.year, now.month, 1, tzinfo=dt.timezone.utc)]
        for _ in range(args.months - 1):
            d = starts[0]
            starts.insert(0, d.replace(year=d.year - 1, month=12) if d.month == 1
                          else d.replace(month=d.month - 1))
        self.starts = starts + [_next_month(starts[-1])]
        self.rows = args.months * args.rows_per_month

    def first_row(self, month: int) -> int:
        return month * self.args.rows_per_month

    def row_gap(self) -> dt.timedelta:
        """Time between two generated rows of a month: they fill its first 27 days, which
        every month has."""
        return dt.timedelta(days=27) / self.args.rows_per_month


async def build(conn: asyncpg.Connection, plan: Plan, say) -> dict:
    args = plan.args
    await conn.execute(f"CREATE TABLE journal_parted ({COLUMNS}) PARTITION BY RANGE (created_at)")
    for start in plan.starts:                 # and next month's, ahead of time
        await conn.execute(partition_sql(start))
    t0 = time.perf_counter()
    for m in range(args.months):
        first = plan.first_row(m)
        await conn.execute(GENERATE.format(names=NAMES, batch=BATCH_ROWS, span=BATCH_SPAN,
                                           first=RECEIVER_FIRST_ID),
                           first, first + args.rows_per_month, args.platforms, args.accounts,
                           plan.starts[m], plan.row_gap())
    say(f"generated {plan.rows:,} rows in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    await conn.execute(f"CREATE TABLE journal_flat ({COLUMNS})")
    await conn.execute("INSERT INTO journal_flat SELECT * FROM journal_parted")
    say(f"copied to journal_flat in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    for table in TABLES:
        key = "transfer_id" if table == "journal_flat" else "transfer_id, created_at"
        await conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
        await conn.execute(f"CREATE INDEX ON {table} (debit_account_id, transfer_id)")
        await conn.execute(f"CREATE INDEX ON {table} (credit_account_id, transfer_id)")
        await conn.execute(f"VACUUM ANALYZE {table}")
    await conn.execute("CHECKPOINT")
    say(f"indexed, analyzed in {time.perf_counter() - t0:.1f} s")
    sizes = {t: await conn.fetchval(  # a table that is not partitioned has no tree
        "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree($1)),"
        " pg_total_relation_size($1))", t) for t in TABLES}
    return {"rows": plan.rows, "bytes": sizes,
            "partitions": await conn.fetchval(
                "SELECT count(*) FROM pg_partition_tree('journal_parted') WHERE isleaf")}


async def measure_inserts(conn, plan: Plan, now: dt.datetime) -> dict[str, list[float]]:
    """Alternating statements into each table, rows of the current month after the
    generated ones (the writer's batches)."""
    args = plan.args
    rng = random.Random(SEED)
    times: dict[str, list[float]] = {t: [] for t in TABLES}
    next_row = plan.rows
    for i in range(args.insert_statements * 2):
        table = TABLES[i % 2]
        rows = range(next_row, next_row + args.insert_rows)
        next_row += args.insert_rows
        ids = [transfer_id(g) for g in rows]
        params = (now, int_array(ids), int_array(g // BATCH_ROWS + 1 for g in rows),
                  [f"{g:036d}" for g in rows],
                  int_array(1 + g % args.platforms for g in rows),
                  int_array(RECEIVER_FIRST_ID + rng.randrange(args.accounts) for _ in rows),
                  int_array(rng.randrange(1, 100_000) for _ in rows))
        sql = INSERT.format(table=table, names=NAMES)
        t0 = time.perf_counter()
        await conn.execute(sql, *params)
        times[table].append(time.perf_counter() - t0)
    return times


def pairs_of(plan: Plan) -> list[tuple[int, int]]:
    """(receiver, month) of every statement read: past months only (the current one is
    still being written)."""
    rng = random.Random(SEED + 1)
    return [(RECEIVER_FIRST_ID + rng.randrange(plan.args.accounts),
             rng.randrange(plan.args.months - 1)) for _ in range(plan.args.statements)]


async def read_statement(conn, table: str, plan: Plan, account: int, month: int,
                         *, pages_max: int) -> list[float]:
    """The time of each page of `account`'s statement of `month` (at most `pages_max`)."""
    size = plan.args.page_size
    lo_id, hi_id = transfer_id(plan.first_row(month)), transfer_id(plan.first_row(month + 1))
    sql = STATEMENT.format(table=table, names=NAMES)
    times, before = [], hi_id
    while len(times) < pages_max:
        t0 = time.perf_counter()
        rows = await conn.fetch(sql, account, before, lo_id, plan.starts[month],
                                plan.starts[month + 1], size + 1)
        times.append(time.perf_counter() - t0)
        if len(rows) <= size:
            break
        before = rows[size - 1]["transfer_id"]
    return times


async def measure_reads(conn, plan: Plan) -> dict[str, dict[str, list[float]]]:
    """Custom plans (the connection's plan_cache_mode): every page of every statement, the
    latest page, point reads; the two tables in turn."""
    rng = random.Random(SEED + 2)
    out: dict[str, dict[str, list[float]]] = {k: {t: [] for t in TABLES} for k in
                                              ("statement", "page", "latest", "point")}
    for account, month in pairs_of(plan):
        for table in TABLES:
            pages = await read_statement(conn, table, plan, account, month,
                                         pages_max=PAGES_MAX)
            out["page"][table] += pages
            out["statement"][table].append(sum(pages))
            t0 = time.perf_counter()
            await conn.fetch(LATEST.format(table=table, names=NAMES), account, 2 ** 63 - 1,
                             plan.args.page_size + 1)
            out["latest"][table].append(time.perf_counter() - t0)
            ids = [transfer_id(rng.randrange(plan.rows)) for _ in range(10)]
            t0 = time.perf_counter()
            got = await conn.fetch(POINT.format(table=table, names=NAMES), ids)
            out["point"][table].append(time.perf_counter() - t0)
            if len(got) != len(set(ids)):
                raise RuntimeError(f"{table}: point read found {len(got)} of {len(ids)} rows")
    counts = {t: len(out["page"][t]) for t in TABLES}
    if counts["journal_flat"] != counts["journal_parted"]:
        raise RuntimeError(f"the tables' statements differ in pages: {counts}")
    out["pages"] = counts  # type: ignore[assignment]
    return out


async def measure_generic(conn, plan: Plan) -> dict[str, list[float]]:
    """The first page of the first `--generic-statements` statements under a generic plan
    (what a prepared statement gets after five runs when the planner prefers it)."""
    out: dict[str, list[float]] = {t: [] for t in TABLES}
    for account, month in pairs_of(plan)[:plan.args.generic_statements]:
        for table in TABLES:
            out[table] += await read_statement(conn, table, plan, account, month, pages_max=1)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def figures(build_info: dict, inserts: dict, reads: dict, generic: dict,
            args: argparse.Namespace) -> list:
    """(figure, flat, partitioned, ratio partitioned/flat, unit) rows."""
    out = []
    rate = {t: args.insert_rows * len(v) / sum(v) for t, v in inserts.items()}
    out.append((f"insert, {args.insert_rows} rows a statement, current month",
                rate["journal_flat"], rate["journal_parted"], "rows/s"))
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        out.append((f"insert statement {name}", *(pct(inserts[t], q) * 1e3 for t in TABLES),
                    "ms"))
    for key, label in (("statement", "statement of one month, all pages"),
                       ("page", f"statement page ({args.page_size} rows)"),
                       ("latest", "ListEntries latest page, no month bound"),
                       ("point", "point read, 10 rows by transfer_id")):
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            out.append((f"{label} {name}", *(pct(reads[key][t], q) * 1e3 for t in TABLES),
                        "ms"))
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        out.append((f"statement page, generic plan {name}",
                    *(pct(generic[t], q) * 1e3 for t in TABLES), "ms"))
    return [(f, a, b, b / a if a else float("nan"), u) for f, a, b, u in out]


def table_text(rows: list, build_info: dict, reads: dict, args) -> str:
    gib = {t: build_info["bytes"][t] / 2 ** 30 for t in TABLES}
    lines = [f"journal: {build_info['rows']:,} rows over {args.months} months"
             f" ({build_info['partitions']} partitions, one ahead); flat {gib['journal_flat']:.2f}"
             f" GiB, partitioned {gib['journal_parted']:.2f} GiB with indexes;"
             f" {args.statements} statements ({reads['pages']['journal_flat']} pages),"
             f" {args.insert_statements} insert statements a table",
             "",
             f"| {'figure':<52} | {'flat':>10} | {'partitioned':>11} | {'ratio':>6} | unit   |",
             f"|{'-' * 54}|{'-' * 11}:|{'-' * 12}:|{'-' * 7}:|--------|"]
    for figure, flat, parted, ratio, unit in rows:
        fmt = (lambda v: f"{v:,.0f}") if unit == "rows/s" else (lambda v: f"{v:.2f}")
        lines.append(f"| {figure:<52} | {fmt(flat):>10} | {fmt(parted):>11} | {ratio:>6.2f} |"
                     f" {unit:<6} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    admin = args.admin_dsn
    name = f"clearing_bench_parts_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.quiet else (
        lambda msg: None)
    try:
        head, _, tail = admin.partition("?")
        dsn = head.rsplit("/", 1)[0] + "/" + name + ("?" + tail if tail else "")
        conn = await asyncpg.connect(dsn, command_timeout=args.timeout_s)
        try:
            await conn.execute("SET maintenance_work_mem = '512MB'")
            now = dt.datetime.now(dt.timezone.utc)
            plan = Plan(args, now)
            say(f"database {name}: building {plan.rows:,} rows x 2 tables")
            info = await build(conn, plan, say)
            await conn.execute("RESET maintenance_work_mem")
            say("measuring")
            await conn.execute("SET plan_cache_mode = force_custom_plan")
            reads = await measure_reads(conn, plan)
            inserts = await measure_inserts(conn, plan, now)
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            generic = await measure_generic(conn, plan)
            rows = figures(info, inserts, reads, generic, args)
            text = table_text(rows, info, reads, args)
            print(text)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"build": info, "figures": rows, "pages": reads["pages"],
                               "args": vars(args)}, f, indent=2, default=str)
        finally:
            await conn.close()
    finally:
        if args.keep:
            say(f"kept database {name}: drop it by hand")
        else:
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.journal_partitions",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--months", type=int, default=24, help="months of journal (24)")
    p.add_argument("--rows-per-month", type=int, default=500_000,
                   help="journal rows a month (500,000: 12 million rows in all)")
    p.add_argument("--platforms", type=int, default=100, help="custodial accounts (100)")
    p.add_argument("--accounts", type=int, default=2_000,
                   help="receivers credited (2,000: 250 entries a month each by default)")
    p.add_argument("--insert-rows", type=int, default=1000, help="rows a statement (1000)")
    p.add_argument("--insert-statements", type=int, default=200,
                   help="insert statements a table (200)")
    p.add_argument("--statements", type=int, default=200,
                   help="(receiver, month) statements read from each table (200)")
    p.add_argument("--generic-statements", type=int, default=20,
                   help="statements whose first page is also read under a generic plan (20)")
    p.add_argument("--page-size", type=int, default=100, help="rows a page (100)")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per SQL command (3600)")
    p.add_argument("--admin-dsn", default=os.environ.get("CLEARING_BENCH_DATABASE_URL")
                   or LOCAL_PG, help="creates and drops the run's database")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--keep", action="store_true",
                   help="keep the database (to look at plans); drop it by hand")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.months < 2 or args.rows_per_month < BATCH_ROWS or args.rows_per_month % BATCH_ROWS:
        p.error("--months >= 2 and --rows-per-month a multiple of 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
