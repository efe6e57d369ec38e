"""The reports and their export: each report's columns and query, and `export`, which reads
a report's rows from a server-side cursor in one REPEATABLE READ snapshot and encodes them as
they come, handing out chunks of the file (plus a totals row per currency, checked against
the report's own money invariants before it is written)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from clearing.errors import invariant
from clearing.ledger.model import AccountKind
from clearing.limits import (REPORT_CHUNK_BYTES_MAX, REPORT_DAYS_MAX, REPORT_FETCH_ROWS,
                             REPORT_MINUTES_DAYS_MAX, REPORT_QUERY_TIMEOUT_S)
from clearing.money import format_minor
from clearing.reports import sql
from clearing.reports.encode import CONTENT_TYPES, CSV, CsvEncoder, XlsxEncoder
from clearing.reports.period import Period, unrolled_ranges

TEXT, ID, COUNT, AMOUNT = "text", "id", "count", "amount"


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a report: COUNT and AMOUNT columns are totalled per currency; an AMOUNT
    column is written twice, `<name>_minor` and `<name>` (major units)."""

    name: str
    kind: str = TEXT


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    columns: tuple[Column, ...]  # the first is currency_code; the query's columns in order
    query: Callable[[int, Period, set[dt.date]], sql.Query]
    check: Callable[[dict[str, int]], None] | None = None  # on each currency's totals
    totals: bool = True  # False: no totals rows (a report of records, not money: audit)
    days_max: int = REPORT_DAYS_MAX  # the longest period it takes


def _split_summary(platform_id: int, p: Period, rolled: set[dt.date]) -> sql.Query:
    return sql.split_summary(platform_id, p.first, p.last,
                             unrolled_ranges(p.first, p.last, rolled, p.zone))


def _transaction_flow(platform_id: int, p: Period, rolled: set[dt.date]) -> sql.Query:
    # every day from the period's first on: the movements after it lead back from today's
    # balances to the period's closing balances
    return sql.transaction_flow(platform_id, p.first, p.last, p.end,
                                unrolled_ranges(p.first, None, rolled, p.zone))


def _channel_analysis(platform_id: int, p: Period, rolled: set[dt.date]) -> sql.Query:
    return sql.channel_analysis(platform_id, p.zone, p.first, p.last,
                                unrolled_ranges(p.first, p.last, rolled, p.zone))


def _payouts(platform_id: int, p: Period, rolled: set[dt.date]) -> sql.Query:
    return sql.payouts(platform_id, p.start, p.end)


def _flow_balances(t: dict[str, int]) -> None:
    """Double entry: within a currency, every posted debit is a credit; balances move by
    the period's credits less its debits."""
    invariant(t["debits"] == t["credits"], f"transaction flow: debits != credits: {t}")
    invariant(t["opening"] + t["credits"] - t["debits"] == t["closing"],
              f"transaction flow: opening + credits - debits != closing: {t}")


def _split_minutes(platform_id: int, p: Period, rolled: set[dt.date]) -> sql.Query:
    return sql.split_minutes(platform_id, p.zone, p.start, p.end)


def _audit(platform_id: int, p: Period, rolled: set[dt.date]) -> sql.Query:
    return sql.audit(platform_id, p.start, p.end)


def _payout_amounts(t: dict[str, int]) -> None:
    invariant(t["amount"] == t["fee"] + t["net"], f"payouts: amount != fee + net: {t}")
    invariant(t["paid"] <= t["net"], f"payouts: paid above net: {t}")


_CUR = Column("currency_code")
REPORTS: dict[str, Report] = {r.name: r for r in (
    Report("split_summary", (
        _CUR, Column("account_id", ID), Column("external_ref"), Column("rule_set_name"),
        Column("rule_set_version", ID), Column("rule_name"), Column("leg_count", COUNT),
        Column("amount", AMOUNT)), _split_summary),
    Report("transaction_flow", (
        _CUR, Column("account_id", ID), Column("external_ref"), Column("account_kind"),
        Column("opening", AMOUNT), Column("debit_count", COUNT), Column("debits", AMOUNT),
        Column("credit_count", COUNT), Column("credits", AMOUNT), Column("closing", AMOUNT)),
        _transaction_flow, _flow_balances),
    Report("channel_analysis", (
        _CUR, Column("day"), Column("channel"), Column("source"),
        Column("payment_count", COUNT), Column("refund_count", COUNT),
        Column("amount", AMOUNT), Column("channel_fee", AMOUNT), Column("settled", AMOUNT)),
        _channel_analysis),
    Report("payouts", (
        _CUR, Column("account_id", ID), Column("external_ref"), Column("payout_count", COUNT),
        Column("amount", AMOUNT), Column("fee", AMOUNT), Column("net", AMOUNT),
        Column("paid", AMOUNT), Column("succeeded_count", COUNT),
        Column("failed_count", COUNT), Column("failed", AMOUNT), Column("open_count", COUNT),
        Column("failed_attempt_count", COUNT)), _payouts, _payout_amounts),
    # Splits per minute of their paid time (local), per currency: the console's chart.
    Report("split_minutes", (_CUR, Column("minute"), Column("split_count", COUNT),
                             Column("amount", AMOUNT)), _split_minutes,
           days_max=REPORT_MINUTES_DAYS_MAX),
    # The audit trail (clearing.audit): one row per event of the period, no totals.
    Report("audit", (
        Column("event_id", ID), Column("seq", ID), Column("created_at"), Column("key_id", ID),
        Column("key_prefix"), Column("roles"), Column("cert_subject"), Column("method"),
        Column("resource"), Column("before"), Column("after"), Column("request_id"),
        Column("hash")), _audit, totals=False),
)}


