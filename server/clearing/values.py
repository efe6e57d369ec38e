"""The kinds of value a request carries, each checked one way everywhere: texts, timestamps,
time zones and page tokens (ids and amounts: `clearing.api.validate`, on `clearing.money`).

Pure functions, without grpc or generated code, so that the api layer
(`clearing.api.validate`), the rules validator and the payout configuration (`clearing
platform payout-config`) refuse the same values with the same words. A `*_problem` function
answers why a value is refused (the description of a FieldViolation), or None if it is fine;
none of them raises on any input.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clearing.errors import FieldViolation, InvalidArgument
from clearing.limits import INT64_MAX


# ---- text ---------------------------------------------------------------------------------------

def text_problem(value: str, length_max: int) -> str | None:
    """Why `value` cannot be a text of at most `length_max` characters, or None
    (PostgreSQL text cannot hold NUL)."""
    if len(value) > length_max:
        return f"longer than {length_max} characters"
    if "\0" in value:
        return "must not contain NUL characters"
    return None


# ---- timestamps ---------------------------------------------------------------------------------

# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
TIMESTAMP_SECONDS_MIN = -62_135_596_800
TIMESTAMP_SECONDS_MAX = 253_402_300_799
NANOS_PER_SECOND = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def timestamp_problem(seconds: int, nanos: int) -> str | None:
    """Why (seconds, nanos) is not a valid google.protobuf.Timestamp, or None."""
    if not 0 <= nanos < NANOS_PER_SECOND:
        return "not a valid timestamp: nanos must be 0 to 999999999"
    if not TIMESTAMP_SECONDS_MIN <= seconds <= TIMESTAMP_SECONDS_MAX:
        return ("not a valid timestamp: must be from 0001-01-01T00:00:00Z to "
                "9999-12-31T23:59:59Z")
    return None


def timestamp_datetime(seconds: int, nanos: int) -> dt.datetime:
    """A valid timestamp (see `timestamp_problem`) as an aware UTC datetime, to the
    microsecond (nanoseconds are floored)."""
    return _EPOCH + dt.timedelta(seconds=seconds, microseconds=nanos // 1000)


# ---- time zones ---------------------------------------------------------------------------------

TIME_ZONE_LEN_MAX = 64
# An IANA name: components of letters, digits, '_', '+' and '-' separated by single '/'
# (Asia/Shanghai, America/Argentina/Buenos_Aires, Etc/GMT+8, UTC).
_TIME_ZONE_RE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")


def time_zone_problem(name: str) -> str | None:
    """Why `name` is not an IANA time zone of the tz database, or None. Folders of the
    database ('America'), relative paths, NUL and data files ('zone.tab') are refused."""
    if not name:
        return "required: an IANA time zone such as Asia/Shanghai"
    if len(name) > TIME_ZONE_LEN_MAX or _TIME_ZONE_RE.fullmatch(name) is None:
        return (f"must be an IANA time zone such as Asia/Shanghai (at most "
                f"{TIME_ZONE_LEN_MAX} characters: letters, digits, '_', '+', '-', '/')")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, unreadable
        return f"{name!r} is not an IANA time zone"
    return None


# ---- page tokens --------------------------------------------------------------------------------

PAGE_TOKEN_LEN_MAX = 256
PAGE_TOKEN_PROBLEM = "not a token from this listing"
_POSITION_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_DIGEST_BYTES = 6


def _digest(raw: str) -> str:
    return hashlib.blake2b(raw.encode(), digest_size=_DIGEST_BYTES,
                           person=b"clearing-page").hexdigest()


def encode_page_token(kind: str, scope: int, *positions: int) -> str:
    """An opaque page token bound to what it pages: the listing (`kind`) and its scope (a
    platform or an account id), then the position(s) the next page starts after, and a
    check digest (a truncated or edited token is refused, not read as another page)."""
    raw = ":".join((kind, str(scope), *map(str, positions)))
    return base64.urlsafe_b64encode(f"{raw}:{_digest(raw)}".encode()).decode().rstrip("=")


def decode_page_token(token: str, kind: str, scope: int, count: int = 1) -> tuple[int, ...] | None:
    """The `count` positions of a token made by `encode_page_token(kind, scope, ...)`, each
    0 to INT64_MAX; None for an empty token. Anything else (garbage, truncated, edited,
    another listing's or scope's token, a number beyond int64) raises InvalidArgument on
    `page_token`."""
    if not token:
        return None
    if len(token) <= PAGE_TOKEN_LEN_MAX and token.isascii():
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        except (binascii.Error, ValueError):
            text = ""
        raw, _, digest = text.rpartition(":")
        parts = raw.split(":")
        if (len(parts) == count + 2 and parts[0] == kind and parts[1] == str(scope)
                and all(_POSITION_RE.fullmatch(p) for p in parts[2:])
                and hmac.compare_digest(digest, _digest(raw))):
            positions = tuple(int(p) for p in parts[2:])
            if all(p <= INT64_MAX for p in positions):
                return positions
    raise page_token_invalid()


def page_token_invalid() -> InvalidArgument:
    """The error of a page token that is not one of this listing's."""
    return InvalidArgument([FieldViolation("page_token", PAGE_TOKEN_PROBLEM)])
