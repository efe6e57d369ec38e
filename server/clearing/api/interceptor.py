"""One interceptor for every clearing RPC: authentication and roles (and, under mutual TLS,
the client certificate's subject and platform binding), the call context for logs, metrics
by method and status code, and the mapping of errors to statuses.

Handlers are wrapped once per method (cached); health and reflection pass untouched.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Any, Callable

import grpc

from clearing import audit, logs, metrics, tls
from clearing.api.auth import KeyStore
from clearing.api.errors import aborted, code_name, status_for
from clearing.config import TLS_BINDING_OPTIONAL
from clearing.errors import (ClearingError, FieldViolation, InvalidArgument,
                             PermissionDenied, Unauthenticated)
from clearing.ledger.model import Principal, Role
from clearing.pods import Pods
from clearing.reasons import Reason

log = logging.getLogger("clearing.api")

PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("clearing_principal")
# The subject (RFC 4514) of the current call's client certificate under mutual TLS; "" when
# the connection has none (no mutual TLS). What an audit record names as the certificate.
CERT_SUBJECT: contextvars.ContextVar[str] = audit.CERT_SUBJECT  # Actor.of records it


def principal() -> Principal:
    """The authenticated caller of the current RPC."""
    return PRINCIPAL.get()


def cert_subject() -> str:
    """The current call's client certificate subject ("" without mutual TLS)."""
    return CERT_SUBJECT.get()


def _bearer(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("authorization must be 'Bearer <api key>'",
                                      reason=Reason.API_KEY_INVALID)
            return token.strip()
    raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata",
                          reason=Reason.API_KEY_MISSING)


# The status codes a call is counted under (every ClearingError's code: tests/unit/api).
CALL_CODES = (
    "OK", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION",
    "UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAVAILABLE",
    "UNIMPLEMENTED", "INTERNAL", "CANCELLED", "OUT_OF_RANGE")


