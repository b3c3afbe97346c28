"""Rate limits for signing in: the only `limits` import.

Counters live in process memory by default, or in Redis when REDIS_URL is set, so every worker
and host shares them. Moving windows: a hit is counted atomically (a Lua script on Redis), so
concurrent requests can neither slip past a limit nor lose a count.

Identifiers are hashed before they reach the storage: Redis never holds an email address.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import limits
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# How long a call to Redis may take before the counters count as unreachable.
REDIS_TIMEOUT_SECONDS = 2.0


class StorageUnavailable(Exception):
    """The counters' storage (Redis) cannot be reached: whatever needs them fails closed."""


@contextlib.contextmanager
def _storage_calls() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise StorageUnavailable(f"{type(error).__name__}: {error}") from error


class Rule(enum.Enum):
    LOGIN_ACCOUNT = "login-account"  # failed logins per account (by login name)
    LOGIN_IP = "login-ip"  # failed logins per client ip
    REGISTER_IP = "register-ip"  # registrations per client ip
    REFRESH_IP = "refresh-ip"  # refreshes per client ip
    EMAIL_ADDRESS = "email-address"  # emails asked for one address
    EMAIL_IP = "email-ip"  # emails asked for per client ip


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    # Seconds until one more attempt would be allowed; 0 when allowed.
    retry_after: int = 0


class _MemoryStorage(MemoryStorage):
    """limits' MemoryStorage with a clear() that its background expiry pass survives.

    limits 5.8 pops the key's event list; an expiry pass that listed the key before and reaches
    it after an await then fails with KeyError (and its task dies). Emptying the list instead
    leaves the pass something to read; the pass then drops the empty list itself.
    """

    async def clear(self, key: str) -> None:
        self.storage.pop(key, None)
        self.expirations.pop(key, None)
        if key in self.events:
            self.events[key] = []


class Throttle:
    def __init__(
        self, rates: dict[Rule, str], *, redis_url: str | None = None, key_prefix: str = "usergraph"
    ) -> None:
        self._items = {rule: limits.parse(rate) for rule, rate in rates.items()}
        self._pool: ConnectionPool | None = None
        storage: Storage
        if redis_url:
            self._pool = ConnectionPool.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            storage = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix=key_prefix,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        else:
            storage = _MemoryStorage()
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, rule: Rule, identifier: str) -> Verdict:
        """Count one attempt; refuse it, uncounted, when the window is already full."""
        item, key = self._items[rule], _key(identifier)
        with _storage_calls():
            if await self._limiter.hit(item, rule.value, key):
                return Verdict(allowed=True)
            return Verdict(allowed=False, retry_after=await self._retry_after(rule, key))

    async def check(self, rule: Rule, identifier: str) -> Verdict:
        """Whether one more attempt would be allowed, without counting one."""
        item, key = self._items[rule], _key(identifier)
        with _storage_calls():
            if await self._limiter.test(item, rule.value, key):
                return Verdict(allowed=True)
            return Verdict(allowed=False, retry_after=await self._retry_after(rule, key))

    async def clear(self, rule: Rule, identifier: str) -> None:
        with _storage_calls():
            await self._limiter.clear(self._items[rule], rule.value, _key(identifier))

    async def reachable(self) -> bool:
        """Whether the counters' storage answers (always, in memory)."""
        try:
            return bool(await self._storage.check())
        except Exception:  # any failure to reach Redis means "not reachable"
            return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()
            return
        # The memory storage prunes expired entries in a background task; stop it with the
        # event loop it runs on. (Its reset() would race that task and log a KeyError.)
        timer: asyncio.Task[None] | None = getattr(self._storage, "timer", None)
        if timer is not None and not timer.done():
            timer.cancel()

    async def _retry_after(self, rule: Rule, key: str) -> int:
        stats = await self._limiter.get_window_stats(self._items[rule], rule.value, key)
        return max(1, math.ceil(stats.reset_time - time.time()))


def _key(identifier: str) -> str:
    return hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[:32]
