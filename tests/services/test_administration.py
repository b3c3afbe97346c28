"""What administrators change, against a real database: roles and activity, never leaving no
active administrator."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.helpers import (
    CLIENT,
    codes_and_fields,
    create_account,
    open_session_count,
    role_names,
    sign_in,
    sign_up,
    stored_user,
)
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import User
from usergraph.runtime import Runtime
from usergraph.services import administration, sessions
from usergraph.services.errors import ProblemCode, Rejected

# --- set_user_roles ----------------------------------------------------------------------


async def test_set_user_roles_replaces_the_roles(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    bob = await create_account(runtime, "bob")
    await administration.set_user_roles(
        db=runtime.db, actor_id=root.id, user_id=bob.id, role_names=[" Admin", "user", "admin"]
    )
    assert await role_names(runtime, bob.id) == ["admin", "user"]
    await administration.set_user_roles(
        db=runtime.db, actor_id=root.id, user_id=bob.id, role_names=[]
    )
    assert await role_names(runtime, bob.id) == []


async def test_set_user_roles_unknown_role(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    bob = await create_account(runtime, "bob")
    with pytest.raises(Rejected) as caught:
        await administration.set_user_roles(
            db=runtime.db,
            actor_id=root.id,
            user_id=bob.id,
            role_names=["user", "wizard", "admin", "king"],
        )
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_INPUT, ("input", "roles", "1")),
        (ProblemCode.INVALID_INPUT, ("input", "roles", "3")),
    ]
    assert await role_names(runtime, bob.id) == ["user"]


async def test_set_user_roles_of_an_unknown_user(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    with pytest.raises(Rejected) as caught:
        await administration.set_user_roles(
            db=runtime.db, actor_id=root.id, user_id=987_654, role_names=["user"]
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.NOT_FOUND, ("input", "userId"))]


async def test_last_active_admin_keeps_the_admin_role(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    with pytest.raises(Rejected) as caught:
        await administration.set_user_roles(
            db=runtime.db, actor_id=root.id, user_id=root.id, role_names=["user"]
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_INPUT, ("input", "userId"))]
    assert await role_names(runtime, root.id) == ["admin", "user"]


async def test_a_disabled_admin_does_not_count_as_another_admin(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    other = await create_account(runtime, "other", admin=True)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == other.id).values(is_active=False))
    with pytest.raises(Rejected) as caught:
        await administration.set_user_roles(
            db=runtime.db, actor_id=root.id, user_id=root.id, role_names=["user"]
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_INPUT, ("input", "userId"))]


async def test_admin_role_can_go_when_another_active_admin_remains(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    await create_account(runtime, "other", admin=True)
    await administration.set_user_roles(
        db=runtime.db, actor_id=root.id, user_id=root.id, role_names=["user"]
    )
    assert await role_names(runtime, root.id) == ["user"]


AdminChange = Callable[[Database, User, User], Awaitable[User]]
ADMIN_CHANGES: dict[str, AdminChange] = {
    "each-demotes-self": lambda db, me, other: administration.set_user_roles(
        db=db, actor_id=me.id, user_id=me.id, role_names=["user"]
    ),
    "each-demotes-other": lambda db, me, other: administration.set_user_roles(
        db=db, actor_id=me.id, user_id=other.id, role_names=["user"]
    ),
    "each-disables-other": lambda db, me, other: administration.set_user_active(
        db=db, actor_id=me.id, user_id=other.id, active=False
    ),
}


@pytest.mark.parametrize("change", list(ADMIN_CHANGES))
async def test_two_admins_removing_each_other_at_once_leave_one(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    alice = await create_account(runtime, "alice", admin=True)
    bob = await create_account(runtime, "bob", admin=True)

    # After counting the other administrators, wait (briefly) for the other request to count
    # too: without a lock that serializes the two checks, both see one other admin and both
    # go ahead. With the lock, the second count waits for the first commit and sees it.
    original = user_queries.count_active_admins
    counted = 0
    both_counted = asyncio.Event()

    async def count_then_wait(session: AsyncSession, *, excluding_user_id: int) -> int:
        nonlocal counted
        count = await original(session, excluding_user_id=excluding_user_id)
        counted += 1
        if counted == 2:
            both_counted.set()
        with anyio.move_on_after(1):
            await both_counted.wait()
        return count

    monkeypatch.setattr(user_queries, "count_active_admins", count_then_wait)
    make_change = ADMIN_CHANGES[change]
    results = await asyncio.gather(
        make_change(runtime.db, alice, bob),
        make_change(runtime.db, bob, alice),
        return_exceptions=True,
    )

    refused = [result for result in results if isinstance(result, Rejected)]
    assert len(refused) == 1, results
    assert codes_and_fields(refused[0]) == [(ProblemCode.INVALID_INPUT, ("input", "userId"))]
    admins_left = [
        user.username
        for user in [await stored_user(runtime, alice.id), await stored_user(runtime, bob.id)]
        if user.is_active and "admin" in await role_names(runtime, user.id)
    ]
    assert len(admins_left) == 1


# --- set_user_active ---------------------------------------------------------------------


async def test_disabling_an_account_ends_its_sessions(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    bob = await sign_up(runtime, "bob")
    await sign_in(runtime, "bob")
    carol = await sign_up(runtime, "carol")
    assert await open_session_count(runtime, bob.user.id) == 2

    disabled = await administration.set_user_active(
        db=runtime.db, actor_id=root.id, user_id=bob.user.id, active=False
    )
    assert not disabled.is_active
    assert not (await stored_user(runtime, bob.user.id)).is_active
    assert await open_session_count(runtime, bob.user.id) == 0
    assert await open_session_count(runtime, carol.user.id) == 1
    with pytest.raises(Rejected) as caught:
        await sessions.refresh(
            db=runtime.db,
            policy=runtime.policy,
            throttle=runtime.throttle,
            refresh_token=bob.refresh_token,
            client=CLIENT,
        )
    assert [problem.code for problem in caught.value.problems] == [
        ProblemCode.INVALID_REFRESH_TOKEN
    ]

    enabled = await administration.set_user_active(
        db=runtime.db, actor_id=root.id, user_id=bob.user.id, active=True
    )
    assert enabled.is_active
    assert (await stored_user(runtime, bob.user.id)).is_active


async def test_you_cannot_disable_yourself(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    await create_account(runtime, "other", admin=True)
    with pytest.raises(Rejected) as caught:
        await administration.set_user_active(
            db=runtime.db, actor_id=root.id, user_id=root.id, active=False
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_INPUT, ("input", "active"))]
    assert (await stored_user(runtime, root.id)).is_active


async def test_set_user_active_of_an_unknown_user(runtime: Runtime) -> None:
    root = await create_account(runtime, "root", admin=True)
    with pytest.raises(Rejected) as caught:
        await administration.set_user_active(
            db=runtime.db, actor_id=root.id, user_id=987_654, active=False
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.NOT_FOUND, ("input", "userId"))]
