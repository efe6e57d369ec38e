"""API keys: creation (shown once, only a SHA-256 stored) and lookup with a small cache."""

from __future__ import annotations

import hashlib
import secrets
import time

import asyncpg

from clearing.errors import InvalidArgument, FieldViolation, Unauthenticated
from clearing.ledger.model import Principal, Role

KEY_PREFIX = "ck_"
KEY_LEN_MAX = 128
# Cached lookups: positive for CACHE_TTL_S; at most CACHE_ENTRIES_MAX keys remembered.
CACHE_TTL_S = 30.0
NEGATIVE_TTL_S = 2.0
CACHE_ENTRIES_MAX = 10_000


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_platform(conn: asyncpg.Connection, name: str,
                          roles: frozenset[str]) -> tuple[int, str]:
    """Create a platform and its first key; returns (platform_id, key)."""
    async with conn.transaction():
        platform_id = await conn.fetchval(
            "INSERT INTO platforms (name) VALUES ($1) RETURNING platform_id", name)
        key = await create_key(conn, platform_id, roles)
    return platform_id, key


async def create_key(conn: asyncpg.Connection, platform_id: int, roles: frozenset[str]) -> str:
    unknown = set(roles) - Role.ALL
    if not roles or unknown:
        raise InvalidArgument([FieldViolation("roles", f"unknown or no roles: {sorted(unknown)}")])
    key = new_key()
    await conn.execute(
        "INSERT INTO api_keys (platform_id, key_hash, key_prefix, roles) VALUES ($1, $2, $3, $4)",
        platform_id, hash_key(key), key[:8], sorted(roles))
    return key


class KeyStore:
    """Resolves bearer keys to principals; caches results briefly (revocation lag <= TTL)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    async def principal(self, key: str) -> Principal:
        if not key or len(key) > KEY_LEN_MAX:
            raise Unauthenticated("missing or malformed API key", reason="API_KEY_INVALID")
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            found = hit[1]
        else:
            found = await self._load(digest)
            if len(self._cache) >= CACHE_ENTRIES_MAX:
                self._cache.clear()
            ttl = CACHE_TTL_S if found else NEGATIVE_TTL_S
            self._cache[digest] = (now + ttl, found)
        if found is None:
            raise Unauthenticated("unknown or revoked API key", reason="API_KEY_INVALID")
        return found

    async def _load(self, digest: bytes) -> Principal | None:
        row = await self._pool.fetchrow(
            "SELECT key_id, platform_id, roles FROM api_keys"
            " WHERE key_hash = $1 AND revoked_at IS NULL", digest)
        if row is None:
            return None
        return Principal(row["platform_id"], row["key_id"], frozenset(row["roles"]))
