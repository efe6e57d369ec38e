"""The one map from the error tree to the wire: google.rpc.Status with ErrorInfo
(domain clearing.v1) and BadRequest field violations. Servicers never build statuses."""

from __future__ import annotations

import logging

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from clearing.errors import ClearingError, InvalidArgument, Unavailable
from clearing.reasons import Reason

DOMAIN = "clearing.v1"
log = logging.getLogger("clearing.api")


def bug_reason(exc: BaseException) -> Reason:
    """The reason shown for a bug: no detail leaks, but a class may name its reason
    (SPLIT_INVARIANT_BROKEN); anything else is INTERNAL."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, Reason) else Reason.INTERNAL


def aborted(exc: BaseException) -> BaseException:
    """A transaction PostgreSQL aborted (a lock cycle, e.g. an operator action against the
    writer's late order; a serialization failure), or the database out of reach
    (_CONNECTION_FAILURES), as UNAVAILABLE: nothing of that transaction stands and a retry
    with the same request id is safe. Anything else as is."""
    if isinstance(exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)):
        return Unavailable("the database aborted a transaction of this request (a lock"
                           " conflict); retry with the same request_id",
                           reason=Reason.DATABASE_UNAVAILABLE)
    if isinstance(exc, _CONNECTION_FAILURES):
        return Unavailable("the database refused or lost this request's connection; retry"
                           " with the same request_id", reason=Reason.DATABASE_UNAVAILABLE)
    return exc


# The database out of reach, not the request's fault (found by the fuzz test on a loaded
# machine: "sorry, too many clients already" answered INTERNAL): its connection refused (too
# many clients, starting up or shutting down, the server gone) or lost mid-request. A retry
# with the same request id is safe: a write either committed (the retry answers it) or not.
_CONNECTION_FAILURES = (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError,
                        asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError,
                        asyncpg.CrashShutdownError, asyncpg.ConnectionDoesNotExistError,
                        ConnectionError)


def status_for(exc: BaseException) -> grpc.Status:
    """The gRPC status (with details in trailing metadata) for any exception."""
    exc = aborted(exc)
    if isinstance(exc, ClearingError):
        code_name, reason, message = exc.code, exc.reason, exc.message
        metadata = exc.metadata
    else:
        reason = bug_reason(exc)
        code_name, message, metadata = "INTERNAL", "internal error", {}
    # echoes of the request are bounded: the status must fit in trailing metadata
    message = _cut(message, MESSAGE_BYTES_MAX)
    metadata = {_cut(k, TEXT_BYTES_MAX): _cut(v, TEXT_BYTES_MAX) for k, v in metadata.items()}
    status = status_pb2.Status(code=code_pb2.Code.Value(code_name), message=message)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    status.details.append(info)
    if isinstance(exc, InvalidArgument):
        bad, left_out = _bad_request(exc)
        if left_out:
            info.Pack(error_details_pb2.ErrorInfo(
                reason=reason, domain=DOMAIN,
                metadata={**metadata, "field_violations_left_out": str(left_out)}))
            status.details[0].CopyFrom(info)
        packed = any_pb2.Any()
        packed.Pack(bad)
        status.details.append(packed)
    return rpc_status.to_status(status)


# A status travels in trailing metadata, which clients refuse beyond 8 KiB by default (the
# call then fails with RESOURCE_EXHAUSTED and no detail), and the message twice (grpc-message,
# percent-encoded, and in the details, base64): the message is cut at MESSAGE_BYTES_MAX
# bytes of UTF-8, every other text at TEXT_BYTES_MAX, and the BadRequest holds the first
# violations that fit in BAD_REQUEST_BYTES_MAX; ErrorInfo metadata
# `field_violations_left_out` counts those left out.
MESSAGE_BYTES_MAX = 512
TEXT_BYTES_MAX = 256
BAD_REQUEST_BYTES_MAX = 3072


def _cut(text: str, size_max: int) -> str:
    """`text`, or its longest prefix of at most `size_max` bytes of UTF-8."""
    data = text.encode()
    if len(data) <= size_max:
        return text
    return data[:size_max].decode(errors="ignore")


def _bad_request(exc: InvalidArgument) -> tuple[error_details_pb2.BadRequest, int]:
    bad = error_details_pb2.BadRequest()
    size = 0
    for shown, v in enumerate(exc.violations):
        item = error_details_pb2.BadRequest.FieldViolation(
            field=_cut(v.field, TEXT_BYTES_MAX), description=_cut(v.description, TEXT_BYTES_MAX))
        size += item.ByteSize() + 4
        if size > BAD_REQUEST_BYTES_MAX:
            return bad, len(exc.violations) - shown
        bad.field_violations.append(item)
    return bad, 0


def code_name(exc: BaseException) -> str:
    exc = aborted(exc)
    return exc.code if isinstance(exc, ClearingError) else "INTERNAL"
