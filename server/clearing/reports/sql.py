"""The SQL of the reports and of their roll-ups. Each raw aggregate is written once and used
twice: by the roll-up job for one day, and by a report for the days not rolled."""

from __future__ import annotations

import datetime as dt

from clearing.payout.model import PayoutState, TransferState
from clearing.reports.period import Range

# Transfer modes that move posted balances (ledger.model.Mode): IMMEDIATE, POST_PENDING.
POSTED_MODES = "(1, 3)"
# Leg fields in a split's detail (splits.detail FORMATS[1]["legs"]): leg_index 0,
# rule_set_name 9, rule_set_version 10, rule_name 11.
_LEG_RULE = ("j.leg->>9", "(j.leg->>10)::integer", "j.leg->>11")


class Query:
    """SQL text with numbered parameters, built piece by piece."""

    def __init__(self, *args: object) -> None:
        self.args: list[object] = list(args)
        self.sql = ""

    def param(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def ranges(self, column: str, ranges: list[Range]) -> str:
        """A condition: `column` in one of `ranges` (false when there are none)."""
        if not ranges:
            return "false"
        parts = []
        for lo, hi in ranges:
            cond = f"{column} >= {self.param(lo)}::timestamptz"
            if hi is not None:
                cond += f" AND {column} < {self.param(hi)}::timestamptz"
            parts.append(f"({cond})")
        return "(" + " OR ".join(parts) + ")"


def split_legs_raw(q: Query, platform: str, ranges: list[Range]) -> str:
    """Split legs per currency, receiver, rule-set name and version and rule, of the splits
    committed in `ranges` (raw rows: each split's detail parsed)."""
    name, version, rule = _LEG_RULE
    return f"""
SELECT s.currency_code, l.account_id, {name} AS rule_set_name, {version} AS rule_set_version,
       {rule} AS rule_name, count(*) AS leg_count, sum(l.amount_minor) AS amount_minor
FROM splits s
CROSS JOIN LATERAL json_array_elements(s.detail::json -> 'legs') AS j(leg)
JOIN split_legs l ON l.split_id = s.split_id AND l.leg_index = (j.leg->>0)::integer
WHERE s.platform_id = {platform} AND {q.ranges('s.created_at', ranges)}
GROUP BY 1, 2, 3, 4, 5"""


def account_moves_raw(q: Query, platform: str, ranges: list[Range], split_at: str) -> str:
    """Posted movements per account of the transfers committed in `ranges`, each row
    marked `in_period` when before the instant `split_at`."""
    return f"""
SELECT x.account_id, t.created_at < {split_at} AS in_period,
       sum(x.dc) AS debit_count, sum(x.d) AS debit_minor,
       sum(x.cc) AS credit_count, sum(x.c) AS credit_minor
FROM transfers t
CROSS JOIN LATERAL (VALUES (t.debit_account_id, 1, t.amount, 0, 0::bigint),
                           (t.credit_account_id, 0, 0::bigint, 1, t.amount))
     AS x(account_id, dc, d, cc, c)
WHERE t.platform_id = {platform} AND t.mode IN {POSTED_MODES}
  AND {q.ranges('t.created_at', ranges)}
GROUP BY 1, 2"""


def channel_splits_raw(q: Query, platform: str, zone: str, ranges: list[Range]) -> str:
    """Splits per local day, channel and currency of the splits committed in `ranges`."""
    return f"""
SELECT (s.created_at AT TIME ZONE {zone})::date AS day, s.channel, s.currency_code,
       count(*) AS split_count, sum(s.amount_minor) AS amount_minor,
       sum(s.channel_fee_minor) AS channel_fee_minor
FROM splits s
WHERE s.platform_id = {platform} AND {q.ranges('s.created_at', ranges)}
GROUP BY 1, 2, 3"""


# ---- the reports -------------------------------------------------------------------------------

def split_summary(platform_id: int, first: dt.date, last: dt.date,
                  ranges: list[Range]) -> Query:
    q = Query(platform_id, first, last)
    raw = split_legs_raw(q, "$1", ranges)
    q.sql = f"""
WITH legs AS (
  SELECT currency_code, account_id, rule_set_name, rule_set_version, rule_name, leg_count,
         amount_minor
  FROM report_split_days WHERE platform_id = $1 AND day BETWEEN $2 AND $3
  UNION ALL {raw}
)
SELECT g.currency_code, g.account_id, coalesce(a.external_ref, '') AS external_ref,
       g.rule_set_name, g.rule_set_version, g.rule_name, g.leg_count, g.amount_minor
FROM (SELECT currency_code, account_id, rule_set_name, rule_set_version, rule_name,
             sum(leg_count)::bigint AS leg_count, sum(amount_minor)::bigint AS amount_minor
      FROM legs GROUP BY 1, 2, 3, 4, 5) g
LEFT JOIN accounts a ON a.account_id = g.account_id
ORDER BY g.currency_code, g.account_id, g.rule_set_name, g.rule_set_version, g.rule_name"""
    return q


def transaction_flow(platform_id: int, first: dt.date, last: dt.date, end: dt.datetime,
                     ranges: list[Range]) -> Query:
    """Per account: the posted balance now, less the movements since the period's end, is
    the closing balance; less the period's movements, the opening balance. `ranges` cover
    every day from `first` on that is not rolled (with no end)."""
    q = Query(platform_id, first, end, last)
    raw = account_moves_raw(q, "$1", ranges, "$3::timestamptz")
    q.sql = f"""
WITH moves AS (
  SELECT account_id, day <= $4 AS in_period, debit_count, debit_minor, credit_count, credit_minor
  FROM report_account_days WHERE platform_id = $1 AND day >= $2
  UNION ALL {raw}
), m AS (
  SELECT account_id,
         sum(debit_count) FILTER (WHERE in_period) AS dc,
         sum(debit_minor) FILTER (WHERE in_period) AS d,
         sum(credit_count) FILTER (WHERE in_period) AS cc,
         sum(credit_minor) FILTER (WHERE in_period) AS c,
         coalesce(sum(credit_minor - debit_minor) FILTER (WHERE NOT in_period), 0) AS later
  FROM moves GROUP BY 1
)
SELECT a.currency_code, a.account_id, a.external_ref, a.kind,
       closing - coalesce(m.c, 0) + coalesce(m.d, 0) AS opening_minor,
       coalesce(m.dc, 0)::bigint AS debit_count, coalesce(m.d, 0)::bigint AS debits_minor,
       coalesce(m.cc, 0)::bigint AS credit_count, coalesce(m.c, 0)::bigint AS credits_minor,
       closing AS closing_minor
FROM accounts a
LEFT JOIN m ON m.account_id = a.account_id
CROSS JOIN LATERAL (SELECT (a.credits_posted - a.debits_posted
                            - coalesce(m.later, 0))::bigint AS closing) c
WHERE a.platform_id = $1
ORDER BY a.currency_code, a.account_id"""
    return q


def channel_analysis(platform_id: int, zone: str, first: dt.date, last: dt.date,
                     ranges: list[Range]) -> Query:
    q = Query(platform_id, first, last, zone)
    raw = channel_splits_raw(q, "$1", "$4", ranges)
    q.sql = f"""
WITH statements AS (
  SELECT st.settlement_date AS day, st.channel, li.currency_code, 'statement' AS source,
         count(*) FILTER (WHERE li.line_type = 1) AS payment_count,
         count(*) FILTER (WHERE li.line_type = 2) AS refund_count,
         sum(CASE WHEN li.line_type = 2 THEN -li.amount_minor ELSE li.amount_minor END)
           AS amount_minor,
         sum(CASE WHEN li.line_type = 2 THEN -li.channel_fee_minor
                  ELSE li.channel_fee_minor END) AS channel_fee_minor,
         sum(CASE WHEN li.line_type = 2 THEN -li.settled_minor ELSE li.settled_minor END)
           AS settled_minor
  FROM recon_statements st
  JOIN recon_statement_lines li ON li.statement_id = st.statement_id
  WHERE st.platform_id = $1 AND st.superseded_by IS NULL
    AND st.settlement_date BETWEEN $2 AND $3
  GROUP BY 1, 2, 3
), splits AS (
  SELECT day, channel, currency_code, split_count, amount_minor, channel_fee_minor
  FROM report_channel_days WHERE platform_id = $1 AND day BETWEEN $2 AND $3
  UNION ALL {raw}
), from_splits AS (
  SELECT s.day, s.channel, s.currency_code, 'splits' AS source,
         sum(s.split_count) AS payment_count, 0 AS refund_count,
         sum(s.amount_minor) AS amount_minor, sum(s.channel_fee_minor) AS channel_fee_minor,
         sum(s.amount_minor - s.channel_fee_minor) AS settled_minor
  FROM splits s
  WHERE NOT EXISTS (SELECT 1 FROM recon_statements st
                    WHERE st.platform_id = $1 AND st.superseded_by IS NULL
                      AND st.channel = s.channel AND st.settlement_date = s.day)
  GROUP BY 1, 2, 3
)
SELECT currency_code, day, channel, source, payment_count::bigint, refund_count::bigint,
       amount_minor::bigint, channel_fee_minor::bigint, settled_minor::bigint
FROM (SELECT * FROM statements UNION ALL SELECT * FROM from_splits) x
ORDER BY currency_code, day, channel"""
    return q


def payouts(platform_id: int, start: dt.datetime, end: dt.datetime) -> Query:
    """Per party: its payouts requested in the period (no roll-up: a payout is a party's
    withdrawal, thousands a day, not millions)."""
    q = Query(platform_id, start, end)
    q.sql = f"""
SELECT p.currency_code, p.account_id, a.external_ref, count(*) AS payout_count,
       sum(p.amount_minor)::bigint AS amount_minor, sum(p.fee_minor)::bigint AS fee_minor,
       sum(p.net_minor)::bigint AS net_minor, sum(p.paid_minor)::bigint AS paid_minor,
       count(*) FILTER (WHERE p.state = {PayoutState.SUCCEEDED:d}) AS succeeded_count,
       count(*) FILTER (WHERE p.state = {PayoutState.FAILED:d}) AS failed_count,
       coalesce(sum(p.amount_minor) FILTER (WHERE p.state = {PayoutState.FAILED:d}), 0)::bigint AS failed_minor,
       count(*) FILTER (WHERE p.state NOT IN ({PayoutState.SUCCEEDED:d}, {PayoutState.FAILED:d})) AS open_count,
       coalesce(sum(f.attempts), 0)::bigint AS failed_attempt_count
FROM payouts p
JOIN accounts a ON a.account_id = p.account_id
LEFT JOIN LATERAL (
  SELECT count(*) AS attempts FROM bank_transfers b
  JOIN bank_transfer_attempts t ON t.bank_transfer_id = b.bank_transfer_id
  WHERE b.payout_id = p.payout_id AND t.state = {TransferState.FAILED:d}) f ON true
WHERE p.platform_id = $1 AND p.created_at >= $2 AND p.created_at < $3
GROUP BY 1, 2, 3
ORDER BY 1, 2"""
    return q


def split_minutes(platform_id: int, zone: str, start: dt.datetime, end: dt.datetime) -> Query:
    """Splits per local minute of their paid time and currency, in [start, end) (the
    platform's split-list index: platform, paid time)."""
    q = Query(platform_id, zone, _ns(start), _ns(end))
    q.sql = """
SELECT s.currency_code,
       to_char(date_trunc('minute', to_timestamp(s.paid_time_ns / 1000000000.0)
                                    AT TIME ZONE $2), 'YYYY-MM-DD"T"HH24:MI') AS minute,
       count(*)::bigint AS split_count, sum(s.amount_minor)::bigint AS amount_minor
FROM splits s
WHERE s.platform_id = $1 AND s.paid_time_ns >= $3 AND s.paid_time_ns < $4
GROUP BY 1, 2
ORDER BY 1, 2"""
    return q


def _ns(instant: dt.datetime) -> int:
    """An instant as integer nanoseconds since the epoch (splits.paid_time_ns)."""
    delta = instant - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def audit(platform_id: int, start: dt.datetime, end: dt.datetime) -> Query:
    """The platform's audit events of the period, in chain order (clearing.audit: bank
    numbers are masked and keys absent when written)."""
    q = Query(platform_id, start, end)
    q.sql = """
SELECT event_id, seq, created_at, coalesce(key_id, 0), key_prefix,
       array_to_string(roles, ','), cert_subject, method, resource,
       coalesce(before::text, ''), coalesce(after::text, ''), request_id, encode(hash, 'hex')
FROM audit_events
WHERE platform_id = $1 AND created_at >= $2 AND created_at < $3
ORDER BY seq"""
    return q
