"""The settlement posting of a statement (PostSettlement): the channel's money booked when
it arrives, ONE ledger transfer from the platform's clearing account of the channel into
its custodial account, tied to the statement by a row of recon_settlements.

- Amount: the statement's settled total minus what earlier settlements of the same
  platform, channel and day posted (a superseded statement's): the first statement posts
  its total, a superseding one the correction (the reverse direction when negative; no
  transfer when 0). Only the active statement's run can be settled, once.
- Order and crash safety: the day's advisory lock (the one imports take, so no import
  supersedes the statement meanwhile) is held in the transaction that records the request
  id (`clearing.idempotency.run`); in it the posting is submitted to the ledger writer
  under the statement's own request id (`posting_request_id`), then the settlement row is
  written. A crash after the writer committed and before that transaction did leaves the
  posting without its row: the next PostSettlement (any request id) submits the same
  posting again, which the writer answers with the committed transfer (nothing moves
  twice), and writes the row.
- The writer's refusals of that posting (a frozen custodial account...) leave no trace
  under its request id (`Posting.unrecorded_reasons`), so it can be posted once the cause
  is gone; the PostSettlement call's request id records the refusal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import asyncpg

from clearing import audit, idempotency
from clearing.errors import FailedPrecondition, NotFound, invariant
from clearing.ledger.model import Claim, Leg, Mode, Posting
from clearing.reasons import Reason
from clearing.recon import accounts, store
from clearing.recon.model import Run, StatementFormat
from clearing.recon.service import ReconDeps

METHOD = "PostSettlement"
POSTING_METHOD = "ReconSettlement"
# Refusals of the writer that leave the statement's posting request id free (see above).
UNRECORDED_REASONS = frozenset({
    Reason.ACCOUNT_FROZEN, Reason.ACCOUNT_CLOSED, Reason.ACCOUNT_NOT_FOUND,
    Reason.INSUFFICIENT_FUNDS, Reason.CURRENCY_MISMATCH, Reason.BALANCE_OVERFLOW})

_SQL_DAY_POSTED = """
SELECT currency_code, sum(amount_minor)::bigint AS posted_minor FROM recon_settlements
WHERE platform_id = $1 AND channel = $2 AND settlement_date = $3 AND currency_code <> ''
GROUP BY currency_code
"""
# What the day's other statements' settlement postings moved into the custodial account
# although no settlement row records them: a posting commits in the writer's transaction and
# its row in the call's, so a call cut off between the two (a crash, a client's deadline:
# the posting stands) leaves the posting alone; once a corrected file supersedes that
# statement, its row can never be written. Counted in what the day posted before, so that
# the superseding statement posts only the difference (found in review).
_SQL_IN_DOUBT = """
SELECT coalesce(sum(CASE WHEN t.debit_account_id = $2 THEN t.amount ELSE -t.amount END), 0)
           ::bigint
FROM transfers t
WHERE (t.debit_account_id = $2 OR t.credit_account_id = $2) AND t.platform_id = $1
  AND t.request_id = ANY($3::text[])
"""
_SQL_UNRECORDED = """
SELECT s.statement_id FROM recon_statements s
WHERE s.platform_id = $1 AND s.channel = $2 AND s.settlement_date = $3 AND s.statement_id <> $4
  AND NOT EXISTS (SELECT 1 FROM recon_settlements x WHERE x.statement_id = s.statement_id)
"""
_SQL_INSERT = """
INSERT INTO recon_settlements (statement_id, platform_id, run_id, channel, settlement_date,
    currency_code, amount_minor, posted_before_minor, transfer_id,
    channel_clearing_account_id, custodial_account_id, posting_request_id, request_id,
    key_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
"""


def posting_request_id(statement_id: int) -> str:
    """The ledger request id of a statement's settlement transfer (not a client's: the
    claim prefix is not printable)."""
    return f"{Claim.PREFIX}recon-settle:{statement_id}"


async def _day_posted(conn, platform_id: int, run: Run) -> tuple[str, int]:
    """(the currency, what earlier settlements of the run's channel and day posted in
    it): the statement's currency, or the earlier ones' for a statement without lines.
    Another currency than the earlier settlements': FAILED_PRECONDITION."""
    s = run.statement
    rows = await conn.fetch(_SQL_DAY_POSTED, platform_id, s.channel, s.settlement_date)
    posted = {r["currency_code"]: r["posted_minor"] for r in rows}
    currency = s.currency_code or next(iter(posted), "")
    if set(posted) - {currency}:
        raise FailedPrecondition(
            f"the statement is in {currency}; earlier settlements of {s.channel} on "
            f"{s.settlement_date} are in {', '.join(sorted(posted))}",
            reason=Reason.CURRENCY_MISMATCH, metadata={"currency_code": currency})
    return currency, posted.get(currency, 0)


async def _in_doubt(conn, platform_id: int, run: Run, clearing_id: int) -> int:
    """What the day's other statements' postings with no settlement row moved (_SQL_IN_DOUBT)."""
    s = run.statement
    ids = [posting_request_id(r["statement_id"]) for r in await conn.fetch(
        _SQL_UNRECORDED, platform_id, s.channel, s.settlement_date, s.statement_id)]
    if not ids or not clearing_id:
        return 0
    return await conn.fetchval(_SQL_IN_DOUBT, platform_id, clearing_id, ids)


