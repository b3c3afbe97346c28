"""Queries on second factors: TOTP secrets, recovery codes, login challenges.

The writes that must hold across workers are compare-and-set updates: a time step is taken
only if it is newer than the last one taken, a recovery code or a challenge only if unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.db.models import RecoveryCode, SecondFactorChallenge, TotpFactor, User


async def get_totp(session: AsyncSession, user_id: int) -> TotpFactor | None:
    return await session.get(TotpFactor, user_id, populate_existing=True)


async def totp_enabled(session: AsyncSession, user_id: int) -> bool:
    found = await session.scalar(
        select(TotpFactor.user_id).where(
            TotpFactor.user_id == user_id, TotpFactor.enabled_at.is_not(None)
        )
    )
    return found is not None


async def replace_pending_totp(
    session: AsyncSession, *, user_id: int, secret_ciphertext: str, now: datetime
) -> bool:
    """Store a new unconfirmed secret, replacing an unconfirmed one; False when TOTP is on.

    The user's row is locked first (PostgreSQL; SQLite's write lock already serializes), so two
    enrollments started at once for one user take turns, and the later one replaces the
    earlier's secret, instead of both inserting and one failing on the primary key. FOR NO KEY
    UPDATE: rows that refer to the user (a confirmation's recovery codes) are not blocked, so a
    confirmation that holds the factor's row cannot deadlock with it."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
    await session.execute(
        delete(TotpFactor).where(TotpFactor.user_id == user_id, TotpFactor.enabled_at.is_(None))
    )
    if await get_totp(session, user_id) is not None:
        return False
    session.add(TotpFactor(user_id=user_id, secret_ciphertext=secret_ciphertext, created_at=now))
    await session.flush()
    return True


async def take_step(session: AsyncSession, *, user_id: int, step: int) -> bool:
    """Record step as the newest used; False when it (or a newer one) was used already."""
    result: Any = await session.execute(
        update(TotpFactor)
        .where(
            TotpFactor.user_id == user_id,
            (TotpFactor.last_used_step.is_(None)) | (TotpFactor.last_used_step < step),
        )
        .values(last_used_step=step)
    )
    return bool(result.rowcount == 1)


async def enable_totp(session: AsyncSession, *, user_id: int, now: datetime) -> bool:
    """Turn the pending secret on; False when it is on already (or gone)."""
    result: Any = await session.execute(
        update(TotpFactor)
        .where(TotpFactor.user_id == user_id, TotpFactor.enabled_at.is_(None))
        .values(enabled_at=now)
    )
    return bool(result.rowcount == 1)


async def delete_factors(session: AsyncSession, user_id: int) -> bool:
    """Remove the user's TOTP secret, recovery codes and open challenges; True if TOTP was on."""
    result: Any = await session.execute(
        delete(TotpFactor).where(TotpFactor.user_id == user_id, TotpFactor.enabled_at.is_not(None))
    )
    await session.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    await delete_challenges(session, user_id)
    return bool(result.rowcount == 1)


async def delete_challenges(session: AsyncSession, user_id: int) -> None:
    """End the user's open login challenges (a password or the factors changed)."""
    await session.execute(
        delete(SecondFactorChallenge).where(SecondFactorChallenge.user_id == user_id)
    )


async def replace_recovery_codes(
    session: AsyncSession, *, user_id: int, code_hashes: Sequence[str], now: datetime
) -> None:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    session.add_all(
        RecoveryCode(user_id=user_id, code_hash=code_hash, created_at=now)
        for code_hash in code_hashes
    )
    await session.flush()


async def use_recovery_code(
    session: AsyncSession, *, user_id: int, code_hash: str, now: datetime
) -> bool:
    """Mark the user's unused code with this hash used; False when there is none."""
    result: Any = await session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == code_hash,
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return bool(result.rowcount >= 1)


async def recovery_codes_left(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, int]:
    rows = await session.execute(
        select(RecoveryCode.user_id, func.count())
        .where(RecoveryCode.user_id.in_(user_ids), RecoveryCode.used_at.is_(None))
        .group_by(RecoveryCode.user_id)
    )
    return {user_id: int(count) for user_id, count in rows}


async def enabled_totp_of(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, datetime]:
    """When TOTP was turned on, for those of the users who have it on."""
    rows = await session.execute(
        select(TotpFactor.user_id, TotpFactor.enabled_at).where(
            TotpFactor.user_id.in_(user_ids), TotpFactor.enabled_at.is_not(None)
        )
    )
    return {user_id: enabled_at for user_id, enabled_at in rows if enabled_at is not None}


@dataclass(frozen=True, slots=True)
class FactorState:
    """What a user's second factors look like from outside."""

    totp_enabled_at: datetime | None = None
    recovery_codes_left: int = 0


async def factor_states(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, FactorState]:
    """The state of the users' second factors (those with none are left out)."""
    enabled = await enabled_totp_of(session, user_ids)
    if not enabled:
        return {}
    left = await recovery_codes_left(session, list(enabled))
    return {
        user_id: FactorState(totp_enabled_at=at, recovery_codes_left=left.get(user_id, 0))
        for user_id, at in enabled.items()
    }


async def add_challenge(
    session: AsyncSession, *, user_id: int, token_hash: str, now: datetime, expires_at: datetime
) -> None:
    session.add(
        SecondFactorChallenge(
            user_id=user_id, token_hash=token_hash, created_at=now, expires_at=expires_at
        )
    )
    await session.flush()


async def get_challenge(session: AsyncSession, token_hash: str) -> SecondFactorChallenge | None:
    return await session.scalar(
        select(SecondFactorChallenge).where(SecondFactorChallenge.token_hash == token_hash)
    )


async def count_attempt(
    session: AsyncSession, *, challenge_id: int, max_attempts: int, now: datetime
) -> bool:
    """Count one code tried on a live challenge; False when it is used, spent or expired."""
    result: Any = await session.execute(
        update(SecondFactorChallenge)
        .where(
            SecondFactorChallenge.id == challenge_id,
            SecondFactorChallenge.used_at.is_(None),
            SecondFactorChallenge.attempts < max_attempts,
            SecondFactorChallenge.expires_at > now,
        )
        .values(attempts=SecondFactorChallenge.attempts + 1)
    )
    return bool(result.rowcount == 1)


async def use_challenge(session: AsyncSession, *, challenge_id: int, now: datetime) -> bool:
    result: Any = await session.execute(
        update(SecondFactorChallenge)
        .where(SecondFactorChallenge.id == challenge_id, SecondFactorChallenge.used_at.is_(None))
        .values(used_at=now)
    )
    return bool(result.rowcount == 1)


async def delete_dead_challenges(session: AsyncSession, *, user_id: int, now: datetime) -> None:
    """Drop the user's expired and used challenges (kept tidy at each new one)."""
    await session.execute(
        delete(SecondFactorChallenge).where(
            SecondFactorChallenge.user_id == user_id,
            (SecondFactorChallenge.expires_at <= now) | SecondFactorChallenge.used_at.is_not(None),
        )
    )


async def totp_factors_after(
    session: AsyncSession, *, user_id: int, limit: int, lock: bool = False
) -> list[TotpFactor]:
    """The next `limit` TOTP rows by user id (for re-encrypting them all, batch by batch)."""
    query = (
        select(TotpFactor)
        .where(TotpFactor.user_id > user_id)
        .order_by(TotpFactor.user_id)
        .limit(limit)
    )
    if lock:
        query = query.with_for_update()
    return list((await session.scalars(query)).all())
