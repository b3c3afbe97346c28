"""Queries on sessions (signed-in devices) and their refresh tokens."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.db.keyset import Key, Page
from usergraph.db.models import RefreshToken, UserSession


def _open(now: datetime) -> ColumnElement[bool]:
    return UserSession.revoked_at.is_(None) & (UserSession.expires_at > now)


async def add_refresh_token(
    session: AsyncSession, *, session_id: uuid.UUID, token_hash: str, expires_at: datetime
) -> None:
    session.add(RefreshToken(session_id=session_id, token_hash=token_hash, expires_at=expires_at))
    await session.flush()


async def get_refresh_token(
    session: AsyncSession, token_hash: str
) -> tuple[RefreshToken, UserSession] | None:
    row = (
        await session.execute(
            select(RefreshToken, UserSession)
            .join(UserSession, UserSession.id == RefreshToken.session_id)
            .where(RefreshToken.token_hash == token_hash)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def claim_refresh_token(session: AsyncSession, *, token_id: int, now: datetime) -> bool:
    """Mark the token used; False when another request already did (compare-and-set)."""
    result: Any = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    return bool(result.rowcount == 1)


async def revoke_sessions(
    session: AsyncSession,
    *,
    now: datetime,
    reason: str,
    user_id: int | None = None,
    session_ids: Sequence[uuid.UUID] | None = None,
    keep_session_id: uuid.UUID | None = None,
) -> int:
    """Revoke the open sessions that match; return how many were open."""
    query = update(UserSession).where(_open(now)).values(revoked_at=now, revoked_reason=reason)
    if user_id is not None:
        query = query.where(UserSession.user_id == user_id)
    if session_ids is not None:
        query = query.where(UserSession.id.in_(session_ids))
    if keep_session_id is not None:
        query = query.where(UserSession.id != keep_session_id)
    result: Any = await session.execute(query)
    return int(result.rowcount)


async def get_sessions_by_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[UserSession]:
    return list((await session.scalars(select(UserSession).where(UserSession.id.in_(ids)))).all())


async def open_sessions_by_user_ids(
    session: AsyncSession,
    *,
    user_ids: Sequence[int],
    first: int,
    after: Key | None,
    now: datetime,
) -> dict[int, Page[UserSession]]:
    """The first open sessions of each user (oldest first), in one statement for all users."""
    position = (
        func.row_number()
        .over(
            partition_by=UserSession.user_id,
            order_by=(UserSession.created_at, UserSession.id),
        )
        .label("position")
    )
    inner = select(UserSession.id, position).where(UserSession.user_id.in_(user_ids), _open(now))
    if after is not None:
        inner = inner.where(tuple_(UserSession.created_at, UserSession.id) > after)
    numbered = inner.subquery()
    rows = (
        await session.execute(
            select(UserSession)
            .join(numbered, numbered.c.id == UserSession.id)
            .where(numbered.c.position <= first + 1)
            .order_by(UserSession.user_id, numbered.c.position)
        )
    ).scalars()
    grouped: dict[int, list[UserSession]] = {}
    for row in rows:
        grouped.setdefault(row.user_id, []).append(row)
    return {
        user_id: Page(
            items=items[:first],
            has_next_page=len(items) > first,
            has_previous_page=after is not None,
        )
        for user_id, items in grouped.items()
    }


async def count_open_sessions(
    session: AsyncSession, *, user_ids: Sequence[int], now: datetime
) -> dict[int, int]:
    rows = await session.execute(
        select(UserSession.user_id, func.count())
        .where(UserSession.user_id.in_(user_ids), _open(now))
        .group_by(UserSession.user_id)
    )
    return {user_id: int(count) for user_id, count in rows}
