"""The reconciliation service: import a statement (stream its lines into PostgreSQL, refuse
a malformed file whole, answer an identical one with its first run, supersede an earlier
file of the day), match it (`match.match_statement`; a bank's payout result file:
`payout_match.SQL_MATCH_PAYOUTS`), and read runs and discrepancies.

Time: a statement's day is a day of the reconciliation time zone (the one default time
zone, DEFAULT_TIME_ZONE): the splits of the day are those paid from its local midnight to
the next."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import asyncpg

from clearing.clock import Clock
from clearing.errors import AlreadyExists, NotFound, ResourceExhausted, invariant
from clearing.ledger.writer import LedgerWriter
from clearing.limits import (DEFAULT_TIME_ZONE, RECON_IMPORTS_MAX, RECON_MATCH_TIMEOUT_S,
                             STATEMENT_COPY_ROWS_MAX)
from clearing.reasons import Reason
from clearing.recon import events, fast_import, match, payout_match, store
from clearing.recon.model import (NOT_IN_FILE_CLASSES, ClassTotal, Discrepancy, ImportHeader,
                                  MatchClass, Run, Statement, StatementFormat, StatementLine)
from clearing.recon.parse import StatementParser

# Splits an order (serialized by the API layer) under a request id; answers the split id.
SplitNow = Callable[[int, str, bytes], Awaitable[int]]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class ReconDeps:
    """What the service needs: the pool, the clock, the time zone of statement days, and
    the gate that bounds concurrent imports (each holds a connection while its file
    streams in)."""

    pool: asyncpg.Pool
    clock: Clock
    time_zone: str = DEFAULT_TIME_ZONE
    imports: asyncio.Semaphore | None = None
    # Settlements and resolutions post through the writer; SPLIT_NOW splits through
    # `split_now(platform_id, request_id, order_message) -> split_id` (the API layer's).
    writer: LedgerWriter | None = None
    split_now: SplitNow | None = None

    def __post_init__(self) -> None:
        if self.imports is None:
            self.imports = asyncio.Semaphore(RECON_IMPORTS_MAX)


def day_bounds(day: dt.date, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The first instant of `day` in `time_zone` and of the next day (UTC)."""
    zone = ZoneInfo(time_zone)
    start = dt.datetime.combine(day, dt.time(), zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), zone)
    return start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)


def _ns(at: dt.datetime) -> int:
    return (at - _EPOCH) // dt.timedelta(microseconds=1) * 1000


async def import_statement(deps: ReconDeps, platform_id: int, key_id: int,
                           header: ImportHeader, chunks: AsyncIterator[bytes],
                           ) -> tuple[Run, bool]:
    """Import and reconcile a statement; (its run, False), or (the run of the identical
    earlier import, True). Refused whole (nothing written) when malformed or too large."""
    if deps.imports.locked():
        raise ResourceExhausted(f"{RECON_IMPORTS_MAX} statement imports are running; "
                                "retry later with the same request id")
    async with deps.imports, deps.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            outcome = await _import(deps, conn, platform_id, key_id, header, chunks)
        except BaseException:
            await tx.rollback()
            raise
        if isinstance(outcome, Run):
            await tx.commit()
            return outcome, False
        await tx.rollback()  # the same file again: nothing of this import is kept
        return await store.run_of_statement(conn, platform_id, outcome.statement_id), True


async def _import(deps: ReconDeps, conn: asyncpg.Connection, platform_id: int, key_id: int,
                  header: ImportHeader, chunks: AsyncIterator[bytes]) -> Run | Statement:
    """The new run, or the earlier identical statement (a replay)."""
    statement_id = await store.next_statement_id(conn)
    lines = await _write_lines(conn, statement_id, platform_id, header, chunks)
    await store.lock_import(conn, platform_id, header.request_id, header.channel,
                            header.settlement_date)
    earlier = await _replay_of(conn, platform_id, header, lines.content_sha256)
    if earlier is not None:
        return earlier
    statement = Statement(statement_id, header.channel, header.settlement_date, header.format,
                          lines.content_sha256, lines.size_bytes, lines.line_count,
                          lines.currency_code, lines.settled_minor, None, key_id,
                          header.request_id, deps.clock.now())
    await store.insert_statement(conn, platform_id, statement)
    return await _reconcile(deps, conn, platform_id, statement)


async def _write_lines(conn: asyncpg.Connection, statement_id: int, platform_id: int,
                       header: ImportHeader, chunks: AsyncIterator[bytes],
                       ) -> fast_import.Imported:
    """Write the statement's lines: a canonical file by the fast path (PostgreSQL parses
    it), which gives way to the general path (Python reads every line) for anything it does
    not take; the general path for the other formats. Raises the problems of a malformed
    file."""
    if header.format != StatementFormat.CANONICAL:
        return _imported(await _stream_lines(conn, statement_id, platform_id, header, chunks))
    spool = fast_import.Spool()
    try:
        done = await fast_import.import_lines(conn, statement_id, platform_id, header, chunks,
                                              spool)
        if done is not None:
            return done
        return _imported(await _stream_lines(conn, statement_id, platform_id, header,
                                             spool.replay(chunks)))
    finally:
        spool.close()


def _imported(parser: StatementParser) -> fast_import.Imported:
    t = parser.totals
    return fast_import.Imported(parser.reader.content_sha256, parser.reader.size_bytes,
                                t.line_count, t.currency_code, t.settled_minor)


