"""Concurrency: 2,000 transfers race for funds that cover exactly 1,000 of them.

Exactly 1,000 win, the others fail with FAILED_PRECONDITION / INSUFFICIENT_FUNDS, the
account never goes below zero and the ledger still balances, whether the calls go through
one server or through two server processes on the same database (row locks across
processes)."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, ServerProcess, details, rid

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(120)]

UNIT = 7  # minor units per transfer
FUNDED_FOR = 1_000  # transfers the merchant can pay
ATTEMPTS = 2_000  # transfers attempted at once
RECIPIENTS = 8
CALL_TIMEOUT_S = 45.0


async def _setup(client: Client) -> tuple[pb.Account, pb.Account, list[pb.Account]]:
    custodial = await client.open("custodial", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("merchant")
    await client.transfer(custodial.account_id, merchant.account_id, FUNDED_FOR * UNIT)
    recipients = [await client.open(f"recipient-{i}") for i in range(RECIPIENTS)]
    b = await client.balance(merchant.account_id)
    assert (b.posted_minor, b.available_minor) == (FUNDED_FOR * UNIT, FUNDED_FOR * UNIT)
    return custodial, merchant, recipients


def _plan(merchant: pb.Account, recipients: list[pb.Account]) -> list[pb.TransferRequest]:
    """ATTEMPTS transfers of UNIT out of the merchant, alternating IMMEDIATE and PENDING."""
    return [pb.TransferRequest(
        request_id=rid(), debit_account_id=merchant.account_id,
        credit_account_id=recipients[i % RECIPIENTS].account_id, amount_minor=UNIT,
        currency_code="CNY",
        mode=pb.TRANSFER_MODE_IMMEDIATE if i % 2 == 0 else pb.TRANSFER_MODE_PENDING)
        for i in range(ATTEMPTS)]


async def _attempt(client: Client, request: pb.TransferRequest):
    """The Transfer on success, the (code, reason) of the error otherwise."""
    try:
        return (await client.call("Transfer", request, timeout=CALL_TIMEOUT_S)).transfer
    except grpc.aio.AioRpcError as err:
        return err.code(), details(err)[0]


async def _check(client: Client, merchant: pb.Account, recipients: list[pb.Account],
                 requests: list[pb.TransferRequest], results: list) -> None:
    won = [(q, r) for q, r in zip(requests, results) if isinstance(r, pb.Transfer)]
    lost = [r for r in results if not isinstance(r, pb.Transfer)]
    assert len(won) == FUNDED_FOR, Counter(map(str, lost)).most_common(5)
    assert Counter(lost) == {(grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"):
                             ATTEMPTS - FUNDED_FOR}
    assert len({t.transfer_id for _, t in won}) == FUNDED_FOR
    for q, t in won:
        assert (t.request_id, t.mode, t.amount_minor, t.debit_account_id,
                t.credit_account_id) == (q.request_id, q.mode, UNIT, q.debit_account_id,
                                         q.credit_account_id)

    immediate = sum(1 for q, _ in won if q.mode == pb.TRANSFER_MODE_IMMEDIATE)
    pending = FUNDED_FOR - immediate
    m = await client.balance(merchant.account_id)
    assert m.available_minor == 0
    assert m.posted_minor == (FUNDED_FOR - immediate) * UNIT
    assert m.debits_posted_minor == immediate * UNIT
    assert m.credits_posted_minor == FUNDED_FOR * UNIT
    assert m.pending_debit_minor == pending * UNIT
    assert m.pending_credit_minor == 0
    assert m.posted_minor - m.pending_debit_minor - m.frozen_minor == m.available_minor

    by_recipient: dict[int, list[int]] = {r.account_id: [0, 0] for r in recipients}
    for q, _ in won:
        by_recipient[q.credit_account_id][q.mode == pb.TRANSFER_MODE_PENDING] += UNIT
    for r in recipients:
        b = await client.balance(r.account_id)
        assert [b.posted_minor, b.pending_credit_minor] == by_recipient[r.account_id]
        assert b.available_minor == b.posted_minor

    report = await client.verify()
    assert report.ok and report.chain_ok, report
    assert not report.mismatched_account_ids
    assert [(t.currency_code, t.balanced) for t in report.totals] == [("CNY", True)]
    assert report.account_count == 2 + RECIPIENTS


async def test_2000_concurrent_transfers_one_server(client: Client):
    _, merchant, recipients = await _setup(client)
    requests = _plan(merchant, recipients)
    results = await asyncio.gather(*(_attempt(client, q) for q in requests))
    await _check(client, merchant, recipients, requests, results)


async def test_2000_concurrent_transfers_two_server_processes(client: Client, platform,
                                                              database_url, redis_url,
                                                              redis_prefix):
    _, merchant, recipients = await _setup(client)
    requests = _plan(merchant, recipients)
    procs = [ServerProcess(database_url, redis_url,
                           extra_env={"CLEARING_REDIS_PREFIX": redis_prefix})
             for _ in range(2)]
    assert procs[0].port != procs[1].port  # SO_REUSEPORT would let them share one
    channels: list[grpc.aio.Channel] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs))
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p.port}") for p in procs]
        remotes = [Client(ch, platform.key) for ch in channels]
        # Both processes answer before the race starts (keys cached, pools warm).
        for remote in remotes:
            await remote.balance(merchant.account_id)
        results = await asyncio.gather(*(_attempt(remotes[i % 2], q)
                                         for i, q in enumerate(requests)))
    finally:
        for ch in channels:
            await ch.close()
        codes = []
        for p in procs:
            if p.proc is not None:
                try:
                    codes.append(await asyncio.to_thread(p.terminate, 30.0))
                finally:
                    p.kill()
    assert codes == [0, 0], f"server exit codes {codes}"
    await _check(client, merchant, recipients, requests, results)
