"""Moving a platform to another PostgreSQL pod (`clearing pods move`, docs/scaling.md):
an offline operation for that platform alone, on the databases directly.

1. The routing row is marked moving (home pod); after POD_ROUTES_BOUND_S every process
   refuses the platform's calls (UNAVAILABLE, PLATFORM_MOVING); the move waits `settle_s`
   more for calls routed before the mark to end.
2. The platform's rows are read from the source pod in one REPEATABLE READ snapshot and
   written to the target in one transaction: every table with a platform_id column (its
   `platforms` row first, then in foreign-key order), the rows of the child tables that
   belong to them (split legs, attempts...), and its journal rows. The journal's hash chain
   is per database: on the target each source batch holding the platform's rows becomes a
   batch of the target's chain (the same batch id, the platform's rows only, its digest
   recomputed, chained after the target's head). Ids are kept (unique across pods: every
   pod's sequences start at pod * POD_ID_SPAN).
3. VerifyLedger of the platform on both pods (after the target's commit): both ok, the same
   totals per currency, accounts and transfers. Only then is the routing switched (the row
   says the target pod, not moving); the move returns POD_ROUTES_BOUND_S later, when every
   process routes the platform's calls to the target.
   A failed check leaves the routing on the source (not moving) and says why.
4. The source keeps its rows: records of money are never deleted (docs/retention.md; the
   retention triggers refuse it). They are an archive no call reaches, and no job of the
   source pod: its payout schedules, due bank transfers and pending webhook deliveries are
   retired (next time beyond any clock) in the transaction that commits with the check. For the same reason
   a move to a pod that holds rows of the platform already (an earlier move from it) is
   refused.

What stays in the home pod whatever the platform's pod: the platform, its API keys, the
routing row and the admin's payout configuration changes (PlatformService).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

import asyncpg

from clearing.db import sql_list
from clearing.events.model import DeliveryState
from clearing.ledger import journal, verify
from clearing.payout.claim import DUE
from clearing.limits import BATCH_SPAN, POD_ROUTES_BOUND_S
from clearing.pods import HOME

log = logging.getLogger("clearing.pods")

# Home-only tables (PlatformService and the routing) and the journal's own, copied apart.
HOME_ONLY = frozenset({"api_keys", "platform_pods", "payout_config_changes"})
JOURNAL = "transfers"
# Besides routing: seconds waited for calls routed before the platform was marked moving.
SETTLE_S_DEFAULT = 5.0

_SQL_TABLES = """
SELECT c.relname, bool_or(a.attname = 'platform_id') AS keyed,
       array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attgenerated = '') AS cols
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = current_schema() AND c.relkind = 'r'
GROUP BY c.relname
"""
# Single-column foreign keys: (table, column, referenced table, referenced column).
_SQL_FKS = """
SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, r.attname
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1]
WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
  AND c.connamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
"""


class MoveError(Exception):
    """The move cannot be done, or its check failed; the message says which."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What is copied: (table, columns, query of the platform's rows) in insertion order."""

    steps: tuple[tuple[str, tuple[str, ...], str], ...]


async def plan(conn: asyncpg.Connection) -> Plan:
    """The copy plan from the schema (the same on every pod: every pod runs every
    migration): tables keyed by platform_id, and their children without one."""
    tables = {r["relname"]: (r["keyed"], tuple(r["cols"])) for r in await conn.fetch(_SQL_TABLES)}
    fks = [tuple(r) for r in await conn.fetch(_SQL_FKS)]
    keyed = {t for t, (k, _) in tables.items() if k and t not in HOME_ONLY}
    queries: dict[str, str] = {}
    for t in keyed:
        queries[t] = f'SELECT {_cols(tables[t][1])} FROM "{t}" WHERE platform_id = $1'
    for child, col, parent, ref in fks:
        if child not in tables or tables[child][0] or parent not in keyed or child in queries:
            continue
        queries[child] = (f'SELECT {_cols(tables[child][1], "c")} FROM "{child}" c WHERE '
                          f'c."{col}" IN (SELECT "{ref}" FROM "{parent}" WHERE platform_id = $1)')
    deps = {t: {p for c, _, p, _ in fks if c == t and p != t and p in queries}
            for t in queries}
    order: list[str] = []
    while deps:
        ready = sorted(t for t, d in deps.items() if not d - set(order))
        if not ready:
            raise MoveError(f"foreign keys form a cycle among {sorted(deps)}")
        for t in ready:
            order.append(t)
            del deps[t]
    return Plan(tuple((t, tables[t][1], queries[t]) for t in order))


