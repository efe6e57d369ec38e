"""Split reads receivers' statuses through an in-process cache (runtime.AccountDirectory).
A receiver frozen, closed or unfrozen a moment after a split cached it must be treated by
the next split exactly as a fresh database read would: held when not active, paid when
active again; and the refused first attempt leaves no trace under the request id."""

from __future__ import annotations

import asyncpg

from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import split_pb2 as pb
from tests.split_support import file_examples, order
from tests.support import Client, rid


async def _world(channel, client: Client, database_url, platform):
    splits, ids = await file_examples(channel, client, database_url, platform.platform_id)
    merchant = (await client.open(f"M_{rid()[:8]}")).account_id
    return splits, ids, merchant


def _merchant_order(amount: int, merchant_ref: str) -> pb.Order:
    return order(amount, rule_set_name="frozen", parties={"merchant": merchant_ref})


async def _ref(client: Client, account_id: int) -> str:
    got = await client.call("GetAccount", lpb.GetAccountRequest(account_id=account_id))
    return got.account.external_ref


async def test_receiver_frozen_after_it_was_cached_is_held(channel, client: Client,
                                                           database_url, platform):
    splits, ids, merchant = await _world(channel, client, database_url, platform)
    ref = await _ref(client, merchant)
    first = await splits.split(_merchant_order(10_000, ref))  # caches the merchant as active
    assert [leg.held_minor for leg in first.legs] == [0, 0]
    await client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant, reason="compliance hold"))
    request_id, sent = rid(), _merchant_order(10_000, ref)
    second = await splits.split(sent, request_id=request_id)
    leg = second.legs[1]
    assert (leg.account_id, leg.amount_minor, leg.held_minor, leg.hold_reason) == (
        merchant, 9_000, 9_000, pb.HOLD_REASON_RECEIVER_UNAVAILABLE)
    assert second.status == pb.SPLIT_STATUS_HOLDING
    balance = await client.balance(merchant)
    assert (balance.posted_minor, balance.pending_credit_minor) == (9_000, 0)
    # the retry under the same request id answers the committed split, not a recorded refusal
    again = await splits.split(sent, request_id=request_id)
    assert again.split_id == second.split_id
    conn = await asyncpg.connect(database_url)
    try:
        recorded = await conn.fetchval(
            "SELECT count(*) FROM requests WHERE platform_id = $1 AND request_id = $2 AND NOT ok",
            platform.platform_id, request_id)
    finally:
        await conn.close()
    assert recorded == 0
    assert (await client.verify()).ok


async def test_receiver_closed_after_it_was_cached_is_held(channel, client: Client,
                                                           database_url, platform):
    splits, ids, merchant = await _world(channel, client, database_url, platform)
    ref = await _ref(client, merchant)
    await splits.split(_merchant_order(1_000, ref))
    # pay the merchant's balance away so that it can be closed
    await client.transfer(merchant, ids["PLAT_001"], 900)
    await client.call("CloseAccount", lpb.CloseAccountRequest(request_id=rid(),
                                                             account_id=merchant))
    split = await splits.split(_merchant_order(10_000, ref))
    assert [(leg.held_minor, leg.hold_reason) for leg in split.legs] == [
        (0, pb.HOLD_REASON_UNSPECIFIED), (9_000, pb.HOLD_REASON_RECEIVER_UNAVAILABLE)]


async def test_receiver_unfrozen_is_paid_at_once(channel, client: Client, database_url,
                                                 platform):
    splits, ids, merchant = await _world(channel, client, database_url, platform)
    ref = await _ref(client, merchant)
    await client.call("FreezeAccount", lpb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant, reason="compliance hold"))
    held = await splits.split(_merchant_order(10_000, ref))
    assert held.legs[1].held_minor == 9_000
    await client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
        request_id=rid(), account_id=merchant, reason="cleared"))
    paid = await splits.split(_merchant_order(10_000, ref))
    assert [leg.held_minor for leg in paid.legs] == [0, 0]
    assert (await client.balance(merchant)).posted_minor == 9_000
