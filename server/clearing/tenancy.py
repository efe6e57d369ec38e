"""Tenancy: platforms (tenants) and their API keys.

A key is shown once, when it is made; only its SHA-256 and its first PREFIX_LEN characters
(to recognise it in `keys list` and the logs) are stored. The servers authenticate keys in
`clearing.api.auth` (KeyStore); this module creates, lists and revokes them, for the admin
commands (`clearing platform create`, `clearing keys ...`) and the dev bootstrap.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from clearing import audit
from clearing.errors import FieldViolation, InvalidArgument
from clearing.ledger.model import Role
from clearing.reasons import Reason

KEY_PREFIX = "ck_"
# An admin key's (PlatformService; `clearing admin init`): the servers look it up among the
# admin keys, never among the platforms' keys.
ADMIN_KEY_PREFIX = "ca_"
PREFIX_LEN = 8  # the characters of a key stored and logged to recognise it


def new_key(prefix: str = KEY_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def find_platform(conn: asyncpg.Connection, name: str) -> int | None:
    """The id of the platform named `name`, or None."""
    return await conn.fetchval("SELECT platform_id FROM platforms WHERE name = $1", name)


async def create_platform(conn: asyncpg.Connection, name: str,
                          roles: frozenset[str]) -> tuple[int, str]:
    """Create a platform and its first key; returns (platform_id, key)."""
    async with conn.transaction():
        platform_id = await conn.fetchval(
            "INSERT INTO platforms (name) VALUES ($1) RETURNING platform_id", name)
        key = await create_key(conn, platform_id, roles)
    return platform_id, key


async def create_key(conn: asyncpg.Connection, platform_id: int, roles: frozenset[str], *,
                     actor: audit.Actor | None = None,
                     party_account_ids: tuple[int, ...] = ()) -> str:
    """Another key for a platform, with these roles (Role.ALL), or a party key bound to
    `party_account_ids` (`insert_key`); returns the key."""
    return (await insert_key(conn, platform_id, roles, actor=actor,
                             party_account_ids=party_account_ids))[1]


async def insert_key(conn: asyncpg.Connection, platform_id: int, roles: frozenset[str], *,
                     actor: audit.Actor | None = None,
                     party_account_ids: tuple[int, ...] = ()) -> tuple[int, str]:
    """Another key for a platform, with these roles (Role.ALL); returns (key_id, key).
    With `party_account_ids`, a party key (the one role Role.PARTY) bound to those accounts,
    each of which must be the platform's (InvalidArgument PARTY_ACCOUNT_UNKNOWN naming
    the field otherwise). Recorded in the audit trail (its id, prefix, roles and party
    accounts, never the key) with the key, in one transaction; `actor` by default the
    core's admin."""
    party = sorted(set(party_account_ids))
    if party:
        if roles != {Role.PARTY}:
            raise InvalidArgument([FieldViolation("roles", "a party key has the one role "
                                                  f"{Role.PARTY!r}")])
    else:
        unknown = set(roles) - Role.ALL
        if not roles or unknown:
            raise InvalidArgument([FieldViolation("roles",
                                                  f"unknown or no roles: {sorted(unknown)}")])
    key = new_key()
    async with conn.transaction():
        if party:
            await _check_party_accounts(conn, platform_id, party_account_ids)
        key_id = await conn.fetchval(
            "INSERT INTO api_keys (platform_id, key_hash, key_prefix, roles, party_account_ids)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING key_id",
            platform_id, hash_key(key), key[:PREFIX_LEN], sorted(roles), party or None)
        after = {"key_id": key_id, "key_prefix": key[:PREFIX_LEN], "roles": sorted(roles)}
        if party:
            after["party_account_ids"] = party
        await audit.record(conn, actor or audit.Actor.core_admin(platform_id), "CreateApiKey",
                           f"api_key:{key_id}", platform_id=platform_id, after=after)
    return key_id, key


async def _check_party_accounts(conn: asyncpg.Connection, platform_id: int,
                                account_ids: tuple[int, ...]) -> None:
    """InvalidArgument (PARTY_ACCOUNT_UNKNOWN) naming each party_account_ids[i] that is
    not an account of the platform."""
    found = {r["account_id"] for r in await conn.fetch(
        "SELECT account_id FROM accounts WHERE platform_id = $1"
        " AND account_id = ANY($2::bigint[])", platform_id, list(account_ids))}
    missing = [FieldViolation(f"party_account_ids[{i}]",
                              f"account {a} is not an account of this platform")
               for i, a in enumerate(account_ids) if a not in found]
    if missing:
        raise InvalidArgument(missing, reason=Reason.PARTY_ACCOUNT_UNKNOWN)