def _cols(cols: tuple[str, ...], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{c}"' for c in cols)


@dataclass(slots=True)
class Moved:
    """What a move copied and checked."""

    platform_id: int
    source: int
    target: int
    rows: dict[str, int]
    batches: int
    report: verify.Report


async def route_of(home: asyncpg.Connection, platform_id: int) -> tuple[int, bool]:
    row = await home.fetchrow("SELECT pod_id, moving FROM platform_pods WHERE platform_id = $1",
                              platform_id)
    return (HOME, False) if row is None else (row["pod_id"], row["moving"])


async def set_route(home: asyncpg.Connection, platform_id: int, pod_id: int,
                    moving: bool) -> None:
    await home.execute(
        "INSERT INTO platform_pods (platform_id, pod_id, moving) VALUES ($1, $2, $3)"
        " ON CONFLICT (platform_id) DO UPDATE SET pod_id = $2, moving = $3, changed_at = now()",
        platform_id, pod_id, moving)


async def move(home: asyncpg.Connection, dsns: dict[int, str], platform_id: int, target: int,
               *, settle_s: float = SETTLE_S_DEFAULT) -> Moved:
    """Move a platform to pod `target` (see the module docstring). `dsns` holds every pod's
    DSN (pod 0 included)."""
    if target not in dsns:
        raise MoveError(f"pod {target} has no DSN (CLEARING_PODS)")
    if not await home.fetchval("SELECT 1 FROM platforms WHERE platform_id = $1", platform_id):
        raise MoveError(f"no platform {platform_id}")
    source, moving = await route_of(home, platform_id)
    if source == target and not moving:
        raise MoveError(f"platform {platform_id} is on pod {target} already")
    if source not in dsns:
        raise MoveError(f"pod {source} (the platform's) has no DSN (CLEARING_PODS)")
    src = await asyncpg.connect(dsns[source])
    dst = await asyncpg.connect(dsns[target])
    try:
        await _check_pod(src, source)
        await _prepare_target(dst, target)
        if await dst.fetchval("SELECT 1 FROM platforms WHERE platform_id = $1", platform_id):
            raise MoveError(f"pod {target} holds rows of platform {platform_id} already (an "
                            "earlier move from it: records are never deleted)")
        await set_route(home, platform_id, source, True)
        log.info("platform marked moving", extra={"platform": platform_id, "to": target})
        await asyncio.sleep(POD_ROUTES_BOUND_S + settle_s)
        try:
            retire = await asyncpg.connect(dsns[source])
            try:
                moved = await _copy_and_check(src, dst, retire, platform_id, source, target)
            finally:
                await retire.close()
        except BaseException:
            await set_route(home, platform_id, source, False)
            raise
        await set_route(home, platform_id, target, False)
        await asyncio.sleep(POD_ROUTES_BOUND_S)  # on return, every process routes to target
        log.info("platform moved", extra={"platform": platform_id, "from": source,
                                          "to": target, "rows": sum(moved.rows.values())})
        return moved
    finally:
        await src.close()
        await dst.close()


async def _prepare_target(conn: asyncpg.Connection, pod_id: int) -> None:
    """The target migrated and claimed as pod `pod_id` (its sequences then start at
    pod_id * POD_ID_SPAN, clear of every copied id), as a server does at start: a pod no
    server has opened yet is ready too."""
    from clearing import db, pods
    from clearing.api import split_upgrade

    await db.migrate(conn)
    await split_upgrade.upgrade(conn)
    try:
        await pods.claim(conn, pod_id)
    except SystemExit as exc:
        raise MoveError(str(exc)) from None


async def _check_pod(conn: asyncpg.Connection, pod_id: int) -> None:
    found = await conn.fetchval("SELECT pod_id FROM pod_self")
    if found is not None and found != pod_id:
        raise MoveError(f"the DSN given for pod {pod_id} is pod {found}")


async def _copy_and_check(src: asyncpg.Connection, dst: asyncpg.Connection,
                          retire: asyncpg.Connection, platform_id: int, source: int,
                          target: int) -> Moved:
    steps = (await plan(src)).steps
    rows: dict[str, int] = {}
    async with src.transaction(isolation="repeatable_read", readonly=True):
        async with dst.transaction():
            for table, cols, query in steps:
                records = await src.fetch(query, platform_id)
                if records:
                    await dst.copy_records_to_table(table, records=records, columns=list(cols))
                rows[table] = len(records)
            batches = await _chain_batches(src, dst, platform_id)
    # the source's jobs retired, on a connection of its own (verify_on begins its own
    # transaction); kept only if the check passes
    async with retire.transaction():
        await _retire_source(retire, platform_id)
        before = await verify.verify_on(src, platform_id)
        after = await verify.verify_on(dst, platform_id)
        problems = _compare(before, after)
        if problems:
            raise MoveError(f"platform {platform_id} copied to pod {target} but the check "
                            f"failed ({'; '.join(problems)}): routing left on pod {source}")
    return Moved(platform_id, source, target, rows, batches, after)


# The source pod's background jobs (clearing.pod_jobs: they sweep every platform of their
# database) must never act on a moved platform's archive: its payout schedules would pay its
# old balances out again (the target pays the same money), its bank transfers and webhook
# deliveries would be sent twice. Their next times are set beyond any clock. The rows are
# locked from here to the commit (each job claims with SKIP LOCKED), and a job's write
# before that shows in the check that follows.
RETIRED_AT = dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)
_SQL_RETIRE = (
    "UPDATE payout_schedules SET next_run_at = $2"
    " WHERE platform_id = $1 AND next_run_at IS NOT NULL",
    f"UPDATE bank_transfers SET next_attempt_at = $2 WHERE platform_id = $1"
    f" AND state IN ({sql_list(DUE)})",
    f"UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE platform_id = $1"
    f" AND state = {DeliveryState.PENDING:d}",
)


