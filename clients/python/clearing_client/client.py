"""The client: stubs for the three services, bearer auth, retries with the same request."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clearing.v1 import ledger_pb2 as pb
from clearing.v1 import ledger_pb2_grpc, payout_pb2_grpc, split_pb2_grpc

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED})


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class ClearingRpcError(Exception):
    """A failed call, with the server's ErrorInfo reason and BadRequest field paths."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    fields: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    @classmethod
    def from_call(cls, err: grpc.aio.AioRpcError) -> "ClearingRpcError":
        out = cls(err.code(), err.details() or "")
        status = rpc_status.from_call(err)
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                out.reason, out.metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                out.fields = [v.field for v in bad.field_violations]
        return out


class ClearingClient:
    """An asyncio client of one platform (its API key)."""

    def __init__(self, target: str, api_key: str, *, timeout_s: float = 10.0,
                 attempts_max: int = 5, backoff_s: float = 0.05, backoff_max_s: float = 2.0,
                 channel: grpc.aio.Channel | None = None) -> None:
        self._own_channel = channel is None
        self.channel = channel or grpc.aio.insecure_channel(target)
        self.metadata = (("authorization", f"Bearer {api_key}"),)
        self.timeout_s = timeout_s
        self.attempts_max = attempts_max
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.channel)
        self.split = split_pb2_grpc.SplitServiceStub(self.channel)
        self.payout = payout_pb2_grpc.PayoutServiceStub(self.channel)

    async def __aenter__(self) -> "ClearingClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close()

    async def call(self, method, request, *, timeout_s: float | None = None):
        """Call a stub method (e.g. `client.ledger.Transfer`), retrying retryable failures
        with the same request. Raises ClearingRpcError."""
        delay = self.backoff_s
        for attempt in range(1, self.attempts_max + 1):
            try:
                return await method(request, metadata=self.metadata,
                                    timeout=timeout_s or self.timeout_s)
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE_CODES or attempt == self.attempts_max:
                    raise ClearingRpcError.from_call(err) from None
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff_max_s)
        raise AssertionError("unreachable")

    # ---- ledger conveniences ------------------------------------------------------------

    async def create_account(self, external_ref: str, *, kind: int, currency_code: str = "CNY",
                             owner_type: int = pb.OWNER_TYPE_ENTERPRISE,
                             display_name: str = "", allow_negative: bool | None = None,
                             request_id: str | None = None) -> pb.Account:
        request = pb.CreateAccountRequest(
            request_id=request_id or new_request_id(), external_ref=external_ref, kind=kind,
            owner_type=owner_type, currency_code=currency_code, display_name=display_name)
        if allow_negative is not None:
            request.allow_negative = allow_negative
        return (await self.call(self.ledger.CreateAccount, request)).account

    async def transfer(self, debit_account_id: int, credit_account_id: int, amount_minor: int,
                       currency_code: str, *, mode: int = pb.TRANSFER_MODE_IMMEDIATE,
                       pending_transfer_id: int = 0, memo: str = "",
                       request_id: str | None = None) -> pb.Transfer:
        request = pb.TransferRequest(
            request_id=request_id or new_request_id(), debit_account_id=debit_account_id,
            credit_account_id=credit_account_id, amount_minor=amount_minor,
            currency_code=currency_code, mode=mode, pending_transfer_id=pending_transfer_id,
            memo=memo)
        return (await self.call(self.ledger.Transfer, request)).transfer

    async def balance(self, account_id: int) -> pb.Balance:
        return (await self.call(self.ledger.GetBalance,
                                pb.GetBalanceRequest(account_id=account_id))).balance

    async def verify(self) -> pb.VerifyLedgerResponse:
        return await self.call(self.ledger.VerifyLedger, pb.VerifyLedgerRequest())
