"""The 7x24 sweep's checks, each one set-based SQL statement over a batch of items taken in
(updated_at, id) order after the watermark ($1, $2) and before the settle limit ($3), at
most $4 of them. Each statement inserts a discrepancy per item found wrong (one per class
and item while it is OPEN: ON CONFLICT DO NOTHING) with every problem in its description,
and returns the batch's last (updated_at, id), the items checked, the items wrong and the
discrepancies inserted (their count and ids: the sweep writes their discrepancy.opened events,
`clearing.recon.events`). docs/recon.md, "The 7x24 sweep", lists the checks.

Splits: the legs of the stored detail (clearing/splits/detail.py, its rows by format) against
the split's split_legs rows (the same legs, amounts and accounts; adding up to what the
split distributes plus its subsidy), and each leg against the ledger: every transfer it
names exists on the split's platform; its first transfer (a leg not held in custody) goes
from the leg's debit account to its account, the leg's amount in the split's currency,
PENDING when the detail says the leg was held at split time, else IMMEDIATE; a leg made
PENDING still holding money has its pending transfer OPEN with exactly what the leg holds
left, a leg holding nothing has it no longer OPEN.

Payouts: the bank transfers add up to the payout's net amount in its currency; the
succeeded ones to its paid amount; a SUCCEEDED payout has every bank transfer SUCCEEDED; a
SUCCEEDED bank transfer has exactly one SUCCEEDED attempt (paid once), another none; the
ledger hold is a PENDING transfer of the net amount, POSTED once the payout SUCCEEDED.
"""

from __future__ import annotations

from clearing.ledger.model import Mode, PendingState
from clearing.payout.model import PayoutState, TransferState
from clearing.recon.model import DiscrepancyState, MatchClass
from clearing.rules.model import HoldReason
from clearing.splits.detail import FORMATS

# Problems listed per item at most (the description); the rest are counted.
PROBLEMS_SHOWN_MAX = 5


def _leg_field(name: str) -> str:
    """The detail leg row's field `name` as bigint, by the document's format."""
    whens = " ".join(f"WHEN {n} THEN (x.leg->>{fields['legs'].index(name)})::bigint"
                     for n, fields in FORMATS.items())
    return f"CASE b.fmt {whens} END"


_FORMATS = ", ".join(str(n) for n in FORMATS)

_DESCRIBE = f"""
, wrong AS (
  SELECT item_id, count(*) AS problem_count,
         string_agg(problem, '; ' ORDER BY ord, problem) FILTER (WHERE rn <= {PROBLEMS_SHOWN_MAX})
             AS shown
  FROM (SELECT p.*, row_number() OVER (PARTITION BY item_id ORDER BY ord, problem) AS rn
        FROM problems p) q
  GROUP BY item_id
)"""

_RESULT = """
SELECT (SELECT max(b.updated_at) FROM b) AS last_updated_at,
       (SELECT b.id FROM b ORDER BY b.updated_at DESC, b.id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM b) AS checked_count, (SELECT count(*) FROM wrong) AS wrong_count,
       (SELECT count(*) FROM ins) AS inserted_count,
       (SELECT coalesce(array_agg(discrepancy_id), ARRAY[]::bigint[]) FROM ins) AS inserted_ids
"""

