"""Password hashing: the only passlib import.

argon2 takes tens of milliseconds and tens of MiB per hash, so every hash and verify runs in a
worker thread behind a capacity limiter of about one per core: the event loop never blocks and
a login storm cannot use unbounded memory. At most `queue` more calls wait for a slot; beyond
that a call fails at once with HasherBusy instead of queueing without bound.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio
from passlib.context import CryptContext

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    # A fresh hash when the stored one uses an old scheme or old costs; store it.
    new_hash: str | None = None


# Whether the current task holds a place (PasswordHasher.place): its hashing must not take a
# second one, or a full queue would refuse the work it already let in.
_holding_place: contextvars.ContextVar[bool] = contextvars.ContextVar("holding", default=False)


# Hashing is batch work and the event loop is not: a hashing thread lowers its own scheduling
# priority (Linux gives each thread its own nice value, and argon2's lane threads inherit it),
# so on a busy machine the loop still gets a core when it needs one. Raising it back would need
# privileges, so the thread keeps the lower priority; only hashing runs in these threads.
HASHING_NICENESS = 10
_niced = threading.local()


def _in_the_background(function: Callable[..., T], *args: str) -> T:
    if not getattr(_niced, "done", False):
        _niced.done = True
        with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)
    return function(*args)


class HasherObserver(Protocol):
    """Told how busy the hasher is (usergraph.metrics)."""

    def in_flight(self, count: int) -> None: ...

    def waited(self, seconds: float) -> None: ...


class HasherBusy(Exception):
    """Every hashing slot is taken and the waiting queue is full."""


class PasswordHasher:
    def __init__(
        self,
        *,
        time_cost: int = 3,
        memory_cost_kib: int = 65536,
        parallelism: int = 4,
        concurrency: int = 1,
        queue: int = 32,
        observer: HasherObserver | None = None,
    ) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt"],
            deprecated="auto",
            argon2__type="ID",
            argon2__time_cost=time_cost,
            argon2__memory_cost=memory_cost_kib,
            argon2__parallelism=parallelism,
        )
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._max_in_flight = concurrency + queue
        self._in_flight = 0  # running or waiting; only touched on the event loop
        self._dummy_hash: str | None = None
        self._observer = observer

    @contextlib.contextmanager
    def place(self) -> Iterator[None]:
        """Hold a place in the queue for the hashing done inside; HasherBusy if there is none.

        Taken before anything that must not happen for a request refused as busy (counting a
        login attempt, say). Hashing inside a held place does not queue for another.
        """
        if _holding_place.get():
            yield
            return
        if self._in_flight >= self._max_in_flight:
            raise HasherBusy
        self._in_flight += 1
        self._report()
        token = _holding_place.set(True)
        try:
            yield
        finally:
            _holding_place.reset(token)
            self._in_flight -= 1
            self._report()

    def _report(self) -> None:
        if self._observer is not None:
            self._observer.in_flight(self._in_flight)

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        with self.place():
            return await anyio.to_thread.run_sync(
                self._timed, time.perf_counter(), function, *args, limiter=self._limiter
            )

    def _timed(self, queued_at: float, function: Callable[..., T], *args: str) -> T:
        if self._observer is not None:  # in the worker thread: the wait for a slot is over
            self._observer.waited(time.perf_counter() - queued_at)
        return _in_the_background(function, *args)

    async def hash(self, password: str) -> str:
        return await self._run(self._context.hash, password)

    async def verify(self, password: str, stored_hash: str) -> Verification:
        """Check password against stored_hash; return whether it matches and any upgraded hash."""
        try:
            ok, new_hash = await self._run(self._context.verify_and_update, password, stored_hash)
        except ValueError:
            # A hash this password cannot be checked against (bcrypt refuses passwords over 72
            # bytes, or the stored hash is malformed): a plain mismatch, after as much work as a
            # real check, so the answer does not tell this account from any other.
            await self._spend_one_verification(password)
            return Verification(ok=False)
        return Verification(ok=bool(ok), new_hash=new_hash if ok else None)

    async def prepare(self) -> None:
        """Make the dummy hash now, so the first unknown login is not slower than later ones."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def verify_dummy(self, password: str) -> None:
        """Spend one verification's time, so unknown accounts answer as slowly as known ones."""
        await self.prepare()
        assert self._dummy_hash is not None
        await self.verify(password, self._dummy_hash)

    async def _spend_one_verification(self, password: str) -> None:
        # Not through verify(): a password even the dummy hash refuses must not loop.
        await self.prepare()
        assert self._dummy_hash is not None
        with contextlib.suppress(ValueError):
            await self._run(self._context.verify, password, self._dummy_hash)
