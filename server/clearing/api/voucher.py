"""ReportService's voucher methods (GetVoucher, VerifyVoucher); the domain is
`clearing.reports`."""

from __future__ import annotations

from clearing.errors import Unimplemented
from clearing.v1 import report_pb2 as pb


class VoucherMethods:
    """GetVoucher and VerifyVoucher, mixed into ReportServicer."""

    async def GetVoucher(self, request: pb.GetVoucherRequest, context) -> pb.GetVoucherResponse:
        raise Unimplemented("GetVoucher is not built yet")

    async def VerifyVoucher(self, request: pb.VerifyVoucherRequest,
                            context) -> pb.VerifyVoucherResponse:
        raise Unimplemented("VerifyVoucher is not built yet")