SQL_SWEEP_SPLITS = f"""
WITH b AS (
  SELECT s.split_id AS id, s.platform_id, s.order_id, s.channel_transaction_id,
         s.currency_code, s.amount_minor, s.channel_fee_minor,
         s.distributed_minor + s.subsidy_minor AS legs_minor, s.updated_at,
         s.detail::json AS d, coalesce((s.detail::json->>'format')::int, 0) AS fmt
  FROM splits s
  WHERE (s.updated_at, s.split_id) > ($1::timestamptz, $2::bigint) AND s.updated_at < $3
    AND s.detail IS NOT NULL
  ORDER BY s.updated_at, s.split_id LIMIT $4
), dl AS (
  SELECT b.id, {_leg_field('leg_index')} AS leg_index, {_leg_field('account_id')} AS account_id,
         {_leg_field('debit_account_id')} AS debit_account_id,
         {_leg_field('amount_minor')} AS amount_minor, {_leg_field('held_minor')} AS held_minor
  FROM b, json_array_elements(b.d->'legs') AS x(leg) WHERE b.fmt IN ({_FORMATS})
), sl AS (
  SELECT l.*, b.platform_id, b.currency_code FROM split_legs l JOIN b ON b.id = l.split_id
), legs AS (
  SELECT coalesce(dl.id, sl.split_id) AS item_id, coalesce(dl.leg_index, sl.leg_index) AS i,
         dl.account_id AS d_account, dl.debit_account_id AS d_debit,
         dl.amount_minor AS d_amount, dl.held_minor AS d_held, sl.*,
         sl.split_id IS NOT NULL AS stored, dl.id IS NOT NULL AS detailed
  FROM dl FULL JOIN sl ON sl.split_id = dl.id AND sl.leg_index = dl.leg_index
), firsts AS (
  SELECT g.*, t.transfer_id AS t_id, t.debit_account_id AS t_debit,
         t.credit_account_id AS t_credit, t.amount AS t_amount, t.currency_code AS t_currency,
         t.mode AS t_mode, p.transfer_id AS p_id, p.pending_state AS p_state,
         p.pending_remaining AS p_remaining
  FROM legs g
  LEFT JOIN transfers t ON t.transfer_id = g.transfer_ids[1] AND t.platform_id = g.platform_id
  LEFT JOIN transfers p
         ON p.transfer_id = coalesce(nullif(g.pending_transfer_id, 0), g.transfer_ids[1])
        AND p.platform_id = g.platform_id
  WHERE g.stored AND g.detailed AND g.hold_reason <> {HoldReason.RECEIVER_UNAVAILABLE:d}
), problems AS (
  SELECT b.id AS item_id, 0 AS ord, format('detail format %s unknown', b.fmt) AS problem
  FROM b WHERE b.fmt NOT IN ({_FORMATS})
  UNION ALL
  SELECT item_id, 1, format('leg %s: in the detail, not in split_legs', i) FROM legs
  WHERE NOT stored AND item_id IN (SELECT id FROM b WHERE fmt IN ({_FORMATS}))
  UNION ALL
  SELECT item_id, 1, format('leg %s: in split_legs, not in the detail', i) FROM legs
  WHERE NOT detailed AND item_id IN (SELECT id FROM b WHERE fmt IN ({_FORMATS}))
  UNION ALL
  SELECT item_id, 2, format('leg %s: amount %s, the detail says %s', i, amount_minor, d_amount)
  FROM legs WHERE stored AND detailed AND amount_minor <> d_amount
  UNION ALL
  SELECT item_id, 2, format('leg %s: account %s -> %s, the detail says %s -> %s', i,
                            debit_account_id, account_id, d_debit, d_account)
  FROM legs WHERE stored AND detailed
    AND (d_account <> 0 AND d_account <> account_id OR d_debit <> 0 AND d_debit <> debit_account_id)
  UNION ALL
  SELECT b.id, 3, format('legs add up to %s, the split distributes %s (with its subsidy)',
                         coalesce(sum(dl.amount_minor), 0), b.legs_minor)
  FROM b LEFT JOIN dl ON dl.id = b.id WHERE b.fmt IN ({_FORMATS})
  GROUP BY b.id, b.legs_minor HAVING coalesce(sum(dl.amount_minor), 0) <> b.legs_minor
  UNION ALL
  SELECT g.item_id, 4, format('leg %s: transfer %s not in the ledger', g.i, x.id)
  FROM legs g, unnest(g.transfer_ids) AS x(id)
  WHERE g.stored AND NOT EXISTS (SELECT 1 FROM transfers t
                                 WHERE t.transfer_id = x.id AND t.platform_id = g.platform_id)
  UNION ALL
  SELECT item_id, 4, format('leg %s: no ledger transfer', i) FROM firsts
  WHERE cardinality(transfer_ids) = 0
  UNION ALL
  SELECT item_id, 5, format('leg %s: transfer %s is %s -> %s %s %s mode %s, the leg %s -> %s %s %s'
                            ' mode %s', i, t_id, t_debit, t_credit, t_amount, t_currency, t_mode,
                            debit_account_id, account_id, amount_minor, currency_code,
                            CASE WHEN d_held > 0 THEN {Mode.PENDING:d} ELSE {Mode.IMMEDIATE:d} END)
  FROM firsts
  WHERE t_id IS NOT NULL AND (t_debit <> debit_account_id OR t_credit <> account_id
        OR t_amount <> amount_minor OR t_currency <> currency_code
        OR t_mode <> CASE WHEN d_held > 0 THEN {Mode.PENDING:d} ELSE {Mode.IMMEDIATE:d} END)
  UNION ALL
  SELECT item_id, 6, format('leg %s: holds %s, its pending transfer %s is in state %s with %s'
                            ' left', i, held_minor, p_id, p_state, p_remaining)
  FROM firsts
  WHERE t_mode = {Mode.PENDING:d} AND p_id IS NOT NULL
    AND (held_minor > 0 AND (p_state <> {PendingState.OPEN:d} OR p_remaining <> held_minor)
         OR held_minor = 0 AND p_state = {PendingState.OPEN:d})
){_DESCRIBE}, ins AS (
  INSERT INTO recon_discrepancies (
      platform_id, run_id, class, state, order_id, channel_transaction_id, line_number,
      line_type, split_id, statement_amount_minor, statement_fee_minor,
      statement_currency_code, split_amount_minor, split_fee_minor, split_currency_code,
      difference_minor, created_at, description)
  SELECT b.platform_id, NULL, {MatchClass.SPLIT_LEDGER_MISMATCH:d}, {DiscrepancyState.OPEN:d},
         b.order_id, b.channel_transaction_id, 0, 0, b.id, 0, 0, '', b.amount_minor,
         b.channel_fee_minor, b.currency_code, 0, $5,
         w.shown || CASE WHEN w.problem_count > {PROBLEMS_SHOWN_MAX}
                         THEN format(' (%s problems)', w.problem_count) ELSE '' END
  FROM wrong w JOIN b ON b.id = w.item_id
  ORDER BY b.updated_at, b.id
  ON CONFLICT (class, split_id, payout_id) WHERE run_id IS NULL AND state = {DiscrepancyState.OPEN:d}
  DO NOTHING
  RETURNING discrepancy_id
){_RESULT}"""

