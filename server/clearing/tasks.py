"""Ending a process's background tasks (the API key poller, the plan cache's listener, the
ledger writer's flusher, the payout worker's loop): each is stopped the same way."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task) -> None:
    """Cancel `task` and wait until it has ended; the CancelledError it ends with is not
    passed on."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
