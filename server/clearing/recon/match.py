"""Matching a statement against the splits, in set-based SQL statements (no row of the
statement passes through Python): every line is classified against the split of its order,
the splits of the channel paid on the statement's day that no payment line names are
MISSING_IN_STATEMENT, the discrepancies are inserted, and the counts and sums per class
come back. docs/recon.md states the rules; they are, in order:

- DUPLICATE: a line whose (type, channel transaction id) an earlier line of the file has;
- MISSING_SPLIT: the platform has no split of the line's order;
- CURRENCY_MISMATCH: the line's currency is not the split's;
- AMOUNT_MISMATCH: a payment's amount is not the split's; a refund line's order has more
  refunded in this statement than the split has refunded;
- FEE_MISMATCH: a payment's channel fee is not the split's;
- MATCHED otherwise.

Funds against information: a line states `stated` (its settled amount, negative for a
refund); the splits say `info` for it: amount - channel fee of the split of a payment line
compared by amount (MATCHED, AMOUNT_MISMATCH, FEE_MISMATCH), the refund as stated for a
MATCHED refund line, nothing for the other classes; a MISSING_IN_STATEMENT split says its
amount - channel fee (in the statement's currency; 0 in another). A discrepancy's difference
is stated - info, so the run's statement total minus the splits' total is the sum of the
discrepancies' differences exactly (a MATCHED line's is 0: settled = amount - fee).

The plan, in three statements in the import's transaction, so that PostgreSQL's parallel
workers share the heavy part (`make bench-recon`, bench/README.md; PostgreSQL 15 runs no FULL
JOIN and no window function in parallel workers, so the one-statement form of round 3 used one
core while the other idled):
1. SQL_DUPLICATES: the later lines of a shared (type, channel transaction id), whole, into a
   temporary table. The 64-bit hashes of the key that more than one line has are found by a
   hash aggregate of the hashes alone (the lines are not sorted: a sort of 2,000,000 lines
   whole took 5 s of a 12 s match, 2026-12-08); only the lines with such a hash (the
   duplicates, and any collision) are then numbered exactly by (type, channel transaction
   id, line number). A file of one repeated key makes every line a candidate: one sort of
   them all, as before.
2. SQL_UNSURE: in parallel workers, every line joined to the day's split of its order (a
   parallel hash join; payment lines only) and every split of the day no payment line names
   (a parallel hash anti join: MISSING_IN_STATEMENT), keeping only what may not be MATCHED: a
   line is certainly MATCHED, duplicates aside, when it is a payment line whose split of the
   day has its currency, amount and fee (the same test as the classification below). Only
   those rows (the discrepancies, the refund lines, the lines with no split of the day) leave
   the workers, into a temporary table; SQL_TOTALS sums the statement in parallel too.
3. SQL_MATCH, in the server's backend alone, on those few rows: the duplicates put back
   (marked, in place of their unsure row if any), the refunded sums of the refund lines that
   are not duplicates, a line with no split of the day (a refund, a late or unknown order)
   looking its split up by the (platform_id, order_id) index, in a lateral subquery whose
   one-time filter skips every other line; then the classification, the INSERT of the
   discrepancies and the counts and sums per class.
A duplicate's split is looked up by its order (the one split of the order: the same the day's
join would give). The steps run at READ COMMITTED, each on its own snapshot (the one statement
of round 3 had one): a split committed between SQL_UNSURE and SQL_MATCH can be found by a
line's look-up without being among the day's splits read before. Each line still takes its
split's figures from one read, a MISSING_IN_STATEMENT split is one no payment line names
(the lines do not change), so no split is counted twice and the totals stay exact.

The classified rows are read once, by the INSERT of the discrepancies (round 3, issue 11):
the counts and sums per class come from the inserted rows (RETURNING) and the MATCHED row is
the statement's lines (SQL_TOTALS: count, amount and stated) minus the discrepancies' lines.
A MATCHED line's difference is 0 and its information equals what it states, since every
line's settled = amount - fee (checked on both import paths, and by a CHECK of the table)
and a MATCHED line's amount and fee are its split's.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from clearing.limits import RECON_MATCH_WORK_MEM_MB
from clearing.recon.model import DiscrepancyState, LineType, MatchClass

C = MatchClass
PAYMENT, REFUND = int(LineType.PAYMENT), int(LineType.REFUND)
SQL_ANALYZE = "ANALYZE recon_statement_lines (statement_id, line_type, order_id)"
# The BRIN index of the lines on statement_id (migration 0032) answers a page range it has
# not summarised as a candidate for any statement: summarised here, so that this statement's
# reads, and every later read of it, skip the other statements' pages (autovacuum may never
# run). The same lock as the ANALYZE.
SQL_SUMMARIZE = "SELECT brin_summarize_new_values('recon_statement_lines_statement_brin')"
# Run in the import's transaction before SQL_MATCH, so that its plan is sound whatever the
# size of the statement (measured with `make bench-recon`, bench/README.md):
# - ANALYZE (SQL_ANALYZE, last): the statement's lines were just COPYed in this transaction,
#   so the table's statistics know nothing of them (the planner took 2,000,000 lines for 759)
#   and the plan may join them as if they were a handful; ANALYZE samples this transaction's
#   own rows too. Of the columns the plans filter and join on (how many lines the statement
#   has, of each type, how many orders) and with a sample of 3,000 rows
#   (default_statistics_target 10, this transaction only): the 30,000-row sample of every
#   column took 1.5 to 2 s of a 2,000,000-line match on the loaded development machine,
#   this about 0.05 s. It holds a SHARE UPDATE EXCLUSIVE lock on
#   recon_statement_lines until the commit: two imports reach the match one after the other
#   (their COPYs still run together).
# - force_custom_plan (SET LOCAL: this transaction only): the pool caches prepared
#   statements, and from a statement's sixth execution PostgreSQL may choose a generic plan,
#   one for any statement id and day; the generic plan of SQL_MATCH joined the day's splits
#   to the lines by a nested loop over all of them (quadratic: 200,000 lines took over ten
#   minutes instead of 4 s).
# - work_mem (RECON_MATCH_WORK_MEM_MB) for the sort of the lines' keys and the hash of the
#   day's splits; jit off: the nested loop's estimated cost made PostgreSQL compile the statement
#   with inlining and optimisation, about 3 s of a 2,000,000-line match for nothing.
# - parallel_setup_cost 0: SQL_UNSURE and SQL_TOTALS read the whole statement and the day's
#   splits once each, in parallel workers (max_parallel_workers_per_gather, 2 by default),
#   and hand the leader a few rows; the default cost of starting workers (1,000) kept the
#   planner from them below a few hundred thousand lines. Workers see the lines this
#   transaction has COPYed (they share its snapshot).
SQL_BEFORE_MATCH = ("SET LOCAL plan_cache_mode = force_custom_plan",
                    f"SET LOCAL work_mem = '{RECON_MATCH_WORK_MEM_MB}MB'",
                    "SET LOCAL jit = off",
                    "SET LOCAL parallel_setup_cost = 0",
                    "SET LOCAL default_statistics_target = 10",
                    SQL_SUMMARIZE,
                    SQL_ANALYZE)

_DAY_SPLITS = """(
  SELECT s.split_id, s.order_id, s.channel_transaction_id, s.amount_minor, s.channel_fee_minor,
         s.currency_code, s.refunded_minor
  FROM splits s
  WHERE s.platform_id = $2 AND s.channel = $3
    AND (s.paid_time_ns >= $4 AND s.paid_time_ns < $5
         OR s.paid_time_ns IS NULL AND s.created_at >= $6 AND s.created_at < $7))"""
_LINE = ("line_number", "line_type", "channel_transaction_id", "order_id", "amount_minor",
         "channel_fee_minor", "settled_minor", "currency_code")
_SPLIT_OF_DAY = ("d_split_id", "d_order_id", "d_ctid", "d_amount", "d_fee", "d_currency",
                 "d_refunded")


def _cols(alias: str, names: tuple[str, ...] = _LINE) -> str:
    """`alias.name, ...` of the columns `names`."""
    return ", ".join(f"{alias}.{n}" for n in names)

# 1. The duplicates ($1 the statement): the later lines of a shared (type, channel
# transaction id), whole.
SQL_DUPLICATES = f"""/*recon:match*/
CREATE TEMPORARY TABLE recon_match_duplicates ON COMMIT DROP AS
WITH shared AS MATERIALIZED (
  SELECT hashtextextended(d.channel_transaction_id, d.line_type) AS h
  FROM recon_statement_lines d WHERE d.statement_id = $1
  GROUP BY 1 HAVING count(*) > 1)
