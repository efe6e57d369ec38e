"""Pins what `clearing.api.interceptor` relies on in grpcio and its generated code, so that a
grpcio (or grpcio-tools) upgrade that changes it fails here rather than leaving a method
unwrapped (unauthenticated) or unregistered.

The interceptor does not use grpc.aio's interceptor chain (a coroutine more per call): it
hands the generated `add_<Service>Servicer_to_server(servicer, server)` a stand-in server
(`_WrappingServer`) and relies on
- the generated function building one `grpc.RpcMethodHandler` per method of the service
  with `grpc.unary_unary_rpc_method_handler` / `grpc.stream_stream_rpc_method_handler` /
  `grpc.stream_unary_rpc_method_handler` (client streaming: ImportStatement),
  and registering them through exactly two server methods: `add_generic_rpc_handlers`
  (ignored by the stand-in) and `add_registered_method_handlers(service name, {method
  name: handler})` (wrapped, then given to the real server both ways);
- the handler fields `unary_unary`, `stream_stream`, `stream_unary`, `request_deserializer`,
  `response_serializer`, `request_streaming`, `response_streaming`;
- `grpc.method_handlers_generic_handler`, and `grpc.aio.Server` having both registration
  methods.
Then, on the real server: every method of every service answers a call without a key
UNAUTHENTICATED (API_KEY_MISSING), through the registered and the generic path."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clearing.api import interceptor as interceptor_module
from clearing.api import ledger as ledger_api, payout as payout_api, split as split_api
from clearing.api import platform as platform_api
from clearing.api import reconciliation as recon_api
from clearing.api.interceptor import ClearingInterceptor
from clearing.v1 import platform_pb2, platform_pb2_grpc
from clearing.v1 import (ledger_pb2, ledger_pb2_grpc, payout_pb2, payout_pb2_grpc,
                         reconciliation_pb2, reconciliation_pb2_grpc, split_pb2, split_pb2_grpc)
from tests.support import details

# (descriptor of the service, its generated module, the generated registration function)
SERVICES = [
    (ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"], ledger_pb2_grpc,
     ledger_pb2_grpc.add_LedgerServiceServicer_to_server),
    (split_pb2.DESCRIPTOR.services_by_name["SplitService"], split_pb2_grpc,
     split_pb2_grpc.add_SplitServiceServicer_to_server),
    (payout_pb2.DESCRIPTOR.services_by_name["PayoutService"], payout_pb2_grpc,
     payout_pb2_grpc.add_PayoutServiceServicer_to_server),
    (reconciliation_pb2.DESCRIPTOR.services_by_name["ReconciliationService"],
     reconciliation_pb2_grpc,
     reconciliation_pb2_grpc.add_ReconciliationServiceServicer_to_server),
    (platform_pb2.DESCRIPTOR.services_by_name["PlatformService"], platform_pb2_grpc,
     platform_pb2_grpc.add_PlatformServiceServicer_to_server),
]
ROLES = {**ledger_api.METHOD_ROLES, **split_api.METHOD_ROLES, **payout_api.METHOD_ROLES,
         **recon_api.METHOD_ROLES, **platform_api.METHOD_ROLES}
METHODS = [(service, method) for service, _, _ in SERVICES for method in service.methods]
HANDLER_FIELDS = ("request_streaming", "response_streaming", "request_deserializer",
                  "response_serializer", "unary_unary", "unary_stream", "stream_unary",
                  "stream_stream")


def _kind(method) -> str:
    """The handler field of a method: no server streaming without client streaming."""
    assert method.client_streaming or not method.server_streaming, method.full_name
    if not method.client_streaming:
        return "unary_unary"
    return "stream_stream" if method.server_streaming else "stream_unary"


def _servicer(module, service):
    return getattr(module, f"{service.name}Servicer")()


class _Recorder:
    """A server that records what the generated code registers; it has only the two methods
    the interceptor stands in for, so a call of any other fails the test."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.calls.append(("generic", tuple(handlers)))

    def add_registered_method_handlers(self, service: str, method_handlers: dict) -> None:
        self.calls.append(("registered", service, dict(method_handlers)))


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


