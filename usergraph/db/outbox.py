"""Queries on the mail outbox: add, claim due rows, settle them, prune, count."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.db.models import OutboxMessage

PENDING, SENT, FAILED, SUPPRESSED = "pending", "sent", "failed", "suppressed"


async def add_message(
    session: AsyncSession,
    *,
    kind: str,
    to_address: str,
    subject: str,
    text_body: str,
    html_body: str,
    status: str,
    now: datetime,
) -> OutboxMessage:
    message = OutboxMessage(
        kind=kind,
        status=status,
        to_address=to_address,
        subject=subject,
        text_body=text_body,
        html_body=html_body,
        created_at=now,
        due_at=now,
        attempts=0,
        sent_at=now if status == SUPPRESSED else None,
    )
    session.add(message)
    await session.flush()
    return message


def _unclaimed(now: datetime) -> ColumnElement[bool]:
    return or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until <= now)


async def any_due(session: AsyncSession, *, now: datetime) -> bool:
    """Whether a pending row is due and unclaimed: a read, so an idle sender (or one whose
    only due rows another sender holds) takes no write lock."""
    found = await session.scalar(
        select(OutboxMessage.id)
        .where(OutboxMessage.status == PENDING, OutboxMessage.due_at <= now, _unclaimed(now))
        .limit(1)
    )
    return found is not None


async def claim_due(
    session: AsyncSession, *, now: datetime, claim_until: datetime, limit: int
) -> list[OutboxMessage]:
    """Claim up to limit due pending rows until claim_until; return them.

    FOR UPDATE SKIP LOCKED on PostgreSQL, so concurrent senders (workers, hosts) take different
    rows; a claim that outlives its sender (a crash) expires and the row is due again. On SQLite
    the transaction's write lock serializes senders instead.
    """
    rows = (
        await session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.status == PENDING,
                OutboxMessage.due_at <= now,
                _unclaimed(now),
            )
            .order_by(OutboxMessage.due_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for row in rows:
        row.claimed_until = claim_until
    await session.flush()
    return list(rows)


async def mark_sent(session: AsyncSession, *, message_id: int, now: datetime) -> None:
    # The bodies hold the link (a usable token): keep only the headers once it is sent.
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(
            status=SENT,
            sent_at=now,
            claimed_until=None,
            text_body="",
            html_body="",
            last_error=None,
        )
    )


async def mark_attempt_failed(
    session: AsyncSession,
    *,
    message_id: int,
    attempts: int,
    error: str,
    retry_at: datetime | None,
) -> None:
    """Record a failed attempt: due again at retry_at, or given up (failed) when None."""
    values: dict[str, Any] = {"attempts": attempts, "claimed_until": None, "last_error": error}
    if retry_at is None:
        values.update(status=FAILED, text_body="", html_body="")
    else:
        values["due_at"] = retry_at
    # Only a pending row: a sender whose claim expired mid-attempt must not undo the row
    # another sender has sent meanwhile.
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.status == PENDING)
        .values(**values)
    )


async def prune(session: AsyncSession, *, before: datetime) -> int:
    """Delete sent, failed and suppressed rows created before `before`; return how many."""
    result: Any = await session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.status != PENDING, OutboxMessage.created_at < before
        )
    )
    return int(result.rowcount)


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
    )
    return {status: int(count) for status, count in rows}


async def oldest_pending(session: AsyncSession) -> datetime | None:
    created: datetime | None = await session.scalar(
        select(func.min(OutboxMessage.created_at)).where(OutboxMessage.status == PENDING)
    )
    return created


async def recent_failures(session: AsyncSession, *, limit: int) -> Sequence[OutboxMessage]:
    return (
        await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == FAILED)
            .order_by(OutboxMessage.id.desc())
            .limit(limit)
        )
    ).all()