def header(report: Report) -> list[str]:
    out = ["line"]
    for c in report.columns:
        out.extend((c.name + "_minor", c.name) if c.kind == AMOUNT else (c.name,))
    return out


def _text(value: object) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return AccountKind(value).name.lower()  # account_kind, the one int text column
    return str(value)


def _cells(report: Report, values: Sequence[object], line: str) -> list[str | int]:
    currency = str(values[0])
    out: list[str | int] = [line]
    for c, value in zip(report.columns, values):
        if value == "":  # a totals row's blank
            out.append("")
        elif c.kind == AMOUNT:
            out.extend((int(value), format_minor(int(value), currency)))
        elif c.kind in (ID, COUNT):
            out.append(int(value))
        else:
            out.append(_text(value))
    return out


class _Totals:
    """COUNT and AMOUNT columns summed per currency, in the order currencies come."""

    def __init__(self, report: Report) -> None:
        self._report = report
        self._names = [c.name for c in report.columns if c.kind in (COUNT, AMOUNT)]
        self.by_currency: dict[str, dict[str, int]] = {}

    def add(self, values: Sequence[object]) -> None:
        t = self.by_currency.setdefault(str(values[0]), dict.fromkeys(self._names, 0))
        for c, value in zip(self._report.columns, values):
            if c.kind in (COUNT, AMOUNT):
                t[c.name] += int(value)

    def rows(self) -> list[list[str | int]]:
        out: list[list[str | int]] = []
        if not self._report.totals:
            return out
        for currency, t in self.by_currency.items():
            if self._report.check is not None:
                self._report.check(t)
            values = [currency] + [t[c.name] if c.kind in (COUNT, AMOUNT) else ""
                                   for c in self._report.columns[1:]]
            out.append(_cells(self._report, values, "total"))
        return out


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes of the file (maybe none: progress only) and the data rows encoded so far."""

    data: bytes
    row_count: int
    done: bool = False


def file_name(name: str, period: Period, fmt: str) -> str:
    return f"{name}_{period.first.isoformat()}_{period.last.isoformat()}.{fmt}"


def content_type(fmt: str) -> str:
    return CONTENT_TYPES[fmt]


async def _rolled_days(conn: asyncpg.Connection, platform_id: int,
                       first: dt.date) -> set[dt.date]:
    rows = await conn.fetch("SELECT day FROM report_rollup_days WHERE platform_id = $1"
                            " AND day >= $2", platform_id, first)
    return {r["day"] for r in rows}


async def export(pool: asyncpg.Pool, platform_id: int, name: str, period: Period, fmt: str,
                 *, chunk_bytes: int = REPORT_CHUNK_BYTES_MAX) -> AsyncIterator[Chunk]:
    """The report `name` of `period` as chunks of a `fmt` file; rows come from a server-side
    cursor (REPORT_FETCH_ROWS at a time) and are encoded as they come."""
    report = REPORTS[name]
    invariant(0 < chunk_bytes <= REPORT_CHUNK_BYTES_MAX, "chunk size out of bounds")
    encoder = CsvEncoder() if fmt == CSV else XlsxEncoder(name)
    off_loop = fmt != CSV  # XlsxWriter's work per row is heavier: done in a thread
    totals, row_count = _Totals(report), 0
    try:
        encoder.write_rows([header(report)])
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
            q = report.query(platform_id, period, await _rolled_days(conn, platform_id,
                                                                     period.first))
            batch: list[list[str | int]] = []
            async for record in conn.cursor(q.sql, *q.args, prefetch=REPORT_FETCH_ROWS,
                                            timeout=REPORT_QUERY_TIMEOUT_S):
                values = tuple(record)
                totals.add(values)
                batch.append(_cells(report, values, "detail"))
                if len(batch) >= REPORT_FETCH_ROWS:
                    row_count += len(batch)
                    await _write(encoder, batch, off_loop)
                    batch = []
                    while encoder.buffered() >= chunk_bytes:
                        data = encoder.take()
                        for i in range(0, len(data), chunk_bytes):
                            yield Chunk(data[i:i + chunk_bytes], row_count)
                    if off_loop:
                        yield Chunk(b"", row_count)
            row_count += len(batch)
            await _write(encoder, batch + totals.rows(), off_loop)
        if isinstance(encoder, CsvEncoder):
            pieces = list(encoder.finish(chunk_bytes))
            for piece in pieces[:-1]:
                yield Chunk(piece, row_count)
            yield Chunk(pieces[-1] if pieces else b"", row_count, done=True)
        else:
            f = await asyncio.to_thread(encoder.close)
            try:
                piece = await asyncio.to_thread(f.read, chunk_bytes)
                while True:  # one read ahead, so that the last chunk says done
                    after = await asyncio.to_thread(f.read, chunk_bytes)
                    yield Chunk(piece, row_count, done=not after)
                    if not after:
                        break
                    piece = after
            finally:
                f.close()
    finally:
        if isinstance(encoder, XlsxEncoder):
            encoder.discard()


async def _write(encoder: CsvEncoder | XlsxEncoder, rows: list, off_loop: bool) -> None:
    if off_loop:
        await asyncio.to_thread(encoder.write_rows, rows)
    else:
        encoder.write_rows(rows)