async def _stream_lines(conn: asyncpg.Connection, statement_id: int, platform_id: int,
                        header: ImportHeader, chunks: AsyncIterator[bytes]) -> StatementParser:
    """Parse the chunks and COPY the lines in batches; raise the problems at the end."""
    parser = StatementParser(header)
    batch: list[StatementLine] = []
    async for chunk in chunks:
        batch += parser.feed(chunk)
        if len(batch) >= STATEMENT_COPY_ROWS_MAX:
            await store.copy_lines(conn, statement_id, platform_id, batch)
            batch = []
    batch += parser.finish()
    if parser.problems:
        raise parser.problems.error()
    await store.copy_lines(conn, statement_id, platform_id, batch)
    return parser


async def _replay_of(conn: asyncpg.Connection, platform_id: int, header: ImportHeader,
                     sha256: bytes) -> Statement | None:
    """The earlier import this one repeats: the same request id (with the same channel,
    day, format and file, else REQUEST_ID_REUSED), or the day's active statement if it is
    the same file."""
    same = await store.statement_by_request(conn, platform_id, header.request_id)
    if same is not None:
        if (same.channel, same.settlement_date, same.format, same.content_sha256) != (
                header.channel, header.settlement_date, header.format, sha256):
            raise AlreadyExists(f"request id {header.request_id!r} was used for another "
                                "import", reason=Reason.REQUEST_ID_REUSED)
        return same
    active = await store.active_statement(conn, platform_id, header.channel,
                                          header.settlement_date)
    if active is not None and active.content_sha256 == sha256:
        return active
    return None


async def _reconcile(deps: ReconDeps, conn: asyncpg.Connection, platform_id: int,
                     statement: Statement) -> Run:
    """Match the statement (one SQL statement) and write the run with its totals and the
    discrepancy.opened events of its discrepancies."""
    now = statement.imported_at
    run_id = await store.insert_run(conn, platform_id, statement, deps.time_zone, now)
    start, end = day_bounds(statement.settlement_date, deps.time_zone)
    for sql in match.SQL_BEFORE_MATCH:
        await conn.execute(sql)
    if statement.format == StatementFormat.BANK_PAYOUTS:
        rows = await conn.fetch(payout_match.SQL_MATCH_PAYOUTS, statement.statement_id,
                                platform_id, run_id, start, end, statement.currency_code, now,
                                timeout=RECON_MATCH_TIMEOUT_S)
    else:
        rows = await match.match_statement(
            conn, statement.statement_id, platform_id, run_id, statement.channel,
            (_ns(start), _ns(end)), (start, end), statement.currency_code, now,
            RECON_MATCH_TIMEOUT_S)
    totals = tuple(ClassTotal(MatchClass(r["cls"]), r["item_count"], r["amount_minor"],
                              r["difference_minor"]) for r in rows)
    stated = sum(r["stated_minor"] for r in rows)
    info = sum(r["info_minor"] for r in rows)
    explained = sum(t.difference_minor for t in totals if t.match_class != MatchClass.MATCHED)
    _check_totals(statement, totals, stated, info, explained, rows)
    await store.finish_run(conn, run_id, totals, stated, info, explained)
    # discrepancy.opened of each discrepancy the match inserted, in the import's transaction
    opened = await events.opened_in_run(conn, run_id, statement.request_id, now)
    invariant(opened in (0, rows[0]["inserted"] if rows else 0),
              f"statement {statement.statement_id}: {opened} discrepancy events written")
    return Run(run_id, statement, deps.time_zone, totals, stated, info, explained, now)


def _check_totals(statement: Statement, totals: Sequence[ClassTotal], stated: int, info: int,
                  explained: int, rows: Sequence[asyncpg.Record]) -> None:
    """The money invariants of a run, before it is written."""
    invariant(stated == statement.settled_minor,
              f"statement {statement.statement_id}: SQL settled {stated} != parsed "
              f"{statement.settled_minor}")
    invariant(explained == stated - info,
              f"statement {statement.statement_id}: explained {explained} != difference "
              f"{stated - info}")
    lines = sum(t.item_count for t in totals if t.match_class not in NOT_IN_FILE_CLASSES)
    invariant(lines == statement.line_count,
              f"statement {statement.statement_id}: {lines} lines classified of "
              f"{statement.line_count}")
    inserted = rows[0]["inserted"] if rows else 0
    invariant(inserted == sum(t.item_count for t in totals
                              if t.match_class != MatchClass.MATCHED),
              f"statement {statement.statement_id}: {inserted} discrepancies written")


# ---- reads ------------------------------------------------------------------------------------

async def get_run(deps: ReconDeps, platform_id: int, run_id: int) -> Run:
    async with deps.pool.acquire() as conn:
        run = await store.load_run(conn, platform_id, run_id)
    if run is None:
        raise NotFound(f"no reconciliation run {run_id}",
                       reason=Reason.RECONCILIATION_RUN_NOT_FOUND)
    return run


async def list_runs(deps: ReconDeps, platform_id: int, *, channel: str, day: dt.date | None,
                    page_size: int, page_token: str) -> tuple[list[Run], str]:
    async with deps.pool.acquire() as conn:
        return await store.list_runs(conn, platform_id, channel=channel, day=day,
                                     page_size=page_size, page_token=page_token)


async def list_discrepancies(deps: ReconDeps, platform_id: int, *, run_id: int,
                             classes: Sequence[int], states: Sequence[int], page_size: int,
                             page_token: str) -> tuple[list[Discrepancy], str]:
    async with deps.pool.acquire() as conn:
        if run_id and not await store.run_exists(conn, platform_id, run_id):
            raise NotFound(f"no reconciliation run {run_id}",
                           reason=Reason.RECONCILIATION_RUN_NOT_FOUND)
        return await store.list_discrepancies(conn, platform_id, run_id=run_id,
                                              classes=classes, states=states,
                                              page_size=page_size, page_token=page_token)
