"""The one map from the error tree to the wire: google.rpc.Status with ErrorInfo
(domain clearing.v1) and BadRequest field violations. Servicers never build statuses."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from clearing.errors import ClearingError, InvalidArgument

DOMAIN = "clearing.v1"
log = logging.getLogger("clearing.api")


def status_for(exc: BaseException) -> grpc.Status:
    """The gRPC status (with details in trailing metadata) for any exception."""
    if isinstance(exc, ClearingError):
        code_name, reason, message = exc.code, exc.reason, exc.message
        metadata = exc.metadata
    else:
        # A bug: no detail leaks, but a class may name its reason (SPLIT_INVARIANT_BROKEN).
        reason = getattr(exc, "reason", "INTERNAL")
        code_name, message, metadata = "INTERNAL", "internal error", {}
        if not isinstance(reason, str):
            reason = "INTERNAL"
    status = status_pb2.Status(code=code_pb2.Code.Value(code_name), message=message)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    status.details.append(info)
    if isinstance(exc, InvalidArgument):
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations])
        packed = any_pb2.Any()
        packed.Pack(bad)
        status.details.append(packed)
    return rpc_status.to_status(status)


def code_name(exc: BaseException) -> str:
    return exc.code if isinstance(exc, ClearingError) else "INTERNAL"
