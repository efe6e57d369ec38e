"""EventService: the feed (WatchEvents, ListEvents) and webhook endpoints; validation and
conversion; the domain is `clearing.events`. Also registers the encoders that serialize
a domain object as its API message for the outbox (`register_encoders`), and makes a
webhook delivery's body (`webhook_body`)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from google.protobuf import json_format

from clearing import values
from clearing.api import convert, validate
from clearing.api import payout as payout_api
from clearing.api import reconciliation as recon_api
from clearing.api import risk as risk_api
from clearing.api import split_convert
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.config import EventSettings
from clearing.errors import ResourceExhausted, Unavailable, Violations
from clearing.events import feed, outbox, webhooks
from clearing.events.model import Delivery, Endpoint, Event, Resource
from clearing.ledger.model import Role
from clearing.limits import EVENTS_READ_BATCH_MAX
from clearing.reasons import Reason
from clearing.v1 import event_pb2 as pb
from clearing.v1 import event_pb2_grpc

log = logging.getLogger("clearing.api.event")

_SERVICE = "/clearing.v1.EventService/"
_READERS = frozenset({Role.GATEWAY, Role.OPERATOR, Role.APPROVER})
_OPERATOR = frozenset({Role.OPERATOR})

METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + "WatchEvents": _READERS,
    _SERVICE + "ListEvents": _READERS,
    _SERVICE + "CreateWebhookEndpoint": _OPERATOR,
    _SERVICE + "ListWebhookEndpoints": _OPERATOR,
    _SERVICE + "DisableWebhookEndpoint": _OPERATOR,
    _SERVICE + "RotateWebhookSecret": _OPERATOR,
    _SERVICE + "ListWebhookDeliveries": _OPERATOR,
    _SERVICE + "RedeliverWebhook": _OPERATOR,
}

# The Event message's field of each resource kind.
_FIELDS = {Resource.SPLIT: "split", Resource.PAYOUT: "payout", Resource.ACCOUNT: "account",
           Resource.RULE_SET: "rule_set", Resource.RISK_EVENT: "risk_event",
           Resource.DISCREPANCY: "discrepancy"}


def _serialize(message) -> bytes:
    return message.SerializeToString()


def register_encoders() -> None:
    """The outbox's encoders: each resource kind's domain object as its API message."""
    outbox.register(Resource.SPLIT, lambda s: _serialize(split_convert.split(s)))
    outbox.register(Resource.PAYOUT, lambda p: _serialize(payout_api.payout(p)))
    outbox.register(Resource.ACCOUNT, lambda a: _serialize(convert.account(a)))
    outbox.register(Resource.RULE_SET, _serialize)  # already the RuleSet message
    outbox.register(Resource.RISK_EVENT, lambda e: _serialize(risk_api.event_message(e)))
    outbox.register(Resource.DISCREPANCY, lambda d: _serialize(recon_api.discrepancy(d)))


def event_message(e: Event) -> pb.Event:
    out = pb.Event(seq=e.seq, type=e.type, created_at=timestamp(e.created_at),
                   resource_id=e.resource_id, request_id=e.request_id)
    name = _FIELDS.get(e.type.split(".", 1)[0])
    if name is not None and e.payload:
        getattr(out, name).MergeFromString(e.payload)
    return out


def webhook_body(e: Event) -> bytes:
    """A delivery's body: the Event message as JSON (proto3 JSON mapping)."""
    return json_format.MessageToJson(event_message(e), indent=None,
                                     preserving_proto_field_name=True).encode()


def endpoint_message(e: Endpoint) -> pb.WebhookEndpoint:
    return pb.WebhookEndpoint(endpoint_id=e.endpoint_id, url=e.url, types=list(e.types),
                              description=e.description, enabled=e.enabled,
                              created_at=timestamp(e.created_at),
                              disabled_at=timestamp(e.disabled_at) if e.disabled_at else None,
                              disabled_reason=int(e.disabled_reason))


