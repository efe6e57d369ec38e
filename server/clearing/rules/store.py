"""Rule sets in PostgreSQL (the truth): versions, compiled plans, the active pointer."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import asyncpg

from clearing import audit
from clearing.errors import FailedPrecondition, NotFound, PermissionDenied
from clearing.limits import ALERT_MESSAGE_LEN_MAX, RESOLVE_ROUNDS_MAX, RULE_SET_VERSION_MAX
from clearing.ledger.model import Principal
from clearing.rules.cache import Source
from clearing.rules import chain as chains
from clearing.rules.model import Resolver, RuleSet, RuleSetStatus
from clearing.rules.validate import NAME_RE
from clearing.reasons import Reason


class PgSource(Source):
    """The plan cache's last layer."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def active_version(self, platform_id: int, name: str) -> int | None:
        return await self._pool.fetchval(
            "SELECT active_version FROM rule_set_heads WHERE platform_id = $1 AND name = $2",
            platform_id, name)

    async def plan_bytes(self, platform_id: int, name: str, version: int) -> bytes | None:
        return await self._pool.fetchval(
            "SELECT plan FROM rule_sets WHERE platform_id = $1 AND name = $2 AND version = $3",
            platform_id, name, version)

    async def plan_sha256(self, platform_id: int, name: str, version: int) -> bytes | None:
        return await self._pool.fetchval(
            "SELECT plan_sha256 FROM rule_sets WHERE platform_id = $1 AND name = $2"
            " AND version = $3", platform_id, name, version)

    async def alert(self, platform_id: int, reason: str, message: str) -> None:
        await record_alert(self._pool, platform_id, reason, message)


async def insert_version(conn: asyncpg.Connection, platform_id: int, name: str,
                         content: bytes, content_sha256: bytes, plan: bytes,
                         key_id: int) -> int:
    """Store a new published version; returns its number (1, 2, ...)."""
    version = await conn.fetchval(
        "INSERT INTO rule_set_heads (platform_id, name, latest_version) VALUES ($1, $2, 1)"
        " ON CONFLICT (platform_id, name) DO UPDATE"
        " SET latest_version = rule_set_heads.latest_version + 1 RETURNING latest_version",
        platform_id, name)
    await conn.execute(
        "INSERT INTO rule_sets (platform_id, name, version, content, content_sha256, plan,"
        " plan_sha256, published_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        platform_id, name, version, content, content_sha256, plan,
        hashlib.sha256(plan).digest(), key_id)
    return version


async def activate(conn: asyncpg.Connection, platform_id: int, name: str, version: int,
                   key_id: int) -> None:
    await conn.execute(
        "UPDATE rule_sets SET activated_by = $4, activated_at = now()"
        " WHERE platform_id = $1 AND name = $2 AND version = $3",
        platform_id, name, version, key_id)
    await conn.execute(
        "UPDATE rule_set_heads SET active_version = $3 WHERE platform_id = $1 AND name = $2",
        platform_id, name, version)


# ---- the rule-set life cycle (PublishRuleSet / ActivateRuleSet and reads) -------------------

RULE_SET_COLUMNS = (
    "r.rule_set_id, r.platform_id, r.name, r.version, r.content, r.content_sha256,"
    " r.published_by, r.published_at, r.activated_by, r.activated_at, r.superseded_at,"
    " r.level_count, (h.active_version IS NOT DISTINCT FROM r.version) AS is_active")
