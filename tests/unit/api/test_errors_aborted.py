"""A transaction PostgreSQL aborted (deadlock, serialization failure) that reaches the
servicer's edge answers UNAVAILABLE DATABASE_UNAVAILABLE (retry with the same request id),
never INTERNAL (review of the writer's late locking)."""

from __future__ import annotations

import secrets
import socket
import urllib.parse

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


def _reason(status) -> str:
    packed = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"][0]
    info = error_details_pb2.ErrorInfo()
    status_pb2.Status.FromString(packed).details[0].Unpack(info)
    return info.reason


async def test_a_database_out_of_reach_is_unavailable(database_url):
    """Found by the fuzz test on a loaded machine: PostgreSQL's "too many clients" reached
    callers as INTERNAL. Real refusals, as asyncpg raises them: a role over its connection
    limit (TooManyConnectionsError), a port nothing listens on (ConnectionRefusedError)."""
    role = "clearing_test_limited_" + secrets.token_hex(4)
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
        dsn = urllib.parse.urlsplit(database_url)._replace(
            netloc=f"{role}@{urllib.parse.urlsplit(database_url).hostname}:"
                   f"{urllib.parse.urlsplit(database_url).port or 5432}").geturl()
        with pytest.raises(asyncpg.TooManyConnectionsError) as refused:
            await asyncpg.connect(dsn)
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(OSError) as down:
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                                  timeout=5)
    for exc in (refused.value, down.value):
        status = status_for(exc)
        assert status.code == grpc.StatusCode.UNAVAILABLE, exc
        assert _reason(status) == "DATABASE_UNAVAILABLE"


def test_a_bug_is_still_internal():
    assert status_for(ValueError("x")).code == grpc.StatusCode.INTERNAL
