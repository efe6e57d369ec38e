"""How reconciliation is stored (migration 0012): statement lines copied in batches, the
statement's row, the run and its class totals, and the reads and listings of runs and
discrepancies. Every query names the platform."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg

from clearing import values
from clearing.errors import invariant
from clearing.recon.model import (ClassTotal, Discrepancy, DiscrepancyState,
                                  LineType, MatchClass, Run, Settlement, Statement,
                                  StatementFormat, StatementLine)

LINE_COLUMNS = ("statement_id", "line_number", "platform_id", "line_type",
                "channel_transaction_id", "order_id", "paid_at", "amount_minor",
                "channel_fee_minor", "settled_minor", "currency_code")
RUNS_KIND = "recon-runs"
DISCREPANCIES_KIND = "recon-discrepancies"


async def next_statement_id(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT nextval('recon_statements_statement_id_seq')")


async def copy_lines(conn: asyncpg.Connection, statement_id: int, platform_id: int,
                     lines: Sequence[StatementLine]) -> None:
    """Write a batch of a statement's lines with one COPY (a payout file's with the payout
    ids its lines name)."""
    if not lines:
        return
    if lines[0].line_type == LineType.PAYOUT:
        await conn.copy_records_to_table(
            "recon_statement_lines", columns=LINE_COLUMNS + ("payout_id",),
            records=[(statement_id, x.line_number, platform_id, int(x.line_type),
                      x.channel_transaction_id, x.order_id, x.paid_at, x.amount_minor,
                      x.channel_fee_minor, x.settled_minor, x.currency_code, x.payout_id)
                     for x in lines])
        return
    await conn.copy_records_to_table(
        "recon_statement_lines", columns=LINE_COLUMNS,
        records=[(statement_id, x.line_number, platform_id, int(x.line_type),
                  x.channel_transaction_id, x.order_id, x.paid_at, x.amount_minor,
                  x.channel_fee_minor, x.settled_minor, x.currency_code) for x in lines])


async def lock_import(conn: asyncpg.Connection, platform_id: int, request_id: str,
                      channel: str, day: dt.date) -> None:
    """Serialise the imports of one request id, and of one channel and day, of a platform
    (until the commit; always in this order, so two imports never wait on each other)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7341012)),"
                       " pg_advisory_xact_lock(hashtextextended($2, 7341012))",
                       f"recon-request:{platform_id}:{request_id}",
                       f"recon-day:{platform_id}:{channel}:{day.isoformat()}")


