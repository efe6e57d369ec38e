"""Risk policies in PostgreSQL (the truth): versions, the active pointer with its
maker-checker, and the in-process cache of the active policy the split path reads.

The cache (`PolicyCache`): one look-up per platform per `ttl_s`, like the plan cache's L1;
an activation through this process drops its entry at once, other processes see it within
`ttl_s` (RISK_POLICY_CACHE_TTL_S). A split decides its hits with the policy it read, and
records that version in the event's evidence."""

from __future__ import annotations

import json
import time

import asyncpg

from clearing import audit
from clearing.errors import NotFound, PermissionDenied
from clearing.ledger.model import Principal
from clearing.reasons import Reason
from clearing.risk.model import Policy, PolicyVersion

POLICY_CACHE_ENTRIES_MAX = 100_000

_COLUMNS = ("p.version, p.content::text AS content, p.published_by, p.published_at,"
            " p.activated_at, (h.active_version IS NOT DISTINCT FROM p.version) AS active")
_FROM = "FROM risk_policies p JOIN risk_policy_heads h ON h.platform_id = p.platform_id"


def _row(r: asyncpg.Record) -> PolicyVersion:
    return PolicyVersion(Policy.from_json(r["content"], r["version"]), r["active"],
                         r["published_by"], r["published_at"], r["activated_at"])


def _not_found(version: int) -> NotFound:
    what = f"version {version}" if version else "an active version"
    return NotFound(f"the platform's risk policy has no {what}",
                    reason=Reason.RISK_POLICY_NOT_FOUND, metadata={"version": str(version)})


async def publish(conn: asyncpg.Connection, platform_id: int, policy: Policy,
                  key_id: int, *, actor: audit.Actor | None) -> PolicyVersion:
    """Store a new version (run inside a transaction; publishers of a platform queue up on
    its head row)."""
    version = await conn.fetchval(
        "INSERT INTO risk_policy_heads (platform_id, latest_version) VALUES ($1, 1)"
        " ON CONFLICT (platform_id) DO UPDATE"
        " SET latest_version = risk_policy_heads.latest_version + 1 RETURNING latest_version",
        platform_id)
    await conn.execute(
        "INSERT INTO risk_policies (platform_id, version, content, published_by)"
        " VALUES ($1, $2, $3::jsonb, $4)", platform_id, version, policy.to_json(), key_id)
    published = await get(conn, platform_id, version)
    if actor is not None:
        await audit.record(conn, actor, "PublishRiskPolicy", "risk_policy",
                           platform_id=platform_id,
                           after={"version": version, "policy": json.loads(policy.to_json())})
    return published


async def get(conn: asyncpg.Connection, platform_id: int, version: int) -> PolicyVersion:
    """A version (0: the active one); NotFound RISK_POLICY_NOT_FOUND."""
    if version:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} AND p.version = $2"
                                  " WHERE p.platform_id = $1", platform_id, version)
    else:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} AND p.version = h.active_version"
                                  " WHERE p.platform_id = $1", platform_id)
    if row is None:
        raise _not_found(version)
    return _row(row)


async def activate(conn: asyncpg.Connection, who: Principal,
                   version: int) -> tuple[PolicyVersion, int]:
    """Activate a version after the maker-checker check; (the version, the previous active
    one or 0). Run inside a transaction."""
    pid = who.platform_id
    active = await conn.fetchval(
        "SELECT coalesce(active_version, 0) FROM risk_policy_heads WHERE platform_id = $1"
        " FOR UPDATE", pid)
    if active is None:
        raise _not_found(version)
    row = await get(conn, pid, version)
    if row.published_by == who.key_id:
        raise PermissionDenied(
            f"the key that published risk policy version {version} may not activate it:"
            " another approver must (maker-checker)", reason=Reason.MAKER_CHECKER,
            metadata={"published_by": str(row.published_by)})
    await conn.execute(
        "UPDATE risk_policies SET activated_by = $3, activated_at = now()"
        " WHERE platform_id = $1 AND version = $2", pid, version, who.key_id)
    await conn.execute("UPDATE risk_policy_heads SET active_version = $2 WHERE platform_id = $1",
                       pid, version)
    await conn.execute(
        "INSERT INTO risk_policy_activations (platform_id, version, previous_version, key_id)"
        " VALUES ($1, $2, $3, $4)", pid, version, active or None, who.key_id)
    await audit.record(conn, audit.Actor.of(who), "ActivateRiskPolicy", "risk_policy",
                       before={"active_version": active}, after={"active_version": version})
    return await get(conn, pid, version), active


class PolicyCache:
    """The active policy per platform, read at most once per `ttl_s` per process."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._entries: dict[int, tuple[float, Policy | None]] = {}

    async def active(self, platform_id: int) -> Policy | None:
        """The platform's active policy, None if it has none."""
        now = time.monotonic()
        entry = self._entries.get(platform_id)
        if entry is not None and now - entry[0] < self._ttl_s:
            return entry[1]
        content = await self._pool.fetchrow(
            "SELECT p.version, p.content::text AS content FROM risk_policy_heads h"
            " JOIN risk_policies p ON p.platform_id = h.platform_id"
            " AND p.version = h.active_version WHERE h.platform_id = $1", platform_id)
        policy = (None if content is None
                  else Policy.from_json(content["content"], content["version"]))
        if len(self._entries) >= POLICY_CACHE_ENTRIES_MAX:
            self._entries.clear()
        self._entries[platform_id] = (now, policy)
        return policy

    def drop(self, platform_id: int) -> None:
        """Forget a platform's entry (an activation through this process)."""
        self._entries.pop(platform_id, None)
