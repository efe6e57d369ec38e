"""A transaction PostgreSQL aborted (deadlock, serialization failure) that reaches the
servicer's edge answers UNAVAILABLE DATABASE_UNAVAILABLE (retry with the same request id),
never INTERNAL (review of the writer's late locking)."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from clearing.api.errors import code_name, status_for


@pytest.mark.parametrize("exc", [asyncpg.DeadlockDetectedError("deadlock detected"),
                                 asyncpg.SerializationError("could not serialize")])
def test_an_aborted_transaction_is_unavailable(exc):
    status = status_for(exc)
    assert status.code == grpc.StatusCode.UNAVAILABLE
    assert code_name(exc) == "UNAVAILABLE"
    packed = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"][0]

    info = error_details_pb2.ErrorInfo()
    status_pb2.Status.FromString(packed).details[0].Unpack(info)
    assert info.reason == "DATABASE_UNAVAILABLE"


def test_a_bug_is_still_internal():
    assert status_for(ValueError("x")).code == grpc.StatusCode.INTERNAL
