"""Request validation helpers, one per kind of value (request id, text, amount, currency,
enum, id, page size and token, timestamp, time zone): each adds a FieldViolation with the
field's path and a plain reason; the servicer raises them all at once
(`Violations.raise_if_any`). The checks that domain code needs too (timestamps, time zones,
page tokens) live in `clearing.values`; these wrap them."""

from __future__ import annotations

import datetime as dt
import hashlib

from google.protobuf.message import Message

from clearing import values
from clearing.errors import Violations
from clearing.limits import (AMOUNT_MINOR_MAX, INT64_MAX, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX,
                             REQUEST_ID_LEN_MAX, RULE_SET_VERSION_MAX)
from clearing.money import is_currency

ID_MAX = INT64_MAX


def payload_hash(method: str, request: Message) -> bytes:
    """What a request id is bound to: the method and the request's deterministic bytes."""
    return hashlib.sha256(method.encode() + b"\0" +
                          request.SerializeToString(deterministic=True)).digest()


def request_id(v: Violations, value: str, field: str = "request_id") -> None:
    if not value:
        v.add(field, "required: a unique id per write, reused only to retry it")
    elif len(value) > REQUEST_ID_LEN_MAX:
        v.add(field, f"longer than {REQUEST_ID_LEN_MAX} characters")
    elif not value.isprintable():
        v.add(field, "must be printable characters")


def text(v: Violations, value: str, field: str, *, length_max: int,
         required: bool = False) -> None:
    if required and not value:
        v.add(field, "required")
    elif (problem := values.text_problem(value, length_max)) is not None:
        v.add(field, problem)


def amount(v: Violations, value: int, field: str = "amount_minor") -> None:
    if value <= 0:
        v.add(field, "must be a positive number of minor units")
    elif value > AMOUNT_MINOR_MAX:
        v.add(field, f"exceeds the maximum of {AMOUNT_MINOR_MAX} minor units")


def amount_or_zero(v: Violations, value: int, field: str = "amount_minor") -> None:
    if value < 0:
        v.add(field, "must not be negative")
    elif value > AMOUNT_MINOR_MAX:
        v.add(field, f"exceeds the maximum of {AMOUNT_MINOR_MAX} minor units")


def currency(v: Violations, value: str, field: str = "currency_code",
             required: bool = True) -> None:
    if not value:
        if required:
            v.add(field, "required: an ISO 4217 code such as CNY")
    elif not is_currency(value):
        v.add(field, f"{value!r} is not a known ISO 4217 currency code")


def enum(v: Violations, value: int, known: type, field: str, *, required: bool = True) -> None:
    if value == 0:
        if required:
            v.add(field, "required: the UNSPECIFIED value is not allowed")
    elif value not in {m.value for m in known}:
        v.add(field, f"unknown value {value}")


def object_id(v: Violations, value: int, field: str, *, required: bool = True) -> None:
    if value == 0:
        if required:
            v.add(field, "required")
    elif value < 0:
        v.add(field, "must be positive")


def version(v: Violations, value: int, field: str, *, zero: str | None = None) -> None:
    """A rule-set version number, 1 to RULE_SET_VERSION_MAX; 0 too when `zero` says what
    it means (e.g. "the active version")."""
    if value == 0 and zero is not None:
        return
    if not 1 <= value <= RULE_SET_VERSION_MAX:
        v.add(field, (f"must be 0 ({zero}) or " if zero else "required: ")
              + f"a version number, 1 to {RULE_SET_VERSION_MAX}")


def page_size(v: Violations, value: int) -> int:
    if value < 0 or value > PAGE_SIZE_MAX:
        v.add("page_size", f"must be between 0 and {PAGE_SIZE_MAX}")
    return value or PAGE_SIZE_DEFAULT


def page_token(token: str, kind: str, scope: int, count: int = 1) -> tuple[int, ...] | None:
    """The positions of a page token of listing `kind` in `scope` (None: the first page);
    InvalidArgument on `page_token` for any other string (`clearing.values`)."""
    return values.decode_page_token(token, kind, scope, count)


def timestamp(v: Violations, msg: Message, name: str, field: str | None = None
              ) -> dt.datetime | None:
    """The Timestamp field `name` of `msg` as an aware UTC datetime; None when unset, or
    invalid (negative nanos, nanos over 999999999, outside years 1 to 9999: a violation on
    `field`, by default `name`)."""
    if not msg.HasField(name):
        return None
    ts = getattr(msg, name)
    problem = values.timestamp_problem(ts.seconds, ts.nanos)
    if problem is not None:
        v.add(field or name, problem)
        return None
    return values.timestamp_datetime(ts.seconds, ts.nanos)


def time_zone(v: Violations, value: str, field: str, *, default: str | None = None) -> str:
    """The IANA time zone named; `default` when empty (if given, else a violation)."""
    if not value and default is not None:
        return default
    problem = values.time_zone_problem(value)
    if problem is not None:
        v.add(field, problem)
        return default or value
    return value
