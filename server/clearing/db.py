"""PostgreSQL: the connection pool and the schema migrations (ordered SQL files)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import resources

import asyncpg

log = logging.getLogger("clearing.db")

# Any fixed number: the advisory lock that serialises concurrent migrators.
_MIGRATION_LOCK_KEY = 7_341_001


async def create_pool(dsn: str, *, min_size: int, max_size: int,
                      command_timeout_s: float) -> asyncpg.Pool:
    """The one way the server opens PostgreSQL connections.

    Pooled connections never carry session state: no SET, LISTEN, session-level advisory
    lock (only pg_advisory_xact_lock) nor cursor outliving its transaction. So a released
    connection skips asyncpg's reset query (RESET ALL, UNLISTEN, advisory unlock...), a
    round trip per acquire that cost about 10% of the server's CPU on the split path;
    asyncpg still rolls back a transaction left open.
    """
    return await asyncpg.create_pool(
        dsn=dsn, min_size=min_size, max_size=max_size, reset=_keep_session,
        command_timeout=command_timeout_s,
        max_inactive_connection_lifetime=300.0,
        statement_cache_size=1024,
        server_settings={"application_name": "clearing", "synchronous_commit": "on"},
    )


def sql_list(members: Iterable[int]) -> str:
    """Enum members as the text of an SQL list, `(SUBMITTED, UNKNOWN)` -> "2, 3".

    State, status, kind and mode numbers are never written as literals in SQL: queries are
    built once at import from the domain enums (f-strings of `sql_list(...)` or
    `{Enum.MEMBER:d}`). The text is the same as with literals, and so are the plans (a
    partial index such as bank_transfers_due_idx is used only for a literal predicate, not
    for a parameter).
    """
    return ", ".join(str(int(m)) for m in members)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to reset (see create_pool)."""


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped in the package, in order."""
    found = []
    for entry in resources.files("clearing.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), name, entry.read_text("utf-8")))
    found.sort()
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; safe when several processes start at once."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            log.info("migration applied", extra={"migration": name})
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied_now


async def ensure_database(admin_dsn: str, name: str) -> None:
    """Create database `name` through `admin_dsn` if it does not exist."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever is still on it."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
