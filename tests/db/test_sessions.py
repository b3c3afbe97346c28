"""usergraph.db.sessions against a real database: refresh tokens, revocation, open sessions.

Sessions are inserted with chosen times, so order and openness are exact; the services built
on these queries are tested in tests/services/test_sessions.py and tests/services/test_auth.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from tests.client import DEFAULT_PASSWORD
from usergraph.db import sessions as session_queries
from usergraph.db.models import RefreshToken, User, UserSession
from usergraph.runtime import Runtime
from usergraph.services.users import create_user

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)


async def create(runtime: Runtime, username: str) -> User:
    return await create_user(
        db=runtime.db,
        passwords=runtime.passwords,
        email=f"{username}@example.com",
        username=username,
        password=DEFAULT_PASSWORD,
    )


async def add_session(
    runtime: Runtime,
    user: User,
    *,
    minutes: int,
    expires_at: datetime = LATER,
    revoked_at: datetime | None = None,
    revoked_reason: str | None = None,
) -> UserSession:
    """A session of user created `minutes` after NOW - 1 day."""
    created_at = NOW - timedelta(days=1) + timedelta(minutes=minutes)
    user_session = UserSession(
        user_id=user.id,
        created_at=created_at,
        last_used_at=created_at,
        expires_at=expires_at,
        revoked_at=revoked_at,
        revoked_reason=revoked_reason,
    )
    async with runtime.db.sessionmaker() as s, s.begin():
        s.add(user_session)
    return user_session


async def stored_session(runtime: Runtime, session_id: uuid.UUID) -> UserSession:
    async with runtime.db.sessionmaker() as s:
        user_session = await s.get(UserSession, session_id)
    assert user_session is not None
    return user_session


def ids(sessions: list[UserSession]) -> list[uuid.UUID]:
    return [user_session.id for user_session in sessions]


@dataclass
class Statements:
    sql: list[str]


@pytest.fixture
def statements(runtime: Runtime) -> Iterator[Statements]:
    found = Statements(sql=[])
    engine = runtime.db.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        found.sql.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", record)


# --- refresh tokens -----------------------------------------------------------------------


async def test_add_and_get_refresh_token(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    phone = await add_session(runtime, ann, minutes=0)
    laptop = await add_session(runtime, ann, minutes=1)
    async with runtime.db.sessionmaker() as s, s.begin():
        await session_queries.add_refresh_token(
            s, session_id=phone.id, token_hash="a" * 64, expires_at=LATER
        )
        await session_queries.add_refresh_token(
            s, session_id=laptop.id, token_hash="b" * 64, expires_at=NOW
        )
    async with runtime.db.sessionmaker() as s:
        found = await session_queries.get_refresh_token(s, "b" * 64)
        assert found is not None
        token, user_session = found
        assert (token.session_id, token.token_hash, token.expires_at) == (laptop.id, "b" * 64, NOW)
        assert token.used_at is None
        assert (user_session.id, user_session.user_id) == (laptop.id, ann.id)
        assert await session_queries.get_refresh_token(s, "c" * 64) is None


async def test_claim_refresh_token_succeeds_once(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    phone = await add_session(runtime, ann, minutes=0)
    async with runtime.db.sessionmaker() as s, s.begin():
        await session_queries.add_refresh_token(
            s, session_id=phone.id, token_hash="a" * 64, expires_at=LATER
        )
        found = await session_queries.get_refresh_token(s, "a" * 64)
        assert found is not None
        token_id = found[0].id
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await session_queries.claim_refresh_token(s, token_id=token_id, now=NOW) is True
    async with runtime.db.sessionmaker() as s, s.begin():
        later = NOW + timedelta(seconds=5)
        assert await session_queries.claim_refresh_token(s, token_id=token_id, now=later) is False
        assert await session_queries.claim_refresh_token(s, token_id=999_999, now=NOW) is False
    async with runtime.db.sessionmaker() as s:
        token = await s.get(RefreshToken, token_id)
        assert token is not None
        assert token.used_at == NOW  # the first claim's time, not the refused one's


# --- revoke_sessions ----------------------------------------------------------------------


async def test_revoke_sessions_of_a_user_keeping_one(runtime: Runtime) -> None:
    ann, bob = await create(runtime, "ann"), await create(runtime, "bob")
    keep = await add_session(runtime, ann, minutes=0)
    open_1 = await add_session(runtime, ann, minutes=1)
    open_2 = await add_session(runtime, ann, minutes=2)
    expired = await add_session(runtime, ann, minutes=3, expires_at=NOW - timedelta(seconds=1))
    ended = await add_session(
        runtime, ann, minutes=4, revoked_at=NOW - timedelta(hours=1), revoked_reason="logout"
    )
    bobs = await add_session(runtime, bob, minutes=0)
    async with runtime.db.sessionmaker() as s, s.begin():
        count = await session_queries.revoke_sessions(
            s, now=NOW, reason="password_changed", user_id=ann.id, keep_session_id=keep.id
        )
    # Only the sessions that were still open count.
    assert count == 2
    for revoked in (open_1, open_2):
        after = await stored_session(runtime, revoked.id)
        assert (after.revoked_at, after.revoked_reason) == (NOW, "password_changed")
    for untouched in (keep, bobs, expired):
        assert (await stored_session(runtime, untouched.id)).revoked_at is None
    # An ended session keeps when and why it ended.
    after_ended = await stored_session(runtime, ended.id)
    assert (after_ended.revoked_at, after_ended.revoked_reason) == (
        NOW - timedelta(hours=1),
        "logout",
    )


async def test_revoke_sessions_by_ids(runtime: Runtime) -> None:
    ann, bob = await create(runtime, "ann"), await create(runtime, "bob")
    anns = await add_session(runtime, ann, minutes=0)
    anns_other = await add_session(runtime, ann, minutes=1)
    bobs = await add_session(runtime, bob, minutes=0)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await session_queries.revoke_sessions(s, now=NOW, reason="x", session_ids=[]) == 0
        # user_id and session_ids together: bob's session is not ann's.
        assert (
            await session_queries.revoke_sessions(
                s, now=NOW, reason="revoked", user_id=ann.id, session_ids=[bobs.id]
            )
            == 0
        )
        assert (
            await session_queries.revoke_sessions(
                s, now=NOW, reason="revoked", session_ids=[anns.id, bobs.id, uuid.uuid4()]
            )
            == 2
        )
        # Already revoked: not counted again.
        assert (
            await session_queries.revoke_sessions(s, now=NOW, reason="again", session_ids=[anns.id])
            == 0
        )
    assert (await stored_session(runtime, anns.id)).revoked_reason == "revoked"
    assert (await stored_session(runtime, bobs.id)).revoked_reason == "revoked"
    assert (await stored_session(runtime, anns_other.id)).revoked_at is None


async def test_revoke_sessions_at_a_time_counts_what_is_open_then(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    await add_session(runtime, ann, minutes=0, expires_at=NOW + timedelta(minutes=1))
    await add_session(runtime, ann, minutes=1, expires_at=NOW + timedelta(minutes=10))
    async with runtime.db.sessionmaker() as s, s.begin():
        # Five minutes on, the first session has expired by itself.
        count = await session_queries.revoke_sessions(
            s, now=NOW + timedelta(minutes=5), reason="logout_all", user_id=ann.id
        )
    assert count == 1


# --- open sessions ------------------------------------------------------------------------


async def test_open_sessions_by_user_ids_pages_each_user_in_one_statement(
    runtime: Runtime, statements: Statements
) -> None:
    ann, bob, carl = [await create(runtime, name) for name in ("ann", "bob", "carl")]
    # Inserted out of order: the page is oldest first, by created_at.
    third = await add_session(runtime, ann, minutes=30)
    first = await add_session(runtime, ann, minutes=10)
    second = await add_session(runtime, ann, minutes=20)
    await add_session(runtime, ann, minutes=5, expires_at=NOW)  # expired at NOW
    await add_session(runtime, ann, minutes=6, revoked_at=NOW - timedelta(minutes=1))
    bobs = await add_session(runtime, bob, minutes=0)
    await add_session(runtime, carl, minutes=0, revoked_at=NOW - timedelta(minutes=1))

    statements.sql.clear()
    async with runtime.db.sessionmaker() as s:
        pages = await session_queries.open_sessions_by_user_ids(
            s, user_ids=[ann.id, bob.id, carl.id, 999_999], first=2, after=None, now=NOW
        )
    selects = [sql for sql in statements.sql if sql.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1
    # No open session: no page (the loader answers an empty one).
    assert set(pages) == {ann.id, bob.id}
    assert ids(pages[ann.id].items) == [first.id, second.id]
    assert (pages[ann.id].has_next_page, pages[ann.id].has_previous_page) == (True, False)
    assert ids(pages[bob.id].items) == [bobs.id]
    assert (pages[bob.id].has_next_page, pages[bob.id].has_previous_page) == (False, False)

    after = (second.created_at, second.id)
    async with runtime.db.sessionmaker() as s:
        pages = await session_queries.open_sessions_by_user_ids(
            s, user_ids=[ann.id], first=2, after=after, now=NOW
        )
        assert ids(pages[ann.id].items) == [third.id]
        assert (pages[ann.id].has_next_page, pages[ann.id].has_previous_page) == (False, True)
        # first=0: no items, but whether there are any.
        pages = await session_queries.open_sessions_by_user_ids(
            s, user_ids=[ann.id], first=0, after=None, now=NOW
        )
        assert pages[ann.id].items == []
        assert pages[ann.id].has_next_page is True


async def test_open_sessions_with_one_created_at_are_ordered_by_id(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    made = [await add_session(runtime, ann, minutes=0) for _ in range(4)]
    by_id = sorted(ids(made))
    async with runtime.db.sessionmaker() as s:
        page = (
            await session_queries.open_sessions_by_user_ids(
                s, user_ids=[ann.id], first=2, after=None, now=NOW
            )
        )[ann.id]
        assert ids(page.items) == by_id[:2]
        rest = (
            await session_queries.open_sessions_by_user_ids(
                s,
                user_ids=[ann.id],
                first=2,
                after=(page.items[-1].created_at, page.items[-1].id),
                now=NOW,
            )
        )[ann.id]
        assert ids(rest.items) == by_id[2:]
        assert rest.has_next_page is False


async def test_count_open_sessions(runtime: Runtime) -> None:
    ann, bob, carl = [await create(runtime, name) for name in ("ann", "bob", "carl")]
    for minutes in range(3):
        await add_session(runtime, ann, minutes=minutes)
    await add_session(runtime, ann, minutes=9, expires_at=NOW - timedelta(seconds=1))
    await add_session(runtime, ann, minutes=9, revoked_at=NOW)
    await add_session(runtime, bob, minutes=0)
    await add_session(runtime, carl, minutes=0, revoked_at=NOW)
    async with runtime.db.sessionmaker() as s:
        counts = await session_queries.count_open_sessions(
            s, user_ids=[ann.id, bob.id, carl.id, 999_999], now=NOW
        )
        assert counts == {ann.id: 3, bob.id: 1}
        # Only the users asked about.
        assert await session_queries.count_open_sessions(s, user_ids=[bob.id], now=NOW) == {
            bob.id: 1
        }


async def test_get_sessions_by_ids(runtime: Runtime) -> None:
    ann, bob = await create(runtime, "ann"), await create(runtime, "bob")
    anns = await add_session(runtime, ann, minutes=0, revoked_at=NOW)
    bobs = await add_session(runtime, bob, minutes=0)
    await add_session(runtime, bob, minutes=1)
    async with runtime.db.sessionmaker() as s:
        found = await session_queries.get_sessions_by_ids(s, [bobs.id, uuid.uuid4(), anns.id])
    # Revoked sessions too: this is a lookup by id, not a list of open sessions.
    assert sorted(ids(found)) == sorted([anns.id, bobs.id])