# ---- what the generated code does ---------------------------------------------------------------

@pytest.mark.parametrize("service, module, add_to_server", SERVICES,
                         ids=[s[0].name for s in SERVICES])
def test_generated_registration_is_what_the_interceptor_replaces(service, module,
                                                                 add_to_server):
    recorder = _Recorder()
    servicer = _servicer(module, service)
    add_to_server(servicer, recorder)
    assert [c[0] for c in recorder.calls] == ["generic", "registered"]
    (_, generic), (_, name, handlers) = recorder.calls
    assert len(generic) == 1 and isinstance(generic[0], grpc.GenericRpcHandler)
    assert name == service.full_name
    assert set(handlers) == {m.name for m in service.methods}
    for method in service.methods:
        handler = handlers[method.name]
        assert isinstance(handler, grpc.RpcMethodHandler)
        assert all(hasattr(handler, f) for f in HANDLER_FIELDS)
        assert (handler.request_streaming, handler.response_streaming) == \
            (method.client_streaming, method.server_streaming)
        # the interceptor wraps unary-unary, stream-stream and stream-unary handlers only
        kind = _kind(method)
        assert getattr(handler, kind) == getattr(servicer, method.name)
        assert [f for f in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
                if getattr(handler, f) is not None] == [kind]
        request, response = GetMessageClass(method.input_type), \
            GetMessageClass(method.output_type)
        assert handler.request_deserializer == request.FromString
        assert handler.response_serializer == response.SerializeToString
        # the generic handler serves the same handlers
        assert generic[0].service(_Details(f"/{service.full_name}/{method.name}")) is handler


def test_grpc_handler_constructors_keep_their_fields():
    async def behaviour(request, context):  # pragma: no cover - never called
        return request

    def decode(data: bytes) -> bytes:
        return data

    def encode(message: bytes) -> bytes:
        return message

    unary = grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=decode,
                                                response_serializer=encode)
    upload = grpc.stream_unary_rpc_method_handler(behaviour, request_deserializer=decode,
                                                  response_serializer=encode)
    assert (upload.stream_unary, upload.unary_unary, upload.stream_stream,
            upload.request_streaming, upload.response_streaming) == (
        behaviour, None, None, True, False)
    stream = grpc.stream_stream_rpc_method_handler(behaviour, request_deserializer=decode,
                                                   response_serializer=encode)
    assert (unary.unary_unary, unary.stream_stream, unary.request_streaming,
            unary.response_streaming) == (behaviour, None, False, False)
    assert (stream.stream_stream, stream.unary_unary, stream.request_streaming,
            stream.response_streaming) == (behaviour, None, True, True)
    for handler in (unary, stream, upload):
        assert (handler.request_deserializer, handler.response_serializer) == (decode, encode)
    generic = grpc.method_handlers_generic_handler("x.v1.S", {"M": unary})
    assert generic.service(_Details("/x.v1.S/M")) is unary
    assert generic.service(_Details("/x.v1.S/Other")) is None


async def test_the_aio_server_has_both_registration_methods():
    server = grpc.aio.server()
    try:
        for name in ("add_generic_rpc_handlers", "add_registered_method_handlers"):
            assert callable(getattr(server, name))
    finally:
        await server.stop(None)


# ---- what the interceptor makes of it -----------------------------------------------------------

class _CountingInterceptor(ClearingInterceptor):
    def __init__(self) -> None:
        super().__init__(keys=None, method_roles=ROLES)
        self.wrapped: list[str] = []

    def _wrap(self, method, handler):
        self.wrapped.append(method)
        return super()._wrap(method, handler)


def test_roles_name_exactly_the_methods_of_the_services():
    assert set(ROLES) == {f"/{s.full_name}/{m.name}" for s, m in METHODS}


