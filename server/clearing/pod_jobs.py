"""The background jobs of a pod beyond the home pod (clearing.pods): each pod's payout
worker (with its own bank connector), payout scheduler, reconciliation sweep, risk swing job,
reports' roll-up, events sequencer and webhook deliverer run on that pod's own pool and
ledger writer, as the home pod's do (clearing.server), under the same settings. The business
calendar is read from the home pod."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import asyncpg

from clearing.clock import Clock
from clearing.config import Settings
from clearing.events.sequencer import Sequencer
from clearing.events.webhooks import Deliverer
from clearing.payout.schedule import Scheduler
from clearing.payout.service import PayoutDeps
from clearing.payout.worker import PayoutWorker
from clearing.pods import Pod
from clearing.recon.sweep import Sweeper
from clearing.reports.rollup import RollupJob
from clearing.risk.daily_swing import SwingJob

log = logging.getLogger("clearing.pods")


@dataclass
class PodJobs:
    """One pod's jobs, stopped in the order the server stops its own."""

    pod_id: int
    payouts: PayoutDeps
    jobs: list[Any] = field(default_factory=list)  # each with async stop()
    bank: Any = None

    async def stop(self) -> None:
        for job in self.jobs:
            await job.stop()
        if self.bank is not None:
            await self.bank.close()


async def start(pod: Pod, settings: Settings, clock: Clock, home_pool: asyncpg.Pool,
                bank_for: Callable[[asyncpg.Pool], Any],
                webhook_body: Callable[..., Any]) -> PodJobs:
    """Start pod `pod`'s jobs (those the settings turn on)."""
    deps = PayoutDeps(pod.pool, pod.writer, clock, settings.payout)
    out = PodJobs(pod.pod_id, deps)
    jobs: list[Any] = []  # in start order; stopped in reverse
    if settings.events.sequencer:
        jobs.append(Sequencer(pod.dsn, settings.events))
    if settings.events.webhooks:
        jobs.append(Deliverer(pod.pool, settings.events, clock, webhook_body))
    if settings.report.rollup:
        jobs.append(RollupJob(pod.pool, clock, settings.report))
    if settings.risk.swing_job:
        jobs.append(SwingJob(pod.pool, clock, settings.risk))
    if settings.recon.sweep:
        jobs.append(Sweeper(pod.pool, clock, settings.recon))
    if settings.payout.worker:
        out.bank = bank_for(pod.pool)
        if out.bank is not None:
            await out.bank.start()
        jobs.append(PayoutWorker(deps, out.bank, settings.payout.worker_limits))
    if settings.payout.scheduler.enabled:
        jobs.append(Scheduler(deps, settings.payout.scheduler, calendar_pool=home_pool))
    for job in jobs:
        job.start()
    out.jobs = jobs[::-1]  # the scheduler and the payout worker stop first, as at home
    log.info("pod jobs started", extra={"pod": pod.pod_id,
                                        "jobs": [type(j).__name__ for j in jobs]})
    return out
