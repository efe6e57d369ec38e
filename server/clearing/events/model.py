"""Event types, delivery states and the rows of the feed and of webhooks."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass


class EventType:
    """The event types (strings on the wire: event.proto lists them)."""

    SPLIT_COMMITTED = "split.committed"
    SPLIT_HELD = "split.held"
    SPLIT_RELEASED = "split.released"
    SPLIT_CANCELLED = "split.cancelled"
    SPLIT_REFUNDED = "split.refunded"
    PAYOUT_REQUESTED = "payout.requested"
    PAYOUT_IN_REVIEW = "payout.in_review"
    PAYOUT_APPROVED = "payout.approved"
    PAYOUT_REJECTED = "payout.rejected"
    PAYOUT_SENT = "payout.sent"
    PAYOUT_SUCCEEDED = "payout.succeeded"
    PAYOUT_FAILED = "payout.failed"
    PAYOUT_MANUAL_REVIEW = "payout.manual_review"
    ACCOUNT_FROZEN = "account.frozen"
    ACCOUNT_UNFROZEN = "account.unfrozen"
    ACCOUNT_CLOSED = "account.closed"
    RULE_SET_PUBLISHED = "rule_set.published"
    RULE_SET_ACTIVATED = "rule_set.activated"
    RISK_EVENT_OPENED = "risk_event.opened"
    DISCREPANCY_OPENED = "discrepancy.opened"
    DISCREPANCY_RESOLVED = "discrepancy.resolved"

    ALL = frozenset(v for k, v in vars().items() if k.isupper() and isinstance(v, str))


# The resource kinds (each has one encoder, registered by the API layer).
class Resource:
    SPLIT = "split"
    PAYOUT = "payout"
    ACCOUNT = "account"
    RULE_SET = "rule_set"
    RISK_EVENT = "risk_event"
    DISCREPANCY = "discrepancy"


def resource_of(event_type: str) -> str:
    return event_type.split(".", 1)[0]


class DisabledReason(enum.IntEnum):
    """Why a webhook endpoint was disabled (mirrors clearing.v1.WebhookDisabledReason)."""

    UNSPECIFIED = 0
    REQUESTED = 1
    BACKLOG = 2


class DeliveryState(enum.IntEnum):
    """A webhook delivery's state (mirrors clearing.v1.WebhookDeliveryState)."""

    UNSPECIFIED = 0
    PENDING = 1
    DELIVERED = 2
    FAILED = 3


@dataclass(frozen=True, slots=True)
class Event:
    platform_id: int
    seq: int
    type: str
    resource_id: str
    request_id: str
    payload: bytes
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: int
    platform_id: int
    url: str
    types: tuple[str, ...]
    description: str
    enabled: bool
    created_at: dt.datetime
    disabled_at: dt.datetime | None = None
    disabled_reason: DisabledReason = DisabledReason.UNSPECIFIED


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    started_at: dt.datetime
    duration_ms: int
    status_code: int
    error: str


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: int
    endpoint_id: int
    seq: int
    resource_id: str
    state: DeliveryState
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    attempts: tuple[Attempt, ...] = ()
