"""Password hashing: the only passlib import.

argon2 takes tens of milliseconds and tens of MiB per hash, so every hash and verify runs in a
worker thread behind a capacity limiter of about one per core: the event loop never blocks and
a login storm cannot use unbounded memory.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import anyio
from passlib.context import CryptContext


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    # A fresh hash when the stored one uses an old scheme or old costs; store it.
    new_hash: str | None = None


class PasswordHasher:
    def __init__(
        self,
        *,
        time_cost: int = 3,
        memory_cost_kib: int = 65536,
        parallelism: int = 4,
        concurrency: int = 1,
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
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._context.hash, password, limiter=self._limiter)

    async def verify(self, password: str, stored_hash: str) -> Verification:
        """Check password against stored_hash; return whether it matches and any upgraded hash."""
        try:
            ok, new_hash = await anyio.to_thread.run_sync(
                self._context.verify_and_update, password, stored_hash, limiter=self._limiter
            )
        except ValueError:
            # A hash this password cannot be checked against (bcrypt refuses passwords over 72
            # bytes, or the stored hash is malformed): a plain mismatch, after as much work as a
            # real check, so the answer does not tell this account from any other.
            await self.verify_dummy(password)
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
