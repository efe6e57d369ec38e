"""ReportService's voucher methods (GetVoucher, VerifyVoucher): validation and conversion;
the domain is `clearing.reports.vouchers`."""

from __future__ import annotations

import asyncpg

from clearing.api import party
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.clock import Clock
from clearing.errors import Violations
from clearing.limits import VOUCHER_PDF_BYTES_MAX
from clearing.reports import vouchers
from clearing.reports.voucher_model import Voucher, VoucherKind
from clearing.v1 import report_pb2 as pb

_SUBJECTS = (("split_id", VoucherKind.SPLIT), ("split_action_id", VoucherKind.SPLIT_ACTION),
             ("payout_id", VoucherKind.PAYOUT))


def voucher_message(v: Voucher) -> pb.Voucher:
    return pb.Voucher(voucher_id=v.voucher_id, kind=int(v.kind), subject_id=v.subject_id,
                      references_voucher_id=v.references_voucher_id, digest=v.digest_hex,
                      issue_time=timestamp(v.issued_at), content_json=v.content,
                      pdf_sha256=v.pdf_sha256.hex())


def _one_id(v: Violations, request, fields: tuple[str, ...]) -> str | None:
    """The one id field set (each set one positive); violations otherwise."""
    chosen = [f for f in fields if getattr(request, f) != 0]
    for f in chosen:
        if getattr(request, f) < 0:
            v.add(f, "must be positive")
    if not chosen:
        v.add(fields[0], f"one of {', '.join(fields)} is required")
    for f in chosen[1:]:
        v.add(f, f"only one of {', '.join(fields)} may be set")
    return chosen[0] if chosen else None


class VoucherMethods:
    """GetVoucher and VerifyVoucher, mixed into ReportServicer."""

    _pool: asyncpg.Pool
    _clock: Clock

    async def GetVoucher(self, request: pb.GetVoucherRequest, context) -> pb.GetVoucherResponse:
        v = Violations()
        field = _one_id(v, request, ("voucher_id", *(name for name, _ in _SUBJECTS)))
        v.raise_if_any()
        who = principal()
        platform_id = who.platform_id
        if field == "voucher_id":
            voucher, pdf = await vouchers.get_by_id(self._pool, platform_id, request.voucher_id)
            await party.check_voucher(self._pool, who, voucher.kind, voucher.subject_id,
                                      field, request.voucher_id)
        else:
            kind = dict(_SUBJECTS)[field]
            await party.check_voucher(self._pool, who, kind, getattr(request, field), field,
                                      getattr(request, field))
            voucher, pdf = await vouchers.get_by_subject(
                self._pool, self._clock, platform_id, kind, getattr(request, field))
        return pb.GetVoucherResponse(pdf=pdf, voucher=voucher_message(voucher))

    async def VerifyVoucher(self, request: pb.VerifyVoucherRequest,
                            context) -> pb.VerifyVoucherResponse:
        v = Violations()
        if request.voucher_id and request.pdf:
            v.add("pdf", "only one of voucher_id, pdf may be set")
        elif request.voucher_id < 0:
            v.add("voucher_id", "must be positive")
        elif not request.voucher_id and not request.pdf:
            v.add("voucher_id", "one of voucher_id, pdf is required")
        if len(request.pdf) > VOUCHER_PDF_BYTES_MAX:
            v.add("pdf", f"at most {VOUCHER_PDF_BYTES_MAX} bytes")
        v.raise_if_any()
        pdf = request.pdf or None
        voucher_id = request.voucher_id or vouchers.voucher_id_in_pdf(request.pdf)
        result = await vouchers.verify(self._pool, principal().platform_id, voucher_id, pdf)
        return pb.VerifyVoucherResponse(
            valid=result.valid, voucher=voucher_message(result.voucher),
            problems=[pb.VoucherProblem(kind=int(p.kind), detail=p.detail)
                      for p in result.problems],
            pdf_checked=result.pdf_checked)
