"""Payouts end to end through the real worker and the bank simulator (no faults): the
seed's ledger walk-through to the minor unit, and a payout cut into three bank transfers."""

from __future__ import annotations

import pytest

from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import payout_pb2 as pb
from tests.payout_support import MASKED, Payouts, set_config
from tests.split_support import Splits, new_key, order
from tests.support import Client
from tests.unit.rules.test_examples import LEDGER_WALK

pytestmark = [pytest.mark.timeout(60)]


async def _posted(client: Client, account_id: int) -> int:
    return (await client.balance(account_id)).posted_minor


async def test_seed_walk_through_order_split_then_withdrawal(channel, client, platform,
                                                            database_url, running):
    """Order 1000.00, channel fee 6.00: 994.00 arrives; service fee 4.00 to the platform's
    functional account, 990.00 to the merchant. The merchant withdraws 990.00 with a fee of
    4.00: 986.00 reaches the bank, 4.00 lands in the platform's ordinary account."""
    custodial = (await client.open("CUSTODIAL", kind=lpb.ACCOUNT_KIND_CUSTODIAL)).account_id
    functional = (await client.open("PLAT_FUNC", kind=lpb.ACCOUNT_KIND_FUNCTIONAL)).account_id
    ordinary = (await client.open("PLAT_ORD", kind=lpb.ACCOUNT_KIND_ORDINARY)).account_id
    merchant = (await client.open("M_10086")).account_id
    maker = Splits(channel, platform.key)
    checker = Splits(channel, await new_key(database_url, platform.platform_id, {"approver"}))
    published = await maker.publish(LEDGER_WALK)
    await checker.activate(published.name, published.version)
    split = await maker.split(order(100_000, channel_fee_minor=600,
                                    parties={"merchant": "M_10086"}))
    assert split.net_amount_minor == 99_400
    assert (await _posted(client, merchant), await _posted(client, functional)) == (99_000, 400)

    payouts = Payouts(channel, platform.key)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=400,
                     fee_account_id=ordinary)
    await payouts.bind(merchant)
    payout = await payouts.request(merchant, 99_000)
    assert (payout.amount_minor, payout.fee_minor, payout.net_amount_minor) == (99_000, 400,
                                                                                98_600)
    done = await payouts.wait_state(payout.payout_id, (pb.PAYOUT_STATE_SUCCEEDED,))
    assert done.paid_minor == 98_600 and done.finish_time.seconds > 0
    assert [(t.amount_minor, t.state, t.attempt_count) for t in done.transfers] == [
        (98_600, pb.BANK_TRANSFER_STATE_SUCCEEDED, 1)]
    assert done.transfers[0].attempts[0].state == pb.BANK_TRANSFER_STATE_SUCCEEDED

    books = await running.bank.books(f"po{payout.payout_id}-")
    assert [(e.amount_minor, e.paid, e.masked_account) for e in books] == [
        (98_600, True, MASKED)]
    balances = {ref: await client.balance(i) for ref, i in (
        ("merchant", merchant), ("functional", functional), ("ordinary", ordinary),
        ("custodial", custodial))}
    assert {k: (b.posted_minor, b.pending_debit_minor, b.pending_credit_minor)
            for k, b in balances.items()} == {
        "merchant": (0, 0, 0), "functional": (400, 0, 0), "ordinary": (400, 0, 0),
        # 994.00 arrived, 986.00 left for the bank: what the custodial account still owes
        # the platform's two accounts
        "custodial": (-800, 0, 0)}
    report = await client.verify()
    assert report.ok and report.chain_ok


async def test_payout_of_1_2_million_is_three_bank_transfers_all_paid(channel, client,
                                                                     platform, database_url,
                                                                     running):
    custodial = (await client.open("custodial", kind=lpb.ACCOUNT_KIND_CUSTODIAL)).account_id
    merchant = (await client.open("big-merchant")).account_id
    await client.transfer(custodial, merchant, 150_000_000)
    payouts = Payouts(channel, platform.key)
    await set_config(database_url, platform.platform_id)
    await payouts.bind(merchant)
    payout = await payouts.request(merchant, 120_000_000)
    done = await payouts.wait_state(payout.payout_id, (pb.PAYOUT_STATE_SUCCEEDED,))
    assert [(t.sequence, t.amount_minor, t.state) for t in done.transfers] == [
        (1, 50_000_000, pb.BANK_TRANSFER_STATE_SUCCEEDED),
        (2, 50_000_000, pb.BANK_TRANSFER_STATE_SUCCEEDED),
        (3, 20_000_000, pb.BANK_TRANSFER_STATE_SUCCEEDED)]
    assert len({t.idempotency_key for t in done.transfers}) == 3
    assert done.paid_minor == 120_000_000
    books = await running.bank.books(f"po{payout.payout_id}-")
    assert sorted((e.idempotency_key, e.amount_minor) for e in books if e.paid) == [
        (f"po{payout.payout_id}-t1-a1", 50_000_000), (f"po{payout.payout_id}-t2-a1", 50_000_000),
        (f"po{payout.payout_id}-t3-a1", 20_000_000)]
    b = await client.balance(merchant)
    assert (b.posted_minor, b.pending_debit_minor) == (30_000_000, 0)
    assert await _posted(client, custodial) == -30_000_000
    assert (await client.verify()).ok