class _Undecodable:
    """Stands for a request whose bytes did not parse; the handler answers INVALID_ARGUMENT
    (a deserializer that raises would make gRPC answer UNKNOWN)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError and friends
            return _Undecodable(exc)

    return parse


def _check_decoded(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgument([FieldViolation("", f"request does not parse: {request.error}")],
                              reason=Reason.MALFORMED_REQUEST)


async def _decoded(request_iterator):
    async for request in request_iterator:
        _check_decoded(request)
        yield request


class ClearingInterceptor:
    """Wraps the handlers of the methods named in `method_roles` (full method name ->
    roles allowed; an empty set means any authenticated key but a party key, which may call
    only the methods naming Role.PARTY: clearing.api.party).

    The handlers are wrapped once, when they are registered (`register`), not per call
    through grpc.aio's interceptor chain: the chain costs an extra coroutine on every call,
    and the hot path is where that shows. Health and reflection are registered as usual.
    This relies on how the generated `add_XServicer_to_server` registers its handlers and
    on the fields of `grpc.RpcMethodHandler`: tests/integration/test_interceptor_pin.py
    pins both, and that every method of every service is wrapped.
    """

    def __init__(self, keys: KeyStore, method_roles: dict[str, frozenset[str]], *,
                 mutual_tls: bool = False, binding: str = TLS_BINDING_OPTIONAL,
                 pods: Pods | None = None) -> None:
        self._keys = keys
        # The PostgreSQL pods (clearing.pods): each call is routed to its platform's pod.
        self._pods = pods
        self._roles = method_roles
        # Under mutual TLS every call reads its connection's client certificate (the
        # subject for CERT_SUBJECT, the platform it is bound to); otherwise nothing is read.
        self._mutual_tls = mutual_tls
        self._binding = binding

    def register(self, server: grpc.aio.Server, add_to_server: Callable[[Any, Any], None],
                 servicer: Any) -> None:
        """`add_XServicer_to_server(servicer, server)`, with every method wrapped."""
        add_to_server(servicer, _WrappingServer(server, self._wrap_method))

    def _wrap_method(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method not in self._roles:
            raise KeyError(f"{method} has no roles entry; every method must have one")
        return self._wrap(method, handler)

    async def _enter(self, method: str, short: str, context, request) -> Principal:
        who = await self._keys.principal(_bearer(context))
        if self._mutual_tls:
            cert = tls.peer_certificate(context)
            if cert is not None:
                CERT_SUBJECT.set(cert.subject)
            await self._keys.check_certificate(who, cert, self._binding)
        allowed = self._roles[method]
        if who.is_admin != (Role.ADMIN in allowed):  # admin keys: PlatformService only
            raise PermissionDenied(
                f"{short} is not for an admin key" if who.is_admin
                else f"{short} needs an admin key (`clearing admin init`)",
                metadata={"roles": ",".join(sorted(allowed))})
        if who.is_party and Role.PARTY not in allowed:
            raise PermissionDenied(
                f"{short} is not for a party key (it reads its own splits, vouchers, "
                "accounts and payouts only)", reason=Reason.PARTY_KEY_METHOD_DENIED,
                metadata={"method": short})
        if allowed and not (who.roles & allowed):
            raise PermissionDenied(f"{short} needs one of the roles {sorted(allowed)}",
                                   metadata={"roles": ",".join(sorted(allowed))})
        pods = self._pods
        if pods is not None:
            if pods.routes.stale:
                await pods.routes.refresh()
            pods.enter(who.platform_id)
        PRINCIPAL.set(who)
        logs.CALL.set((short, getattr(request, "request_id", "") if request else "",
                       who.platform_id))
        return who

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        short = method.rsplit("/", 1)[-1]
        calls = {c: metrics.RPC_CALLS.labels(short, c) for c in CALL_CODES}
        latency = metrics.RPC_LATENCY.labels(short)

        async def fail(context, exc: BaseException) -> None:
            if not isinstance(aborted(exc), ClearingError):
                log.error("internal error in %s", short, exc_info=exc)
            elif not isinstance(exc, ClearingError):  # the database aborted or out of reach
                log.warning("%s answered UNAVAILABLE: %r", short, exc)
            status = status_for(exc)
            await context.abort(status.code, status.details, status.trailing_metadata)

        def done(started: float, code: str) -> None:
            calls[code].inc()
            latency.observe(time.perf_counter() - started)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request, context):
                started, code = time.perf_counter(), "OK"
                try:
                    await self._enter(method, short, context, request)
                    _check_decoded(request)
                    return await inner(request, context)
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except Exception as exc:  # noqa: BLE001 - every error goes through the map
                    code = code_name(exc)
                    await fail(context, exc)
                finally:
                    done(started, code)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer)

        if handler.unary_stream:
            inner_download = handler.unary_stream

            async def download(request, context):
                started, code = time.perf_counter(), "OK"
                try:
                    await self._enter(method, short, context, request)
                    _check_decoded(request)
                    async for response in inner_download(request, context):
                        yield response
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except Exception as exc:  # noqa: BLE001
                    code = code_name(exc)
                    await fail(context, exc)
                finally:
                    done(started, code)

            return grpc.unary_stream_rpc_method_handler(
                download, request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer)

        if handler.stream_stream:
            inner_stream = handler.stream_stream

            async def stream(request_iterator, context):
                started, code = time.perf_counter(), "OK"
                try:
                    await self._enter(method, short, context, None)
                    async for response in inner_stream(_decoded(request_iterator), context):
                        yield response
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except Exception as exc:  # noqa: BLE001
                    code = code_name(exc)
                    await fail(context, exc)
                finally:
                    done(started, code)

            return grpc.stream_stream_rpc_method_handler(
                stream, request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        if handler.stream_unary:
            inner_upload = handler.stream_unary

            async def upload(request_iterator, context):
                started, code = time.perf_counter(), "OK"
                try:
                    await self._enter(method, short, context, None)
                    return await inner_upload(_decoded(request_iterator), context)
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except Exception as exc:  # noqa: BLE001
                    code = code_name(exc)
                    await fail(context, exc)
                finally:
                    done(started, code)

            return grpc.stream_unary_rpc_method_handler(
                upload, request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer)
        raise TypeError(f"{method}: unsupported handler kind")


class _WrappingServer:
    """Stands in for the server while generated code registers a service: the handlers it
    registers are wrapped first."""

    def __init__(self, server: grpc.aio.Server,
                 wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]) -> None:
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: `add_registered_method_handlers` registers the wrapped ones."""

    def add_registered_method_handlers(self, service: str,
                                       method_handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        wrapped = {name: self._wrap(f"/{service}/{name}", handler)
                   for name, handler in method_handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)
