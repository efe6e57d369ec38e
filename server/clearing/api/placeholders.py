"""Services in the contract that are not built yet: answered UNIMPLEMENTED, authenticated
like every other (any role). None are left now; the machinery stays for the next one.
Also the list of every clearing service the server registers (SERVICE_NAMES)."""

from __future__ import annotations

from typing import Any, Callable

import grpc

from clearing.errors import Unimplemented
from clearing.v1 import ledger_pb2, payout_pb2, split_pb2

# (service descriptor, generated grpc module, add function name, servicer base class).
_SERVICES: tuple = ()
# Every clearing service the server registers (the built ones and the placeholders).
SERVICE_NAMES = [ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name,
                 split_pb2.DESCRIPTOR.services_by_name["SplitService"].full_name,
                 payout_pb2.DESCRIPTOR.services_by_name["PayoutService"].full_name] + [
    d.full_name for d, *_ in _SERVICES]
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"/{d.full_name}/{m.name}": frozenset() for d, *_ in _SERVICES for m in d.methods}


def _unary(name: str) -> Callable[..., Any]:
    async def method(self, request, context):
        raise Unimplemented(f"{name} is not implemented yet")
    return method


def _streaming(name: str) -> Callable[..., Any]:
    async def method(self, request_iterator, context):
        raise Unimplemented(f"{name} is not implemented yet")
        yield  # pragma: no cover - makes this an async generator
    return method


def _placeholder(descriptor, base: type) -> type:
    methods = {m.name: (_streaming if m.server_streaming else _unary)(m.name)
               for m in descriptor.methods}
    return type(f"Placeholder{descriptor.name}", (base,), methods)


def add_to_server(server: grpc.aio.Server, register: Callable[..., None]) -> None:
    """Register the placeholder services through `register(server, add_fn, servicer)`."""
    for descriptor, module, adder, base in _SERVICES:
        register(server, getattr(module, adder), _placeholder(descriptor, base)())