async def lock_day(conn: asyncpg.Connection, platform_id: int, channel: str,
                   day: dt.date) -> None:
    """The lock of one channel and day of a platform that imports take (`lock_import`)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7341012))",
                       f"recon-day:{platform_id}:{channel}:{day.isoformat()}")


_STATEMENT_COLUMNS = ("statement_id, channel, settlement_date, format, content_sha256,"
                      " size_bytes, line_count, currency_code, settled_minor, superseded_by,"
                      " key_id, request_id, imported_at")


def _statement(row: asyncpg.Record) -> Statement:
    return Statement(row["statement_id"], row["channel"], row["settlement_date"],
                     StatementFormat(row["format"]), bytes(row["content_sha256"]),
                     row["size_bytes"], row["line_count"], row["currency_code"],
                     row["settled_minor"], row["superseded_by"], row["key_id"],
                     row["request_id"], row["imported_at"])


async def statement_by_request(conn: asyncpg.Connection, platform_id: int,
                               request_id: str) -> Statement | None:
    row = await conn.fetchrow(f"SELECT {_STATEMENT_COLUMNS} FROM recon_statements"
                              " WHERE platform_id = $1 AND request_id = $2",
                              platform_id, request_id)
    return None if row is None else _statement(row)


async def active_statement(conn: asyncpg.Connection, platform_id: int, channel: str,
                           day: dt.date) -> Statement | None:
    row = await conn.fetchrow(
        f"SELECT {_STATEMENT_COLUMNS} FROM recon_statements WHERE platform_id = $1"
        " AND channel = $2 AND settlement_date = $3 AND superseded_by IS NULL",
        platform_id, channel, day)
    return None if row is None else _statement(row)


async def insert_statement(conn: asyncpg.Connection, platform_id: int, statement: Statement,
                           ) -> None:
    """The statement's row; the active statement of its channel and day, if any, is
    superseded by it (the foreign key is checked at commit)."""
    await conn.execute(
        "UPDATE recon_statements SET superseded_by = $4 WHERE platform_id = $1"
        " AND channel = $2 AND settlement_date = $3 AND superseded_by IS NULL",
        platform_id, statement.channel, statement.settlement_date, statement.statement_id)
    await conn.execute(
        "INSERT INTO recon_statements (statement_id, platform_id, channel, settlement_date,"
        " format, content_sha256, size_bytes, line_count, currency_code, settled_minor,"
        " request_id, key_id, imported_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        statement.statement_id, platform_id, statement.channel, statement.settlement_date,
        int(statement.format), statement.content_sha256, statement.size_bytes,
        statement.line_count, statement.currency_code, statement.settled_minor,
        statement.request_id, statement.imported_by_key_id, statement.imported_at)


async def insert_run(conn: asyncpg.Connection, platform_id: int, statement: Statement,
                     time_zone: str, created_at: dt.datetime) -> int:
    """A run's row with its totals still 0 (`finish_run` writes them)."""
    return await conn.fetchval(
        "INSERT INTO recon_runs (platform_id, statement_id, channel, settlement_date,"
        " time_zone, statement_settled_minor, split_settled_minor, explained_minor,"
        " created_at) VALUES ($1, $2, $3, $4, $5, 0, 0, 0, $6) RETURNING run_id",
        platform_id, statement.statement_id, statement.channel, statement.settlement_date,
        time_zone, created_at)


async def finish_run(conn: asyncpg.Connection, run_id: int, totals: Sequence[ClassTotal],
                     stated_minor: int, info_minor: int, explained_minor: int) -> None:
    await conn.executemany(
        "INSERT INTO recon_run_classes (run_id, class, item_count, amount_minor,"
        " difference_minor) VALUES ($1, $2, $3, $4, $5)",
        [(run_id, int(t.match_class), t.item_count, t.amount_minor, t.difference_minor)
         for t in totals])
    status = await conn.execute(
        "UPDATE recon_runs SET statement_settled_minor = $2, split_settled_minor = $3,"
        " explained_minor = $4 WHERE run_id = $1", run_id, stated_minor, info_minor,
        explained_minor)
    invariant(status == "UPDATE 1", f"run {run_id} updated: {status}")


# ---- reads ------------------------------------------------------------------------------------

_RUN_SELECT = (
    "SELECT r.run_id, r.time_zone, r.statement_settled_minor, r.split_settled_minor,"
    " r.explained_minor, r.created_at, "
    + ", ".join(f"s.{c.strip()}" for c in _STATEMENT_COLUMNS.split(",")) +
    " FROM recon_runs r JOIN recon_statements s USING (statement_id)")


