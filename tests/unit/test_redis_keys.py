"""Every Redis key a platform uses hashes to one Redis Cluster slot (its `{p<id>}` tag), the
keys are built by the classes that use them, and a prefix cannot break the tag."""

from __future__ import annotations

import datetime as dt

import pytest
from redis.crc import key_slot

from clearing import rediskeys
from clearing.config import Settings
from clearing.risk.counting import RiskCounters
from clearing.rules.cache import PlanCache
from clearing.rules.counters import CounterSpec, Counters, Period

PREFIX = "clearing:"
AT = dt.datetime(2026, 11, 11, 15, 30, tzinfo=dt.timezone.utc)


def _slot(key: str) -> int:
    return key_slot(key.encode())


def _keys_of(platform_id: int) -> list[str]:
    """Every key the server writes for a platform, as the classes writing them name them."""
    cache = PlanCache(None, bytes, None, PREFIX)  # type: ignore[arg-type] - keys only
    counters = Counters(None, PREFIX)
    risk = RiskCounters(None, None, PREFIX)  # type: ignore[arg-type]
    keys = [cache._plan_key(platform_id, "b2b", 1), cache._plan_key(platform_id, "x:y}z", 9)]
    for period in Period:
        for subject in ("SUP_2025001", "host:{7}"):
            keys.append(counters.key(CounterSpec(platform_id, "orders", subject, period,
                                                 "Asia/Shanghai", 1, AT))[0])
    for account_id in (1, 2, 987_654):  # one split's receivers share one script call
        keys += risk._keys(platform_id, account_id, 50_000, AT)
    return keys


@pytest.mark.parametrize("platform_id", [1, 42, 2**31 - 1])
def test_every_key_of_a_platform_is_in_its_tags_slot(platform_id):
    keys = _keys_of(platform_id)
    assert len(keys) == len(set(keys)) == 2 + 5 * 2 + 3 * 2
    expected = _slot(f"p{platform_id}")  # the slot of the tag's text alone
    assert {_slot(k) for k in keys} == {expected}
    assert all(k.startswith(f"clearing:{{p{platform_id}}}:") for k in keys)


def test_platforms_spread_over_slots():
    # a three-node cluster's ranges of slots: each node serves some of 300 platforms, and
    # none most of them
    ranges = [(0, 5460), (5461, 10922), (10923, 16383)]
    per_node = [0, 0, 0]
    for pid in range(1, 301):
        slot = _slot(_keys_of(pid)[0])
        per_node[next(i for i, (lo, hi) in enumerate(ranges) if lo <= slot <= hi)] += 1
    assert sum(per_node) == 300 and all(20 <= n <= 150 for n in per_node), per_node
    # the same key without tags would have spread one platform over many slots
    untagged = {_slot(f"clearing:ctr:42:orders:{s}:2026-11-01") for s in range(20)}
    assert len(untagged) > 1


def test_layout_is_the_documented_one():
    assert rediskeys.plan("c:", 42, "b2b", 3) == "c:{p42}:rules:plan:b2b:3"
    assert rediskeys.counter("c:", 42, "orders", "SUP", "2026-11-01") == \
        "c:{p42}:ctr:orders:SUP:2026-11-01"
    assert rediskeys.risk("c:", 42, 7) == "c:{p42}:risk:7"
    assert rediskeys.legacy_counter_target("c:", "c:ctr:42:orders:SUP:2026-11-01") == \
        "c:{p42}:ctr:orders:SUP:2026-11-01"
    assert rediskeys.legacy_counter_target("c:", "c:ctr:x:orders") is None


@pytest.mark.parametrize("prefix", ["a{b:", "clearing}:", "{p1}:"])
def test_a_prefix_with_braces_is_refused(prefix):
    with pytest.raises(SystemExit, match="CLEARING_REDIS_PREFIX"):
        Settings.from_env({"CLEARING_REDIS_PREFIX": prefix})


def test_cluster_setting():
    assert Settings.from_env({}).redis_cluster is False
    assert Settings.from_env({"CLEARING_REDIS_CLUSTER": "1"}).redis_cluster is True
    with pytest.raises(SystemExit, match="CLEARING_REDIS_CLUSTER"):
        Settings.from_env({"CLEARING_REDIS_CLUSTER": "2"})
