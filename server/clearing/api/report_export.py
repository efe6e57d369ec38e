"""ReportService's ExportReport (server streaming); the domain is `clearing.reports`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from clearing.errors import Unimplemented
from clearing.v1 import report_pb2 as pb


class ExportMethods:
    """ExportReport, mixed into ReportServicer."""

    async def ExportReport(self, request: pb.ExportReportRequest,
                           context) -> AsyncIterator[pb.ExportReportResponse]:
        raise Unimplemented("ExportReport is not built yet")
        yield  # a server-streaming method is an async generator
