"""Verifying the clearing core's webhook deliveries (docs/events.md).

Each delivery is an HTTP POST whose body is the Event message as JSON, with the header

    Clearing-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]

each v1 the HMAC-SHA256, under one of the endpoint's valid secrets, of "<t>.<body>" (the raw
body bytes). Two v1 values come while a rotated-out secret is still valid. Verify against
the raw body before parsing it, and refuse old timestamps (replays):

    event = verify_webhook(body, request.headers["Clearing-Signature"], secret)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "Clearing-Signature"
TOLERANCE_S = 300


class WebhookSignatureError(Exception):
    """The delivery is not signed by the given secret(s), or is too old."""


def _parse(header: str) -> tuple[int, list[str]]:
    stamp, sigs = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            stamp = int(value)
        elif key == "v1" and value:
            sigs.append(value)
    if stamp is None or not sigs:
        raise WebhookSignatureError("malformed Clearing-Signature header")
    return stamp, sigs


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The v1 signature of `body` at `timestamp` under `secret` (hex)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                    hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str, secrets: str | Iterable[str], *,
                     tolerance_s: int = TOLERANCE_S, now: float | None = None) -> int:
    """The delivery's timestamp if one of its v1 signatures is `body` signed by one of
    `secrets` and the timestamp is within `tolerance_s` of `now` (0: no age check); else
    WebhookSignatureError."""
    stamp, sigs = _parse(header)
    if tolerance_s and abs((time.time() if now is None else now) - stamp) > tolerance_s:
        raise WebhookSignatureError(f"timestamp {stamp} outside the tolerance")
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    for secret in keys:
        expected = sign(secret, stamp, body)
        if any(hmac.compare_digest(expected, s) for s in sigs):
            return stamp
    raise WebhookSignatureError("no valid signature for the given secret(s)")


def verify_webhook(body: bytes, header: str, secrets: str | Iterable[str], *,
                   tolerance_s: int = TOLERANCE_S) -> dict:
    """`verify_signature`, then the event (the body parsed as JSON: the Event message in
    the proto3 JSON mapping with field names as in the .proto)."""
    verify_signature(body, header, secrets, tolerance_s=tolerance_s)
    return json.loads(body)