_FROM = ("FROM rule_sets r JOIN rule_set_heads h"
         " ON h.platform_id = r.platform_id AND h.name = r.name")


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A stored rule-set version and its life-cycle facts."""

    rule_set_id: int
    name: str
    version: int
    content: bytes
    content_sha256: bytes
    published_by: int
    published_at: dt.datetime
    activated_by: int | None
    activated_at: dt.datetime | None
    superseded_at: dt.datetime | None
    level_count: int
    is_active: bool


def _version_row(r: asyncpg.Record) -> VersionRow:
    return VersionRow(r["rule_set_id"], r["name"], r["version"], r["content"],
                      r["content_sha256"], r["published_by"], r["published_at"],
                      r["activated_by"], r["activated_at"], r["superseded_at"],
                      r["level_count"], r["is_active"])


async def next_version(conn: asyncpg.Connection, platform_id: int, name: str) -> int:
    """The number the next version of `name` gets; locks the name's head row until the
    transaction ends, so concurrent publishers of one name queue up."""
    await conn.execute(
        "INSERT INTO rule_set_heads (platform_id, name, latest_version) VALUES ($1, $2, 0)"
        " ON CONFLICT (platform_id, name) DO NOTHING", platform_id, name)
    latest = await conn.fetchval(
        "SELECT latest_version FROM rule_set_heads WHERE platform_id = $1 AND name = $2"
        " FOR UPDATE", platform_id, name)
    return latest + 1


async def set_level_count(conn: asyncpg.Connection, platform_id: int, name: str,
                          version: int, level_count: int) -> int:
    """Record a version's level count; returns its rule_set_id."""
    return await conn.fetchval(
        "UPDATE rule_sets SET level_count = $4 WHERE platform_id = $1 AND name = $2"
        " AND version = $3 RETURNING rule_set_id", platform_id, name, version, level_count)


async def get_version(conn: asyncpg.Connection, platform_id: int, name: str,
                      version: int) -> VersionRow:
    """One version (0: the active one); NotFound otherwise."""
    if version == 0:
        row = await conn.fetchrow(
            f"SELECT {RULE_SET_COLUMNS} {_FROM} WHERE r.platform_id = $1 AND r.name = $2"
            " AND r.version = h.active_version", platform_id, name)
    else:
        row = await conn.fetchrow(
            f"SELECT {RULE_SET_COLUMNS} {_FROM} WHERE r.platform_id = $1 AND r.name = $2"
            " AND r.version = $3", platform_id, name, version)
    if row is None:
        what = f"version {version}" if version else "an active version"
        raise NotFound(f"rule set {name!r} has no {what}", reason=Reason.RULE_SET_NOT_FOUND,
                       metadata={"rule_set_name": name, "rule_set_version": str(version)})
    return _version_row(row)


async def get_version_by_id(conn: asyncpg.Connection, platform_id: int,
                            rule_set_id: int) -> VersionRow:
    row = await conn.fetchrow(
        f"SELECT {RULE_SET_COLUMNS} {_FROM} WHERE r.platform_id = $1 AND r.rule_set_id = $2",
        platform_id, rule_set_id)
    if row is None:
        raise NotFound(f"rule set version {rule_set_id} not found",
                       reason=Reason.RULE_SET_NOT_FOUND)
    return _version_row(row)


# Status filters as SQL conditions.
_STATUS_SQL = {
    RuleSetStatus.PUBLISHED: "r.activated_at IS NULL",
    RuleSetStatus.ACTIVE: "h.active_version IS NOT DISTINCT FROM r.version",
    RuleSetStatus.SUPERSEDED:
        "r.activated_at IS NOT NULL AND h.active_version IS DISTINCT FROM r.version",
}


async def list_versions(conn: asyncpg.Connection, platform_id: int, *, name: str,
                        status: int, offset: int, limit: int) -> list[VersionRow]:
    """Versions by name, then by decreasing version; `limit` rows from `offset`."""
    where = ["r.platform_id = $1"]
    args: list[object] = [platform_id]
    if name:
        args.append(name)
        where.append(f"r.name = ${len(args)}")
    if status:
        where.append(_STATUS_SQL[status])
    args += [offset, limit]
    rows = await conn.fetch(
        f"SELECT {RULE_SET_COLUMNS} {_FROM} WHERE {' AND '.join(where)}"
        f" ORDER BY r.name, r.version DESC OFFSET ${len(args) - 1} LIMIT ${len(args)}", *args)
    return [_version_row(r) for r in rows]


