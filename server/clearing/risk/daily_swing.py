"""The daily dynamic ratio swing: once a UTC day D is over, each receiver's share of the
platform's split volume on D (per currency, from `risk_inflows`: the receivers' shares of
committed splits by paid time) is compared with its share on D-1; a relative swing above the
active policy's `swing_threshold_bps` opens a RATIO_SWING risk event (nothing is held and no
split is stopped).

    swing = |share_D - share_D-1| / share_D-1, in exact integers:
    flagged  <=>  |in_D * total_D-1 - in_D-1 * total_D| * 10000 > threshold_bps * in_D-1 * total_D

So a swing of exactly the threshold (30% by default) is not flagged; above it is. A receiver
with no volume on D-1 has no share to compare with and is not flagged; one with volume on D-1
and none on D swings by 100%. A currency with no volume on D or D-1 is skipped.

Exactly once across processes: the (platform, day) claim is a row of `risk_swing_runs`
inserted in the transaction that writes the day's events; a second process's insert waits
for the first's commit and then inserts nothing; a crash rolls the claim back with the
events, so the next look does the day again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict

import asyncpg

from clearing import metrics
from clearing.clock import Clock
from clearing.config import RiskSettings
from clearing.money import BPS_ONE
from clearing.risk import events
from clearing.risk.model import Policy, RiskEventState, RiskRule
from clearing.tasks import Periodic

log = logging.getLogger("clearing.risk.daily_swing")

PLATFORMS_PER_LOOK_MAX = 10_000

_SQL_VOLUMES = """
SELECT account_id, currency_code, (paid_at AT TIME ZONE 'UTC')::date AS day,
       sum(amount_minor)::bigint AS amount_minor
FROM risk_inflows
WHERE platform_id = $1 AND paid_at >= $2 AND paid_at < $3
GROUP BY 1, 2, 3
"""
_SQL_EVENT = f"""
INSERT INTO risk_events (platform_id, rule, state, account_id, split_id, order_id,
                         currency_code, amount_minor, held_minor, observed, limit_value,
                         evidence, swing_day, created_at, updated_at)
VALUES ($1, $2, {RiskEventState.OPEN:d}, $3, 0, '', $4, $5, 0, $6, $7, $8::jsonb, $9, now(), now())
RETURNING event_id
"""


def flagged(in_today: int, total_today: int, in_before: int, total_before: int,
            threshold_bps: int) -> bool:
    """Whether a receiver's share swung by more than `threshold_bps` (relative)."""
    if in_before <= 0 or total_before <= 0 or total_today <= 0:
        return False
    moved = abs(in_today * total_before - in_before * total_today)
    return moved * BPS_ONE > threshold_bps * in_before * total_today


def swing_bps(in_today: int, total_today: int, in_before: int, total_before: int) -> int:
    """The relative swing in basis points, rounded up (a flagged swing always shows above
    the threshold), for the event's `observed`."""
    moved = abs(in_today * total_before - in_before * total_today)
    return -(-moved * BPS_ONE // (in_before * total_today))


async def run_day(pool: asyncpg.Pool, platform_id: int, day: dt.date,
                  policy: Policy) -> int | None:
    """Compare `day` with the day before for one platform; the events opened, None if
    another process has the day already."""
    start = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    end = start + dt.timedelta(days=2)
    async with pool.acquire() as conn, conn.transaction():
        claimed = await conn.fetchval(
            "INSERT INTO risk_swing_runs (platform_id, day) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING 1", platform_id, day)
        if not claimed:
            return None
        volume: dict[str, dict[dt.date, dict[int, int]]] = defaultdict(
            lambda: defaultdict(dict))
        for r in await conn.fetch(_SQL_VOLUMES, platform_id, start, end):
            volume[r["currency_code"]][r["day"]][r["account_id"]] = r["amount_minor"]
        opened = 0
        for currency, days in sorted(volume.items()):
            opened += await _compare(conn, platform_id, day, currency, days, policy)
        await conn.execute("UPDATE risk_swing_runs SET done_at = now(), event_count = $3"
                           " WHERE platform_id = $1 AND day = $2", platform_id, day, opened)
    metrics.RISK_SWING_EVENTS.inc(opened)
    return opened


async def _compare(conn: asyncpg.Connection, platform_id: int, day: dt.date, currency: str,
                   days: dict[dt.date, dict[int, int]], policy: Policy) -> int:
    today, before = days.get(day, {}), days.get(day - dt.timedelta(days=1), {})
    total_today, total_before = sum(today.values()), sum(before.values())
    threshold = policy.swing_threshold_bps
    opened = 0
    for account_id in sorted(before):
        in_today, in_before = today.get(account_id, 0), before[account_id]
        if not flagged(in_today, total_today, in_before, total_before, threshold):
            continue
        swing = swing_bps(in_today, total_today, in_before, total_before)
        evidence = json.dumps({
            "policy_version": policy.version, "day": day.isoformat(),
            "inflow_minor": in_today, "total_minor": total_today,
            "previous_inflow_minor": in_before, "previous_total_minor": total_before,
            "share_bps": in_today * BPS_ONE // total_today,
            "previous_share_bps": in_before * BPS_ONE // total_before,
            "swing_bps": swing}, sort_keys=True)
        event_id = await conn.fetchval(_SQL_EVENT, platform_id, int(RiskRule.RATIO_SWING),
                                       account_id, currency, in_today, swing, threshold,
                                       evidence, day)
        await conn.execute(
            "INSERT INTO risk_event_steps (event_id, step, key_id, note, decision, request_id)"
            " VALUES ($1, $2, 0, '', 0, '')", event_id, events.STEP_OPENED)
        opened += 1
    return opened


class SwingJob(Periodic):
    """Looks every `swing_interval_s` for platforms with an active policy whose previous
    UTC day is not compared yet, and refreshes the open-events gauge. `tick()` is one look."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, settings: RiskSettings) -> None:
        self._pool = pool
        self._clock = clock
        self._settings = settings
        super().__init__()

    task_name = "risk-swing"
    failure = "risk swing job failed"

    @property
    def interval_s(self) -> float:
        return self._settings.swing_interval_s

    async def tick(self) -> int:
        """Compare yesterday (UTC) for every platform with an active policy not done yet;
        the events opened."""
        day = self._clock.now().astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)
        rows = await self._pool.fetch(
            "SELECT p.platform_id, p.version, p.content::text AS content"
            " FROM risk_policy_heads h JOIN risk_policies p ON p.platform_id = h.platform_id"
            " AND p.version = h.active_version"
            " WHERE NOT EXISTS (SELECT 1 FROM risk_swing_runs r"
            "   WHERE r.platform_id = h.platform_id AND r.day = $1)"
            " ORDER BY p.platform_id LIMIT $2", day, PLATFORMS_PER_LOOK_MAX)
        opened = 0
        for r in rows:
            if self._stopping.is_set():
                break
            opened += await run_day(self._pool, r["platform_id"], day,
                                    Policy.from_json(r["content"], r["version"])) or 0
        async with self._pool.acquire() as conn:
            metrics.RISK_EVENTS_OPEN.set(await events.open_count(conn))
        return opened
