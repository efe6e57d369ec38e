"""AuditService: the platform's audit trail; the domain is `clearing.audit`."""

from __future__ import annotations

import asyncpg

from clearing import audit, values
from clearing.api import validate
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.errors import Violations
from clearing.ledger.model import Role
from clearing.limits import AUDIT_METHOD_LEN_MAX, AUDIT_RESOURCE_LEN_MAX
from clearing.v1 import audit_pb2 as pb
from clearing.v1 import audit_pb2_grpc

_SERVICE = "/clearing.v1.AuditService/"
METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + "ListAuditEvents": frozenset({Role.OPERATOR, Role.APPROVER}),
}
_TOKEN_KIND = "audit_events"


def event_message(e: audit.Event) -> pb.AuditEvent:
    return pb.AuditEvent(
        event_id=e.event_id, seq=e.seq, key_id=e.key_id, key_prefix=e.key_prefix,
        roles=list(e.roles), cert_subject=e.cert_subject, method=e.method,
        resource=e.resource,
        before_json=audit.canonical(e.before) if e.before is not None else "",
        after_json=audit.canonical(e.after) if e.after is not None else "",
        request_id=e.request_id, create_time=timestamp(e.created_at), hash=e.hash.hex())


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest,
                              context) -> pb.ListAuditEventsResponse:
        v = Violations()
        size = validate.page_size(v, request.page_size)
        validate.text(v, request.resource, "resource", length_max=AUDIT_RESOURCE_LEN_MAX)
        validate.text(v, request.method, "method", length_max=AUDIT_METHOD_LEN_MAX)
        validate.object_id(v, request.key_id, "key_id", required=False)
        start = validate.timestamp(v, request, "start_time")
        end = validate.timestamp(v, request, "end_time")
        if start and end and end <= start:
            v.add("end_time", "must be after start_time")
        v.raise_if_any()
        pid = principal().platform_id
        after, = validate.page_token(request.page_token, _TOKEN_KIND, pid) or (0,)
        flt = audit.Filter(resource=request.resource, key_id=request.key_id,
                           method=request.method, start=start, end=end)
        async with self._pool.acquire() as conn:
            found = await audit.list_events(conn, pid, flt, after_event_id=after,
                                            limit=size + 1)
        token = (values.encode_page_token(_TOKEN_KIND, pid, found[size - 1].event_id)
                 if len(found) > size else "")
        return pb.ListAuditEventsResponse(events=[event_message(e) for e in found[:size]],
                                          next_page_token=token)
