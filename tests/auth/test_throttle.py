"""Throttle: moving-window counters in memory or in Redis (when TEST_REDIS_URL is set)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from tests.environment import LIMIT_STORAGES, TEST_REDIS_URL
from usergraph.auth.throttle import Rule, Throttle

RATES = {
    Rule.LOGIN_ACCOUNT: "3/15 minutes",
    Rule.LOGIN_IP: "5/minute",
    Rule.REGISTER_IP: "2/hour",
    Rule.REFRESH_IP: "60/minute",
}


@pytest.fixture(params=LIMIT_STORAGES)
async def throttle(request: pytest.FixtureRequest) -> AsyncIterator[Throttle]:
    redis_url = TEST_REDIS_URL if request.param == "redis" else None
    throttle = Throttle(RATES, redis_url=redis_url, key_prefix=f"test-{uuid.uuid4().hex}")
    try:
        yield throttle
    finally:
        await throttle.close()


async def test_hits_are_allowed_up_to_the_limit(throttle: Throttle) -> None:
    verdicts = [await throttle.hit(Rule.LOGIN_ACCOUNT, "ann") for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert [v.retry_after for v in verdicts[:3]] == [0, 0, 0]
    for refused in verdicts[3:]:
        assert 0 < refused.retry_after <= 15 * 60


async def test_rules_and_identifiers_count_apart(throttle: Throttle) -> None:
    for _ in range(3):
        await throttle.hit(Rule.LOGIN_ACCOUNT, "ann")
    assert not (await throttle.check(Rule.LOGIN_ACCOUNT, "ann")).allowed
    assert (await throttle.check(Rule.LOGIN_ACCOUNT, "bob")).allowed
    assert (await throttle.check(Rule.LOGIN_IP, "ann")).allowed
    assert (await throttle.check(Rule.REGISTER_IP, "ann")).allowed


async def test_check_counts_nothing(throttle: Throttle) -> None:
    for _ in range(10):
        assert (await throttle.check(Rule.REGISTER_IP, "203.0.113.7")).allowed
    assert (await throttle.hit(Rule.REGISTER_IP, "203.0.113.7")).allowed
    assert (await throttle.hit(Rule.REGISTER_IP, "203.0.113.7")).allowed
    verdict = await throttle.check(Rule.REGISTER_IP, "203.0.113.7")
    assert not verdict.allowed
    assert 3500 < verdict.retry_after <= 3600


async def test_clear_starts_the_window_over(throttle: Throttle) -> None:
    for _ in range(3):
        await throttle.hit(Rule.LOGIN_ACCOUNT, "ann")
    await throttle.clear(Rule.LOGIN_ACCOUNT, "ann")
    assert [(await throttle.hit(Rule.LOGIN_ACCOUNT, "ann")).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]


async def test_concurrent_hits_neither_overshoot_nor_get_lost(throttle: Throttle) -> None:
    verdicts = await asyncio.gather(*(throttle.hit(Rule.LOGIN_IP, "ip") for _ in range(40)))
    assert sum(v.allowed for v in verdicts) == 5


@pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set (Redis-backed limits)")
async def test_redis_keys_hold_no_identifier_in_clear() -> None:
    assert TEST_REDIS_URL is not None
    prefix = f"test-{uuid.uuid4().hex}"
    throttle = Throttle(RATES, redis_url=TEST_REDIS_URL, key_prefix=prefix)
    client = redis.asyncio.Redis.from_url(TEST_REDIS_URL)
    try:
        await throttle.hit(Rule.LOGIN_ACCOUNT, "ann@example.com")
        keys = [key.decode() async for key in client.scan_iter(match=f"{prefix}*")]
        assert keys, "the hit should have stored a key under the prefix"
        assert not any("ann" in key or "example" in key for key in keys)
    finally:
        await client.aclose()
        await throttle.close()


async def test_clear_during_the_memory_storage_expiry_pass() -> None:
    # limits' expiry pass lists the keys, then awaits a thread per key; a clear() of a later key
    # meanwhile must not kill the pass with a KeyError.
    throttle = Throttle(RATES)
    await throttle.hit(Rule.LOGIN_IP, "first")
    await throttle.hit(Rule.LOGIN_ACCOUNT, "ann")  # the pass is scheduled, not yet run
    await asyncio.sleep(0)  # the pass starts and waits on its thread for the first key
    await throttle.clear(Rule.LOGIN_ACCOUNT, "ann")
    expiry = throttle._storage.timer  # type: ignore[attr-defined]
    assert expiry is not None
    await expiry  # re-raises whatever ended the pass
    assert [(await throttle.hit(Rule.LOGIN_ACCOUNT, "ann")).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    await throttle.close()