async def _retire_source(src: asyncpg.Connection, platform_id: int) -> None:
    for sql in _SQL_RETIRE:
        await src.execute(sql, platform_id, RETIRED_AT)


async def _chain_batches(src: asyncpg.Connection, dst: asyncpg.Connection,
                         platform_id: int) -> int:
    """Chain the copied journal rows into the target's hash chain: a batch per source batch,
    the platform's rows only (in transfer-id order, as the writer digests them)."""
    head = await dst.fetchrow("SELECT seq, hash FROM journal_head FOR UPDATE")
    seq, prev = head["seq"], bytes(head["hash"])
    current, h, count = None, hashlib.sha256(), 0

    async def close_batch() -> None:
        nonlocal seq, prev
        digest = h.digest()
        seq += 1
        prev = hashlib.sha256(prev + digest).digest()
        await dst.execute("INSERT INTO journal_batches (seq, batch_id, transfer_count,"
                          " rows_digest, hash) VALUES ($1, $2, $3, $4, $5)",
                          seq, current, count, digest, prev)

    batches = 0
    async for row in src.cursor(f"SELECT {journal.TRANSFER_COLUMNS} FROM transfers"
                                " WHERE platform_id = $1 ORDER BY transfer_id", platform_id):
        batch_id = row[0] // BATCH_SPAN
        if batch_id != current:
            if current is not None:
                await close_batch()
                batches += 1
            current, h, count = batch_id, hashlib.sha256(), 0
        h.update(journal.records_digest_line(row))
        count += 1
    if current is not None:
        await close_batch()
        batches += 1
    await dst.execute("UPDATE journal_head SET seq = $1, hash = $2", seq, prev)
    return batches


def _compare(before: verify.Report, after: verify.Report) -> list[str]:
    problems = []
    if not before.ok:
        problems.append("the source does not verify")
    if not after.ok:
        problems.append("the target does not verify")
    if before.totals != after.totals:
        problems.append(f"totals differ: {before.totals} against {after.totals}")
    if (before.account_count, before.transfer_count) != (after.account_count,
                                                          after.transfer_count):
        problems.append(f"accounts/transfers differ: {before.account_count}/"
                        f"{before.transfer_count} against {after.account_count}/"
                        f"{after.transfer_count}")
    return problems