async def _runs(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[Run]:
    ids = [r["run_id"] for r in rows]
    totals: dict[int, list[ClassTotal]] = {i: [] for i in ids}
    for t in await conn.fetch(
            "SELECT run_id, class, item_count, amount_minor, difference_minor"
            " FROM recon_run_classes WHERE run_id = ANY($1::bigint[]) ORDER BY run_id, class",
            ids):
        totals[t["run_id"]].append(ClassTotal(MatchClass(t["class"]), t["item_count"],
                                              t["amount_minor"], t["difference_minor"]))
    settled = {s["run_id"]: settlement(s) for s in await conn.fetch(
        "SELECT * FROM recon_settlements WHERE run_id = ANY($1::bigint[])", ids)}
    return [Run(r["run_id"], _statement(r), r["time_zone"], tuple(totals[r["run_id"]]),
                r["statement_settled_minor"], r["split_settled_minor"], r["explained_minor"],
                r["created_at"], settled.get(r["run_id"])) for r in rows]


def settlement(r: asyncpg.Record) -> Settlement:
    return Settlement(r["transfer_id"], r["amount_minor"], r["posted_before_minor"],
                      r["currency_code"], r["channel_clearing_account_id"],
                      r["custodial_account_id"], r["posting_request_id"], r["request_id"],
                      r["key_id"], r["created_at"])


async def load_run(conn: asyncpg.Connection, platform_id: int, run_id: int) -> Run | None:
    row = await conn.fetchrow(f"{_RUN_SELECT} WHERE r.platform_id = $1 AND r.run_id = $2",
                              platform_id, run_id)
    return None if row is None else (await _runs(conn, [row]))[0]


async def run_of_statement(conn: asyncpg.Connection, platform_id: int,
                           statement_id: int) -> Run:
    row = await conn.fetchrow(
        f"{_RUN_SELECT} WHERE r.platform_id = $1 AND r.statement_id = $2",
        platform_id, statement_id)
    invariant(row is not None, f"statement {statement_id} has no run")
    return (await _runs(conn, [row]))[0]


async def list_runs(conn: asyncpg.Connection, platform_id: int, *, channel: str,
                    day: dt.date | None, page_size: int,
                    page_token: str) -> tuple[list[Run], str]:
    """A page of runs, newest first, and the next page's token ('' on the last)."""
    after = values.decode_page_token(page_token, RUNS_KIND, platform_id)
    rows = await conn.fetch(
        f"{_RUN_SELECT} WHERE r.platform_id = $1 AND ($2 = '' OR r.channel = $2)"
        " AND ($3::date IS NULL OR r.settlement_date = $3) AND ($4::bigint IS NULL"
        " OR r.run_id < $4) ORDER BY r.run_id DESC LIMIT $5",
        platform_id, channel, day, after[0] if after else None, page_size + 1)
    token = ""
    if len(rows) > page_size:
        rows = rows[:page_size]
        token = values.encode_page_token(RUNS_KIND, platform_id, rows[-1]["run_id"])
    return await _runs(conn, rows), token


def discrepancy(r: asyncpg.Record) -> Discrepancy:
    return Discrepancy(
        r["discrepancy_id"], r["run_id"] or 0, MatchClass(r["class"]),
        DiscrepancyState(r["state"]), r["order_id"], r["channel_transaction_id"],
        r["line_number"], LineType(r["line_type"]), r["split_id"],
        r["statement_amount_minor"], r["statement_fee_minor"], r["statement_currency_code"],
        r["split_amount_minor"], r["split_fee_minor"], r["split_currency_code"],
        r["difference_minor"], r["created_at"], r["resolution_id"], r["description"], r["payout_id"],
        r["bank_transfer_id"])


async def list_discrepancies(conn: asyncpg.Connection, platform_id: int, *, run_id: int,
                             classes: Sequence[int], states: Sequence[int], page_size: int,
                             page_token: str) -> tuple[list[Discrepancy], str]:
    """A page of discrepancies, oldest first, and the next page's token ('' on the last)."""
    after = values.decode_page_token(page_token, DISCREPANCIES_KIND, platform_id)
    rows = await conn.fetch(
        "SELECT * FROM recon_discrepancies WHERE platform_id = $1"
        " AND ($2 = 0 OR run_id = $2) AND (cardinality($3::smallint[]) = 0"
        " OR class = ANY($3::smallint[])) AND (cardinality($4::smallint[]) = 0"
        " OR state = ANY($4::smallint[])) AND discrepancy_id > $5"
        " ORDER BY discrepancy_id LIMIT $6",
        platform_id, run_id, list(classes), list(states), after[0] if after else 0,
        page_size + 1)
    token = ""
    if len(rows) > page_size:
        rows = rows[:page_size]
        token = values.encode_page_token(DISCREPANCIES_KIND, platform_id,
                                         rows[-1]["discrepancy_id"])
    return [discrepancy(r) for r in rows], token


async def run_exists(conn: asyncpg.Connection, platform_id: int, run_id: int) -> bool:
    return bool(await conn.fetchval(
        "SELECT true FROM recon_runs WHERE platform_id = $1 AND run_id = $2",
        platform_id, run_id))
