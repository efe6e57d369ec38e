"""clearing_client's split operations (the Node client has the same: previewSplit,
splitOrder, getSplit, releaseSplit, cancelSplit, refundSplit): a preview, a split and its
replay by request id, the split read back, a refund, and release and cancel reaching their
calls."""

from __future__ import annotations

import grpc

import clearing_client
from clearing_client import ClearingClient, ClearingRpcError
from clearing_client.v1 import split_pb2
from tests.split_support import Splits, new_key
from tests.support import rid
from tests.unit.rules.test_examples import LEDGER_WALK


async def test_split_operations(channel, client, platform, database_url):
    c = ClearingClient("", platform.key, channel=channel)
    await c.create_account("CUSTODIAL", kind=clearing_client.ACCOUNT_KIND_CUSTODIAL)
    functional = await c.create_account("PLAT_FUNC", kind=clearing_client.ACCOUNT_KIND_FUNCTIONAL)
    merchant = await c.create_account("M_10086", kind=clearing_client.ACCOUNT_KIND_MERCHANT)
    published = await Splits(channel, platform.key).publish(LEDGER_WALK)
    approver = ClearingClient("", await new_key(database_url, platform.platform_id,
                                                {"approver"}), channel=channel)
    await approver.activate_rule_set(published.name, published.version)
    order = split_pb2.Order(order_id=rid(), amount_minor=100_000, currency_code="CNY",
                            channel="WECHAT_PAY", channel_fee_minor=600,
                            rule_set_name=published.name, parties={"merchant": "M_10086"})

    preview = await c.preview_split(order)
    assert preview.net_amount_minor == 99_400
    request_id = clearing_client.new_request_id()
    first = await c.split_order(order, request_id=request_id)
    replay = await c.split_order(order, request_id=request_id)
    assert replay.split_id == first.split_id
    assert [(leg.external_ref, leg.amount_minor) for leg in first.legs] == [
        ("PLAT_FUNC", 400), ("M_10086", 99_000)]
    assert (await c.get_split(order.order_id)).split_id == first.split_id
    assert (await c.get_split(split_id=first.split_id)).order_id == order.order_id
    assert (await c.balance(functional.account_id)).posted_minor == 400

    refunded = await c.refund_split(order.order_id, 10_000, "CNY", refund_ref="R1",
                                    reason="returned")
    assert refunded.action.amount_minor == 10_000
    assert (await c.balance(merchant.account_id)).posted_minor < 99_000

    # nothing of this split is held: release and cancel reach their calls and are refused
    for call in (lambda: c.release_split(order.order_id, fraction_bps=10_000),
                 lambda: c.release_split(order.order_id, event_name="DELIVERED"),
                 lambda: c.cancel_split(order.order_id, reason="test")):
        try:
            await call()
        except ClearingRpcError as err:
            assert err.code == grpc.StatusCode.FAILED_PRECONDITION, err
            assert err.reason
        else:
            raise AssertionError("a split with nothing held was released or cancelled")