SQL_SWEEP_PAYOUTS = f"""
WITH b AS (
  SELECT p.payout_id AS id, p.platform_id, p.currency_code, p.net_minor, p.paid_minor,
         p.state, p.hold_transfer_id, p.updated_at
  FROM payouts p
  WHERE (p.updated_at, p.payout_id) > ($1::timestamptz, $2::bigint) AND p.updated_at < $3
  ORDER BY p.updated_at, p.payout_id LIMIT $4
), bt AS (
  SELECT t.*, (SELECT count(*) FROM bank_transfer_attempts a
               WHERE a.bank_transfer_id = t.bank_transfer_id
                 AND a.state = {TransferState.SUCCEEDED:d}) AS succeeded_attempts
  FROM bank_transfers t JOIN b ON b.id = t.payout_id
), sums AS (
  SELECT b.id, count(bt.bank_transfer_id) AS n, coalesce(sum(bt.amount_minor), 0) AS total,
         coalesce(sum(bt.amount_minor) FILTER (WHERE bt.state = {TransferState.SUCCEEDED:d}), 0)
             AS paid,
         count(*) FILTER (WHERE bt.state <> {TransferState.SUCCEEDED:d}) AS unpaid,
         count(*) FILTER (WHERE bt.currency_code <> b.currency_code) AS other_currency
  FROM b LEFT JOIN bt ON bt.payout_id = b.id GROUP BY b.id
), problems AS (
  SELECT b.id AS item_id, 1 AS ord,
         format('bank transfers add up to %s, the payout''s net amount is %s', s.total,
                b.net_minor) AS problem
  FROM b JOIN sums s ON s.id = b.id WHERE s.total <> b.net_minor
  UNION ALL
  SELECT b.id, 1, format('%s bank transfers not in %s', s.other_currency, b.currency_code)
  FROM b JOIN sums s ON s.id = b.id WHERE s.other_currency > 0
  UNION ALL
  SELECT b.id, 2, format('paid %s, its succeeded bank transfers add up to %s', b.paid_minor,
                         s.paid)
  FROM b JOIN sums s ON s.id = b.id WHERE s.paid <> b.paid_minor
  UNION ALL
  SELECT b.id, 3, format('SUCCEEDED with %s bank transfers not succeeded', s.unpaid)
  FROM b JOIN sums s ON s.id = b.id
  WHERE b.state = {PayoutState.SUCCEEDED:d} AND s.unpaid > 0
  UNION ALL
  SELECT bt.payout_id, 4, format('bank transfer %s in state %s with %s succeeded attempts',
                                 bt.bank_transfer_id, bt.state, bt.succeeded_attempts)
  FROM bt
  WHERE bt.state = {TransferState.SUCCEEDED:d} AND bt.succeeded_attempts <> 1
     OR bt.state <> {TransferState.SUCCEEDED:d} AND bt.succeeded_attempts > 0
  UNION ALL
  SELECT b.id, 5, format('hold transfer %s not in the ledger', b.hold_transfer_id)
  FROM b WHERE NOT EXISTS (SELECT 1 FROM transfers t WHERE t.transfer_id = b.hold_transfer_id
                                                       AND t.platform_id = b.platform_id)
  UNION ALL
  SELECT b.id, 5, format('hold transfer %s is %s mode %s in state %s, the payout %s %s in'
                         ' state %s', t.transfer_id, t.amount, t.mode, t.pending_state,
                         b.net_minor, b.currency_code, b.state)
  FROM b JOIN transfers t ON t.transfer_id = b.hold_transfer_id AND t.platform_id = b.platform_id
  WHERE t.amount <> b.net_minor OR t.mode <> {Mode.PENDING:d} OR t.currency_code <> b.currency_code
     OR b.state = {PayoutState.SUCCEEDED:d} AND t.pending_state <> {PendingState.POSTED:d}
){_DESCRIBE}, ins AS (
  INSERT INTO recon_discrepancies (
      platform_id, run_id, class, state, order_id, channel_transaction_id, line_number,
      line_type, split_id, statement_amount_minor, statement_fee_minor,
      statement_currency_code, split_amount_minor, split_fee_minor, split_currency_code,
      difference_minor, created_at, description, payout_id)
  SELECT b.platform_id, NULL, {MatchClass.PAYOUT_BANK_MISMATCH:d}, {DiscrepancyState.OPEN:d},
         '', '', 0, 0, 0, 0, 0, '', b.net_minor, 0, b.currency_code, 0, $5,
         w.shown || CASE WHEN w.problem_count > {PROBLEMS_SHOWN_MAX}
                         THEN format(' (%s problems)', w.problem_count) ELSE '' END, b.id
  FROM wrong w JOIN b ON b.id = w.item_id
  ORDER BY b.updated_at, b.id
  ON CONFLICT (class, split_id, payout_id) WHERE run_id IS NULL AND state = {DiscrepancyState.OPEN:d}
  DO NOTHING
  RETURNING discrepancy_id
){_RESULT}"""