def delivery_message(d: Delivery) -> pb.WebhookDelivery:
    return pb.WebhookDelivery(
        delivery_id=d.delivery_id, endpoint_id=d.endpoint_id, seq=d.seq,
        resource_id=d.resource_id, state=int(d.state), created_at=timestamp(d.created_at),
        next_attempt_at=timestamp(d.next_attempt_at),
        attempts=[pb.WebhookAttempt(attempt=a.attempt, started_at=timestamp(a.started_at),
                                    duration_ms=a.duration_ms, status_code=a.status_code,
                                    error=a.error) for a in d.attempts])


def _cursor_and_types(v: Violations, cursor: int, types) -> list[str]:
    if cursor < 0:
        v.add("cursor", "must be 0 (from the oldest event kept) or a sequence number")
    types = list(types)
    webhooks.type_violations(v, types)
    return types


# The payload bytes one WatchEvents message carries at most (then the next message).
_MESSAGE_PAYLOAD_BYTES = 1 << 20


def _chunks(events: list[Event]) -> list[list[Event]]:
    """`events` in runs whose payloads fit one message (each run has at least one)."""
    out: list[list[Event]] = []
    size = 0
    for e in events:
        if not out or size + len(e.payload) > _MESSAGE_PAYLOAD_BYTES:
            out.append([])
            size = 0
        out[-1].append(e)
        size += len(e.payload) + 64
    return out


class TooSlow(ResourceExhausted):
    """WatchEvents fell too far behind; metadata "cursor" is where to resume."""


