"""The sequencer: numbers the outbox's events per platform, in the order they became
visible, and fans them out to webhook deliveries.

Every server process runs one; one of them at a time, per database, is the leader: it holds
the session-level advisory lock EVENTS_LOCK_KEY on its own connection for as long as that
connection lives (a process that stops, dies or loses the connection lets it go, and another
process's next try takes it; a frozen leader's session ends after
EVENTS_LEADER_IDLE_TIMEOUT_S without a statement, a vanished host's by TCP keepalives:
`session_settings`). Only the leader runs rounds. A round is one statement, its own
transaction: it moves up to EVENTS_SEQUENCE_BATCH_MAX visible outbox rows, in outbox_id
order, into `events`, numbered per platform from `event_heads` (which only the leader
writes), makes one webhook delivery per matching enabled endpoint, and notifies the
WatchEvents streams of every process (NOTIFY clearing_events) when it moved any. Each round's
snapshot is taken after the previous round committed, on the same connection, so it reads
the heads that round left. A change whose transaction commits after a round is numbered by
a later round: the feed is gap-free and in commit-visible order per platform; two changes of
one resource are ordered (the second could not start before the first committed).
(Until 2026-12-08 every round of every process tried a transaction-level lock: five round
trips a round where one does now, 50 rounds a second per process even when idle.)
Also prunes events (and finished deliveries) older than the retention, a bounded slice per
round.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import asyncpg
import uvloop

from clearing.config import EventSettings
from clearing.events.model import DeliveryState
from clearing.limits import (EVENTS_LEADER_IDLE_TIMEOUT_S, EVENTS_LEADER_KEEPALIVE_COUNT,
                             EVENTS_LEADER_KEEPALIVE_IDLE_S,
                             EVENTS_LEADER_KEEPALIVE_INTERVAL_S, EVENTS_PRUNE_BATCH_MAX,
                             EVENTS_SEQUENCE_BATCH_MAX)

log = logging.getLogger("clearing.events.sequencer")

EVENTS_LOCK_KEY = 0x6576656E7473  # "events"
CHANNEL = "clearing_events"
PRUNE_EVERY_ROUNDS = 500
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
ERROR_PAUSE_S = 1.0
FOLLOWER_PAUSE_S = 0.5  # between a follower's tries to lead (the takeover's delay)
STOP_TIMEOUT_S = 30.0


def session_settings(interval_ms: int) -> dict[str, str]:
    """A sequencer connection's session settings: a leader that stops issuing statements (a
    frozen process) or whose host vanishes without closing the socket loses its session, and
    with it the lock, in seconds rather than at the kernel's keepalive default (2 hours).
    The idle timeout is at least three of the rounds' intervals."""
    idle_ms = max(EVENTS_LEADER_IDLE_TIMEOUT_S * 1000, 3 * interval_ms)
    return {"idle_session_timeout": str(idle_ms),
            "tcp_keepalives_idle": str(EVENTS_LEADER_KEEPALIVE_IDLE_S),
            "tcp_keepalives_interval": str(EVENTS_LEADER_KEEPALIVE_INTERVAL_S),
            "tcp_keepalives_count": str(EVENTS_LEADER_KEEPALIVE_COUNT)}


_SQL_ROUND = f"""
WITH moved AS (
  DELETE FROM event_outbox WHERE outbox_id IN (
    SELECT outbox_id FROM event_outbox ORDER BY outbox_id LIMIT $1)
  RETURNING *
), numbered AS (
  SELECT m.*, coalesce(h.seq, 0)
              + row_number() OVER (PARTITION BY m.platform_id ORDER BY m.outbox_id) AS seq
  FROM moved m LEFT JOIN event_heads h ON h.platform_id = m.platform_id
), ins AS (
  INSERT INTO events (platform_id, seq, outbox_id, type, resource_id, request_id, payload,
                      created_at)
  SELECT platform_id, seq, outbox_id, type, resource_id, request_id, payload, created_at
  FROM numbered
  RETURNING platform_id, seq, type, resource_id
), heads AS (
  INSERT INTO event_heads (platform_id, seq)
  SELECT platform_id, max(seq) FROM ins GROUP BY platform_id
  ON CONFLICT (platform_id) DO UPDATE SET seq = excluded.seq
  RETURNING 1
), deliveries AS (
  INSERT INTO webhook_deliveries (endpoint_id, platform_id, seq, resource_id, state)
  SELECT e.endpoint_id, i.platform_id, i.seq, i.resource_id, {DeliveryState.PENDING:d}
  FROM ins i JOIN webhook_endpoints e
    ON e.platform_id = i.platform_id AND e.enabled
   AND (e.types = '{{}}' OR i.type = ANY(e.types))
  ORDER BY i.platform_id, i.seq, e.endpoint_id
  RETURNING 1
)
SELECT m.moved, (SELECT count(*) FROM heads) AS platforms,
       (SELECT count(*) FROM deliveries) AS deliveries,
       CASE WHEN m.moved > 0 THEN pg_notify('{CHANNEL}', '') END AS notified
FROM (SELECT count(*) AS moved FROM ins) m
"""

