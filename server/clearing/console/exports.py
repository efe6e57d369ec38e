"""An account's statement as a file (CSV or XLSX), from the API: every ListEntries page,
newest first, CONSOLE_EXPORT_PAGE_SIZE rows a call, CONSOLE_EXPORT_ROWS_MAX rows at most.

The columns are the reports' convention (docs/reports.md): each amount twice, `amount_minor`
(an integer, minor units) and `amount` (major units, formatted exactly from the integer by
money.format_minor: "695.80"), with `currency_code`; times are RFC 3339 in UTC. The encoders
are the reports' (clearing.reports.encode): RFC 4180 CSV, streamed a page at a time as the
API answers; XLSX written row by row in constant memory to a temporary file, then streamed.

The account and the first page are read before the response starts, so a refusal (another
platform's account: NOT_FOUND) is an error page with its status. A file that stops early
says so in its last row: `truncated` (more entries than CONSOLE_EXPORT_ROWS_MAX) or `error`
(a later page refused, with its status and message)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from clearing.limits import CONSOLE_EXPORT_PAGE_SIZE, CONSOLE_EXPORT_ROWS_MAX
from clearing.money import format_minor
from clearing.reports.encode import CONTENT_TYPES, CSV, XLSX, CsvEncoder, XlsxEncoder
from clearing_client import ClearingClient, ClearingRpcError
from clearing_client.v1 import ledger_pb2

COLUMNS = ("transfer_id", "create_time", "side", "counterparty_account_id", "amount_minor",
           "amount", "currency_code", "mode", "pending_transfer_id", "memo")


def _name(enum, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return str(value)


def entry_row(e: ledger_pb2.Entry) -> list[str | int]:
    """One statement line: amounts as integers and formatted, never through a float."""
    try:
        major = format_minor(e.amount_minor, e.currency_code)
    except (KeyError, ValueError):  # a currency this console does not know: minor units
        major = ""
    return [e.transfer_id, e.create_time.ToJsonString(),
            _name(ledger_pb2.EntrySide, e.side, "ENTRY_SIDE_"), e.counterparty_account_id,
            e.amount_minor, major, e.currency_code,
            _name(ledger_pb2.TransferMode, e.mode, "TRANSFER_MODE_"), e.pending_transfer_id,
            e.memo]


def trailer(kind: str, detail: str) -> list[str | int]:
    """The last row of a file that stops early: `truncated` or `error`, and why."""
    return [kind, detail] + [""] * (len(COLUMNS) - 2)


async def statement_rows(c: ClearingClient, account_id: int,
                         first: ledger_pb2.ListEntriesResponse,
                         rows_max: int = CONSOLE_EXPORT_ROWS_MAX,
                         ) -> AsyncIterator[list[list[str | int]]]:
    """The statement's rows a page at a time, from the first page already read; at most
    `rows_max`, then a `truncated` row if there were more; a later page's refusal ends it
    with an `error` row."""
    page, written = first, 0
    while True:
        rows = [entry_row(e) for e in page.entries[:rows_max - written]]
        written += len(rows)
        more = bool(page.next_page_token) or len(rows) < len(page.entries)
        if more and written >= rows_max:
            rows.append(trailer("truncated", f"more than {rows_max} entries: the newest "
                                             f"{rows_max} are here"))
            more = False
        yield rows
        if not more:
            return
        try:
            page = await c.list_entries(account_id, page_size=CONSOLE_EXPORT_PAGE_SIZE,
                                        page_token=page.next_page_token)
        except ClearingRpcError as err:
            yield [trailer("error", f"{err.code.name} {err.reason}: {err.message}")]
            return


def _disposition(account_id: int, fmt: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="statement-{account_id}.{fmt}"',
            "Cache-Control": "no-store"}


async def statement_file(request: Request, _session, c: ClearingClient, _form) -> Response:
    account_id = request.path_params["account_id"]
    fmt = request.path_params["fmt"]
    if fmt not in (CSV, XLSX):
        return Response("CSV or XLSX", status_code=404)
    await c.get_account(account_id)  # another platform's: NOT_FOUND, before any byte
    first = await c.list_entries(account_id, page_size=CONSOLE_EXPORT_PAGE_SIZE)
    headers = _disposition(account_id, fmt)
    rows = statement_rows(c, account_id, first)
    if fmt == CSV:
        async def csv_chunks() -> AsyncIterator[bytes]:
            encoder = CsvEncoder()
            encoder.write_rows([COLUMNS])
            async for batch in rows:
                encoder.write_rows(batch)
                yield encoder.take()

        return StreamingResponse(csv_chunks(), media_type=CONTENT_TYPES[CSV], headers=headers)
    encoder = XlsxEncoder("statement")
    try:
        encoder.write_rows([COLUMNS])
        async for batch in rows:
            await asyncio.to_thread(encoder.write_rows, batch)
        file = await asyncio.to_thread(encoder.close)
    except BaseException:
        encoder.discard()
        raise

    def chunks():
        with file:
            while data := file.read(65536):
                yield data

    return StreamingResponse(chunks(), media_type=CONTENT_TYPES[XLSX], headers=headers,
                             background=BackgroundTask(encoder.discard))


def routes(view) -> list[Route]:
    return [Route("/accounts/{account_id:int}/statement.{fmt}", view(statement_file))]
