"""Webhooks with a real HTTP receiver on 127.0.0.1: deliveries signed (and verified by the
client's verifier, two signatures during a rotation), a receiver down then back gets every
event once, in order per resource, deliveries and attempts listed, a redelivery on request,
a disabled endpoint gets nothing more, and a server killed mid-delivery loses nothing
(another process delivers once the lease runs out)."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import grpc
import pytest

from clearing import server
from clearing.events.model import DeliveryState
from clearing_client import WebhookSignatureError, verify_signature, verify_webhook
from clearing.v1 import event_pb2 as pb
from clearing.v1 import ledger_pb2 as lpb
from clearing.v1 import split_pb2 as spb
from tests.conftest import server_settings
from tests.events_support import Events, Receiver, held_world, wait_events
from tests.split_support import order
from tests.support import ServerProcess, details, rid, wait_for


def _hook_settings(database_url, redis_url, redis_prefix, **events):
    base = server_settings(database_url, redis_url, redis_prefix)
    return dataclasses.replace(base, events=dataclasses.replace(
        base.events, webhooks=True, webhook_allow_http_loopback=True, webhook_interval_ms=50,
        webhook_backoff_first_ms=100, webhook_backoff_max_s=1, webhook_timeout_s=5,
        webhook_lease_s=2, **events))


@pytest.fixture
async def hooks(database_url, redis_url, redis_prefix):
    """A server process of its own whose webhook worker runs (loopback http allowed)."""
    srv = await server.start(_hook_settings(database_url, redis_url, redis_prefix),
                             migrate=False)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    yield ch
    await ch.close()
    await srv.stop()


@pytest.fixture
async def world(channel, client, database_url, platform):
    return await held_world(channel, client, database_url, platform.platform_id)


async def _deliveries(events: Events, endpoint_id: int) -> list[pb.WebhookDelivery]:
    return list((await events.call("ListWebhookDeliveries", pb.ListWebhookDeliveriesRequest(
        endpoint_id=endpoint_id, page_size=1000))).deliveries)


async def test_http_endpoints_need_the_dev_setting(channel, platform):
    events = Events(channel, platform.key)  # the session server: loopback http not allowed
    for url in ("http://127.0.0.1:9/hook", "http://example.com/hook", "ftp://x", ""):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await events.call("CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(url=url))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(err.value)[1] == ["url"]
    made = await events.call("CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(
        url="https://hooks.example.com/clearing", types=["payout.succeeded"]))
    assert made.secret.startswith("whsec_") and list(made.endpoint.types) == ["payout.succeeded"]
    listed = await events.call("ListWebhookEndpoints", pb.ListWebhookEndpointsRequest())
    assert [e.endpoint_id for e in listed.endpoints] == [made.endpoint.endpoint_id]
    assert "whsec_" not in str(listed)  # the secret is shown once


async def test_a_receiver_down_then_back_gets_everything_in_order(hooks, world, platform):
    events = Events(hooks, platform.key)
    await wait_events(events, 2)  # the rule set's events: numbered before the endpoint
    receiver = Receiver()  # not listening yet: connections are refused
    made = await events.call("CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(
        url=receiver.url, description="erp"))
    secret, endpoint_id = made.secret, made.endpoint.endpoint_id
    split = await world.splits.split(order(1_114, rule_set_name="held"))
    for step in ("SHIPPED", "RECEIVED"):
        await world.splits.call("ReleaseSplit", spb.ReleaseSplitRequest(
            request_id=rid(), order_id=split.order_id, event_name=step))
    plat = world.ids["PLAT_001"]
    for method, request in (("FreezeAccount", lpb.FreezeAccountRequest),
                            ("UnfreezeAccount", lpb.UnfreezeAccountRequest)):
        await world.client.call(method, request(request_id=rid(), account_id=plat, reason="x"))
    await wait_for(lambda: _attempted(events, endpoint_id), timeout_s=10)
    await asyncio.sleep(0.3)  # a few more refused attempts
    await receiver.start()
    try:
        await wait_for(lambda: _count(receiver, 5), timeout_s=15)
        await asyncio.sleep(0.3)
        seqs = [d.event["seq"] for d in receiver.got]
        assert len(seqs) == len(set(seqs)) == 5  # once each (failed attempts never arrived)
        by_resource: dict[str, list[int]] = {}
        for d in receiver.got:
            verify_webhook(d.body, d.headers["Clearing-Signature"], secret)
            by_resource.setdefault(d.event["resource_id"], []).append(int(d.event["seq"]))
        assert by_resource[str(split.split_id)] == sorted(by_resource[str(split.split_id)])
        assert len(by_resource[str(split.split_id)]) == 3
        assert by_resource[str(plat)] == sorted(by_resource[str(plat)])
        types = [d.event["type"] for d in receiver.got
                 if d.event["resource_id"] == str(split.split_id)]
        assert types == ["split.held", "split.released", "split.released"]
        with pytest.raises(WebhookSignatureError):
            verify_signature(receiver.got[0].body, receiver.got[0].headers[
                "Clearing-Signature"], "whsec_wrong")
        with pytest.raises(WebhookSignatureError):
            verify_signature(receiver.got[0].body + b" ", receiver.got[0].headers[
                "Clearing-Signature"], secret)

        listed = await _deliveries(events, endpoint_id)
        assert {d.state for d in listed} == {pb.WEBHOOK_DELIVERY_STATE_DELIVERED}
        first = min(listed, key=lambda d: d.delivery_id)
        assert len(first.attempts) >= 2 and first.attempts[0].status_code == 0
        assert first.attempts[-1].status_code == 200

        # a redelivery on request
        again = await events.call("RedeliverWebhook", pb.RedeliverWebhookRequest(
            delivery_id=first.delivery_id))
        assert again.delivery.seq == first.seq
        await wait_for(lambda: _count(receiver, 6), timeout_s=10)
        assert int(receiver.got[-1].event["seq"]) == first.seq

        # a rotation: both secrets sign for a while
        rotated = await events.call("RotateWebhookSecret", pb.RotateWebhookSecretRequest(
            endpoint_id=endpoint_id))
        await world.client.call("FreezeAccount", lpb.FreezeAccountRequest(
            request_id=rid(), account_id=plat, reason="y"))
        await wait_for(lambda: _count(receiver, 7), timeout_s=10)
        last = receiver.got[-1]
        header = last.headers["Clearing-Signature"]
        assert header.count("v1=") == 2
        verify_signature(last.body, header, rotated.secret)
        verify_signature(last.body, header, secret)

        # disabled: nothing more
        await events.call("DisableWebhookEndpoint", pb.DisableWebhookEndpointRequest(
            endpoint_id=endpoint_id))
        await world.client.call("UnfreezeAccount", lpb.UnfreezeAccountRequest(
            request_id=rid(), account_id=plat, reason="z"))
        await asyncio.sleep(0.5)
        assert len(receiver.got) == 7
    finally:
        await receiver.stop()


async def _attempted(events: Events, endpoint_id: int) -> bool:
    return any(d.attempts for d in await _deliveries(events, endpoint_id))


async def _count(receiver: Receiver, n: int) -> bool:
    return len(receiver.got) >= n


@pytest.mark.slow
async def test_a_server_killed_mid_delivery_loses_nothing(world, platform, database_url,
                                                          redis_url, redis_prefix):
    receiver = Receiver(hang=asyncio.Event())
    await receiver.start()
    child = ServerProcess(database_url, redis_url, extra_env={
        "CLEARING_WEBHOOK_ALLOW_HTTP_LOOPBACK": "1", "CLEARING_WEBHOOK_INTERVAL_MS": "50",
        "CLEARING_WEBHOOK_LEASE_S": "2"}).start()
    try:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{child.port}")
        events = Events(ch, platform.key)
        made = await events.call("CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(
            url=receiver.url, types=["split.held"]))
        split = await world.splits.split(order(1_114, rule_set_name="held"))
        await wait_for(lambda: _count(receiver, 1), timeout_s=10)  # the child is posting
        child.kill()  # mid-delivery: the attempt is never recorded
        await ch.close()
    finally:
        child.kill()
    receiver.hang.set()
    srv = await server.start(_hook_settings(database_url, redis_url, redis_prefix),
                             migrate=False)
    try:
        await wait_for(lambda: _count(receiver, 2), timeout_s=15)  # after the lease
        assert {d.event["resource_id"] for d in receiver.got} == {str(split.split_id)}
        verify_webhook(receiver.got[-1].body, receiver.got[-1].headers["Clearing-Signature"],
                       made.secret)
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
        await wait_for(lambda: _delivered(Events(ch, platform.key),
                                          made.endpoint.endpoint_id), timeout_s=10)
        await ch.close()
    finally:
        await srv.stop()
        await receiver.stop()


async def _delivered(events: Events, endpoint_id: int) -> bool:
    listed = await _deliveries(events, endpoint_id)
    return bool(listed) and all(d.state == pb.WEBHOOK_DELIVERY_STATE_DELIVERED for d in listed)


async def test_a_hanging_receiver_does_not_hold_the_others(hooks, world, platform):
    events = Events(hooks, platform.key)
    await wait_events(events, 2)
    stuck, fine = Receiver(hang=asyncio.Event()), Receiver()
    await stuck.start()
    await fine.start()
    try:
        for r in (stuck, fine):
            await events.call("CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(
                url=r.url))
        for amount in (1_000, 1_001, 1_002):
            await world.splits.split(order(amount, rule_set_name="held"))
        await wait_for(lambda: _count(fine, 3), timeout_s=10)  # while the other hangs
        assert 1 <= len(stuck.got) <= 3
    finally:
        stuck.hang.set()
        await stuck.stop()
        await fine.stop()


async def test_redeliveries_never_queue_more_than_one_per_event(channel, platform,
                                                                database_url):
    """RedeliverWebhook called again and again (or at once) while a redelivery of that event
    is pending answers that one: the deliveries queue stays bounded (review)."""
    events = Events(channel, platform.key)
    made = await events.call("CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(
        url="https://hooks.example.invalid/clearing"))
    endpoint_id = made.endpoint.endpoint_id
    conn = await asyncpg.connect(database_url)
    try:  # its event (so a try of the pending one fails to post and stays pending)
        await conn.execute(
            "INSERT INTO events (platform_id, seq, outbox_id, type, resource_id, request_id,"
            " payload, created_at) VALUES ($1, 1, 0, 'account.frozen', 'r1', '', '', now())",
            platform.platform_id)
        delivered = await conn.fetchval(
            "INSERT INTO webhook_deliveries (endpoint_id, platform_id, seq, resource_id, state,"
            " attempts, finished_at) VALUES ($1, $2, 1, 'r1', $3, 1, now())"
            " RETURNING delivery_id", endpoint_id, platform.platform_id,
            int(DeliveryState.DELIVERED))
        again = await asyncio.gather(*(events.call("RedeliverWebhook", pb.RedeliverWebhookRequest(
            delivery_id=delivered)) for _ in range(5)))
        assert len({r.delivery.delivery_id for r in again}) == 1
        assert again[0].delivery.delivery_id != delivered and again[0].delivery.seq == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND state = $2",
            endpoint_id, int(DeliveryState.PENDING)) == 1
    finally:
        await conn.close()


async def test_an_endpoint_over_the_pending_maximum_is_disabled(database_url, redis_url,
                                                                  redis_prefix, platform):
    """Found in review: the deliveries of an endpoint that stays down grew for the whole
    retry window (a day) with no maximum. Above CLEARING_WEBHOOK_PENDING_MAX pending (here 3)
    the endpoint is disabled with reason BACKLOG and its pending deliveries fail; one at the
    maximum exactly stays enabled; a disabled-by-request endpoint says REQUESTED."""
    srv = await server.start(_hook_settings(database_url, redis_url, redis_prefix,
                                            webhook_pending_max=3), migrate=False)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    conn = await asyncpg.connect(database_url)
    try:
        events = Events(ch, platform.key)
        over, at = [(await events.call("CreateWebhookEndpoint", pb.CreateWebhookEndpointRequest(
            url=f"https://hooks.example.invalid/{name}"))).endpoint.endpoint_id
            for name in ("over", "at")]
        for endpoint_id, pending in ((over, 4), (at, 3)):  # not due for an hour: no attempt
            await conn.execute(
                "INSERT INTO webhook_deliveries (endpoint_id, platform_id, seq, resource_id,"
                " state, next_attempt_at) SELECT $1, $2, s, 'r' || s, $3,"
                " now() + interval '1 hour' FROM generate_series(1, $4) s",
                endpoint_id, platform.platform_id, int(DeliveryState.PENDING), pending)

        async def endpoints() -> dict[int, pb.WebhookEndpoint]:
            listed = await events.call("ListWebhookEndpoints", pb.ListWebhookEndpointsRequest())
            return {e.endpoint_id: e for e in listed.endpoints}

        async def over_disabled() -> bool:
            return not (await endpoints())[over].enabled

        await wait_for(over_disabled, timeout_s=15)
        got = await endpoints()
        assert got[over].disabled_reason == pb.WEBHOOK_DISABLED_REASON_BACKLOG
        assert got[over].HasField("disabled_at")
        assert got[at].enabled and got[at].disabled_reason == \
            pb.WEBHOOK_DISABLED_REASON_UNSPECIFIED and not got[at].HasField("disabled_at")
        states = {r["endpoint_id"]: sorted(r["states"]) for r in await conn.fetch(
            "SELECT endpoint_id, array_agg(state) AS states FROM webhook_deliveries"
            " WHERE endpoint_id = ANY($1) GROUP BY endpoint_id", [over, at])}
        assert states == {over: [int(DeliveryState.FAILED)] * 4,
                          at: [int(DeliveryState.PENDING)] * 3}

        await events.call("DisableWebhookEndpoint", pb.DisableWebhookEndpointRequest(
            endpoint_id=at))
        assert (await endpoints())[at].disabled_reason == pb.WEBHOOK_DISABLED_REASON_REQUESTED
    finally:
        await conn.close()
        await ch.close()
        await srv.stop()
