"""ReportService's ExportReport (server streaming); the domain is `clearing.reports`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from clearing.api.interceptor import principal
from clearing.errors import ResourceExhausted, Violations
from clearing.limits import REPORT_DAYS_MAX, REPORT_EXPORTS_MAX, STATEMENT_DAY_MAX, STATEMENT_DAY_MIN
from clearing.recon.canonical import parse_date
from clearing.reports import encode
from clearing.reports.export import REPORTS, content_type, export, file_name, header
from clearing.reports.period import Period, platform_time_zone
from clearing.v1 import report_pb2 as pb

_FORMATS = {pb.REPORT_FORMAT_CSV: encode.CSV, pb.REPORT_FORMAT_XLSX: encode.XLSX}


def _day(v: Violations, text: str, field: str):
    if not text:
        v.add(field, "required: a date YYYY-MM-DD")
        return None
    day = parse_date(text)
    if day is None or not STATEMENT_DAY_MIN <= day <= STATEMENT_DAY_MAX:
        v.add(field, f"must be a date YYYY-MM-DD from {STATEMENT_DAY_MIN} to "
                     f"{STATEMENT_DAY_MAX}")
        return None
    return day


def _request(request: pb.ExportReportRequest, platform_id: int) -> tuple[str, Period, str]:
    v = Violations()
    if request.report_name not in REPORTS:
        v.add("report_name", "must be one of " + ", ".join(sorted(REPORTS)))
    first = _day(v, request.from_date, "from_date")
    last = _day(v, request.to_date, "to_date")
    if first is not None and last is not None:
        if first > last:
            v.add("to_date", "must not be before from_date")
        elif (last - first).days >= REPORT_DAYS_MAX:
            v.add("to_date", f"a period is at most {REPORT_DAYS_MAX} days")
        elif request.report_name in REPORTS and \
                (last - first).days >= REPORTS[request.report_name].days_max:
            v.add("to_date", f"a {request.report_name} period is at most "
                             f"{REPORTS[request.report_name].days_max} days")
    fmt = _FORMATS.get(request.format)
    if fmt is None:
        v.add("format", "must be REPORT_FORMAT_CSV or REPORT_FORMAT_XLSX")
    v.raise_if_any()
    return request.report_name, Period(first, last, platform_time_zone(platform_id)), fmt


class ExportMethods:
    """ExportReport, mixed into ReportServicer."""

    _exports: asyncio.Semaphore | None = None

    def _export_slots(self) -> asyncio.Semaphore:
        if self._exports is None:
            self._exports = asyncio.Semaphore(REPORT_EXPORTS_MAX)
        return self._exports

    async def ExportReport(self, request: pb.ExportReportRequest,
                           context) -> AsyncIterator[pb.ExportReportResponse]:
        platform_id = principal().platform_id
        name, period, fmt = _request(request, platform_id)
        slots = self._export_slots()
        if slots.locked():
            raise ResourceExhausted(f"{REPORT_EXPORTS_MAX} report exports are running in this "
                                    "process; retry later")
        async with slots:
            async for message in self._export(platform_id, name, period, fmt):
                yield message

    async def _export(self, platform_id: int, name: str, period: Period,
                      fmt: str) -> AsyncIterator[pb.ExportReportResponse]:
        yield pb.ExportReportResponse(info=pb.ReportInfo(
            report_name=name, from_date=period.first.isoformat(),
            to_date=period.last.isoformat(), time_zone=period.zone,
            columns=header(REPORTS[name]), content_type=content_type(fmt),
            file_name=file_name(name, period, fmt)))
        async for chunk in export(self._pool, platform_id, name, period, fmt):
            yield pb.ExportReportResponse(chunk=chunk.data, row_count=chunk.row_count,
                                          done=chunk.done)
