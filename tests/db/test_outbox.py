"""usergraph.db.outbox against a real database: adding, claiming, settling, pruning and
counting outbox rows.

Rows are added with chosen times, so order and dueness are exact; the outbox and sender built
on these queries are tested under tests/mail/.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from tests.mail_rows import messages
from usergraph.db import outbox as outbox_queries
from usergraph.db.models import OutboxMessage
from usergraph.runtime import Runtime

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


async def add(
    runtime: Runtime,
    to: str,
    *,
    status: str = outbox_queries.PENDING,
    now: datetime = NOW,
    kind: str = "verify_email",
) -> int:
    async with runtime.db.sessionmaker() as s, s.begin():
        message = await outbox_queries.add_message(
            s,
            kind=kind,
            to_address=to,
            subject=f"Subject for {to}",
            text_body=f"text for {to}",
            html_body=f"<p>html for {to}</p>",
            status=status,
            now=now,
        )
        return message.id


async def set_row(runtime: Runtime, message_id: int, **values: object) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(
            update(OutboxMessage).where(OutboxMessage.id == message_id).values(**values)
        )


async def row(runtime: Runtime, message_id: int) -> OutboxMessage:
    [found] = [m for m in await messages(runtime.db) if m.id == message_id]
    return found


async def claim(
    runtime: Runtime, *, now: datetime = NOW, until: datetime | None = None, limit: int = 10
) -> list[str]:
    """Claim due rows; their addresses in the order claimed."""
    async with runtime.db.sessionmaker() as s, s.begin():
        rows = await outbox_queries.claim_due(
            s, now=now, claim_until=until or now + timedelta(minutes=5), limit=limit
        )
        return [r.to_address for r in rows]


async def any_due(runtime: Runtime, now: datetime = NOW) -> bool:
    async with runtime.db.read_sessionmaker() as s:
        return await outbox_queries.any_due(s, now=now)


async def test_add_message_pending(runtime: Runtime) -> None:
    message_id = await add(runtime, "a@example.com")
    message = await row(runtime, message_id)
    assert (message.kind, message.status, message.to_address, message.subject) == (
        "verify_email",
        "pending",
        "a@example.com",
        "Subject for a@example.com",
    )
    assert (message.text_body, message.html_body) == (
        "text for a@example.com",
        "<p>html for a@example.com</p>",
    )
    assert (message.created_at, message.due_at, message.attempts) == (NOW, NOW, 0)
    assert (message.claimed_until, message.sent_at, message.last_error) == (None, None, None)


async def test_add_message_suppressed_is_settled_at_once(runtime: Runtime) -> None:
    message_id = await add(runtime, "a@example.com", status=outbox_queries.SUPPRESSED)
    message = await row(runtime, message_id)
    assert (message.status, message.sent_at, message.due_at, message.attempts) == (
        "suppressed",
        NOW,
        NOW,
        0,
    )
    # Its bodies are kept (rendered like any other), but it is never due.
    assert message.text_body == "text for a@example.com"
    assert await any_due(runtime) is False
    assert await claim(runtime) == []


async def test_claim_due_orders_by_due_time_then_id(runtime: Runtime) -> None:
    ids = {to: await add(runtime, to) for to in ("a", "b", "c", "d", "e")}
    await set_row(runtime, ids["a"], due_at=NOW - timedelta(minutes=1))
    await set_row(runtime, ids["c"], due_at=NOW - timedelta(minutes=5))
    await set_row(runtime, ids["e"], due_at=NOW - timedelta(minutes=5))
    # c and e share a due time: the older id first; b and d are due at NOW itself.
    assert await claim(runtime, limit=3) == ["c", "e", "a"]
    assert await claim(runtime, limit=3) == ["b", "d"]
    assert await claim(runtime) == []


async def test_claim_due_takes_only_due_unclaimed_pending_rows(runtime: Runtime) -> None:
    due = await add(runtime, "due")
    await set_row(runtime, await add(runtime, "later"), due_at=NOW + timedelta(seconds=1))
    await add(runtime, "suppressed", status=outbox_queries.SUPPRESSED)
    await set_row(runtime, await add(runtime, "sent"), status=outbox_queries.SENT)
    await set_row(runtime, await add(runtime, "failed"), status=outbox_queries.FAILED)
    await set_row(runtime, await add(runtime, "claimed"), claimed_until=NOW + timedelta(seconds=1))
    expired = await add(runtime, "claim-expired")
    await set_row(runtime, expired, claimed_until=NOW)
    until = NOW + timedelta(minutes=2)
    assert await claim(runtime, until=until) == ["due", "claim-expired"]
    # The claim is recorded; claimed rows are not taken again until it ends.
    assert (await row(runtime, due)).claimed_until == until
    assert (await row(runtime, expired)).claimed_until == until
    assert await claim(runtime) == []
    assert sorted(await claim(runtime, now=until)) == ["claim-expired", "claimed", "due", "later"]


async def test_claims_skip_rows_another_transaction_holds(runtime: Runtime) -> None:
    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED: PostgreSQL only (SQLite serializes writers instead)")
    for to in ("a", "b", "c"):
        await add(runtime, to)
    first_has_them, release = asyncio.Event(), asyncio.Event()

    async def first() -> list[str]:
        async with runtime.db.sessionmaker() as s, s.begin():
            rows = await outbox_queries.claim_due(
                s, now=NOW, claim_until=NOW + timedelta(minutes=5), limit=2
            )
            first_has_them.set()
            await release.wait()
            return [r.to_address for r in rows]

    holding = asyncio.create_task(first())
    await first_has_them.wait()
    # Not blocked by the uncommitted claim: the other rows only.
    second = await asyncio.wait_for(claim(runtime), timeout=5)
    release.set()
    assert await holding == ["a", "b"]
    assert second == ["c"]


async def test_any_due(runtime: Runtime) -> None:
    assert await any_due(runtime) is False
    message_id = await add(runtime, "a")
    await set_row(runtime, message_id, due_at=NOW + timedelta(minutes=1))
    assert await any_due(runtime) is False
    assert await any_due(runtime, NOW + timedelta(minutes=1)) is True
    await set_row(runtime, message_id, status=outbox_queries.SENT)
    assert await any_due(runtime, NOW + timedelta(minutes=1)) is False


async def test_mark_sent_clears_the_bodies(runtime: Runtime) -> None:
    message_id = await add(runtime, "a")
    await set_row(runtime, message_id, last_error="earlier failure", attempts=1)
    await claim(runtime)
    sent_at = NOW + timedelta(seconds=3)
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_sent(s, message_id=message_id, now=sent_at)
    message = await row(runtime, message_id)
    assert (message.status, message.sent_at, message.claimed_until) == ("sent", sent_at, None)
    assert (message.text_body, message.html_body, message.last_error) == ("", "", None)
    assert (message.subject, message.to_address, message.attempts) == ("Subject for a", "a", 1)


async def test_mark_attempt_failed_retries_later(runtime: Runtime) -> None:
    message_id = await add(runtime, "a")
    await claim(runtime)
    retry_at = NOW + timedelta(seconds=40)
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_attempt_failed(
            s, message_id=message_id, attempts=1, error="421 try later", retry_at=retry_at
        )
    message = await row(runtime, message_id)
    assert (message.status, message.attempts, message.due_at) == ("pending", 1, retry_at)
    assert (message.claimed_until, message.last_error) == (None, "421 try later")
    assert message.text_body == "text for a"
    assert await claim(runtime, now=retry_at - timedelta(seconds=1)) == []
    assert await claim(runtime, now=retry_at) == ["a"]


async def test_mark_attempt_failed_gives_up(runtime: Runtime) -> None:
    message_id = await add(runtime, "a")
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_attempt_failed(
            s, message_id=message_id, attempts=8, error="550 no such user", retry_at=None
        )
    message = await row(runtime, message_id)
    assert (message.status, message.attempts, message.last_error) == (
        "failed",
        8,
        "550 no such user",
    )
    assert (message.text_body, message.html_body, message.due_at) == ("", "", NOW)
    assert await any_due(runtime, NOW + timedelta(days=1)) is False


async def test_mark_attempt_failed_leaves_a_sent_row_alone(runtime: Runtime) -> None:
    # A sender whose claim ran out while another sender sent the row.
    message_id = await add(runtime, "a")
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_sent(s, message_id=message_id, now=NOW)
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_attempt_failed(
            s, message_id=message_id, attempts=8, error="late", retry_at=None
        )
    message = await row(runtime, message_id)
    assert (message.status, message.attempts, message.last_error) == ("sent", 0, None)


async def test_count_by_status(runtime: Runtime) -> None:
    async with runtime.db.read_sessionmaker() as s:
        assert await outbox_queries.count_by_status(s) == {}
    for to in ("a", "b", "c"):
        await add(runtime, to)
    await add(runtime, "d", status=outbox_queries.SUPPRESSED)
    await set_row(runtime, await add(runtime, "e"), status=outbox_queries.FAILED)
    await set_row(runtime, await add(runtime, "f"), status=outbox_queries.SENT)
    await set_row(runtime, await add(runtime, "g"), status=outbox_queries.SENT)
    async with runtime.db.read_sessionmaker() as s:
        assert await outbox_queries.count_by_status(s) == {
            "pending": 3,
            "suppressed": 1,
            "failed": 1,
            "sent": 2,
        }


async def test_oldest_pending(runtime: Runtime) -> None:
    async with runtime.db.read_sessionmaker() as s:
        assert await outbox_queries.oldest_pending(s) is None
    await add(runtime, "old-sent", now=NOW - timedelta(hours=3))
    await set_row(runtime, (await messages(runtime.db))[0].id, status=outbox_queries.SENT)
    await add(runtime, "old-suppressed", now=NOW - timedelta(hours=2), status="suppressed")
    await add(runtime, "newer", now=NOW)
    await add(runtime, "older", now=NOW - timedelta(minutes=30))
    async with runtime.db.read_sessionmaker() as s:
        assert await outbox_queries.oldest_pending(s) == NOW - timedelta(minutes=30)


async def test_recent_failures_newest_first(runtime: Runtime) -> None:
    ids = [await add(runtime, to) for to in ("a", "b", "c", "d")]
    for message_id in ids[:3]:
        await set_row(runtime, message_id, status=outbox_queries.FAILED, last_error="boom")
    async with runtime.db.read_sessionmaker() as s:
        recent = await outbox_queries.recent_failures(s, limit=2)
        assert [m.to_address for m in recent] == ["c", "b"]
        everything = await outbox_queries.recent_failures(s, limit=10)
        assert [m.to_address for m in everything] == ["c", "b", "a"]


async def test_prune_deletes_old_settled_rows(runtime: Runtime) -> None:
    old = NOW - timedelta(days=8)
    await set_row(runtime, await add(runtime, "old-sent", now=old), status="sent")
    await set_row(runtime, await add(runtime, "old-failed", now=old), status="failed")
    await add(runtime, "old-suppressed", now=old, status="suppressed")
    await add(runtime, "old-pending", now=old)
    await set_row(runtime, await add(runtime, "new-sent", now=NOW), status="sent")
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await outbox_queries.prune(s, before=NOW - timedelta(days=7)) == 3
    assert [m.to_address for m in await messages(runtime.db)] == ["old-pending", "new-sent"]
