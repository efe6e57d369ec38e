"""Webhooks: endpoints, signatures, and the delivery worker.

Deliveries are rows the sequencer makes (one per event and matching endpoint). The worker
(`Deliverer`, one per process beside the core: a receiver that is down never slows a split)
claims due deliveries with FOR UPDATE SKIP LOCKED and a lease (`claimed_until`), posts them
(at most WEBHOOK_INFLIGHT_MAX at once; a slow receiver holds only its own attempts' slots),
and records each attempt. A delivery is due when its next attempt time has come, no process
holds its lease, and no earlier delivery of the same resource to the same endpoint is still
pending: in order per resource. A process that crashes mid-delivery leaves a lease that runs
out; another process takes the delivery again (at least once). Failed attempts are retried
with a doubling pause (CLEARING_WEBHOOK_BACKOFF_FIRST_MS .. _BACKOFF_MAX_S) for
CLEARING_WEBHOOK_RETRY_S (a day), then the delivery is FAILED and the next one of its
resource goes.

Signature: header `Clearing-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]`, each v1 the
HMAC-SHA256 of "<t>.<body>" under one valid secret (the current one, and the previous one
until its expiry after a rotation).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from typing import Callable
from urllib.parse import urlsplit

import asyncpg

from clearing import metrics
from clearing.clock import Clock
from clearing.config import EventSettings
from clearing.errors import NotFound, ResourceExhausted, Violations
from clearing.events.model import (Attempt, Delivery, DeliveryState, DisabledReason, Endpoint,
                                   Event, EventType)
from clearing.limits import (EVENT_TYPES_MAX, WEBHOOK_CLAIM_MAX, WEBHOOK_DESCRIPTION_LEN_MAX,
                             WEBHOOK_ENDPOINTS_MAX, WEBHOOK_INFLIGHT_MAX,
                             WEBHOOK_RESPONSE_BYTES_MAX, WEBHOOK_URL_LEN_MAX)
from clearing.reasons import Reason
from clearing.tasks import Periodic
from clearing.values import text_problem

log = logging.getLogger("clearing.events.webhooks")

SIGNATURE_HEADER = "Clearing-Signature"
BACKLOG_CHECK_S = 5.0  # how often a deliverer looks for endpoints over the pending maximum
SECRET_PREFIX = "whsec_"
USER_AGENT = "clearing-webhooks/1"
_LOOPBACK_NAMES = {"localhost"}


# ---- signatures ---------------------------------------------------------------------------

def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_hex(24)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                    hashlib.sha256).hexdigest()


def signature_header(valid_secrets: list[str], timestamp: int, body: bytes) -> str:
    return ",".join([f"t={timestamp}"] + [f"v1={sign(s, timestamp, body)}"
                                          for s in valid_secrets])


# ---- endpoints ----------------------------------------------------------------------------

def url_violations(v: Violations, url: str, *, allow_http_loopback: bool) -> None:
    if not url:
        v.add("url", "required: https://...")
        return
    if len(url) > WEBHOOK_URL_LEN_MAX:
        v.add("url", f"at most {WEBHOOK_URL_LEN_MAX} characters")
        return
    if any(c <= " " or c == "\x7f" for c in url):
        v.add("url", "must not contain spaces or control characters")
        return
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        v.add("url", "not a URL")
        return
    if not host or parts.username or parts.password:
        v.add("url", "a host is required, credentials are not allowed in the URL")
    elif _is_private_literal(host) or (
            parts.scheme == "https" and _is_loopback(host) and not allow_http_loopback):
        v.add("url", "must be a public address (not loopback, private, link-local or"
                     " reserved)")
    elif parts.scheme == "https":
        return
    elif parts.scheme == "http" and allow_http_loopback and _is_loopback(host):
        return
    elif parts.scheme == "http" and _is_loopback(host):
        v.add("url", "http:// is allowed only with CLEARING_WEBHOOK_ALLOW_HTTP_LOOPBACK=1"
                     " (dev and tests); use https://")
    else:
        v.add("url", "must be an https:// URL")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_private_literal(host: str) -> bool:
    """An IP address that is neither public nor loopback (loopback: `_is_loopback`)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not ip.is_loopback and not address_allowed(ip, allow_loopback=False)


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *,
                    allow_loopback: bool) -> bool:
    """Whether a webhook may be posted to `ip`: a public address (not private, link-local,
    reserved, multicast...; an IPv4-mapped IPv6 address as its IPv4 one), or loopback with
    CLEARING_WEBHOOK_ALLOW_HTTP_LOOPBACK (dev and tests). So an endpoint cannot make this
    server post to its own network (SSRF), whether its URL names the address or a name
    that resolves to it (checked again at every attempt: DNS can change)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


class PublicResolver:
    """An aiohttp resolver that answers only the addresses `address_allowed` (none left:
    OSError, the attempt fails). aiohttp does not resolve an IP literal: the deliverer
    checks those itself (`target_refused`)."""

    def __init__(self, *, allow_loopback: bool) -> None:
        import aiohttp.resolver

        self._inner = aiohttp.resolver.DefaultResolver()
        self._allow_loopback = allow_loopback

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list:
        import socket

        found = await self._inner.resolve(host, port, family or socket.AF_INET)
        kept = [r for r in found if address_allowed(ipaddress.ip_address(r["host"]),
                                                    allow_loopback=self._allow_loopback)]
        if not kept:
            raise OSError(f"{host} resolves to no public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def target_refused(url: str, *, allow_loopback: bool) -> str:
    """Why a delivery must not be posted to `url` (its host an IP literal that is not
    allowed), or ""."""
    host = urlsplit(url).hostname or ""
    if host in _LOOPBACK_NAMES and not allow_loopback:
        return f"{host} is not a public address"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    return "" if address_allowed(ip, allow_loopback=allow_loopback) \
        else f"{host} is not a public address"


def type_violations(v: Violations, types: list[str], field: str = "types") -> None:
    if len(types) > EVENT_TYPES_MAX:
        v.add(field, f"at most {EVENT_TYPES_MAX} types")
    for i, t in enumerate(types):
        if t not in EventType.ALL:
            v.add(f"{field}[{i}]", f"unknown event type {t[:64]!r} (see event.proto)")


def description_violations(v: Violations, text: str) -> None:
    if (problem := text_problem(text, WEBHOOK_DESCRIPTION_LEN_MAX)) is not None:
        v.add("description", problem)


_ENDPOINT_COLUMNS = ("endpoint_id, platform_id, url, types, description, enabled, created_at,"
                     " disabled_at, disabled_reason")


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(row["endpoint_id"], row["platform_id"], row["url"], tuple(row["types"]),
                    row["description"], row["enabled"], row["created_at"],
                    row["disabled_at"], DisabledReason(row["disabled_reason"]))


async def create_endpoint(conn: asyncpg.Connection, platform_id: int, url: str,
                          types: list[str], description: str) -> tuple[Endpoint, str]:
    """A new endpoint and its secret (shown once)."""
    secret = new_secret()
    async with conn.transaction():
        # one creation at a time per platform, so the count holds
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", 0x77686B, platform_id)
        count = await conn.fetchval("SELECT count(*) FROM webhook_endpoints"
                                    " WHERE platform_id = $1 AND enabled", platform_id)
        if count >= WEBHOOK_ENDPOINTS_MAX:
            raise ResourceExhausted(
                f"the platform has {WEBHOOK_ENDPOINTS_MAX} enabled webhook endpoints; disable"
                " one first", reason=Reason.WEBHOOK_ENDPOINTS_FULL)
        row = await conn.fetchrow(
            "INSERT INTO webhook_endpoints (platform_id, url, types, description, secret)"
            f" VALUES ($1, $2, $3, $4, $5) RETURNING {_ENDPOINT_COLUMNS}",
            platform_id, url, types, description, secret)
    return _endpoint(row), secret


async def list_endpoints(conn: asyncpg.Connection, platform_id: int) -> list[Endpoint]:
    rows = await conn.fetch(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"
                            " WHERE platform_id = $1 ORDER BY endpoint_id", platform_id)
    return [_endpoint(r) for r in rows]


def _no_endpoint(endpoint_id: int) -> NotFound:
    return NotFound(f"no enabled webhook endpoint {endpoint_id}",
                    reason=Reason.WEBHOOK_ENDPOINT_NOT_FOUND)


async def disable_endpoint(conn: asyncpg.Connection, platform_id: int,
                           endpoint_id: int) -> Endpoint:
    """Disabled: nothing more is delivered; its pending deliveries fail."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE webhook_endpoints SET enabled = false, disabled_at = now(),"
            f" disabled_reason = {DisabledReason.REQUESTED:d}"
            " WHERE endpoint_id = $1 AND platform_id = $2 AND enabled"
            f" RETURNING {_ENDPOINT_COLUMNS}", endpoint_id, platform_id)
        if row is None:
            raise _no_endpoint(endpoint_id)
        await conn.execute(_SQL_FAIL_PENDING, endpoint_id)
    return _endpoint(row)


