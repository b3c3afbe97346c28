"""Queries on the one-time tokens sent by email."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.db.models import EmailToken


async def retire_tokens(
    session: AsyncSession, *, user_id: int | None, purpose: str, now: datetime
) -> int:
    """Mark the user's open tokens of purpose used; return how many were open.

    user_id None (a request about an address no account has) matches nothing, in the same
    statement.
    """
    # -1 matches no row (ids are positive); `== None` would mean IS NULL, every unknown
    # address's tokens.
    result: Any = await session.execute(
        update(EmailToken)
        .where(
            EmailToken.user_id == (user_id if user_id is not None else -1),
            EmailToken.purpose == purpose,
            EmailToken.used_at.is_(None),
        )
        .values(used_at=now)
    )
    return int(result.rowcount)


async def add_token(
    session: AsyncSession,
    *,
    user_id: int | None,
    purpose: str,
    token_hash: str,
    email: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    session.add(
        EmailToken(
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            email=email,
            created_at=now,
            expires_at=expires_at,
        )
    )
    await session.flush()


async def get_token(session: AsyncSession, token_hash: str, *, lock: bool) -> EmailToken | None:
    """The token with this hash; lock: until the transaction ends, so it is redeemed once."""
    query = select(EmailToken).where(EmailToken.token_hash == token_hash)
    return await session.scalar(query.with_for_update() if lock else query)
