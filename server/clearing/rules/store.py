"""Rule sets in PostgreSQL (the truth): versions, compiled plans, the active pointer."""

from __future__ import annotations

import asyncpg

from clearing.rules.cache import Source


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
        " published_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        platform_id, name, version, content, content_sha256, plan, key_id)
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
