"""Splits and actions stored before migration 0011 (wire messages in `body`) are converted to
the split domain's detail by `clearing.api.split_upgrade.upgrade` (run at every server start
and by `clearing migrate`), and GetSplit then answers exactly what it answered before:
a held split with a release by event, a release by fraction and a partial refund (transfer
ids in the old actions' column and in their messages), counter-free and with a memo and a
channel transaction id."""

from __future__ import annotations

import asyncpg

from clearing.api import split_convert as convert
from clearing.api import split_upgrade
from clearing.api.split_convert import evaluation_to_proto
from clearing.splits import store
from clearing.splits.model import ActionKind
from clearing.v1 import split_pb2 as pb
from tests.split_support import file_examples, order
from tests.support import Client, rid


def _old_split_body(split) -> bytes:
    """The `body` a split had before 0011: the Split message as evaluated."""
    msg = evaluation_to_proto(split.evaluation, convert.order_message(split.order))
    convert._counters(msg, split.counter_values)
    return msg.SerializeToString(deterministic=True)


def _old_action(action) -> tuple[bytes, list[int]]:
    """An action's `body` and `transfer_ids` before 0011: a release or cancellation kept its
    leg changes' transfers in the column, a refund in its message."""
    msg = convert.action(action)
    msg.ClearField("action_id")
    msg.ClearField("create_time")
    if action.kind == ActionKind.RELEASE and action.event_time_ns is None:
        msg.ClearField("event_time")
    column = [0] * len(msg.leg_changes)
    if action.kind != ActionKind.REFUND:
        for i, change in enumerate(msg.leg_changes):
            column[i] = change.transfer_ids[0] if change.transfer_ids else 0
            del change.transfer_ids[:]
    return msg.SerializeToString(deterministic=True), column


async def test_old_rows_are_converted_and_read_as_before(channel, client: Client, database_url,
                                                         platform):
    splits, _ = await file_examples(channel, client, database_url, platform.platform_id)
    made = await splits.split(order(1_114, rule_set_name="held", memo="old row",
                                    channel_transaction_id="TX-0011"))
    await splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=made.order_id, event_name="SHIPPED"))
    await splits.call("ReleaseSplit", pb.ReleaseSplitRequest(
        request_id=rid(), order_id=made.order_id, fraction_bps=2_000, reason="early"))
    await splits.call("RefundSplit", pb.RefundSplitRequest(
        request_id=rid(), order_id=made.order_id, amount_minor=300, currency_code="CNY",
        reason="returned", refund_ref="RF-1"))
    before = (await splits.call("GetSplit", pb.GetSplitRequest(order_id=made.order_id))).split
    assert len(before.actions) == 4  # the split itself, two releases, a refund

    conn = await asyncpg.connect(database_url)
    try:
        stored = await store.load_split(conn, platform.platform_id, "split_id", made.split_id)
        await conn.execute("UPDATE splits SET body = $2, detail = NULL WHERE split_id = $1",
                           made.split_id, _old_split_body(stored))
        for action in stored.actions:
            body, column = _old_action(action)
            await conn.execute("UPDATE split_actions SET body = $2, transfer_ids = $3,"
                               " detail = NULL WHERE action_id = $1",
                               action.action_id, body, column)
        assert await split_upgrade.upgrade(conn) == 1 + len(stored.actions)
        assert await split_upgrade.upgrade(conn) == 0  # nothing left to convert
        assert await conn.fetchval("SELECT count(*) FROM splits WHERE split_id = $1"
                                   " AND body IS NULL AND detail IS NOT NULL",
                                   made.split_id) == 1
    finally:
        await conn.close()
    after = (await splits.call("GetSplit", pb.GetSplitRequest(order_id=made.order_id))).split
    assert after.SerializeToString(deterministic=True) == \
        before.SerializeToString(deterministic=True)
    assert (after.order.memo, after.order.channel_transaction_id) == ("old row", "TX-0011")
