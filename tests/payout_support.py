"""Helpers for PayoutService tests: the service through generated stubs as one key, a
platform's payout configuration set directly, and a funded sub-account with a bank account."""

from __future__ import annotations

import datetime as dt
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import grpc

from clearing.limits import DEFAULT_TIME_ZONE, TRANSFERS_PER_PAYOUT_MAX
from clearing.payout import store
from clearing.payout.model import PayoutConfig
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as pb
from clearing.v1 import payout_pb2_grpc
from tests.support import CALL_TIMEOUT_S, Client, rid

# A 19-digit card number; only 6225****1234 may ever come back.
CARD = "6225880212341234"
MASKED = "6225****1234"
TERMINAL = (pb.PAYOUT_STATE_SUCCEEDED, pb.PAYOUT_STATE_FAILED)


class Payouts:
    """PayoutService through generated stubs, as one key."""

    def __init__(self, channel: grpc.aio.Channel, key: str) -> None:
        self.stub = payout_pb2_grpc.PayoutServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {key}"),)

    async def call(self, method: str, request, *, timeout: float = CALL_TIMEOUT_S):
        return await getattr(self.stub, method)(request, metadata=self.metadata,
                                                timeout=timeout)

    async def bind(self, account_id: int, *, number: str = CARD,
                   account_type: int = pb.BANK_ACCOUNT_TYPE_CORPORATE, kyc: bool = True,
                   request_id: str | None = None) -> pb.BankAccount:
        response = await self.call("BindBankAccount", pb.BindBankAccountRequest(
            request_id=request_id or rid(), account_id=account_id, bank_code="ICBC",
            bank_name="Industrial and Commercial Bank of China", account_number=number,
            holder_name="Test Holder Co.", account_type=account_type, kyc_verified=kyc))
        return response.bank_account

    async def request(self, account_id: int, amount_minor: int, *, currency: str = "CNY",
                      request_id: str | None = None, memo: str = "",
                      timeout_s: float = CALL_TIMEOUT_S) -> pb.Payout:
        response = await self.call("RequestPayout", pb.RequestPayoutRequest(
            request_id=request_id or rid(), account_id=account_id, amount_minor=amount_minor,
            currency_code=currency, memo=memo), timeout=timeout_s)
        return response.payout

    async def get(self, payout_id: int) -> pb.Payout:
        return (await self.call("GetPayout", pb.GetPayoutRequest(payout_id=payout_id))).payout

    async def approve(self, payout_id: int, *, reason: str = "ok",
                      request_id: str | None = None) -> pb.Payout:
        return (await self.call("ApprovePayout", pb.ApprovePayoutRequest(
            request_id=request_id or rid(), payout_id=payout_id, reason=reason))).payout

    async def reject(self, payout_id: int, *, reason: str = "no",
                     request_id: str | None = None) -> pb.Payout:
        return (await self.call("RejectPayout", pb.RejectPayoutRequest(
            request_id=request_id or rid(), payout_id=payout_id, reason=reason))).payout

    async def wait_state(self, payout_id: int, states, timeout_s: float = 20.0) -> pb.Payout:
        """Poll until the payout is in one of `states`; the last read otherwise (asserted)."""
        import asyncio
        import time
        deadline = time.monotonic() + timeout_s
        while True:
            p = await self.get(payout_id)
            if p.state in states or time.monotonic() > deadline:
                assert p.state in states, f"payout {payout_id} stuck in {p.state}: {p}"
                return p
            await asyncio.sleep(0.05)


async def set_config(database_url: str, platform_id: int, *, currency: str = "CNY",
                     fee_fixed_minor: int = 0, fee_bps: int = 0, fee_account_id: int = 0,
                     min_amount_minor: int = 1, max_amount_minor: int | None = None,
                     daily_max_minor: int = 10**13, review_threshold_minor: int = 10**12,
                     bank_transfer_max_minor: int = 50_000_000) -> None:
    """Write a platform's payout configuration directly (as `clearing platform
    payout-config` does). The maximum payout defaults to what the most bank transfers
    can carry."""
    if max_amount_minor is None:
        max_amount_minor = TRANSFERS_PER_PAYOUT_MAX * bank_transfer_max_minor
    conn = await asyncpg.connect(database_url)
    try:
        await store.save_config(conn, PayoutConfig(
            platform_id, currency, fee_fixed_minor, fee_bps, fee_account_id, min_amount_minor,
            max_amount_minor, daily_max_minor, review_threshold_minor, bank_transfer_max_minor,
            DEFAULT_TIME_ZONE))
    finally:
        await conn.close()


@dataclass
class Party:
    """A platform's custodial and fee (ordinary) accounts and one funded sub-account."""

    custodial: int
    fee: int
    account: int


async def party(client: Client, payouts: Payouts, *, funds: int,
                owner: int = lpb.OWNER_TYPE_ENTERPRISE, bind: bool = True,
                prefix: str = "") -> Party:
    """Open custodial + ordinary (fee) + merchant accounts, fund the merchant with `funds`
    from the custodial account, and bind a bank account of the matching type."""
    custodial = (await client.open(f"{prefix}custodial", kind=lpb.ACCOUNT_KIND_CUSTODIAL,
                                   allow_negative=True)).account_id
    fee = (await client.open(f"{prefix}platform-ordinary",
                             kind=lpb.ACCOUNT_KIND_ORDINARY)).account_id
    account = (await client.open(f"{prefix}merchant", owner=owner)).account_id
    if funds:
        await client.transfer(custodial, account, funds)
    if bind:
        kind = (pb.BANK_ACCOUNT_TYPE_CORPORATE if owner == lpb.OWNER_TYPE_ENTERPRISE
                else pb.BANK_ACCOUNT_TYPE_PERSONAL)
        await payouts.bind(account, account_type=kind)
    return Party(custodial, fee, account)


def today_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ---- a server of one's own ---------------------------------------------------------------------

@asynccontextmanager
async def isolated_server(pg_admin_dsn: str, redis_url: str, redis_prefix: str, tag: str, *,
                          worker_settings, bank_settings):
    """A server with its own payout worker and bank simulator on a database of its own, so
    that no other server's worker (with another bank) claims its transfers. Payout ids
    start at 1 there. Yields (Running, database_url)."""
    from clearing import db, server
    from tests.conftest import RUN_ID, _replace_db, server_settings

    name = f"clearing_test_{RUN_ID}_{tag}"
    await db.ensure_database(pg_admin_dsn, name)
    dsn = _replace_db(pg_admin_dsn, name)
    try:
        running = await server.start(
            server_settings(dsn, redis_url, f"{redis_prefix}{tag}:", bank=bank_settings,
                            worker_limits=worker_settings))
        try:
            yield running, dsn
        finally:
            await running.stop()
    finally:
        await db.drop_database(pg_admin_dsn, name)


async def keys(database_url: str) -> tuple[int, str, str]:
    """A new platform: (platform_id, gateway+operator key, approver key)."""
    from clearing.tenancy import create_key, create_platform
    conn = await asyncpg.connect(database_url)
    try:
        pid, key = await create_platform(conn, f"p_{rid()[:8]}",
                                         frozenset({"gateway", "operator"}))
        approver = await create_key(conn, pid, frozenset({"approver"}))
    finally:
        await conn.close()
    return pid, key, approver
