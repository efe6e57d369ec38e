"""Ending a process's background tasks (the API key poller, the plan cache's listener, the
ledger writer's flusher, the payout worker's loop): each is stopped the same way."""

from __future__ import annotations

import asyncio
import logging


async def cancel_and_wait(task: asyncio.Task) -> None:
    """Cancel `task` and wait until it has ended; the CancelledError it ends with is not
    passed on."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


class Periodic:
    """A process's periodic background job (the payout scheduler, the reconciliation sweep,
    the reports' roll-up, the risk swing job): `tick()`, then `interval_s` of rest (cut short
    by `stop()`), again; a failed tick is logged as `failure` and the next one retries.
    `stop()` lets the tick in progress finish (each is its own transactions), then ends.
    Subclasses set `task_name` and `failure` and define `tick()` and `interval_s`."""

    task_name = "periodic"
    failure = "periodic job failed"

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    @property
    def interval_s(self) -> float:
        raise NotImplementedError

    async def tick(self):
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._loop(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        await self._task
        self._task = None

    async def _loop(self) -> None:
        log = logging.getLogger(type(self).__module__)
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - a failed tick is logged; the next one retries
                log.exception(self.failure)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