SELECT {_cols('x')}
FROM (SELECT {_cols('c')},
             row_number() OVER (PARTITION BY c.line_type, c.channel_transaction_id COLLATE "C"
                                ORDER BY c.line_number) AS nth
      FROM recon_statement_lines c
      WHERE c.statement_id = $1
        AND hashtextextended(c.channel_transaction_id, c.line_type) IN (SELECT h FROM shared)) x
WHERE x.nth > 1
"""

# Around SQL_DUPLICATES, one process: a parallel aggregate of the hashes would hand the leader
# every partial group (the keys are nearly all distinct), and the window function runs in the
# leader anyway. The aggregate holds the hashes alone (8 bytes a line, 256 MB for 2,000,000
# lines at RECON_MATCH_WORK_MEM_MB x hash_mem_multiplier: no spill); the sort of round 4 held
# the lines whole and spilled 200 MB to disk (4.5 s for the step against 4.8 and 5.0,
# `make bench-recon BENCH_ARGS=--explain`, 2026-12-08).
SQL_ONE_PROCESS = "SET LOCAL max_parallel_workers_per_gather = 0"
# Before SQL_UNSURE: workers again (as many as configured), and no cost for the rows they hand
# the leader: the planner cannot tell that the filter keeps a few lines of millions, and at
# the default cost it joined the lines to the splits in one process.
SQL_IN_PARALLEL = ("SET LOCAL max_parallel_workers_per_gather TO DEFAULT",
                   "SET LOCAL parallel_tuple_cost = 0")

# 2. What may not be MATCHED ($1 the statement, $2 the platform, $3 the channel, $4 and $5
# the day in paid-time nanoseconds, $6 and $7 the day as instants): the lines, with the
# day's split of a payment line's order if any, but those certainly MATCHED (duplicates
# aside); and the splits of the day no payment line names (line_number NULL). Both halves
# run in parallel workers. A line's row carries only what its classification reads of the
# split (the split's order, transaction id and refunded sum are a MISSING_IN_STATEMENT
# row's; a refund line never joins a split here): the hash of the day's splits stays narrow.
SQL_UNSURE = f"""/*recon:match*/
CREATE TEMPORARY TABLE recon_match_unsure ON COMMIT DROP AS
SELECT {_cols('l')},
       sd.split_id AS d_split_id, NULL AS d_order_id, NULL AS d_ctid,
       sd.amount_minor AS d_amount, sd.channel_fee_minor AS d_fee,
       sd.currency_code AS d_currency, NULL::bigint AS d_refunded
