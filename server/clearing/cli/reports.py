"""`clearing reports NAME --from D --to D --format csv|xlsx -o FILE`: ReportService's
ExportReport through the client package's generated stubs; the file is written chunk by
chunk as the stream comes (to FILE.part, renamed once complete), with a progress line of the
rows received on stderr. `--day D`, `--week D` (the Monday-to-Sunday week holding D) and
`--month YYYY-MM` name the usual periods."""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

from clearing.cli.client import _client_options, _run
from clearing.config import Settings
from clearing.reports.export import REPORTS

NAMES = tuple(REPORTS)  # one list of the reports: the server's
FORMATS = ("csv", "xlsx")


def period(args) -> tuple[str, str]:
    """--from/--to, or the day, week or month asked for (dates as given: the server checks)."""
    try:
        if args.day:
            return args.day, args.day
        if args.week:
            day = dt.date.fromisoformat(args.week)
            monday = day - dt.timedelta(days=day.weekday())
            return monday.isoformat(), (monday + dt.timedelta(days=6)).isoformat()
        if args.month:
            first = dt.date.fromisoformat(args.month + "-01")
            nxt = (first + dt.timedelta(days=32)).replace(day=1)
            return first.isoformat(), (nxt - dt.timedelta(days=1)).isoformat()
    except ValueError as exc:
        raise SystemExit(f"not a date: {exc}") from None
    if not (args.from_date and args.to_date):
        raise SystemExit("name the period: --from and --to, or --day, --week or --month")
    return args.from_date, args.to_date


def _progress(row_count: int, size_bytes: int, done: bool) -> None:
    sys.stderr.write(f"\r[{'#' if done else '.'}] {row_count} rows, {size_bytes} bytes"
                     + (" done\n" if done else ""))
    sys.stderr.flush()


def cmd_reports(args, settings: Settings) -> int:
    from clearing_client import ClearingRpcError
    from clearing_client.v1 import report_pb2 as pb
    from clearing_client.v1 import report_pb2_grpc

    first, last = period(args)
    fmt = pb.REPORT_FORMAT_XLSX if args.format == "xlsx" else pb.REPORT_FORMAT_CSV
    out = Path(args.output)
    part = out.with_name(out.name + ".part")
    request = pb.ExportReportRequest(report_name=args.name, from_date=first, to_date=last,
                                     format=fmt)

    async def call(client):
        stub = report_pb2_grpc.ReportServiceStub(client.channel)
        size, info, last_msg = 0, None, None
        try:
            with open(part, "wb") as f:
                async for msg in stub.ExportReport(request, metadata=client.metadata,
                                                   timeout=args.timeout):
                    if msg.HasField("info"):
                        info = msg.info
                    f.write(msg.chunk)
                    size += len(msg.chunk)
                    last_msg = msg
                    if not args.quiet:
                        _progress(msg.row_count, size, msg.done)
        except ClearingRpcError:
            raise
        except Exception as exc:  # a failed stream leaves no partial file
            part.unlink(missing_ok=True)
            import grpc
            if isinstance(exc, grpc.aio.AioRpcError):
                raise ClearingRpcError.from_call(exc) from None
            raise
        if last_msg is None or not last_msg.done:
            part.unlink(missing_ok=True)
            raise SystemExit("the stream ended before the report did")
        os.replace(part, out)
        return pb.ExportReportResponse(info=info, row_count=last_msg.row_count, done=True)

    return _run(args, settings, call)


def add_parser(sub) -> None:
    p = sub.add_parser("reports", help="export a report (operator or approver key)")
    p.add_argument("name", choices=NAMES)
    p.add_argument("--from", dest="from_date", help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="to_date", help="last day, YYYY-MM-DD (included)")
    p.add_argument("--day", help="one day, YYYY-MM-DD")
    p.add_argument("--week", help="the week (Monday to Sunday) holding this day")
    p.add_argument("--month", help="a month, YYYY-MM")
    p.add_argument("--format", choices=FORMATS, default="csv")
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    _client_options(p)
    p.set_defaults(func=cmd_reports, timeout=600.0)
