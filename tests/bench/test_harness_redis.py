"""A bench run deletes the Redis keys its server wrote (the plan cache, counters, risk state)
under the run's own prefix, and nothing else (190 keys of earlier runs were found left
behind on the development machine's Redis)."""

from __future__ import annotations

import secrets

import pytest
import redis

from bench.harness import drop_redis_keys


def test_only_the_runs_prefix_is_deleted(redis_url, redis_prefix):
    run = f"{redis_prefix}bench-{secrets.token_hex(4)}:"
    other = f"{redis_prefix}other-{secrets.token_hex(4)}:"
    client = redis.Redis.from_url(redis_url)
    try:
        for i in range(2_500):  # more than one batch of deletes
            client.set(f"{run}{{p1}}:rules:plan:{i}", b"x")
        client.set(f"{other}kept", b"y")
        client.set(run[:-1], b"the prefix without its colon is another key")
        assert drop_redis_keys(redis_url, run) == 2_500
        assert list(client.scan_iter(match=f"{run}*", count=1000)) == []
        assert client.get(f"{other}kept") == b"y"
        assert client.get(run[:-1]) is not None
    finally:
        for key in (f"{other}kept", run[:-1]):
            client.delete(key)
        client.close()


def test_an_empty_prefix_is_refused(redis_url):
    with pytest.raises(ValueError):
        drop_redis_keys(redis_url, "")
