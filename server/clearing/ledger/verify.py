"""Ledger verification: trial balance, balances against the journal, and the hash chain.

`verify(pool, platform_id)` is what a platform sees through VerifyLedger: only its own rows
and figures.

- Trial balance: per currency, posted debits equal posted credits (and pending debits equal
  pending credits) over the platform's accounts; every stored balance equals the sum of the
  account's journal rows; every pending transfer's remainder agrees with the posts and
  voids against it.
- Chain: the journal's batches are chained across all platforms (hash = sha256(previous
  hash || rows digest), one digest over all the rows of a batch, whoever they belong to).
  A platform's rows are proven intact when (1) each of them lies in a batch of the chain,
  (2) each batch holding one of them recomputes to its stored digest (the server reads the
  whole batch for that, other platforms' rows included, and reports nothing about them),
  (3) the chain of stored hashes is intact from the genesis hash to the head: a link
  broken anywhere means an edited digest or hash, and an attacker who edits the platform's
  rows must rewrite every later hash or break a link, and (4) every chained batch still
  holds as many rows as it was committed with and no row lies outside the chain (a
  deleted or forged row could be the platform's own). Steps (3) and (4) read only the
  stored digests, hashes and row counts, never another platform's rows. The counts
  reported are the platform's own: its transfers and the batches that hold them. An edit
  of another platform's row is reported to this platform only if that row shares a batch
  with one of its rows (the shared batch no longer proves its rows either).

`verify(pool, None)` (the CLI's `clearing verify --all`, for the operator of the core) does
the same over the whole system: every account, every row, every batch.

Everything runs in one REPEATABLE READ snapshot so concurrent commits do not disturb it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import asyncpg

from clearing.ledger import journal
from clearing.ledger.model import Mode, PendingState
from clearing.limits import BATCH_SPAN, MISMATCHES_LISTED_MAX

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

    def bad_batch(self, seq: int) -> None:
        self.chain_ok = False
        if seq and (not self.first_bad_batch_seq or seq < self.first_bad_batch_seq):
            self.first_bad_batch_seq = seq


# `{p}` (`{acc}`, `{pt}`: on those aliases) is "platform_id = $1" for one platform,
# "$1::bigint IS NULL" for the whole system; `{IMMEDIATE}` etc. are the Mode and PendingState
# numbers (_SQL_NUMBERS: never literals in SQL).
_SQL_NUMBERS = {**{m.name: str(int(m)) for m in Mode},
                "PENDING_POSTED": str(int(PendingState.POSTED)),
                "PENDING_VOIDED": str(int(PendingState.VOIDED))}
_SQL_TOTALS = """
SELECT currency_code, sum(debits_posted)::bigint, sum(credits_posted)::bigint,
       sum(debits_pending)::bigint, sum(credits_pending)::bigint, count(*)
FROM accounts WHERE {p} GROUP BY currency_code ORDER BY currency_code
"""
_SQL_MISMATCHES = """
WITH e AS (
  SELECT debit_account_id AS a,
         CASE WHEN mode IN ({IMMEDIATE}, {POST_PENDING}) THEN amount ELSE 0 END AS dp,
         0::bigint AS cp,
         CASE mode WHEN {PENDING} THEN amount WHEN {IMMEDIATE} THEN 0 ELSE -amount END AS dpend,
         0::bigint AS cpend
  FROM transfers WHERE {p}
  UNION ALL
  SELECT credit_account_id, 0,
         CASE WHEN mode IN ({IMMEDIATE}, {POST_PENDING}) THEN amount ELSE 0 END, 0,
         CASE mode WHEN {PENDING} THEN amount WHEN {IMMEDIATE} THEN 0 ELSE -amount END
  FROM transfers WHERE {p}
), s AS (
  SELECT a, sum(dp) AS dp, sum(cp) AS cp, sum(dpend) AS dpend, sum(cpend) AS cpend
  FROM e GROUP BY a
)
SELECT acc.account_id FROM accounts acc LEFT JOIN s ON s.a = acc.account_id
WHERE {acc}
  AND (acc.debits_posted, acc.credits_posted, acc.debits_pending, acc.credits_pending)
      IS DISTINCT FROM (coalesce(s.dp, 0), coalesce(s.cp, 0), coalesce(s.dpend, 0),
                        coalesce(s.cpend, 0))
ORDER BY 1 LIMIT $2
"""
# Pending transfers whose remaining amount disagrees with the posts and voids against them.
_SQL_PENDING_MISMATCHES = """
SELECT DISTINCT p.debit_account_id FROM transfers p
LEFT JOIN (SELECT pending_id, sum(amount) AS settled FROM transfers
           WHERE {p} AND mode IN ({POST_PENDING}, {VOID_PENDING}) GROUP BY pending_id) x
       ON x.pending_id = p.transfer_id
WHERE {pt} AND p.mode = {PENDING}
  AND (p.pending_remaining <> p.amount - coalesce(x.settled, 0)
       OR (p.pending_remaining = 0) <> (p.pending_state IN ({PENDING_POSTED}, {PENDING_VOIDED})))
