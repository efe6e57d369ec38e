"""One flight per key: requests that ask at once for the same voucher share one render (or
one issue), a failure reaches all of them, and a waiter whose owner was cancelled makes
the flight again; the file cache keeps the most recent VOUCHER_PDF_CACHE_MAX."""

from __future__ import annotations

import asyncio

import pytest

from clearing.limits import VOUCHER_PDF_CACHE_MAX
from clearing.reports.vouchers import _Renders


async def test_one_flight_for_requests_at_once():
    renders, calls = _Renders(), []

    async def make() -> str:
        calls.append(1)
        await asyncio.sleep(0.01)
        return "pdf"

    results = await asyncio.gather(*(renders.once("k", make) for _ in range(5)))
    assert results == ["pdf"] * 5 and len(calls) == 1 and not renders.flights


async def test_a_failure_reaches_every_waiter():
    renders = _Renders()

    async def make() -> str:
        await asyncio.sleep(0.01)
        raise ValueError("broken")

    results = await asyncio.gather(*(renders.once("k", make) for _ in range(3)),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [ValueError] * 3 and not renders.flights


async def test_a_waiter_flies_again_when_the_owner_is_cancelled():
    renders, calls = _Renders(), []

    async def make() -> str:
        calls.append(1)
        await asyncio.sleep(0.05)
        return "pdf"

    owner = asyncio.create_task(renders.once("k", make))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(renders.once("k", make))
    await asyncio.sleep(0.01)
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
    assert await waiter == "pdf" and len(calls) == 2


def test_the_cache_keeps_the_most_recent():
    renders = _Renders()
    for voucher_id in range(VOUCHER_PDF_CACHE_MAX + 3):
        renders.keep(voucher_id, b"%PDF-")
    assert list(renders.pdfs) == list(range(3, VOUCHER_PDF_CACHE_MAX + 3))
