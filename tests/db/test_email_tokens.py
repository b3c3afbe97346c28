"""usergraph.db.email_tokens against a real database: adding, retiring and finding tokens.

Tokens are added with chosen times and hashes, so counts and states are exact; the services
built on these queries are tested in tests/services/test_email_tokens.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from tests.helpers import create_account
from tests.mail_rows import token_rows
from usergraph.db import email_tokens as token_queries
from usergraph.db.models import EmailToken
from usergraph.runtime import Runtime

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


async def add(
    runtime: Runtime,
    token_hash: str,
    *,
    user_id: int | None,
    purpose: str = "verify_email",
    email: str = "ann@example.com",
) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await token_queries.add_token(
            s,
            user_id=user_id,
            purpose=purpose,
            token_hash=token_hash,
            email=email,
            now=NOW,
            expires_at=LATER,
        )


async def retire(runtime: Runtime, user_id: int | None, purpose: str, now: datetime) -> int:
    async with runtime.db.sessionmaker() as s, s.begin():
        return await token_queries.retire_tokens(s, user_id=user_id, purpose=purpose, now=now)


def hash_of(n: int) -> str:
    return f"{n:064x}"


async def test_add_token_stores_every_field(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await add(runtime, hash_of(1), user_id=ann.id, purpose="change_email", email="n@example.com")
    [row] = await token_rows(runtime.db)
    assert (row.user_id, row.purpose, row.token_hash, row.email) == (
        ann.id,
        "change_email",
        hash_of(1),
        "n@example.com",
    )
    assert (row.created_at, row.expires_at, row.used_at) == (NOW, LATER, None)


async def test_a_hash_is_unique(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await add(runtime, hash_of(1), user_id=ann.id)
    with pytest.raises(IntegrityError):
        await add(runtime, hash_of(1), user_id=None, purpose="reset_password")
    assert len(await token_rows(runtime.db)) == 1


async def test_retire_tokens_counts_the_open_tokens_of_the_purpose_and_user(
    runtime: Runtime,
) -> None:
    ann = await create_account(runtime, "ann")
    bob = await create_account(runtime, "bob")
    await add(runtime, hash_of(1), user_id=ann.id)
    await add(runtime, hash_of(2), user_id=ann.id)
    await add(runtime, hash_of(3), user_id=ann.id, purpose="reset_password")
    await add(runtime, hash_of(4), user_id=bob.id)
    await add(runtime, hash_of(5), user_id=None)
    earlier = NOW + timedelta(minutes=1)
    assert await retire(runtime, ann.id, "verify_email", earlier) == 2
    # Already used ones are not counted again, and keep their time.
    assert await retire(runtime, ann.id, "verify_email", NOW + timedelta(minutes=2)) == 0
    used = {row.token_hash: row.used_at for row in await token_rows(runtime.db)}
    assert used == {
        hash_of(1): earlier,
        hash_of(2): earlier,
        hash_of(3): None,
        hash_of(4): None,
        hash_of(5): None,
    }


async def test_retire_tokens_for_no_user_matches_nothing(runtime: Runtime) -> None:
    await add(runtime, hash_of(1), user_id=None, email="nobody@example.com")
    await add(runtime, hash_of(2), user_id=None, email="someone@example.com")
    assert await retire(runtime, None, "verify_email", NOW) == 0
    assert [row.used_at for row in await token_rows(runtime.db)] == [None, None]


async def test_get_token_by_hash(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await add(runtime, hash_of(1), user_id=ann.id)
    await add(runtime, hash_of(2), user_id=ann.id, purpose="reset_password")
    for lock in (False, True):
        async with runtime.db.sessionmaker() as s, s.begin():
            row = await token_queries.get_token(s, hash_of(2), lock=lock)
            assert row is not None
            assert (row.token_hash, row.purpose) == (hash_of(2), "reset_password")
            assert await token_queries.get_token(s, hash_of(3), lock=lock) is None
    # Used tokens are found too: the caller decides what a used one means.
    await retire(runtime, ann.id, "verify_email", NOW)
    async with runtime.db.sessionmaker() as s:
        used = await token_queries.get_token(s, hash_of(1), lock=False)
    assert used is not None and used.used_at == NOW


class Statements:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(statement)


@pytest.fixture
def statements(runtime: Runtime) -> Iterator[Statements]:
    recorder = Statements()
    engine = runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", recorder)
    try:
        yield recorder
    finally:
        event.remove(engine, "before_cursor_execute", recorder)


async def test_get_token_locks_only_when_asked(runtime: Runtime, statements: Statements) -> None:
    for lock in (False, True):
        async with runtime.db.sessionmaker() as s, s.begin():
            await token_queries.get_token(s, hash_of(1), lock=lock)
    selects = [st for st in statements.seen if "FROM email_tokens" in st]
    assert len(selects) == 2
    locked = runtime.db.engine.dialect.name == "postgresql"  # SQLite has no row locks
    assert ["FOR UPDATE" in st for st in selects] == [False, locked]


async def test_a_locked_token_waits_for_the_lock_holder(runtime: Runtime) -> None:
    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL only (SQLite serializes writers instead)")
    ann = await create_account(runtime, "ann")
    await add(runtime, hash_of(1), user_id=ann.id)
    holder_has_it, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with runtime.db.sessionmaker() as s, s.begin():
            row = await token_queries.get_token(s, hash_of(1), lock=True)
            assert row is not None
            row.used_at = NOW
            holder_has_it.set()
            await release.wait()

    async def second() -> EmailToken | None:
        await holder_has_it.wait()
        async with runtime.db.sessionmaker() as s, s.begin():
            return await token_queries.get_token(s, hash_of(1), lock=True)

    holding = asyncio.create_task(holder())
    waiting = asyncio.create_task(second())
    await holder_has_it.wait()
    # An unlocked read does not wait, and sees the row as committed (unused).
    async with runtime.db.sessionmaker() as s:
        unlocked = await token_queries.get_token(s, hash_of(1), lock=False)
    assert unlocked is not None and unlocked.used_at is None
    await asyncio.sleep(0.3)
    assert not waiting.done()
    release.set()
    await holding
    row = await asyncio.wait_for(waiting, timeout=5)
    # It read the row after the holder committed: used.
    assert row is not None and row.used_at == NOW
