"""ReportService: vouchers (`api/voucher.py`) and report exports (`api/report_export.py`)."""

from __future__ import annotations

import asyncpg

from clearing.api.report_export import ExportMethods
from clearing.api.voucher import VoucherMethods
from clearing.clock import Clock
from clearing.ledger.model import Role
from clearing.v1 import report_pb2_grpc

_SERVICE = "/clearing.v1.ReportService/"
_READERS = frozenset({Role.GATEWAY, Role.OPERATOR, Role.APPROVER})
_FINANCE = frozenset({Role.OPERATOR, Role.APPROVER})

# Roles allowed per method.
METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + "GetVoucher": _READERS | {Role.PARTY},
    _SERVICE + "VerifyVoucher": _FINANCE,
    _SERVICE + "ExportReport": _FINANCE,
}


class ReportServicer(VoucherMethods, ExportMethods, report_pb2_grpc.ReportServiceServicer):
    def __init__(self, pool: asyncpg.Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock
