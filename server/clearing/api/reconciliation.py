"""ReconciliationService: validation and conversion; the domain is `clearing.recon`.

ImportStatement is client streaming: the first message's header is checked, then the
chunks are handed to the service as an async iterator of bytes, each checked as it comes
(a chunk before the header, a second header, an empty or oversized chunk: INVALID_ARGUMENT
on `chunk`, nothing imported)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

from clearing import values
from clearing.api import validate
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.api.reconciliation_resolve import ResolutionMethods, settlement
from clearing.errors import ClearingError, FieldViolation, InvalidArgument, Violations
from clearing.ledger.model import Role
from clearing.limits import (RECON_FILTERS_MAX, STATEMENT_BYTES_MAX, STATEMENT_CHANNEL_LEN_MAX,
                             STATEMENT_CHUNK_BYTES_MAX, STATEMENT_DAY_MAX, STATEMENT_DAY_MIN)
from clearing.reasons import Reason
from clearing.recon import service
from clearing.recon.canonical import parse_date
from clearing.recon.model import (DISCREPANCY_CLASSES, Discrepancy, DiscrepancyState,
                                  ImportHeader, Run, Statement, StatementFormat)
from clearing.recon.service import ReconDeps
from clearing.v1 import reconciliation_pb2 as pb
from clearing.v1 import reconciliation_pb2_grpc

_SERVICE = "/clearing.v1.ReconciliationService/"
_READERS = frozenset({Role.GATEWAY, Role.OPERATOR, Role.APPROVER})

# Roles allowed per method.
METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + "ImportStatement": frozenset({Role.OPERATOR}),
    _SERVICE + "GetReconciliationRun": _READERS,
    _SERVICE + "ListReconciliationRuns": _READERS,
    _SERVICE + "ListDiscrepancies": _READERS,
    _SERVICE + "PostSettlement": frozenset({Role.OPERATOR}),
    _SERVICE + "ProposeResolution": frozenset({Role.OPERATOR}),
    _SERVICE + "ApproveResolution": frozenset({Role.APPROVER}),
    _SERVICE + "RejectResolution": frozenset({Role.APPROVER}),
    _SERVICE + "GetResolution": _READERS,
}


def _day(v: Violations, text: str, field: str, *, required: bool) -> dt.date | None:
    if not text:
        if required:
            v.add(field, "required: a date YYYY-MM-DD")
        return None
    day = parse_date(text)
    if day is None or not STATEMENT_DAY_MIN <= day <= STATEMENT_DAY_MAX:
        v.add(field, f"must be a date YYYY-MM-DD from {STATEMENT_DAY_MIN} to "
                     f"{STATEMENT_DAY_MAX}")
        return None
    return day


def _channel(v: Violations, text: str, field: str, *, required: bool) -> None:
    if not text:
        if required:
            v.add(field, "required: the channel as orders name it (e.g. WECHAT_PAY)")
        return
    problem = values.text_problem(text, STATEMENT_CHANNEL_LEN_MAX)
    if problem is None and not text.isprintable():
        problem = "must be printable characters"
    if problem is not None:
        v.add(field, problem)


def _header(first: pb.ImportStatementRequest | None) -> ImportHeader:
    if first is None or first.WhichOneof("content") != "header":
        raise InvalidArgument([FieldViolation(
            "header", "required: the first message carries the header, then chunks follow")])
    h = first.header
    v = Violations()
    validate.request_id(v, h.request_id, "header.request_id")
    _channel(v, h.channel, "header.channel", required=True)
    day = _day(v, h.settlement_date, "header.settlement_date", required=True)
    validate.enum(v, h.format, StatementFormat, "header.format")
    v.raise_if_any()
    return ImportHeader(h.request_id, h.channel, day, StatementFormat(h.format))


async def _chunks(requests: AsyncIterator[pb.ImportStatementRequest]) -> AsyncIterator[bytes]:
    """The file's bytes, message by message, each checked."""
    async for message in requests:
        if message.WhichOneof("content") != "chunk":
            raise InvalidArgument([FieldViolation(
                "chunk", "every message after the first carries a chunk of the file")])
        if not message.chunk:
            raise InvalidArgument([FieldViolation("chunk", "must not be empty")])
        if len(message.chunk) > STATEMENT_CHUNK_BYTES_MAX:
            raise InvalidArgument([FieldViolation(
                "chunk", f"larger than {STATEMENT_CHUNK_BYTES_MAX} bytes")],
                reason=Reason.STATEMENT_TOO_LARGE)
        yield message.chunk


async def _drain(requests: AsyncIterator[pb.ImportStatementRequest]) -> None:
    """Read what the client still sends of a refused import (at most STATEMENT_BYTES_MAX
    more bytes) before answering: a client still writing when the call ends early may be
    told INTERNAL by its own library instead of the refusal (grpcio's asyncio client,
    grpc/grpc#36066)."""
    read_bytes = 0
    try:
        async for message in requests:
            read_bytes += message.ByteSize()
            if read_bytes > STATEMENT_BYTES_MAX:
                return
    except Exception:  # noqa: BLE001 - a broken stream: the refusal is answered anyway
        return


class ReconciliationServicer(ResolutionMethods,
                             reconciliation_pb2_grpc.ReconciliationServiceServicer):
    """Statement imports, runs, discrepancies, settlements and resolutions of the caller's
    platform."""

    def __init__(self, deps: ReconDeps) -> None:
        self._deps = deps

    def run_message(self, r: Run) -> pb.ReconciliationRun:
        return run(r)

    async def ImportStatement(self, request_iterator, context) -> pb.ImportStatementResponse:
        try:
            header = _header(await anext(request_iterator, None))
            who = principal()
            found, replayed = await service.import_statement(
                self._deps, who.platform_id, who.key_id, header, _chunks(request_iterator))
        except ClearingError:
            await _drain(request_iterator)
            raise
        return pb.ImportStatementResponse(run=run(found), replayed=replayed)

    async def GetReconciliationRun(self, request: pb.GetReconciliationRunRequest,
                                   context) -> pb.GetReconciliationRunResponse:
        v = Violations()
        validate.object_id(v, request.run_id, "run_id")
        v.raise_if_any()
        found = await service.get_run(self._deps, principal().platform_id, request.run_id)
        return pb.GetReconciliationRunResponse(run=run(found))

    async def ListReconciliationRuns(self, request: pb.ListReconciliationRunsRequest,
                                     context) -> pb.ListReconciliationRunsResponse:
        v = Violations()
        size = validate.page_size(v, request.page_size)
        _channel(v, request.channel, "channel", required=False)
        day = _day(v, request.settlement_date, "settlement_date", required=False)
        v.raise_if_any()
        runs, token = await service.list_runs(
            self._deps, principal().platform_id, channel=request.channel, day=day,
            page_size=size, page_token=request.page_token)
        return pb.ListReconciliationRunsResponse(runs=[run(r) for r in runs],
                                                 next_page_token=token)

    async def ListDiscrepancies(self, request: pb.ListDiscrepanciesRequest,
                                context) -> pb.ListDiscrepanciesResponse:
        v = Violations()
        size = validate.page_size(v, request.page_size)
        validate.object_id(v, request.run_id, "run_id", required=False)
        _filters(v, request)
        v.raise_if_any()
        found, token = await service.list_discrepancies(
            self._deps, principal().platform_id, run_id=request.run_id,
            classes=sorted(set(request.classes)), states=sorted(set(request.states)),
            page_size=size, page_token=request.page_token)
        return pb.ListDiscrepanciesResponse(discrepancies=[discrepancy(d) for d in found],
                                            next_page_token=token)


def _filters(v: Violations, request: pb.ListDiscrepanciesRequest) -> None:
    allowed = {int(c) for c in DISCREPANCY_CLASSES}
    for name, items in (("classes", request.classes), ("states", request.states)):
        if len(items) > RECON_FILTERS_MAX:
            v.add(name, f"at most {RECON_FILTERS_MAX} values")
    for i, value in enumerate(request.classes):
        if value not in allowed:
            v.add(f"classes[{i}]", "must be a discrepancy class (not UNSPECIFIED nor MATCHED)")
    for i, value in enumerate(request.states):
        validate.enum(v, value, DiscrepancyState, f"states[{i}]")


# ---- conversion -----------------------------------------------------------------------------

def statement(s: Statement) -> pb.Statement:
    return pb.Statement(
        statement_id=s.statement_id, channel=s.channel,
        settlement_date=s.settlement_date.isoformat(), format=int(s.format),
        content_sha256=s.content_sha256.hex(), size_bytes=s.size_bytes,
        line_count=s.line_count, currency_code=s.currency_code, settled_minor=s.settled_minor,
        active=s.active, superseded_by_statement_id=s.superseded_by or 0,
        imported_by_key_id=s.imported_by_key_id, request_id=s.request_id,
        import_time=timestamp(s.imported_at))


def run(r: Run) -> pb.ReconciliationRun:
    return pb.ReconciliationRun(
        run_id=r.run_id, statement=statement(r.statement), time_zone=r.time_zone,
        class_totals=[pb.ClassTotal(reconciliation_class=int(t.match_class),
                                    item_count=t.item_count, amount_minor=t.amount_minor,
                                    difference_minor=t.difference_minor)
                      for t in r.class_totals],
        statement_settled_minor=r.statement_settled_minor,
        split_settled_minor=r.split_settled_minor, difference_minor=r.difference_minor,
        explained_minor=r.explained_minor, discrepancy_count=r.discrepancy_count,
        create_time=timestamp(r.created_at),
        settlement=None if r.settlement is None else settlement(r.settlement))


def discrepancy(d: Discrepancy) -> pb.Discrepancy:
    return pb.Discrepancy(
        discrepancy_id=d.discrepancy_id, run_id=d.run_id, reconciliation_class=int(d.match_class),
        state=int(d.state), order_id=d.order_id,
        channel_transaction_id=d.channel_transaction_id, line_number=d.line_number,
        line_type=int(d.line_type), split_id=d.split_id,
        statement_amount_minor=d.statement_amount_minor,
        statement_fee_minor=d.statement_fee_minor,
        statement_currency_code=d.statement_currency_code,
        split_amount_minor=d.split_amount_minor, split_fee_minor=d.split_fee_minor,
        split_currency_code=d.split_currency_code, difference_minor=d.difference_minor,
        create_time=timestamp(d.created_at), resolution_id=d.resolution_id,
        description=d.description, payout_id=d.payout_id, bank_transfer_id=d.bank_transfer_id)