FROM recon_statement_lines l
LEFT JOIN {_DAY_SPLITS} sd ON sd.order_id = l.order_id AND l.line_type = {PAYMENT}
WHERE l.statement_id = $1
  AND NOT (sd.split_id IS NOT NULL AND l.currency_code = sd.currency_code
           AND l.amount_minor = sd.amount_minor AND l.channel_fee_minor = sd.channel_fee_minor)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       sd.split_id, sd.order_id, sd.channel_transaction_id, sd.amount_minor,
       sd.channel_fee_minor, sd.currency_code, sd.refunded_minor
FROM {_DAY_SPLITS} sd
WHERE NOT EXISTS (SELECT 1 FROM recon_statement_lines x
                  WHERE x.statement_id = $1 AND x.line_type = {PAYMENT}
                    AND x.order_id = sd.order_id)
"""

# The statement's lines ($1), summed (for MATCHED: these minus the discrepancies' lines).
SQL_TOTALS = f"""/*recon:match*/
SELECT count(*) AS line_count, coalesce(sum(x.amount_minor), 0) AS amount_minor,
       coalesce(sum(CASE WHEN x.line_type = {PAYMENT} THEN x.settled_minor
                         ELSE -x.settled_minor END), 0) AS stated_minor
FROM recon_statement_lines x WHERE x.statement_id = $1
"""

# 3. The classification of the unsure rows and the duplicates, the discrepancies inserted,
# the counts and sums per class ($1 the platform, $2 the run, $3 the statement's currency,
# $4 now, $5 to $7 SQL_TOTALS's line count, amount and stated).
SQL_MATCH = f"""/*recon:match*/
WITH l AS (
  SELECT {_cols('u')}, 1 AS nth,
         {_cols('u', _SPLIT_OF_DAY)}
  FROM recon_match_unsure u
  WHERE u.line_number IS NULL OR NOT EXISTS (
      SELECT 1 FROM recon_match_duplicates x WHERE x.line_number = u.line_number)
  UNION ALL
  SELECT {_cols('x')}, 2,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM recon_match_duplicates x
), rf AS (
  SELECT r.order_id, sum(r.amount_minor) AS refunds_minor
  FROM l r WHERE r.line_type = {REFUND} AND r.nth = 1
  GROUP BY r.order_id
), j AS (
  SELECT l.*, rf.refunds_minor,
         coalesce(l.d_split_id, s2.split_id) AS split_id,
         coalesce(l.d_amount, s2.amount_minor) AS s_amount,
         coalesce(l.d_fee, s2.channel_fee_minor) AS s_fee,
         coalesce(l.d_currency, s2.currency_code) AS s_currency,
         coalesce(l.d_refunded, s2.refunded_minor) AS s_refunded
  FROM l
  LEFT JOIN rf ON l.line_type = {REFUND} AND rf.order_id = l.order_id
  LEFT JOIN LATERAL (
    SELECT s.split_id, s.amount_minor, s.channel_fee_minor, s.currency_code, s.refunded_minor
    FROM splits s
    WHERE l.d_split_id IS NULL AND l.line_number IS NOT NULL
      AND s.platform_id = $1 AND s.order_id = l.order_id
    OFFSET 0) s2 ON true
), c AS (
  SELECT j.*, CASE
      WHEN j.line_number IS NULL THEN {C.MISSING_IN_STATEMENT:d}
      WHEN j.nth > 1 THEN {C.DUPLICATE:d}
      WHEN j.split_id IS NULL THEN {C.MISSING_SPLIT:d}
      WHEN j.currency_code <> j.s_currency THEN {C.CURRENCY_MISMATCH:d}
      WHEN j.line_type = {PAYMENT} AND j.amount_minor <> j.s_amount THEN {C.AMOUNT_MISMATCH:d}
      WHEN j.line_type = {PAYMENT} AND j.channel_fee_minor <> j.s_fee THEN {C.FEE_MISMATCH:d}
      WHEN j.line_type = {REFUND} AND j.refunds_minor > j.s_refunded THEN {C.AMOUNT_MISMATCH:d}
      ELSE {C.MATCHED:d} END AS cls
  FROM j
), items AS (
  SELECT c.cls, coalesce(c.order_id, c.d_order_id) AS order_id,
         coalesce(c.channel_transaction_id, c.d_ctid) AS channel_transaction_id,
         coalesce(c.line_number, 0) AS line_number, coalesce(c.line_type, {PAYMENT}) AS line_type,
         coalesce(c.split_id, 0) AS split_id, coalesce(c.amount_minor, 0) AS st_amount,
         coalesce(c.channel_fee_minor, 0) AS st_fee, coalesce(c.currency_code, '') AS st_currency,
         coalesce(CASE WHEN c.line_type = {REFUND} THEN c.s_refunded ELSE c.s_amount END, 0)
             AS sp_amount,
         coalesce(c.s_fee, 0) AS sp_fee, coalesce(c.s_currency, '') AS sp_currency,
         CASE WHEN c.line_number IS NULL THEN 0
              WHEN c.line_type = {PAYMENT} THEN c.settled_minor ELSE -c.settled_minor END
             AS stated,
         CASE WHEN c.line_number IS NULL
                  THEN CASE WHEN c.d_currency = $3 THEN c.d_amount - c.d_fee ELSE 0 END
              WHEN c.cls IN ({C.DUPLICATE:d}, {C.MISSING_SPLIT:d}, {C.CURRENCY_MISMATCH:d})
                  THEN 0
              WHEN c.line_type = {PAYMENT} THEN c.s_amount - c.s_fee
              WHEN c.cls = {C.MATCHED:d} THEN -c.settled_minor
              ELSE 0 END AS info
  FROM c
), ins AS (
  INSERT INTO recon_discrepancies (
      platform_id, run_id, class, state, order_id, channel_transaction_id, line_number,
      line_type, split_id, statement_amount_minor, statement_fee_minor,
      statement_currency_code, split_amount_minor, split_fee_minor, split_currency_code,
      difference_minor, created_at)
  SELECT $1, $2, i.cls, {DiscrepancyState.OPEN:d}, i.order_id, i.channel_transaction_id,
         i.line_number, i.line_type, i.split_id, i.st_amount, i.st_fee, i.st_currency,
         i.sp_amount, i.sp_fee, i.sp_currency, i.stated - i.info, $4
  FROM items i WHERE i.cls <> {C.MATCHED:d}
  ORDER BY i.line_number = 0, i.line_number, i.split_id
  RETURNING class, line_number, line_type, statement_amount_minor, statement_fee_minor,
            split_amount_minor, difference_minor
), d AS (
  SELECT n.class AS cls, count(*) AS item_count,
         sum(CASE WHEN n.class = {C.MISSING_IN_STATEMENT:d} THEN n.split_amount_minor
                  ELSE n.statement_amount_minor END) AS amount_minor,
         sum(n.difference_minor) AS difference_minor,
         sum(CASE WHEN n.line_number = 0 THEN 0
                  WHEN n.line_type = {PAYMENT} THEN n.statement_amount_minor - n.statement_fee_minor
                  ELSE n.statement_fee_minor - n.statement_amount_minor END) AS stated_minor,
         count(*) FILTER (WHERE n.line_number <> 0) AS line_count,
         coalesce(sum(n.statement_amount_minor) FILTER (WHERE n.line_number <> 0), 0)
             AS line_amount_minor
  FROM ins n GROUP BY n.class
), t AS (
  SELECT $5::bigint AS line_count, $6::numeric AS amount_minor, $7::numeric AS stated_minor
), m AS (
  SELECT {C.MATCHED:d} AS cls, t.line_count - coalesce(sum(d.line_count), 0) AS item_count,
         t.amount_minor - coalesce(sum(d.line_amount_minor), 0) AS amount_minor,
         0 AS difference_minor, t.stated_minor - coalesce(sum(d.stated_minor), 0) AS stated_minor
  FROM t LEFT JOIN d ON true GROUP BY t.line_count, t.amount_minor, t.stated_minor
), a AS (
  SELECT d.cls, d.item_count, d.amount_minor, d.difference_minor, d.stated_minor FROM d
  UNION ALL
  SELECT m.cls, m.item_count, m.amount_minor, m.difference_minor, m.stated_minor FROM m
  WHERE m.item_count > 0
)
SELECT a.cls, a.item_count::bigint AS item_count, a.amount_minor::bigint AS amount_minor,
       a.difference_minor::bigint AS difference_minor, a.stated_minor::bigint AS stated_minor,
       (a.stated_minor - a.difference_minor)::bigint AS info_minor,
       (SELECT coalesce(sum(d.item_count), 0) FROM d)::bigint AS inserted
FROM a ORDER BY a.cls
"""


async def match_statement(conn: asyncpg.Connection, statement_id: int, platform_id: int,
                          run_id: int, channel: str, day: tuple[int, int],
                          day_at: tuple[dt.datetime, dt.datetime], currency_code: str,
                          now: dt.datetime, timeout: float) -> list[asyncpg.Record]:
    """Match the statement's lines (in this transaction, after SQL_BEFORE_MATCH): the
    discrepancies inserted into run `run_id`; a row per class (SQL_MATCH's). `day`: the
    statement's day in paid-time nanoseconds, `day_at` as instants."""
    await conn.execute(SQL_ONE_PROCESS)
    await conn.execute(SQL_DUPLICATES, statement_id, timeout=timeout)
    for sql in SQL_IN_PARALLEL:
        await conn.execute(sql)
    await conn.execute(SQL_UNSURE, statement_id, platform_id, channel, *day, *day_at,
                       timeout=timeout)
    totals = await conn.fetchrow(SQL_TOTALS, statement_id, timeout=timeout)
    return await conn.fetch(SQL_MATCH, platform_id, run_id, currency_code, now,
                            totals["line_count"], totals["amount_minor"],
                            totals["stated_minor"], timeout=timeout)