def settlement_posting(platform_id: int, run: Run, clearing_id: int, custodial_id: int,
             amount_minor: int, currency: str) -> Posting:
    statement_id = run.statement.statement_id
    request_id = posting_request_id(statement_id)
    memo = f"settlement of statement {statement_id} ({run.statement.channel} " \
           f"{run.statement.settlement_date})"
    if amount_minor > 0:
        leg = Leg(clearing_id, custodial_id, amount_minor, currency, Mode.IMMEDIATE, memo=memo)
    else:
        leg = Leg(custodial_id, clearing_id, -amount_minor, currency, Mode.IMMEDIATE, memo=memo)
    digest = hashlib.sha256(f"{POSTING_METHOD}\0{request_id}\0{leg.debit_account_id}\0"
                            f"{leg.credit_account_id}\0{leg.amount_minor}\0{currency}"
                            .encode()).digest()
    return Posting(platform_id, request_id, POSTING_METHOD, digest, (leg,),
                   unrecorded_reasons=UNRECORDED_REASONS)


async def _run_or_404(conn, platform_id: int, run_id: int) -> Run:
    run = await store.load_run(conn, platform_id, run_id)
    if run is None:
        raise NotFound(f"no reconciliation run {run_id}",
                       reason=Reason.RECONCILIATION_RUN_NOT_FOUND,
                       metadata={"field": "run_id"})
    return run


async def post_settlement(deps: ReconDeps, platform_id: int, key_id: int, request_id: str,
                          payload_hash: bytes, run_id: int,
                          encode: Callable[[Run], bytes], *, actor: audit.Actor) -> bytes:
    """PostSettlement once per request id; answers the first response (`encode` of the run
    as the settlement left it) or raises the recorded refusal. See the module docstring."""
    invariant(deps.writer is not None, "PostSettlement needs the ledger writer")
    clearing_id = 0
    async with deps.pool.acquire() as conn:
        found = await store.load_run(conn, platform_id, run_id)
        if found is not None and found.statement.format == StatementFormat.BANK_PAYOUTS:
            raise FailedPrecondition(
                f"run {run_id} is of a bank payout result file: the bank paid that money "
                "out; only a channel statement's run is settled",
                reason=Reason.SETTLEMENT_NOT_APPLICABLE, metadata={"field": "run_id"})
        currency = "" if found is None else (await _day_posted(conn, platform_id, found))[0]
    if currency:  # opened and committed before the writer's transaction looks for it
        clearing_id = await accounts.ensure_clearing(deps.pool, platform_id,
                                                     found.statement.channel, currency)

    async def op(conn: asyncpg.Connection) -> bytes:
        run = await _run_or_404(conn, platform_id, run_id)
        s = run.statement
        await store.lock_day(conn, platform_id, s.channel, s.settlement_date)
        run = await _run_or_404(conn, platform_id, run_id)  # as the lock left it
        if run.settlement is not None:
            raise FailedPrecondition(
                f"statement {s.statement_id} was settled by request "
                f"{run.settlement.request_id!r}", reason=Reason.STATEMENT_ALREADY_SETTLED,
                metadata={"transfer_id": str(run.settlement.transfer_id)})
        if not run.statement.active:
            raise FailedPrecondition(
                f"statement {s.statement_id} was superseded by statement "
                f"{run.statement.superseded_by}: settle the active one's run",
                reason=Reason.STATEMENT_SUPERSEDED)
        day_currency, before = await _day_posted(conn, platform_id, run)
        if day_currency != currency:  # an earlier settlement came meanwhile: retry
            raise FailedPrecondition(f"the day's settlement currency is now {day_currency}",
                                     reason=Reason.CURRENCY_MISMATCH)
        before += await _in_doubt(conn, platform_id, run, clearing_id)
        amount = s.settled_minor - before
        custodial_id, transfer_id = 0, 0
        if amount:
            custodial_id = await accounts.custodial(conn, platform_id, currency)
            sent = await deps.writer.submit(settlement_posting(
                platform_id, run, clearing_id, custodial_id, amount, currency))
            invariant(len(sent) == 1, f"a settlement posting made {len(sent)} transfers")
            transfer_id = sent[0].transfer_id
        await conn.execute(_SQL_INSERT, s.statement_id, platform_id, run.run_id, s.channel,
                           s.settlement_date, currency, amount, before, transfer_id,
                           clearing_id, custodial_id,
                           posting_request_id(s.statement_id) if amount else "", request_id,
                           key_id, deps.clock.now())
        await audit.record(conn, actor, METHOD, f"recon_run:{run_id}",
                           before={"settled": False, "day_posted_minor": before},
                           after={"settled": True, "statement_id": s.statement_id,
                                  "amount_minor": amount, "currency_code": currency,
                                  "transfer_id": transfer_id})
        return encode(await _run_or_404(conn, platform_id, run_id))

    return await idempotency.run(deps.pool, platform_id, request_id, METHOD, payload_hash, op)