class EventServicer(event_pb2_grpc.EventServiceServicer):
    """The caller's platform's events and webhook endpoints."""

    def __init__(self, pool: asyncpg.Pool, settings: EventSettings, hub: feed.Hub) -> None:
        self._pool = pool
        self._settings = settings
        self._hub = hub

    async def WatchEvents(self, request: pb.WatchEventsRequest, context):
        v = Violations()
        types = _cursor_and_types(v, request.cursor, request.types)
        v.raise_if_any()
        pid = principal().platform_id
        async with self._pool.acquire() as conn:
            position = await feed.check_cursor(conn, pid, request.cursor)
        poll_s = self._settings.watch_poll_ms / 1000.0
        write_timeout = self._settings.watch_write_timeout_s
        live = False
        while True:
            async with self._pool.acquire() as conn:
                events, reached = await feed.read(conn, pid, position, types,
                                                  EVENTS_READ_BATCH_MAX)
                newest = await feed.head(conn, pid) if live else 0
            if live and newest - position > self._settings.watch_lag_max:
                raise self._too_slow(position, f"{newest - position} events behind")
            for chunk in _chunks(events):
                try:
                    await asyncio.wait_for(context.write(pb.WatchEventsResponse(
                        events=[event_message(e) for e in chunk])), write_timeout)
                except asyncio.TimeoutError:
                    raise self._too_slow(position, f"no event taken for {write_timeout} s")
                position = chunk[-1].seq
            position = max(position, reached)
            if len(events) < EVENTS_READ_BATCH_MAX and reached == position:
                live = True
                if self._hub.closing:
                    raise Unavailable(f"the server is shutting down; resume with cursor"
                                      f" {position} on another server",
                                      reason=Reason.SHUTTING_DOWN,
                                      metadata={"cursor": str(position)})
                await self._hub.wait(poll_s)
        yield  # pragma: no cover - an async generator; events go out through context.write

    @staticmethod
    def _too_slow(position: int, why: str) -> TooSlow:
        return TooSlow(f"the stream fell too far behind ({why}); resume with cursor"
                       f" {position}", reason=Reason.EVENT_CONSUMER_TOO_SLOW,
                       metadata={"cursor": str(position)})

    async def ListEvents(self, request: pb.ListEventsRequest, context) -> pb.ListEventsResponse:
        v = Violations()
        types = _cursor_and_types(v, request.cursor, request.types)
        size = validate.page_size(v, request.page_size)
        v.raise_if_any()
        pid = principal().platform_id
        async with self._pool.acquire() as conn:
            start = await feed.check_cursor(conn, pid, request.cursor)
            events, reached = await feed.read(conn, pid, start, types, size)
        return pb.ListEventsResponse(events=[event_message(e) for e in events],
                                     next_cursor=reached)

    async def CreateWebhookEndpoint(self, request: pb.CreateWebhookEndpointRequest,
                                    context) -> pb.CreateWebhookEndpointResponse:
        v = Violations()
        webhooks.url_violations(v, request.url,
                                allow_http_loopback=self._settings.webhook_allow_http_loopback)
        types = list(request.types)
        webhooks.type_violations(v, types)
        webhooks.description_violations(v, request.description)
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            endpoint, secret = await webhooks.create_endpoint(
                conn, principal().platform_id, request.url, sorted(set(types)),
                request.description)
        return pb.CreateWebhookEndpointResponse(endpoint=endpoint_message(endpoint),
                                                secret=secret)

    async def ListWebhookEndpoints(self, request, context) -> pb.ListWebhookEndpointsResponse:
        async with self._pool.acquire() as conn:
            rows = await webhooks.list_endpoints(conn, principal().platform_id)
        return pb.ListWebhookEndpointsResponse(endpoints=[endpoint_message(e) for e in rows])

    async def DisableWebhookEndpoint(self, request: pb.DisableWebhookEndpointRequest,
                                     context) -> pb.DisableWebhookEndpointResponse:
        v = Violations()
        validate.object_id(v, request.endpoint_id, "endpoint_id")
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            endpoint = await webhooks.disable_endpoint(conn, principal().platform_id,
                                                       request.endpoint_id)
        return pb.DisableWebhookEndpointResponse(endpoint=endpoint_message(endpoint))

    async def RotateWebhookSecret(self, request: pb.RotateWebhookSecretRequest,
                                  context) -> pb.RotateWebhookSecretResponse:
        v = Violations()
        validate.object_id(v, request.endpoint_id, "endpoint_id")
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            endpoint, secret, until = await webhooks.rotate_secret(
                conn, principal().platform_id, request.endpoint_id,
                self._settings.webhook_previous_secret_s)
        return pb.RotateWebhookSecretResponse(endpoint=endpoint_message(endpoint),
                                              secret=secret,
                                              previous_expires_at=timestamp(until))

    async def ListWebhookDeliveries(self, request: pb.ListWebhookDeliveriesRequest,
                                    context) -> pb.ListWebhookDeliveriesResponse:
        v = Violations()
        validate.object_id(v, request.endpoint_id, "endpoint_id")
        size = validate.page_size(v, request.page_size)
        v.raise_if_any()
        pid = principal().platform_id
        before, = validate.page_token(request.page_token, "webhook_deliveries",
                                      request.endpoint_id) or (0,)
        async with self._pool.acquire() as conn:
            rows = await webhooks.list_deliveries(conn, pid, request.endpoint_id, before,
                                                  size + 1)
        token = (values.encode_page_token("webhook_deliveries", request.endpoint_id,
                                          rows[size - 1].delivery_id)
                 if len(rows) > size else "")
        return pb.ListWebhookDeliveriesResponse(
            deliveries=[delivery_message(d) for d in rows[:size]], next_page_token=token)

    async def RedeliverWebhook(self, request: pb.RedeliverWebhookRequest,
                               context) -> pb.RedeliverWebhookResponse:
        v = Violations()
        validate.object_id(v, request.delivery_id, "delivery_id")
        v.raise_if_any()
        async with self._pool.acquire() as conn:
            delivery = await webhooks.redeliver(conn, principal().platform_id,
                                                request.delivery_id)
        return pb.RedeliverWebhookResponse(delivery=delivery_message(delivery))