async def activate_checked(conn: asyncpg.Connection, principal: Principal, name: str,
                           version: int, content_sha256: bytes | None,
                           expected_active: int | None, comment: str, *,
                           gate: Callable[[asyncpg.Connection, int], Awaitable[None]] | None
                           = None) -> tuple[int, int]:
    """Activate a version after the maker-checker, content and active-version checks and
    `gate` (given the active version, 0 if none, under the name's lock: it raises to
    refuse, e.g. the ratio-swing check); returns (rule_set_id, previous active version or
    0). Run inside a transaction."""
    pid = principal.platform_id
    active = await conn.fetchval(
        "SELECT coalesce(active_version, 0) FROM rule_set_heads WHERE platform_id = $1"
        " AND name = $2 FOR UPDATE", pid, name)
    row = await get_version(conn, pid, name, version) if active is not None else None
    if row is None:
        raise NotFound(f"rule set {name!r} does not exist", reason=Reason.RULE_SET_NOT_FOUND)
    if row.published_by == principal.key_id:
        raise PermissionDenied(
            f"the key that published {name!r} version {version} may not activate it: "
            "another approver must (maker-checker)", reason=Reason.MAKER_CHECKER,
            metadata={"published_by": str(row.published_by)})
    if content_sha256 is not None and content_sha256 != row.content_sha256:
        raise FailedPrecondition(
            f"{name!r} version {version} does not have the content_sha256 given",
            reason=Reason.CONTENT_CHANGED, metadata={"content_sha256": row.content_sha256.hex()})
    if expected_active is not None and expected_active != active:
        raise FailedPrecondition(
            f"the active version of {name!r} is {active}, not {expected_active}",
            reason=Reason.ACTIVE_VERSION_CHANGED, metadata={"active_version": str(active)})
    if gate is not None:
        await gate(conn, active)
    if active and active != version:
        await conn.execute(
            "UPDATE rule_sets SET superseded_at = now() WHERE platform_id = $1 AND name = $2"
            " AND version = $3", pid, name, active)
    await activate(conn, pid, name, version, principal.key_id)
    await conn.execute(
        "INSERT INTO rule_set_activations (platform_id, name, version, previous_version,"
        " key_id, comment) VALUES ($1, $2, $3, $4, $5, $6)",
        pid, name, version, active or None, principal.key_id, comment)
    await audit.record(conn, audit.Actor.of(principal), "ActivateRuleSet",
                       f"rule_set:{name}", before={"active_version": active},
                       after={"active_version": version, "rule_set_id": row.rule_set_id,
                              "content_sha256": row.content_sha256.hex(),
                              "comment": comment})
    return row.rule_set_id, active


# ---- sub-rule-sets --------------------------------------------------------------------------

async def preload_resolver(conn: asyncpg.Connection, platform_id: int, root: RuleSet,
                           decode: Callable[[bytes, int], RuleSet]) -> Resolver:
    """A synchronous resolver holding every rule set `root` reaches (the compiler's
    resolver cannot wait on the database): references are fetched level by level."""
    found: dict[tuple[str, int], RuleSet | None] = {}

    def resolve(name: str, version: int) -> RuleSet | None:
        key = (name, version)
        if key not in found:
            missing.add(key)
            return None
        return found[key]

    for _ in range(RESOLVE_ROUNDS_MAX):
        missing: set[tuple[str, int]] = set()
        chains.walk(root, resolve)
        if not missing:
            break
        for name, version in missing:
            found[(name, version)] = await _load_rule_set(conn, platform_id, name, version,
                                                          decode)
    return lambda name, version: found.get((name, version))


async def _load_rule_set(conn, platform_id: int, name: str, version: int,
                         decode: Callable[[bytes, int], RuleSet]) -> RuleSet | None:
    if not 0 <= version <= RULE_SET_VERSION_MAX or NAME_RE.fullmatch(name) is None:
        return None  # no such rule set; the validator says why
    if version == 0:
        row = await conn.fetchrow(
            "SELECT r.content, r.version FROM rule_sets r JOIN rule_set_heads h"
            " ON h.platform_id = r.platform_id AND h.name = r.name"
            " WHERE r.platform_id = $1 AND r.name = $2 AND r.version = h.active_version",
            platform_id, name)
    else:
        row = await conn.fetchrow(
            "SELECT content, version FROM rule_sets WHERE platform_id = $1 AND name = $2"
            " AND version = $3", platform_id, name, version)
    return None if row is None else decode(row["content"], row["version"])


async def record_alert(pool: asyncpg.Pool, platform_id: int, reason: str, message: str) -> None:
    """An alert for operators that concerns no split row (split_alerts, split_id 0): an
    order that could not be split, a plan cache that did not match."""
    await pool.execute(
        "INSERT INTO split_alerts (platform_id, split_id, reason, account_id, leg_index,"
        " message, created_at) VALUES ($1, 0, $2, 0, -1, $3, now())",
        platform_id, reason, message[:ALERT_MESSAGE_LEN_MAX])