# An item whose stored values the check cannot read (a detail that is not JSON, a leg field
# that is not a number: SQLSTATE class 22) is raised as wrong on its own, with the database's
# message, and the watermark passes it: one such item never stops the sweep. Parameters: the
# watermark ($1, $2), the settle limit ($3), now ($4), the description ($5).
SQL_UNCHECKABLE_SPLIT = f"""
WITH b AS (
  SELECT s.split_id AS id, s.platform_id, s.order_id, s.channel_transaction_id,
         s.currency_code, s.amount_minor, s.channel_fee_minor, s.updated_at
  FROM splits s
  WHERE (s.updated_at, s.split_id) > ($1::timestamptz, $2::bigint) AND s.updated_at < $3
    AND s.detail IS NOT NULL
  ORDER BY s.updated_at, s.split_id LIMIT 1
), ins AS (
  INSERT INTO recon_discrepancies (
      platform_id, run_id, class, state, order_id, channel_transaction_id, line_number,
      line_type, split_id, statement_amount_minor, statement_fee_minor,
      statement_currency_code, split_amount_minor, split_fee_minor, split_currency_code,
      difference_minor, created_at, description)
  SELECT b.platform_id, NULL, {MatchClass.SPLIT_LEDGER_MISMATCH:d}, {DiscrepancyState.OPEN:d},
         b.order_id, b.channel_transaction_id, 0, 0, b.id, 0, 0, '', b.amount_minor,
         b.channel_fee_minor, b.currency_code, 0, $4, $5
  FROM b
  ON CONFLICT (class, split_id, payout_id) WHERE run_id IS NULL AND state = {DiscrepancyState.OPEN:d}
  DO NOTHING
  RETURNING discrepancy_id
)
SELECT b.updated_at AS last_updated_at, b.id AS last_id,
       (SELECT count(*) FROM ins) AS inserted,
       (SELECT coalesce(array_agg(discrepancy_id), ARRAY[]::bigint[]) FROM ins) AS inserted_ids
FROM b"""

SQL_UNCHECKABLE_PAYOUT = f"""
WITH b AS (
  SELECT p.payout_id AS id, p.platform_id, p.net_minor, p.currency_code, p.updated_at
  FROM payouts p
  WHERE (p.updated_at, p.payout_id) > ($1::timestamptz, $2::bigint) AND p.updated_at < $3
  ORDER BY p.updated_at, p.payout_id LIMIT 1
), ins AS (
  INSERT INTO recon_discrepancies (
      platform_id, run_id, class, state, order_id, channel_transaction_id, line_number,
      line_type, split_id, statement_amount_minor, statement_fee_minor,
      statement_currency_code, split_amount_minor, split_fee_minor, split_currency_code,
      difference_minor, created_at, description, payout_id)
  SELECT b.platform_id, NULL, {MatchClass.PAYOUT_BANK_MISMATCH:d}, {DiscrepancyState.OPEN:d},
         '', '', 0, 0, 0, 0, 0, '', b.net_minor, 0, b.currency_code, 0, $4, $5, b.id
  FROM b
  ON CONFLICT (class, split_id, payout_id) WHERE run_id IS NULL AND state = {DiscrepancyState.OPEN:d}
  DO NOTHING
  RETURNING discrepancy_id
)
SELECT b.updated_at AS last_updated_at, b.id AS last_id,
       (SELECT count(*) FROM ins) AS inserted,
       (SELECT coalesce(array_agg(discrepancy_id), ARRAY[]::bigint[]) FROM ins) AS inserted_ids
FROM b"""
