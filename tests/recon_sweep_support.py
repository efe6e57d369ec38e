"""Helpers for the tests of the 7x24 sweep and of the bank's payout result file (no tests
here).

The sweep checks every platform's splits and payouts, so its tests run on a database of
their own per test (`own_database`), on a server (payout worker + bank simulator) whose own
sweep is off unless asked: the tests call `Sweeper.tick()` themselves, with a settle delay of
0, and count what it checked. Splits are made through SplitService with a rule set that
holds the seller's share (released half on SHIPPED, half on RECEIVED); tampering is done in
SQL, as an intruder or a bug would."""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass

import asyncpg
import grpc

from clearing import db, server
from clearing.config import BankSimSettings, ReconSettings
from clearing.clock import Clock
from clearing.recon.sweep import Sweeper
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import reconciliation_pb2 as rpb
from clearing.v1 import reconciliation_pb2_grpc
from clearing.v1 import split_pb2 as spb
from tests import payout_support
from tests.conftest import RUN_ID, _replace_db, server_settings
from tests.payout_support import Payouts, set_config
from tests.payout_worker_support import FAST, POOL_MAX
from tests.split_support import Splits
from tests.support import AS_TAMPERING_SUPERUSER, CALL_TIMEOUT_S, Client, rid

HELD_RULES = """
name: sweep-held
currency_code: CNY
rules:
  - rule_name: held
    priority: 1
    shares:
      - {label: platform, type: SHARE_TYPE_RATIO, ratio_bps: 1000,
         receiver: {account_ref: sweep-platform}}
      - label: seller
        type: SHARE_TYPE_REMAINDER
        receiver: {account_ref: sweep-seller}
        release:
          steps: [{event_name: SHIPPED, fraction_bps: 5000},
                  {event_name: RECEIVED, fraction_bps: 5000}]
"""
# A sweep that checks everything at once: no settle delay, small batches.
SWEEP = ReconSettings(sweep=False, sweep_interval_ms=50, sweep_batch_max=4,
                      sweep_batches_max=1000, settle_s=0)


@contextlib.asynccontextmanager
async def own_database(pg_admin_dsn: str):
    """A migrated database for one test, dropped after it."""
    name = f"clearing_test_{RUN_ID}_sw{secrets.token_hex(3)}"
    await db.ensure_database(pg_admin_dsn, name)
    dsn = _replace_db(pg_admin_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await db.migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        await db.drop_database(pg_admin_dsn, name)


@dataclass
class World:
    """A running server on its own database and one platform with a held rule set, a
    funded payout party, and views of SplitService, PayoutService and
    ReconciliationService."""

    running: server.Running
    channel: grpc.aio.Channel
    dsn: str
    platform_id: int
    client: Client
    splits: Splits
    payouts: Payouts
    recon: reconciliation_pb2_grpc.ReconciliationServiceStub
    metadata: tuple
    accounts: dict[str, int]
    approver_metadata: tuple = ()

    def sweeper(self, settings: ReconSettings = SWEEP) -> Sweeper:
        return Sweeper(self.running.pool, Clock(), settings)

    async def split(self, amount_minor: int) -> spb.Split:
        order = spb.Order(order_id=f"ord-{rid()[:12]}", amount_minor=amount_minor,
                          currency_code="CNY", channel="WECHAT_PAY",
                          channel_transaction_id=f"wx-{rid()[:12]}",
                          rule_set_name="sweep-held")
        return await self.splits.split(order)

    async def release(self, order_id: str, event_name: str) -> None:
        await self.splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
            request_id=rid(), order_id=order_id, event_name=event_name))

    async def refund(self, order_id: str, amount_minor: int) -> None:
        await self.splits.call("RefundSplit", spb.RefundSplitRequest(
            request_id=rid(), order_id=order_id, amount_minor=amount_minor,
            currency_code="CNY", reason="returned", refund_ref=f"RF-{rid()[:8]}"))

    async def discrepancies(self, **filters) -> list[rpb.Discrepancy]:
        out: list[rpb.Discrepancy] = []
        token = ""
        while True:
            page = await self.recon.ListDiscrepancies(
                rpb.ListDiscrepanciesRequest(page_size=3, page_token=token, **filters),
                metadata=self.metadata, timeout=CALL_TIMEOUT_S)
            out += page.discrepancies
            token = page.next_page_token
            if not token:
                return out

    async def sql(self, query: str, *args):
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(AS_TAMPERING_SUPERUSER)
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def legs(self, split_id: int) -> list[asyncpg.Record]:
        return await self.sql("SELECT * FROM split_legs WHERE split_id = $1 ORDER BY leg_index",
                              split_id)


@contextlib.asynccontextmanager
async def world(dsn: str, redis_url: str, redis_prefix: str, *,
                recon: ReconSettings | None = None, bank: BankSimSettings | None = None):
    """A server on `dsn` (its sweep as `recon` says, off by default; its bank simulator
    with the faults `bank`) and a fresh platform."""
    settings = server_settings(dsn, redis_url, redis_prefix, db_pool_max=POOL_MAX,
                               worker_limits=FAST, recon=recon, bank=bank)
    running = await server.start(settings, migrate=False)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        platform_id, ops_key, approver_key = await payout_support.keys(dsn)
        client = Client(channel, ops_key)
        accounts = {}
        for ref, kind, negative in (("sweep-custodial", lpb.ACCOUNT_KIND_CUSTODIAL, True),
                                    ("sweep-platform", lpb.ACCOUNT_KIND_PLATFORM, False),
                                    ("sweep-seller", lpb.ACCOUNT_KIND_MERCHANT, False)):
            accounts[ref] = (await client.open(ref, kind=kind, currency="CNY",
                                               allow_negative=negative)).account_id
        maker, checker = Splits(channel, ops_key), Splits(channel, approver_key)
        published = await maker.publish(HELD_RULES)
        await checker.activate(published.name, published.version)
        yield World(running, channel, dsn, platform_id, client, maker,
                    Payouts(channel, ops_key),
                    reconciliation_pb2_grpc.ReconciliationServiceStub(channel),
                    (("authorization", f"Bearer {ops_key}"),), accounts,
                    (("authorization", f"Bearer {approver_key}"),))
    finally:
        await channel.close()
        await running.stop()


async def payout_party(w: World, funds: int) -> int:
    """A funded merchant account with a bound bank account (the platform's payout config:
    no fee, no review); its account id."""
    account = (await w.client.open(f"merchant-{rid()[:6]}")).account_id
    await w.client.transfer(w.accounts["sweep-custodial"], account, funds)
    await w.payouts.bind(account)
    await payout_fee(w, 0)
    return account


async def payout_fee(w: World, fee_fixed_minor: int) -> None:
    """The platform's payout config: this fixed fee (into an ordinary account), no review."""
    fee_account = 0
    if fee_fixed_minor:
        fee_account = (await w.client.open(f"fees-{rid()[:6]}",
                                           kind=lpb.ACCOUNT_KIND_ORDINARY)).account_id
    await set_config(w.dsn, w.platform_id, review_threshold_minor=10**12,
                     fee_fixed_minor=fee_fixed_minor, fee_account_id=fee_account)


def tampered_detail(detail: str, leg_index: int, amount_minor: int) -> str:
    """A split's detail with one leg's amount changed (format 1: amount_minor is field 5)."""
    doc = json.loads(detail)
    doc["legs"][leg_index][5] = amount_minor
    return json.dumps(doc)
