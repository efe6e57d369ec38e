"""Matching a statement against the splits, in one set-based SQL statement (no row of the
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

The plan, in passes (`make bench-recon`, bench/README.md): for DUPLICATE the lines are
sorted in memory by a 64-bit hash of (type, channel transaction id), a cheaper key than the
text; only the lines whose hash another line shares (the duplicates, and any collision) are
then numbered exactly by (type, channel transaction id, line number), and the later lines'
numbers hash-joined to every line (the sort of whole lines spilled past work_mem; a hash
aggregate of the keys and a sort by the text key measured slower); the refund lines alone give
the refunded sums; the day's splits of the channel are read once, FULL JOINed to the payment
lines (a split no payment line names is MISSING_IN_STATEMENT); a line with no split of the
day (a refund, a late or unknown order) looks its split up by the (platform_id, order_id)
index, in a lateral subquery whose one-time filter skips every other line.

The classified lines are read once, by the INSERT of the discrepancies (round 3, issue 11):
the counts and sums per class come from the inserted rows (RETURNING) and the MATCHED row is
the statement's lines (one scan of count, amount and stated) minus the discrepancies' lines.
Aggregating the classified lines beside the INSERT made PostgreSQL materialise all 2,000,000
of them in a CTE (spilled to a temporary file past work_mem) and read them twice. A MATCHED
line's difference is 0 and its information equals what it states, since every line's
settled = amount - fee (checked on both import paths) and a MATCHED line's amount and fee are
its split's.
"""

from __future__ import annotations

from clearing.limits import RECON_MATCH_WORK_MEM_MB
from clearing.recon.model import DiscrepancyState, LineType, MatchClass

C = MatchClass
PAYMENT, REFUND = int(LineType.PAYMENT), int(LineType.REFUND)
# The paid time of a split: the order's paid time as recorded, else when it was split.
_SPLIT_PAID_IN_DAY = """
      s.platform_id = $2 AND s.channel = $4
  AND (s.paid_time_ns >= $5 AND s.paid_time_ns < $6
       OR s.paid_time_ns IS NULL AND s.created_at >= $7 AND s.created_at < $8)
"""

# Run in the import's transaction before SQL_MATCH, so that its plan is sound whatever the
# size of the statement (measured with `make bench-recon`, bench/README.md):
# - ANALYZE: the statement's lines were just COPYed in this transaction, so the table's
#   statistics know nothing of them (the planner took 2,000,000 lines for 759) and the plan
#   may join them as if they were a handful; ANALYZE samples this transaction's own rows too.
#   It holds a SHARE UPDATE EXCLUSIVE lock on recon_statement_lines until the commit: two
#   imports reach the match one after the other (their COPYs still run together).
# - force_custom_plan (SET LOCAL: this transaction only): the pool caches prepared
#   statements, and from a statement's sixth execution PostgreSQL may choose a generic plan,
#   one for any statement id and day; the generic plan of SQL_MATCH joined the day's splits
#   to the lines by a nested loop over all of them (quadratic: 200,000 lines took over ten
#   minutes instead of 4 s).
# - work_mem (RECON_MATCH_WORK_MEM_MB) for the sort of the lines' keys and the hash of the
#   day's splits; jit off: the nested loop's estimated cost made PostgreSQL compile the statement
#   with inlining and optimisation, about 3 s of a 2,000,000-line match for nothing.
SQL_BEFORE_MATCH = ("ANALYZE recon_statement_lines",
                    "SET LOCAL plan_cache_mode = force_custom_plan",
                    f"SET LOCAL work_mem = '{RECON_MATCH_WORK_MEM_MB}MB'",
                    "SET LOCAL jit = off")

SQL_MATCH = f"""/*recon:match*/
WITH rf AS (
  SELECT r.order_id, sum(r.amount_minor) AS refunds_minor
  FROM (SELECT x.order_id, x.amount_minor,
               row_number() OVER (PARTITION BY x.channel_transaction_id COLLATE "C"
                                  ORDER BY x.line_number) AS nth
        FROM recon_statement_lines x
        WHERE x.statement_id = $1 AND x.line_type = {REFUND}) r
  WHERE r.nth = 1
  GROUP BY r.order_id
), dup AS (
  SELECT x.line_number
  FROM (SELECT c.line_number,
               row_number() OVER (PARTITION BY c.line_type, c.channel_transaction_id COLLATE "C"
                                  ORDER BY c.line_number) AS nth
        FROM (SELECT d.line_number, d.line_type, d.channel_transaction_id,
                     count(*) OVER (PARTITION BY hashtextextended(d.channel_transaction_id,
                                                                  d.line_type)) AS same_hash
              FROM recon_statement_lines d WHERE d.statement_id = $1) c
        WHERE c.same_hash > 1) x
  WHERE x.nth > 1
), l AS (
  SELECT l.line_number, l.line_type, l.channel_transaction_id, l.order_id, l.amount_minor,
         l.channel_fee_minor, l.settled_minor, l.currency_code,
         1 + (dp.line_number IS NOT NULL)::integer AS nth
  FROM recon_statement_lines l LEFT JOIN dup dp ON dp.line_number = l.line_number
  WHERE l.statement_id = $1
), sd AS (
  SELECT s.split_id, s.order_id, s.channel_transaction_id, s.amount_minor, s.channel_fee_minor,
         s.currency_code, s.refunded_minor
  FROM splits s WHERE {_SPLIT_PAID_IN_DAY}
), j AS (
  SELECT l.*, rf.refunds_minor, sd.split_id AS d_split_id, sd.order_id AS d_order_id,
         sd.channel_transaction_id AS d_ctid, sd.amount_minor AS d_amount,
         sd.channel_fee_minor AS d_fee, sd.currency_code AS d_currency,
         coalesce(sd.split_id, s2.split_id) AS split_id,
         coalesce(sd.amount_minor, s2.amount_minor) AS s_amount,
         coalesce(sd.channel_fee_minor, s2.channel_fee_minor) AS s_fee,
         coalesce(sd.currency_code, s2.currency_code) AS s_currency,
         coalesce(sd.refunded_minor, s2.refunded_minor) AS s_refunded
  FROM l
  FULL JOIN sd ON sd.order_id = CASE WHEN l.line_type = {PAYMENT} THEN l.order_id END
  LEFT JOIN rf ON l.line_type = {REFUND} AND rf.order_id = l.order_id
  LEFT JOIN LATERAL (
    SELECT s.split_id, s.amount_minor, s.channel_fee_minor, s.currency_code, s.refunded_minor
    FROM splits s
    WHERE sd.split_id IS NULL AND l.line_number IS NOT NULL
      AND s.platform_id = $2 AND s.order_id = l.order_id
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
                  THEN CASE WHEN c.d_currency = $9 THEN c.d_amount - c.d_fee ELSE 0 END
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
  SELECT $2, $3, i.cls, {DiscrepancyState.OPEN:d}, i.order_id, i.channel_transaction_id,
         i.line_number, i.line_type, i.split_id, i.st_amount, i.st_fee, i.st_currency,
         i.sp_amount, i.sp_fee, i.sp_currency, i.stated - i.info, $10
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
  SELECT count(*) AS line_count, coalesce(sum(x.amount_minor), 0) AS amount_minor,
         coalesce(sum(CASE WHEN x.line_type = {PAYMENT} THEN x.settled_minor
                           ELSE -x.settled_minor END), 0) AS stated_minor
  FROM recon_statement_lines x WHERE x.statement_id = $1
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