_SQL_PRUNE_EVENTS = """
DELETE FROM events WHERE (platform_id, seq) IN (
  SELECT platform_id, seq FROM events WHERE created_at < now() - make_interval(days => $1)
  LIMIT $2)
"""
_SQL_PRUNE_ATTEMPTS = f"""
DELETE FROM webhook_attempts WHERE delivery_id IN (
  SELECT delivery_id FROM webhook_deliveries
  WHERE state <> {DeliveryState.PENDING:d} AND created_at < now() - make_interval(days => $1)
  LIMIT $2)
"""
_SQL_PRUNE_DELIVERIES = f"""
DELETE FROM webhook_deliveries WHERE delivery_id IN (
  SELECT d.delivery_id FROM webhook_deliveries d
  WHERE d.state <> {DeliveryState.PENDING:d}
    AND d.created_at < now() - make_interval(days => $1)
    AND NOT EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.delivery_id = d.delivery_id)
  LIMIT $2)
"""


async def lead(conn: asyncpg.Connection) -> bool:
    """Whether this connection is (now) the leader: it holds the sequencer's session-level
    lock, which it keeps until it closes (`pg_try_advisory_lock` again on a holder is true
    and stacks: call it only until it answers true)."""
    return await conn.fetchval("SELECT pg_try_advisory_lock($1)", EVENTS_LOCK_KEY)


async def sequence_round(conn: asyncpg.Connection,
                         batch_max: int = EVENTS_SEQUENCE_BATCH_MAX) -> int:
    """One round, one statement in its own transaction, on the leader's connection (`lead`):
    the events numbered."""
    row = await conn.fetchrow(_SQL_ROUND, batch_max)
    return row["moved"]


async def prune(conn: asyncpg.Connection, retention_days: int) -> int:
    """Events and finished deliveries older than the retention, a slice; rows removed."""
    removed = 0
    for sql in (_SQL_PRUNE_EVENTS, _SQL_PRUNE_ATTEMPTS, _SQL_PRUNE_DELIVERIES):
        status = await conn.execute(sql, retention_days, EVENTS_PRUNE_BATCH_MAX)
        removed += int(status.split()[-1])
    return removed


class Sequencer:
    """This process's sequencer loop (see the module docstring), in a thread of its own
    with its own event loop and connection: the server's loop, busy with splits at the
    sale-day rate, would delay every await of a round (commit to feed lag: 450 ms at 2,000
    splits/s in the loop, bench/README.md); the thread gets the GIL at least every
    switch interval. Same `start()` / `stop()` as a `clearing.tasks.Periodic`."""

    def __init__(self, database_url: str, settings: EventSettings) -> None:
        self._dsn = database_url
        self._settings = settings
        self._rounds = 0
        self._leader = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="events-sequencer",
                                            daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        await asyncio.to_thread(self._thread.join, STOP_TIMEOUT_S)
        self._thread = None

    def _run(self) -> None:
        uvloop.run(self._main())  # as the server's own loop (half the CPU of asyncio's)

    async def _main(self) -> None:
        conn: asyncpg.Connection | None = None
        interval = self._settings.sequencer_interval_ms / 1000.0
        while not self._stopping.is_set():
            try:
                if conn is None or conn.is_closed():
                    self._leader = False
                    conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S,
                                                 command_timeout=COMMAND_TIMEOUT_S,
                                                 server_settings=session_settings(
                                                     self._settings.sequencer_interval_ms))
                if self._leader or await lead(conn):
                    self._leader = True
                    await self.tick(conn)
                else:
                    await asyncio.sleep(FOLLOWER_PAUSE_S)
            except Exception:  # noqa: BLE001 - logged; the next round retries
                log.exception("events sequencer round failed")
                if conn is not None:
                    conn.terminate()  # and with it the lock: another process may lead
                conn = None
                self._leader = False
                await asyncio.sleep(ERROR_PAUSE_S)
            await asyncio.sleep(interval)
        if conn is not None:
            await conn.close()  # the lock with it
        self._leader = False

    async def tick(self, conn: asyncpg.Connection) -> None:
        """The leader's rounds until one is not full, then now and then a prune."""
        while True:  # a full round: more are waiting
            moved = await sequence_round(conn)
            if moved < EVENTS_SEQUENCE_BATCH_MAX:
                break
        self._rounds += 1
        if self._rounds % PRUNE_EVERY_ROUNDS == 1:
            await prune(conn, self._settings.retention_days)