_SQL_FAIL_PENDING = (f"UPDATE webhook_deliveries SET state = {DeliveryState.FAILED:d},"
                     " finished_at = now() WHERE endpoint_id = $1"
                     f" AND state = {DeliveryState.PENDING:d}")

# Endpoints with more than $1 deliveries pending (counted on the pending-only index).
_SQL_BACKLOGGED = f"""
SELECT endpoint_id FROM webhook_deliveries WHERE state = {DeliveryState.PENDING:d}
GROUP BY endpoint_id HAVING count(*) > $1
"""


async def disable_backlogged(conn: asyncpg.Connection, pending_max: int) -> list[Endpoint]:
    """Every enabled endpoint with more than `pending_max` deliveries pending is disabled
    (reason BACKLOG) and its pending deliveries fail: the queue of a receiver that stays down
    is bounded. The events stay readable (ListEvents); returns the endpoints disabled."""
    disabled = []
    for endpoint_id in [r["endpoint_id"] for r in await conn.fetch(_SQL_BACKLOGGED, pending_max)]:
        async with conn.transaction():
            row = await conn.fetchrow(
                "UPDATE webhook_endpoints SET enabled = false, disabled_at = now(),"
                f" disabled_reason = {DisabledReason.BACKLOG:d}"
                f" WHERE endpoint_id = $1 AND enabled RETURNING {_ENDPOINT_COLUMNS}",
                endpoint_id)
            if row is None:  # disabled meanwhile (by request, or by another process)
                continue
            await conn.execute(_SQL_FAIL_PENDING, endpoint_id)
        endpoint = _endpoint(row)
        log.warning("webhook endpoint %s of platform %s disabled: more than %s deliveries "
                    "pending", endpoint.endpoint_id, endpoint.platform_id, pending_max)
        metrics.WEBHOOK_ENDPOINTS_DISABLED.labels("backlog").inc()
        disabled.append(endpoint)
    return disabled


