"""Matching a bank's payout result file (`payout_file`) against the platform's bank transfers
and payouts, in one set-based SQL statement (the statement's counterpart: `match`). A line is
matched to the bank transfer attempt whose idempotency key is its end-to-end id (the attempt
of a bank transfer of one of the platform's payouts), and classified in this order:

- DUPLICATE: an earlier line of the file has the same end-to-end id;
- UNKNOWN_BANK_TRANSFER: the platform has no attempt with that key;
- CURRENCY_MISMATCH: the line's currency is not the bank transfer's;
- AMOUNT_MISMATCH: the line's amount is not the bank transfer's;
- STATUS_MISMATCH: the line's status (SUCCEEDED, FAILED) is not the attempt's state (an
  attempt still SUBMITTED or UNKNOWN at the platform is a mismatch too);
- MATCHED otherwise;

and adds MISSING_IN_BANK_FILE for every attempt of the platform, in the file's currency,
that SUCCEEDED within the file's day (its finished_at, in the reconciliation time zone) and
that no line names: paid by the platform's account, unknown to the bank.

Funds against information: a line states what the bank paid (`settled_minor`: its amount
if SUCCEEDED, else 0); the platform says, for a line compared by amount and status
(MATCHED, AMOUNT_MISMATCH, STATUS_MISMATCH), the bank transfer's amount if the attempt
SUCCEEDED, else 0; nothing for the other lines; a MISSING_IN_BANK_FILE attempt its amount.
A discrepancy's difference is stated - info, so the sum of the differences is the file's
paid total minus the platform's, to the minor unit (a MATCHED line's difference is 0).

Parameters: $1 statement, $2 platform, $3 run, $4 and $5 the day's bounds, $6 the file's
currency, $7 now."""

from __future__ import annotations

from clearing.payout.model import TransferState
from clearing.recon.model import DiscrepancyState, LineType, MatchClass

C = MatchClass
PAYOUT = int(LineType.PAYOUT)
_OK, _KO = int(TransferState.SUCCEEDED), int(TransferState.FAILED)

SQL_MATCH_PAYOUTS = f"""
WITH l AS (
  SELECT l.*, row_number() OVER (PARTITION BY l.order_id ORDER BY l.line_number) AS nth,
         CASE WHEN l.settled_minor > 0 THEN {_OK} ELSE {_KO} END AS l_state
  FROM recon_statement_lines l WHERE l.statement_id = $1
), j AS (
  SELECT l.*, a.state AS a_state, t.bank_transfer_id, t.payout_id AS o_payout,
         t.amount_minor AS o_amount, t.currency_code AS o_currency
  FROM l LEFT JOIN (bank_transfer_attempts a JOIN bank_transfers t
                    ON t.bank_transfer_id = a.bank_transfer_id AND t.platform_id = $2)
         ON a.idempotency_key = l.order_id
), c AS (
  SELECT j.*, CASE
      WHEN j.nth > 1 THEN {C.DUPLICATE:d}
      WHEN j.bank_transfer_id IS NULL THEN {C.UNKNOWN_BANK_TRANSFER:d}
      WHEN j.currency_code <> j.o_currency THEN {C.CURRENCY_MISMATCH:d}
      WHEN j.amount_minor <> j.o_amount THEN {C.AMOUNT_MISMATCH:d}
      WHEN j.l_state <> j.a_state THEN {C.STATUS_MISMATCH:d}
      ELSE {C.MATCHED:d} END AS cls
  FROM j
), items AS (
  SELECT c.cls, c.order_id, c.channel_transaction_id, c.line_number,
         coalesce(c.o_payout, c.payout_id) AS payout_id,
         coalesce(c.bank_transfer_id, 0) AS bank_transfer_id, c.amount_minor AS st_amount,
         c.currency_code AS st_currency, coalesce(c.o_amount, 0) AS our_amount,
         coalesce(c.o_currency, '') AS our_currency, c.settled_minor AS stated,
         CASE WHEN c.cls IN ({C.DUPLICATE:d}, {C.UNKNOWN_BANK_TRANSFER:d},
                             {C.CURRENCY_MISMATCH:d}) THEN 0
              WHEN c.a_state = {_OK} THEN c.o_amount ELSE 0 END AS info,
         CASE WHEN c.cls = {C.STATUS_MISMATCH:d}
              THEN format('the bank says %s, the attempt is in state %s',
                          CASE WHEN c.l_state = {_OK} THEN 'SUCCEEDED' ELSE 'FAILED' END,
                          c.a_state)
              ELSE '' END AS description
  FROM c
  UNION ALL
  SELECT {C.MISSING_IN_BANK_FILE:d}, a.idempotency_key, a.bank_reference, 0, t.payout_id,
         t.bank_transfer_id, 0, '', t.amount_minor, t.currency_code, 0, t.amount_minor,
         'paid by the platform, not in the bank''s file'
  FROM bank_transfer_attempts a JOIN bank_transfers t USING (bank_transfer_id)
  WHERE t.platform_id = $2 AND a.state = {_OK} AND a.finished_at >= $4 AND a.finished_at < $5
    AND t.currency_code = $6
    AND NOT EXISTS (SELECT 1 FROM recon_statement_lines x
                    WHERE x.statement_id = $1 AND x.order_id = a.idempotency_key)
), ins AS (
  INSERT INTO recon_discrepancies (
      platform_id, run_id, class, state, order_id, channel_transaction_id, line_number,
      line_type, split_id, statement_amount_minor, statement_fee_minor,
      statement_currency_code, split_amount_minor, split_fee_minor, split_currency_code,
      difference_minor, created_at, description, payout_id, bank_transfer_id)
  SELECT $2, $3, i.cls, {DiscrepancyState.OPEN:d}, i.order_id, i.channel_transaction_id,
         i.line_number, {PAYOUT}, 0, i.st_amount, 0, i.st_currency, i.our_amount, 0,
         i.our_currency, i.stated - i.info, $7, i.description, i.payout_id,
         i.bank_transfer_id
  FROM items i WHERE i.cls <> {C.MATCHED:d}
  ORDER BY i.line_number = 0, i.line_number, i.bank_transfer_id
  RETURNING 1
)
SELECT i.cls, count(*) AS item_count,
       sum(CASE WHEN i.cls = {C.MISSING_IN_BANK_FILE:d} THEN i.our_amount ELSE i.st_amount END)
           ::bigint AS amount_minor,
       sum(i.stated - i.info)::bigint AS difference_minor, sum(i.stated)::bigint AS stated_minor,
       sum(i.info)::bigint AS info_minor, (SELECT count(*) FROM ins) AS inserted
FROM items i GROUP BY i.cls ORDER BY i.cls
"""