def test_every_method_of_every_service_is_wrapped_once_and_registered_both_ways():
    calls = _CountingInterceptor()
    recorder = _Recorder()
    for service, module, add_to_server in SERVICES:
        calls.register(recorder, add_to_server, _servicer(module, service))
    assert sorted(calls.wrapped) == sorted(f"/{s.full_name}/{m.name}" for s, m in METHODS)
    assert len(calls.wrapped) == sum(len(s.methods) for s, _, _ in SERVICES)
    # per service: the wrapped handlers, once as a generic handler and once registered
    assert [c[0] for c in recorder.calls] == ["generic", "registered"] * len(SERVICES)
    for (service, module, _), (_, generic), (_, name, handlers) in zip(
            SERVICES, recorder.calls[0::2], recorder.calls[1::2]):
        assert name == service.full_name
        assert set(handlers) == {m.name for m in service.methods}
        raw = _servicer(module, service)
        for method in service.methods:
            handler = handlers[method.name]
            assert generic[0].service(_Details(f"/{name}/{method.name}")) is handler
            kind = _kind(method)
            assert getattr(handler, kind) is not None
            assert getattr(handler, kind) != getattr(raw, method.name)  # the wrapper
            assert (handler.request_streaming, handler.response_streaming) == \
                (method.client_streaming, method.server_streaming)
            assert handler.response_serializer == \
                GetMessageClass(method.output_type).SerializeToString
            # the lenient deserializer: bad bytes become a value the wrapper refuses
            request = GetMessageClass(method.input_type)
            assert handler.request_deserializer(b"") == request()
            assert isinstance(handler.request_deserializer(b"\xff"),
                              interceptor_module._Undecodable)


def test_a_method_without_roles_is_refused_at_registration():
    partial = ClearingInterceptor(keys=None, method_roles={
        k: v for k, v in ROLES.items() if not k.endswith("/VerifyLedger")})
    with pytest.raises(KeyError, match="VerifyLedger"):
        partial.register(_Recorder(), ledger_pb2_grpc.add_LedgerServiceServicer_to_server,
                         ledger_pb2_grpc.LedgerServiceServicer())


# ---- on the real server ---------------------------------------------------------------------------

async def _call_without_key(channel, service, method, registered: bool):
    path = f"/{service.full_name}/{method.name}"
    request = GetMessageClass(method.input_type)()
    decode = GetMessageClass(method.output_type).FromString
    options = {"_registered_method": True} if registered else {}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if method.client_streaming and not method.server_streaming:
            await channel.stream_unary(path, request_serializer=type(request).SerializeToString,
                                       response_deserializer=decode, **options)(
                iter([request]), timeout=10)
        elif method.client_streaming:
            call = channel.stream_stream(path, request_serializer=type(request).SerializeToString,
                                         response_deserializer=decode, **options)(
                iter([request]), timeout=10)
            async for _ in call:
                pass
        else:
            await channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                      response_deserializer=decode, **options)(
                request, timeout=10)
    return err.value


@pytest.mark.parametrize("registered", [True, False], ids=["registered", "generic"])
async def test_every_method_without_a_key_is_unauthenticated(channel, registered):
    answered = []
    for service, method in METHODS:
        error = await _call_without_key(channel, service, method, registered)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, method.full_name
        assert details(error)[0] == "API_KEY_MISSING", method.full_name
        answered.append(method.full_name)
    assert len(answered) == len(METHODS) == sum(len(s.methods) for s, _, _ in SERVICES)


async def test_the_generated_stubs_reach_the_wrapped_handlers(channel, platform):
    """Through the generated stubs (registered methods), with and without a key."""
    stub = ledger_pb2_grpc.LedgerServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListAccounts(ledger_pb2.ListAccountsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    key = (("authorization", f"Bearer {platform.key}"),)
    response = await stub.ListAccounts(ledger_pb2.ListAccountsRequest(), timeout=10,
                                       metadata=key)
    assert list(response.accounts) == []  # a fresh platform
    stream = split_pb2_grpc.SplitServiceStub(channel).SplitStream(timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stream.read()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_is_not_wrapped(channel):
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