async def rotate_secret(conn: asyncpg.Connection, platform_id: int, endpoint_id: int,
                        previous_valid_s: int) -> tuple[Endpoint, str, dt.datetime]:
    secret = new_secret()
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,"
        " previous_expires_at = now() + make_interval(secs => $4)"
        " WHERE endpoint_id = $1 AND platform_id = $2 AND enabled"
        f" RETURNING {_ENDPOINT_COLUMNS}, previous_expires_at",
        endpoint_id, platform_id, secret, float(previous_valid_s))
    if row is None:
        raise _no_endpoint(endpoint_id)
    return _endpoint(row), secret, row["previous_expires_at"]


_DELIVERY_COLUMNS = ("d.delivery_id, d.endpoint_id, d.seq, d.resource_id, d.state,"
                     " d.created_at, d.next_attempt_at")


async def _deliveries(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Delivery]:
    ids = [r["delivery_id"] for r in rows]
    attempts: dict[int, list[Attempt]] = {}
    for a in await conn.fetch(
            "SELECT delivery_id, attempt, started_at, duration_ms, status_code, error"
            " FROM webhook_attempts WHERE delivery_id = ANY($1::bigint[])"
            " ORDER BY delivery_id, attempt", ids):
        attempts.setdefault(a["delivery_id"], []).append(Attempt(
            a["attempt"], a["started_at"], a["duration_ms"], a["status_code"], a["error"]))
    return [Delivery(r["delivery_id"], r["endpoint_id"], r["seq"], r["resource_id"],
                     DeliveryState(r["state"]), r["created_at"], r["next_attempt_at"],
                     tuple(attempts.get(r["delivery_id"], ()))) for r in rows]


async def list_deliveries(conn: asyncpg.Connection, platform_id: int, endpoint_id: int,
                          before_id: int, limit: int) -> list[Delivery]:
    """An endpoint's deliveries, newest first, with their attempts."""
    owned = await conn.fetchval("SELECT 1 FROM webhook_endpoints WHERE endpoint_id = $1"
                                " AND platform_id = $2", endpoint_id, platform_id)
    if owned is None:
        raise _no_endpoint(endpoint_id)
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.endpoint_id = $1"
        " AND ($2 = 0 OR d.delivery_id < $2) ORDER BY d.delivery_id DESC LIMIT $3",
        endpoint_id, before_id, limit)
    return await _deliveries(conn, rows)