async def list_admin_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every admin key (never the key): id, name, prefix, created, last used, revoked."""
    return await conn.fetch("SELECT admin_key_id, name, key_prefix, created_at, last_used_at,"
                            " revoked_at FROM admin_keys ORDER BY admin_key_id")


async def revoke_admin_key(conn: asyncpg.Connection, admin_key_id: int) -> bool:
    """Revoke an admin key (False if it was revoked already, or is unknown); every server
    refuses it within clearing.api.auth.REVOCATION_BOUND_S. Recorded in the core's own
    audit chain (platform 0) in the same transaction."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE admin_keys SET revoked_at = now() WHERE admin_key_id = $1"
            " AND revoked_at IS NULL RETURNING name, key_prefix", admin_key_id)
        if row is None:
            return False
        await audit.record(conn, audit.Actor.core_admin(0), "RevokeAdminKey",
                           f"admin_key:{admin_key_id}",
                           before={"admin_key_id": admin_key_id, "name": row["name"],
                                   "key_prefix": row["key_prefix"], "revoked": False},
                           after={"admin_key_id": admin_key_id, "revoked": True})
    return True


async def create_admin_key(conn: asyncpg.Connection, name: str) -> tuple[int, str]:
    """An admin key (PlatformService), made on the server host by `clearing admin init`;
    returns (admin_key_id, key). Only its SHA-256 and prefix are stored. Recorded in the
    core's own audit chain (platform 0; its id, name and prefix, never the key) in the same
    transaction."""
    key = new_key(ADMIN_KEY_PREFIX)
    async with conn.transaction():
        key_id = await conn.fetchval(
            "INSERT INTO admin_keys (name, key_hash, key_prefix) VALUES ($1, $2, $3)"
            " RETURNING admin_key_id", name, hash_key(key), key[:PREFIX_LEN])
        await audit.record(conn, audit.Actor.core_admin(0), "CreateAdminKey",
                           f"admin_key:{key_id}",
                           after={"admin_key_id": key_id, "name": name,
                                  "key_prefix": key[:PREFIX_LEN]})
    return key_id, key


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as the admin commands list it (never the key itself)."""

    key_id: int
    platform: str
    key_prefix: str
    roles: tuple[str, ...]
    created_at: dt.datetime
    revoked_at: dt.datetime | None


_SQL_KEYS = ("SELECT k.key_id, p.name AS platform, k.key_prefix, k.roles, k.created_at,"
             " k.revoked_at FROM api_keys k JOIN platforms p USING (platform_id)")


def _key_info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(key_id=row["key_id"], platform=row["platform"],
                   key_prefix=row["key_prefix"], roles=tuple(row["roles"]),
                   created_at=row["created_at"], revoked_at=row["revoked_at"])


async def list_keys(conn: asyncpg.Connection, platform: str) -> list[KeyInfo]:
    """The keys of the platform named `platform`, oldest first."""
    rows = await conn.fetch(f"{_SQL_KEYS} WHERE p.name = $1 ORDER BY k.key_id", platform)
    return [_key_info(r) for r in rows]


async def find_keys(conn: asyncpg.Connection, which: str) -> list[KeyInfo]:
    """Keys named by `which`: a key id (digits), a whole key, or a key's prefix (its first
    characters as shown in logs and `keys list`)."""
    if which.isdigit():
        where, arg = "k.key_id = $1", int(which)
    elif len(which) > PREFIX_LEN:
        where, arg = "k.key_hash = $1", hash_key(which)
    else:
        where, arg = "starts_with(k.key_prefix, $1)", which
    rows = await conn.fetch(f"{_SQL_KEYS} WHERE {where} ORDER BY k.key_id", arg)
    return [_key_info(r) for r in rows]


async def revoke_key(conn: asyncpg.Connection, key_id: int, *,
                     actor: audit.Actor | None = None) -> bool:
    """Revoke a key (False if it was revoked already). Every server refuses it within
    clearing.api.auth.REVOCATION_BOUND_S. Recorded in the audit trail in the same
    transaction; `actor` by default the core's admin."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL"
            " RETURNING platform_id, key_prefix, roles", key_id)
        if row is None:
            return False
        await audit.record(conn, actor or audit.Actor.core_admin(row["platform_id"]),
                           "RevokeApiKey", f"api_key:{key_id}", platform_id=row["platform_id"],
                           before={"key_id": key_id, "key_prefix": row["key_prefix"],
                                   "roles": list(row["roles"]), "revoked": False},
                           after={"key_id": key_id, "revoked": True})
    return True
