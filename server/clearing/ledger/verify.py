"""Ledger verification: the trial balance of a platform and the journal's hash chain.

The trial balance checks that, per currency, posted debits equal posted credits (and
pending debits equal pending credits) over the platform's accounts, and that every stored
balance equals the sum of the account's journal rows. The chain check recomputes every
batch's digest from its rows and the hash chain from the genesis hash; it runs in one
REPEATABLE READ snapshot so concurrent commits do not disturb it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import asyncpg

from clearing.ledger import journal
from clearing.ledger.model import BATCH_SPAN

MISMATCHES_LISTED_MAX = 100
_CURSOR_PREFETCH = 5_000
_GENESIS = bytes(32)


@dataclass(slots=True)
class CurrencyTotals:
    currency_code: str
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def balanced(self) -> bool:
        return (self.debits_posted == self.credits_posted
                and self.debits_pending == self.credits_pending)


@dataclass(slots=True)
class Report:
    totals: list[CurrencyTotals] = field(default_factory=list)
    account_count: int = 0
    mismatched_account_ids: list[int] = field(default_factory=list)
    chain_ok: bool = True
    batch_count: int = 0
    transfer_count: int = 0
    first_bad_batch_seq: int = 0

    @property
    def ok(self) -> bool:
        return (self.chain_ok and not self.mismatched_account_ids
                and all(t.balanced for t in self.totals))


_SQL_TOTALS = """
SELECT currency_code, sum(debits_posted)::bigint, sum(credits_posted)::bigint,
       sum(debits_pending)::bigint, sum(credits_pending)::bigint, count(*)
FROM accounts WHERE platform_id = $1 GROUP BY currency_code ORDER BY currency_code
"""
_SQL_MISMATCHES = """
WITH e AS (
  SELECT debit_account_id AS a,
         CASE WHEN mode IN (1, 3) THEN amount ELSE 0 END AS dp, 0::bigint AS cp,
         CASE mode WHEN 2 THEN amount WHEN 1 THEN 0 ELSE -amount END AS dpend,
         0::bigint AS cpend
  FROM transfers WHERE platform_id = $1
  UNION ALL
  SELECT credit_account_id, 0, CASE WHEN mode IN (1, 3) THEN amount ELSE 0 END, 0,
         CASE mode WHEN 2 THEN amount WHEN 1 THEN 0 ELSE -amount END
  FROM transfers WHERE platform_id = $1
), s AS (
  SELECT a, sum(dp) AS dp, sum(cp) AS cp, sum(dpend) AS dpend, sum(cpend) AS cpend
  FROM e GROUP BY a
)
SELECT acc.account_id FROM accounts acc LEFT JOIN s ON s.a = acc.account_id
WHERE acc.platform_id = $1
  AND (acc.debits_posted, acc.credits_posted, acc.debits_pending, acc.credits_pending)
      IS DISTINCT FROM (coalesce(s.dp, 0), coalesce(s.cp, 0), coalesce(s.dpend, 0),
                        coalesce(s.cpend, 0))
ORDER BY 1 LIMIT $2
"""
# Pending transfers whose remaining amount disagrees with the posts and voids against them.
_SQL_PENDING_MISMATCHES = """
SELECT DISTINCT p.debit_account_id FROM transfers p
LEFT JOIN (SELECT pending_id, sum(amount) AS settled FROM transfers
           WHERE platform_id = $1 AND mode IN (3, 4) GROUP BY pending_id) x
       ON x.pending_id = p.transfer_id
WHERE p.platform_id = $1 AND p.mode = 2
  AND (p.pending_remaining <> p.amount - coalesce(x.settled, 0)
       OR (p.pending_remaining = 0) <> (p.pending_state IN (2, 3)))
LIMIT $2
"""
_SQL_ROWS = f"SELECT {journal.TRANSFER_COLUMNS} FROM transfers ORDER BY transfer_id"


async def verify(pool: asyncpg.Pool, platform_id: int) -> Report:
    report = Report()
    async with pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for r in await conn.fetch(_SQL_TOTALS, platform_id):
                report.totals.append(CurrencyTotals(r[0], r[1], r[2], r[3], r[4]))
                report.account_count += r[5]
            mismatched = {r[0] for r in await conn.fetch(
                _SQL_MISMATCHES, platform_id, MISMATCHES_LISTED_MAX)}
            mismatched |= {r[0] for r in await conn.fetch(
                _SQL_PENDING_MISMATCHES, platform_id, MISMATCHES_LISTED_MAX)}
            report.mismatched_account_ids = sorted(mismatched)[:MISMATCHES_LISTED_MAX]
            await _verify_chain(conn, report)
    return report


async def _batch_digests(conn: asyncpg.Connection, report: Report) -> dict[int, bytes]:
    digests: dict[int, bytes] = {}
    current, h = None, hashlib.sha256()
    async for row in conn.cursor(_SQL_ROWS, prefetch=_CURSOR_PREFETCH):
        batch_id = row[0] // BATCH_SPAN
        if batch_id != current:
            if current is not None:
                digests[current] = h.digest()
            current, h = batch_id, hashlib.sha256()
        h.update(journal.records_digest_line(row))
        report.transfer_count += 1
    if current is not None:
        digests[current] = h.digest()
    return digests


async def _verify_chain(conn: asyncpg.Connection, report: Report) -> None:
    digests = await _batch_digests(conn, report)
    prev = _GENESIS
    seen: set[int] = set()
    async for b in conn.cursor(
            "SELECT seq, batch_id, rows_digest, hash FROM journal_batches ORDER BY seq",
            prefetch=_CURSOR_PREFETCH):
        report.batch_count += 1
        seen.add(b["batch_id"])
        expected = hashlib.sha256(prev + b["rows_digest"]).digest()
        if (digests.get(b["batch_id"]) != b["rows_digest"] or expected != b["hash"]
                or b["seq"] != report.batch_count):
            report.chain_ok = False
            report.first_bad_batch_seq = report.first_bad_batch_seq or b["seq"]
        prev = b["hash"]
    head = await conn.fetchrow("SELECT seq, hash FROM journal_head")
    if head["hash"] != prev or head["seq"] != report.batch_count:
        report.chain_ok = False
    if set(digests) - seen:  # journal rows that no chained batch accounts for
        report.chain_ok = False