_SQL_REDELIVERY_PENDING = f"""
SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d
WHERE d.endpoint_id = $1 AND d.resource_id = $2 AND d.seq = $3
  AND d.state = {DeliveryState.PENDING:d}
ORDER BY d.delivery_id LIMIT 1
"""


async def redeliver(conn: asyncpg.Connection, platform_id: int, delivery_id: int) -> Delivery:
    """The delivery's event again, as a new delivery (to an enabled endpoint); while a
    delivery of that event to that endpoint is pending, that one: repeated calls never
    queue more than one delivery per event and endpoint (a bounded queue; review)."""
    async with conn.transaction():
        source = await conn.fetchrow(
            "SELECT d.endpoint_id, d.seq, d.resource_id FROM webhook_deliveries d"
            " JOIN webhook_endpoints e USING (endpoint_id)"
            " WHERE d.delivery_id = $1 AND d.platform_id = $2 AND e.enabled",
            delivery_id, platform_id)
        if source is None:
            raise NotFound(f"no delivery {delivery_id} to an enabled endpoint",
                           reason=Reason.WEBHOOK_DELIVERY_NOT_FOUND)
        # one redelivery at a time per endpoint, so the pending check holds (NO KEY: the
        # sequencer's deliveries only KEY SHARE the endpoint)
        await conn.execute("SELECT 1 FROM webhook_endpoints WHERE endpoint_id = $1"
                           " FOR NO KEY UPDATE", source["endpoint_id"])
        row = await conn.fetchrow(_SQL_REDELIVERY_PENDING, source["endpoint_id"],
                                  source["resource_id"], source["seq"])
        if row is None:
            row = await conn.fetchrow(
                "INSERT INTO webhook_deliveries (endpoint_id, platform_id, seq, resource_id,"
                f" state) VALUES ($1, $2, $3, $4, {DeliveryState.PENDING:d})"
                f" RETURNING {_DELIVERY_COLUMNS.replace('d.', '')}",
                source["endpoint_id"], platform_id, source["seq"], source["resource_id"])
        return (await _deliveries(conn, [row]))[0]


# ---- the worker ---------------------------------------------------------------------------

_SQL_CLAIM = f"""
WITH due AS (
  SELECT d.delivery_id FROM webhook_deliveries d
  WHERE d.state = {DeliveryState.PENDING:d} AND d.next_attempt_at <= $1
    AND (d.claimed_until IS NULL OR d.claimed_until < $1)
    AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries e
      WHERE e.endpoint_id = d.endpoint_id AND e.resource_id = d.resource_id
        AND e.state = {DeliveryState.PENDING:d} AND e.delivery_id < d.delivery_id)
  ORDER BY d.delivery_id LIMIT $2
  FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET claimed_until = $1 + make_interval(secs => $3)
FROM due WHERE d.delivery_id = due.delivery_id
RETURNING d.delivery_id, d.endpoint_id, d.platform_id, d.seq, d.attempts, d.created_at
"""
_SQL_LOAD = """
SELECT e.url, e.secret, e.previous_secret, e.previous_expires_at, e.enabled,
       v.type, v.resource_id, v.request_id, v.payload, v.created_at
FROM webhook_endpoints e
LEFT JOIN events v ON v.platform_id = $2 AND v.seq = $3
WHERE e.endpoint_id = $1
"""
_SQL_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code,
                              error)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
"""
_SQL_DONE = f"""
UPDATE webhook_deliveries SET state = $2, attempts = $3, finished_at = now(),
                              claimed_until = NULL