LIMIT $2
"""
# Every row of every batch that holds one of the platform's rows, in transfer-id order (a
# batch's rows are transfer ids batch * BATCH_SPAN .. + BATCH_SPAN - 1).
_SQL_ROWS_OF_BATCHES = f"""
SELECT {journal.TRANSFER_COLUMNS} FROM transfers
WHERE transfer_id / {BATCH_SPAN} IN (
  SELECT DISTINCT transfer_id / {BATCH_SPAN} FROM transfers WHERE platform_id = $1)
ORDER BY transfer_id
"""
_SQL_ALL_ROWS = f"SELECT {journal.TRANSFER_COLUMNS} FROM transfers ORDER BY transfer_id"
# Chained batches that lost or gained rows, and rows outside any chained batch (seq NULL):
# row counts only, whoever the rows belong to.
_SQL_COUNTS = f"""
SELECT b.seq FROM journal_batches b
FULL JOIN (SELECT transfer_id / {BATCH_SPAN} AS batch_id, count(*) AS n FROM transfers
           GROUP BY 1) t ON t.batch_id = b.batch_id
WHERE b.transfer_count IS DISTINCT FROM t.n
ORDER BY b.seq NULLS LAST LIMIT 1
"""


def _where(platform_id: int | None) -> dict[str, str]:
    if platform_id is None:
        return {**_SQL_NUMBERS, **dict.fromkeys(("p", "acc", "pt"), "$1::bigint IS NULL")}
    return {**_SQL_NUMBERS, "p": "platform_id = $1", "acc": "acc.platform_id = $1",
            "pt": "p.platform_id = $1"}


async def verify(pool: asyncpg.Pool, platform_id: int | None) -> Report:
    """One platform's verification, or the whole system's with `platform_id` None."""
    async with pool.acquire() as conn:
        return await verify_on(conn, platform_id)


async def verify_on(conn: asyncpg.Connection, platform_id: int | None) -> Report:
    report = Report()
    p = _where(platform_id)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        for r in await conn.fetch(_SQL_TOTALS.format(**p), platform_id):
            report.totals.append(CurrencyTotals(r[0], r[1], r[2], r[3], r[4]))
            report.account_count += r[5]
        mismatched = {r[0] for r in await conn.fetch(
            _SQL_MISMATCHES.format(**p), platform_id, MISMATCHES_LISTED_MAX)}
        mismatched |= {r[0] for r in await conn.fetch(
            _SQL_PENDING_MISMATCHES.format(**p), platform_id, MISMATCHES_LISTED_MAX)}
        report.mismatched_account_ids = sorted(mismatched)[:MISMATCHES_LISTED_MAX]
        await _verify_chain(conn, report, platform_id)
    return report


async def _batch_digests(conn: asyncpg.Connection, report: Report,
                         platform_id: int | None) -> dict[int, bytes]:
    """The recomputed digest of every batch holding a row of the platform (of any batch,
    for the whole system); counts the platform's rows."""
    digests: dict[int, bytes] = {}
    current, h = None, hashlib.sha256()
    if platform_id is None:
        rows = conn.cursor(_SQL_ALL_ROWS, prefetch=_CURSOR_PREFETCH)
    else:
        rows = conn.cursor(_SQL_ROWS_OF_BATCHES, platform_id, prefetch=_CURSOR_PREFETCH)
    async for row in rows:
        batch_id = row[0] // BATCH_SPAN
        if batch_id != current:
            if current is not None:
                digests[current] = h.digest()
            current, h = batch_id, hashlib.sha256()
        h.update(journal.records_digest_line(row))
        if platform_id is None or row[1] == platform_id:
            report.transfer_count += 1
    if current is not None:
        digests[current] = h.digest()
    return digests


async def _verify_chain(conn: asyncpg.Connection, report: Report,
                        platform_id: int | None) -> None:
    digests = await _batch_digests(conn, report, platform_id)
    prev = _GENESIS
    links = 0
    seen: set[int] = set()
    async for b in conn.cursor(
            "SELECT seq, batch_id, rows_digest, hash FROM journal_batches ORDER BY seq",
            prefetch=_CURSOR_PREFETCH):
        links += 1
        expected = hashlib.sha256(prev + b["rows_digest"]).digest()
        if expected != b["hash"] or b["seq"] != links:
            report.bad_batch(b["seq"])  # the shared chain itself is broken here
        if b["batch_id"] in digests:  # a batch of the platform's (every one, system-wide)
            seen.add(b["batch_id"])
            report.batch_count += 1
            if digests[b["batch_id"]] != b["rows_digest"]:
                report.bad_batch(b["seq"])
        elif platform_id is None:
            report.batch_count += 1  # a batch whose rows are all gone: caught below
        prev = b["hash"]
    head = await conn.fetchrow("SELECT seq, hash FROM journal_head")
    if head["hash"] != prev or head["seq"] != links:
        report.chain_ok = False
    if set(digests) - seen:  # journal rows that no chained batch accounts for
        report.chain_ok = False
    counts = await conn.fetch(_SQL_COUNTS)
    if counts:
        report.bad_batch(counts[0]["seq"] or 0)
