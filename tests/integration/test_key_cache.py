"""The API-key cache against real PostgreSQL, on a hand-moved clock: a cached answer lives
only while a read that started less than CONFIRMED_MAX_AGE_S ago confirms it, and the poll
of the key table drops the cache when a key changes."""

from __future__ import annotations

import pytest

from clearing import db, tenancy
from clearing.api import auth
from clearing.errors import Unauthenticated


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pool(database_url):
    p = await db.create_pool(database_url, min_size=1, max_size=2, command_timeout_s=30)
    yield p
    await p.close()


async def _revoke(pool, key: str) -> None:
    async with pool.acquire() as conn:
        [found] = await tenancy.find_keys(conn, key)
        assert await tenancy.revoke_key(conn, found.key_id)


async def test_without_a_poll_an_answer_is_reloaded_after_its_confirmation_expires(
        pool, platform):
    clock = Clock()
    keys = auth.KeyStore(pool, clock=clock)
    who = await keys.principal(platform.key)
    assert who.platform_id == platform.platform_id
    await _revoke(pool, platform.key)
    clock.now += auth.CONFIRMED_MAX_AGE_S - 0.01  # still confirmed by its own load
    assert (await keys.principal(platform.key)).key_id == who.key_id
    clock.now += 0.02  # no longer: read again, and refused
    with pytest.raises(Unauthenticated):
        await keys.principal(platform.key)


async def test_a_poll_keeps_answers_confirmed_and_drops_them_on_a_change(pool, platform,
                                                                         database_url):
    clock = Clock()
    keys = auth.KeyStore(pool, clock=clock)
    await keys.poll()
    who = await keys.principal(platform.key)
    for _ in range(10):  # polls with no change confirm the cached answer, 10 s long
        clock.now += 1.0
        await keys.poll()
        assert (await keys.principal(platform.key)).key_id == who.key_id
    await _revoke(pool, platform.key)
    await keys.poll()  # the same instant: the change alone drops the answer
    with pytest.raises(Unauthenticated):
        await keys.principal(platform.key)


async def test_a_key_made_and_revoked_between_two_polls_is_not_kept(pool, platform):
    """Creating a key and revoking it between two polls leaves the set of live keys as it
    was: the poll must still see a change (a counter, not a digest of the live keys)."""
    clock = Clock()
    keys = auth.KeyStore(pool, clock=clock)
    await keys.poll()
    async with pool.acquire() as conn:
        brief = await tenancy.create_key(conn, platform.platform_id, frozenset({"gateway"}))
    assert (await keys.principal(brief)).platform_id == platform.platform_id
    await _revoke(pool, brief)
    clock.now += 0.5
    await keys.poll()  # the live keys are what they were at the first poll
    with pytest.raises(Unauthenticated):
        await keys.principal(brief)