WHERE delivery_id = $1 AND state = {DeliveryState.PENDING:d}
"""
_SQL_RETRY = f"""
UPDATE webhook_deliveries SET attempts = $2, next_attempt_at = $3, claimed_until = NULL
WHERE delivery_id = $1 AND state = {DeliveryState.PENDING:d}
"""

# Makes a delivery's body from its event (the API layer: the Event message as JSON).
BodyOf = Callable[[Event], bytes]


class Deliverer(Periodic):
    """This process's webhook delivery worker (see the module docstring)."""

    task_name = "webhook-deliverer"
    failure = "webhook delivery round failed"

    def __init__(self, pool: asyncpg.Pool, settings: EventSettings, clock: Clock,
                 body_of: BodyOf) -> None:
        super().__init__()
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._body_of = body_of
        self._session = None
        self._inflight: set[asyncio.Task] = set()
        self._backlog_checked = float("-inf")

    @property
    def interval_s(self) -> float:
        return self._settings.webhook_interval_ms / 1000.0

    async def stop(self) -> None:
        await super().stop()
        for task in list(self._inflight):  # an attempt cut short: its lease runs out and
            task.cancel()                  # another process (or the next start) retries it
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self):
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=PublicResolver(
                    allow_loopback=self._settings.webhook_allow_http_loopback)),
                timeout=aiohttp.ClientTimeout(total=self._settings.webhook_timeout_s),
                headers={"User-Agent": USER_AGENT})
        return self._session

    async def tick(self) -> None:
        """Claim what is due, up to the free attempt slots, and start the attempts without
        waiting for them: a slow receiver holds its slots, not the other endpoints'. Every
        BACKLOG_CHECK_S, endpoints with too many deliveries pending are disabled."""
        if time.monotonic() - self._backlog_checked >= BACKLOG_CHECK_S:
            self._backlog_checked = time.monotonic()
            async with self._pool.acquire() as conn:
                await disable_backlogged(conn, self._settings.webhook_pending_max)
        while not self._stopping.is_set():
            room = min(WEBHOOK_CLAIM_MAX, WEBHOOK_INFLIGHT_MAX - len(self._inflight))
            if room <= 0:
                return
            async with self._pool.acquire() as conn:
                claimed = await conn.fetch(_SQL_CLAIM, self._clock.now(), room,
                                           float(self._settings.webhook_lease_s))
            if not claimed:
                return
            for row in claimed:
                task = asyncio.create_task(self._deliver(row))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _deliver(self, claim: asyncpg.Record) -> None:
        try:
            await self._attempt(claim)
        except Exception:  # noqa: BLE001 - the lease runs out; another try takes it
            log.exception("webhook delivery %s failed", claim["delivery_id"])

    async def _attempt(self, claim: asyncpg.Record) -> None:
        delivery_id, attempt = claim["delivery_id"], claim["attempts"] + 1
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_SQL_LOAD, claim["endpoint_id"], claim["platform_id"],
                                      claim["seq"])
        if row is None or not row["enabled"] or row["type"] is None:  # disabled, or pruned
            async with self._pool.acquire() as conn:
                await conn.execute(_SQL_DONE, delivery_id, int(DeliveryState.FAILED),
                                   claim["attempts"])
            return
        event = Event(claim["platform_id"], claim["seq"], row["type"], row["resource_id"],
                      row["request_id"], bytes(row["payload"]), row["created_at"])
        body = self._body_of(event)
        now = self._clock.now()
        valid = [row["secret"]]
        if row["previous_secret"] and row["previous_expires_at"] and \
                row["previous_expires_at"] > now:
            valid.append(row["previous_secret"])
        stamp = int(time.time())
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: signature_header(valid, stamp, body),
                   "Clearing-Delivery": str(delivery_id),
                   "Clearing-Event-Seq": str(event.seq),
                   "Clearing-Event-Type": event.type}
        started = time.monotonic()
        status, error = 0, target_refused(
            row["url"], allow_loopback=self._settings.webhook_allow_http_loopback)
        try:
            if error:
                raise OSError(error)
            async with self._http().post(row["url"], data=body, headers=headers,
                                         allow_redirects=False) as resp:
                status = resp.status
                if not 200 <= status < 300:
                    error = (await resp.content.read(WEBHOOK_RESPONSE_BYTES_MAX)).decode(
                        errors="replace")
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer is an attempt
            error = f"{type(exc).__name__}: {exc}"[:WEBHOOK_RESPONSE_BYTES_MAX]
        duration_ms = int((time.monotonic() - started) * 1000)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_SQL_ATTEMPT, delivery_id, attempt, now, duration_ms, status,
                               error)
            if 200 <= status < 300:
                await conn.execute(_SQL_DONE, delivery_id, int(DeliveryState.DELIVERED),
                                   attempt)
            elif (now - claim["created_at"]).total_seconds() >= self._settings.webhook_retry_s:
                await conn.execute(_SQL_DONE, delivery_id, int(DeliveryState.FAILED), attempt)
            else:
                await conn.execute(_SQL_RETRY, delivery_id, attempt, now + self._backoff(attempt))

    def _backoff(self, attempt: int) -> dt.timedelta:
        first = self._settings.webhook_backoff_first_ms / 1000.0
        pause = min(first * 2 ** min(attempt - 1, 30), float(self._settings.webhook_backoff_max_s))
        return dt.timedelta(seconds=pause)
