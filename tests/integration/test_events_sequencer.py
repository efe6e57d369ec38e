"""The events sequencer's leadership (clearing.events.sequencer): of several sequencers on
one database one leads and numbers every event once, gap-free, in outbox order; when the
leader stops, a follower takes over; a round is one statement that notifies only when it
moved events. Real PostgreSQL, a database of the test's own (no server's sequencer on it)."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from clearing.config import EventSettings
from clearing.events import sequencer
from clearing.events.sequencer import CHANNEL, Sequencer, session_settings
from clearing.limits import EVENTS_LEADER_IDLE_TIMEOUT_S
from tests.recon_sweep_support import own_database

PLATFORMS = (101, 102)


async def _outbox(conn: asyncpg.Connection, n: int, first: int) -> None:
    """`n` outbox rows, alternately of the two platforms, resource ids first..first+n-1."""
    await conn.execute(
        "INSERT INTO event_outbox (platform_id, type, resource_id, payload, created_at)"
        " SELECT CASE WHEN g % 2 = 0 THEN $1::bigint ELSE $2::bigint END, 'split.committed',"
        " g::text, '\\x01', now() FROM generate_series($3::int, $4::int) g",
        *PLATFORMS, first, first + n - 1)


async def _feed(conn: asyncpg.Connection) -> dict[int, list[tuple[int, int]]]:
    """Per platform, (seq, resource id) in seq order."""
    rows = await conn.fetch("SELECT platform_id, seq, resource_id::int AS r FROM events"
                            " ORDER BY platform_id, seq")
    out: dict[int, list[tuple[int, int]]] = {p: [] for p in PLATFORMS}
    for r in rows:
        out[r["platform_id"]].append((r["seq"], r["r"]))
    return out


async def _until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.02)
    return False


async def _holders(conn: asyncpg.Connection) -> list[int]:
    """The backends holding the sequencer's advisory lock in this database (other tests'
    servers hold it in theirs)."""
    return [r[0] for r in await conn.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND (classid::bigint << 32 | objid::bigint) = $1", sequencer.EVENTS_LOCK_KEY)]


async def _leaders(conn: asyncpg.Connection) -> int:
    return len(await _holders(conn))


async def test_one_of_three_leads_every_event_numbered_once_and_a_follower_takes_over(
        pg_admin_dsn):
    settings = EventSettings(sequencer_interval_ms=5)
    async with own_database(pg_admin_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        seqs = [Sequencer(dsn, settings) for _ in range(3)]
        try:
            for s in seqs:
                s.start()
            assert await _until(lambda: _leaders_is(conn, 1), 5.0)
            # changes committed while the sequencers run, in several transactions
            for i in range(10):
                await _outbox(conn, 30, 1 + 30 * i)
            assert await _until(lambda: _outbox_empty(conn), 10.0)
            assert await _leaders(conn) == 1  # still one: the others only try
            leader = [s for s in seqs if s._leader]
            assert len(leader) == 1
            await leader[0].stop()  # its connection closes: the lock goes with it
            await _outbox(conn, 50, 301)
            t0 = time.monotonic()
            assert await _until(lambda: _outbox_empty(conn), 10.0)
            took = time.monotonic() - t0
            assert took < 3.0, took  # a follower's pause is FOLLOWER_PAUSE_S
            assert await _leaders(conn) == 1
            assert sum(s._leader for s in seqs) == 1 and not leader[0]._leader
            # the new leader's backend killed (a crash, a lost connection): it lets go, and
            # the remaining follower or itself, reconnected, leads; never two
            [holder] = await _holders(conn)
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", holder)
            await _outbox(conn, 50, 351)
            assert await _until(lambda: _outbox_empty(conn), 10.0)
            assert await _leaders(conn) == 1
            assert sum(s._leader for s in seqs) == 1
        finally:
            for s in seqs:
                await s.stop()
        try:
            feed = await _feed(conn)
            for p in PLATFORMS:
                # gap-free from 1, each resource once, in outbox (= commit) order
                assert [seq for seq, _ in feed[p]] == list(range(1, 201)), p
                resources = [r for _, r in feed[p]]
                assert resources == sorted(resources)
                assert set(resources) == {g for g in range(1, 401)
                                          if (g % 2 == 0) == (p == PLATFORMS[0])}
            heads = dict(await conn.fetch("SELECT platform_id, seq FROM event_heads"))
            assert heads == {PLATFORMS[0]: 200, PLATFORMS[1]: 200}
        finally:
            await conn.close()


async def _leaders_is(conn, n):
    return await _leaders(conn) == n


async def _outbox_empty(conn):
    return await conn.fetchval("SELECT count(*) FROM event_outbox") == 0


async def test_a_round_is_one_statement_that_notifies_only_when_it_moved(pg_admin_dsn):
    async with own_database(pg_admin_dsn) as dsn:
        leader = await asyncpg.connect(dsn)
        listener = await asyncpg.connect(dsn)
        other = await asyncpg.connect(dsn)
        notes: list[str] = []
        await listener.add_listener(CHANNEL, lambda *args: notes.append(args[1]))
        try:
            assert await sequencer.lead(leader) is True
            assert await sequencer.lead(other) is False  # one leader per database
            assert await sequencer.sequence_round(leader) == 0
            await asyncio.sleep(0.3)
            assert notes == []  # nothing moved, nobody woken
            await _outbox(leader, 7, 1)
            assert await sequencer.sequence_round(leader, batch_max=5) == 5  # bounded
            assert await sequencer.sequence_round(leader) == 2
            assert await _until(lambda: _has(notes, 2), 5.0)
            assert (await _feed(leader))[PLATFORMS[0]] == [(1, 2), (2, 4), (3, 6)]
            await leader.close()  # the leader gone, another connection leads
            assert await _until(lambda: sequencer.lead(other), 5.0)
        finally:
            for c in (leader, listener, other):
                await c.close()


async def _has(notes, n):
    return len(notes) >= n


async def test_a_leader_gone_silent_loses_its_session_and_the_lock(pg_admin_dsn):
    """A frozen leader (no statement for the idle timeout) or a vanished host (keepalives)
    lets go of the lock: PostgreSQL ends the session. The timeout is shortened here."""
    assert session_settings(20)["idle_session_timeout"] == \
        str(EVENTS_LEADER_IDLE_TIMEOUT_S * 1000)
    assert session_settings(60_000)["idle_session_timeout"] == "180000"  # 3 intervals
    async with own_database(pg_admin_dsn) as dsn:
        frozen = await asyncpg.connect(
            dsn, server_settings={**session_settings(20), "idle_session_timeout": "300"})
        other = await asyncpg.connect(dsn)
        try:
            assert await sequencer.lead(frozen) is True
            assert await sequencer.lead(other) is False
            await asyncio.sleep(1.0)  # the "leader" issues nothing
            assert await sequencer.lead(other) is True
        finally:
            frozen.terminate()
            await other.close()
