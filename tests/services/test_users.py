"""Accounts against a real database: profiles, roles, activity and keyset-paged listing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import anyio
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.client import DEFAULT_PASSWORD
from tests.helpers import CLIENT, codes_and_fields, sign_up
from usergraph.db import sessions as session_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.keyset import Page, PageRequest
from usergraph.db.models import User, utcnow
from usergraph.db.users import UserFilter, UserOrderColumn, user_sort_key
from usergraph.runtime import Runtime
from usergraph.services import auth, sessions, users
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.users import KEEP


async def create(
    runtime: Runtime, username: str, *, admin: bool = False, display_name: str | None = None
) -> User:
    return await users.create_user(
        db=runtime.db,
        passwords=runtime.passwords,
        email=f"{username}@example.com",
        username=username,
        password=DEFAULT_PASSWORD,
        display_name=display_name,
        admin=admin,
    )


async def role_names(runtime: Runtime, user_id: int) -> list[str]:
    async with runtime.db.read_sessionmaker() as s:
        roles = await user_queries.roles_by_user_ids(s, [user_id])
    return [role.name for role in roles.get(user_id, [])]


async def stored_user(runtime: Runtime, user_id: int) -> User:
    async with runtime.db.read_sessionmaker() as s:
        user = await s.get(User, user_id)
    assert user is not None
    return user


async def open_session_count(runtime: Runtime, user_id: int) -> int:
    async with runtime.db.read_sessionmaker() as s:
        counts = await session_queries.count_open_sessions(s, user_ids=[user_id], now=utcnow())
    return counts.get(user_id, 0)


# --- create_user -------------------------------------------------------------------------


async def test_create_user_gives_roles_and_opens_no_session(runtime: Runtime) -> None:
    plain = await create(runtime, "ann")
    admin = await create(runtime, "root", admin=True)
    assert await role_names(runtime, plain.id) == ["user"]
    assert await role_names(runtime, admin.id) == ["admin", "user"]
    assert await open_session_count(runtime, plain.id) == 0


# --- update_profile ----------------------------------------------------------------------


async def test_update_profile_keeps_what_was_not_sent(runtime: Runtime) -> None:
    ann = await create(runtime, "ann", display_name="Ann Lee")
    updated = await users.update_profile(db=runtime.db, user_id=ann.id)
    assert (updated.username, updated.display_name) == ("ann", "Ann Lee")
    updated = await users.update_profile(
        db=runtime.db, user_id=ann.id, display_name=KEEP, username=KEEP
    )
    assert (updated.username, updated.display_name) == ("ann", "Ann Lee")
    stored = await stored_user(runtime, ann.id)
    assert (stored.username, stored.display_name) == ("ann", "Ann Lee")


async def test_update_profile_none_clears_the_display_name(runtime: Runtime) -> None:
    ann = await create(runtime, "ann", display_name="Ann Lee")
    updated = await users.update_profile(db=runtime.db, user_id=ann.id, display_name=None)
    assert updated.display_name is None
    stored = await stored_user(runtime, ann.id)
    assert (stored.username, stored.display_name) == ("ann", None)


async def test_update_profile_none_username_keeps_it(runtime: Runtime) -> None:
    # A username cannot be removed: None leaves it as it is.
    ann = await create(runtime, "ann")
    updated = await users.update_profile(db=runtime.db, user_id=ann.id, username=None)
    assert updated.username == "ann"
    assert (await stored_user(runtime, ann.id)).username == "ann"


async def test_update_profile_sets_cleaned_values(runtime: Runtime) -> None:
    ann = await create(runtime, "ann", display_name="Ann Lee")
    updated = await users.update_profile(
        db=runtime.db, user_id=ann.id, display_name="  Ann   Smith ", username="Ann_Smith"
    )
    assert (updated.username, updated.display_name) == ("ann_smith", "Ann Smith")
    stored = await stored_user(runtime, ann.id)
    assert (stored.username, stored.display_name) == ("ann_smith", "Ann Smith")
    assert stored.updated_at >= ann.updated_at
    # The new username signs in; the old one no longer does.
    assert await users.get_user_by_username(db=runtime.db, username="ann") is None
    found = await users.get_user_by_username(db=runtime.db, username="ANN_SMITH")
    assert found is not None and found.id == ann.id


async def test_update_profile_to_own_username_is_allowed(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    updated = await users.update_profile(db=runtime.db, user_id=ann.id, username="ANN")
    assert updated.username == "ann"


async def test_update_profile_username_taken(runtime: Runtime) -> None:
    ann = await create(runtime, "ann", display_name="Ann Lee")
    await create(runtime, "bob")
    with pytest.raises(Rejected) as caught:
        await users.update_profile(
            db=runtime.db, user_id=ann.id, username="Bob", display_name="Someone"
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.USERNAME_TAKEN, ("input", "username"))]
    stored = await stored_user(runtime, ann.id)
    assert (stored.username, stored.display_name) == ("ann", "Ann Lee")


async def test_update_profile_reports_every_invalid_field(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    with pytest.raises(Rejected) as caught:
        await users.update_profile(
            db=runtime.db, user_id=ann.id, display_name="x" * 101, username="no"
        )
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_INPUT, ("input", "displayName")),
        (ProblemCode.INVALID_USERNAME, ("input", "username")),
    ]


async def test_update_profile_of_an_unknown_user(runtime: Runtime) -> None:
    with pytest.raises(Rejected) as caught:
        await users.update_profile(db=runtime.db, user_id=987_654, display_name="x")
    assert [problem.code for problem in caught.value.problems] == [ProblemCode.NOT_FOUND]


# --- set_user_roles ----------------------------------------------------------------------


async def test_set_user_roles_replaces_the_roles(runtime: Runtime) -> None:
    root = await create(runtime, "root", admin=True)
    bob = await create(runtime, "bob")
    await users.set_user_roles(
        db=runtime.db, actor_id=root.id, user_id=bob.id, role_names=[" Admin", "user", "admin"]
    )
    assert await role_names(runtime, bob.id) == ["admin", "user"]
    await users.set_user_roles(db=runtime.db, actor_id=root.id, user_id=bob.id, role_names=[])
    assert await role_names(runtime, bob.id) == []


async def test_set_user_roles_unknown_role(runtime: Runtime) -> None:
    root = await create(runtime, "root", admin=True)
    bob = await create(runtime, "bob")
    with pytest.raises(Rejected) as caught:
        await users.set_user_roles(
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
    root = await create(runtime, "root", admin=True)
    with pytest.raises(Rejected) as caught:
        await users.set_user_roles(
            db=runtime.db, actor_id=root.id, user_id=987_654, role_names=["user"]
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.NOT_FOUND, ("input", "userId"))]


async def test_last_active_admin_keeps_the_admin_role(runtime: Runtime) -> None:
    root = await create(runtime, "root", admin=True)
    with pytest.raises(Rejected) as caught:
        await users.set_user_roles(
            db=runtime.db, actor_id=root.id, user_id=root.id, role_names=["user"]
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_INPUT, ("input", "userId"))]
    assert await role_names(runtime, root.id) == ["admin", "user"]


async def test_a_disabled_admin_does_not_count_as_another_admin(runtime: Runtime) -> None:
    root = await create(runtime, "root", admin=True)
    other = await create(runtime, "other", admin=True)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == other.id).values(is_active=False))
    with pytest.raises(Rejected) as caught:
        await users.set_user_roles(
            db=runtime.db, actor_id=root.id, user_id=root.id, role_names=["user"]
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_INPUT, ("input", "userId"))]


async def test_admin_role_can_go_when_another_active_admin_remains(runtime: Runtime) -> None:
    root = await create(runtime, "root", admin=True)
    await create(runtime, "other", admin=True)
    await users.set_user_roles(
        db=runtime.db, actor_id=root.id, user_id=root.id, role_names=["user"]
    )
    assert await role_names(runtime, root.id) == ["user"]


AdminChange = Callable[[Database, User, User], Awaitable[User]]
ADMIN_CHANGES: dict[str, AdminChange] = {
    "each-demotes-self": lambda db, me, other: users.set_user_roles(
        db=db, actor_id=me.id, user_id=me.id, role_names=["user"]
    ),
    "each-demotes-other": lambda db, me, other: users.set_user_roles(
        db=db, actor_id=me.id, user_id=other.id, role_names=["user"]
    ),
    "each-disables-other": lambda db, me, other: users.set_user_active(
        db=db, actor_id=me.id, user_id=other.id, active=False
    ),
}


@pytest.mark.parametrize("change", list(ADMIN_CHANGES))
async def test_two_admins_removing_each_other_at_once_leave_one(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    alice = await create(runtime, "alice", admin=True)
    bob = await create(runtime, "bob", admin=True)

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
    root = await create(runtime, "root", admin=True)
    bob = await sign_up(runtime, "bob")
    await auth.login(
        db=runtime.db,
        passwords=runtime.passwords,
        policy=runtime.policy,
        throttle=runtime.throttle,
        login="bob",
        password=DEFAULT_PASSWORD,
        client=CLIENT,
    )
    carol = await sign_up(runtime, "carol")
    assert await open_session_count(runtime, bob.user.id) == 2

    disabled = await users.set_user_active(
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

    enabled = await users.set_user_active(
        db=runtime.db, actor_id=root.id, user_id=bob.user.id, active=True
    )
    assert enabled.is_active
    assert (await stored_user(runtime, bob.user.id)).is_active


async def test_you_cannot_disable_yourself(runtime: Runtime) -> None:
    root = await create(runtime, "root", admin=True)
    await create(runtime, "other", admin=True)
    with pytest.raises(Rejected) as caught:
        await users.set_user_active(db=runtime.db, actor_id=root.id, user_id=root.id, active=False)
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_INPUT, ("input", "active"))]
    assert (await stored_user(runtime, root.id)).is_active


async def test_set_user_active_of_an_unknown_user(runtime: Runtime) -> None:
    root = await create(runtime, "root", admin=True)
    with pytest.raises(Rejected) as caught:
        await users.set_user_active(db=runtime.db, actor_id=root.id, user_id=987_654, active=False)
    assert codes_and_fields(caught.value) == [(ProblemCode.NOT_FOUND, ("input", "userId"))]


# --- list_users --------------------------------------------------------------------------


async def page(
    runtime: Runtime,
    request: PageRequest,
    *,
    order_column: UserOrderColumn = "username",
    descending: bool = False,
    user_filter: UserFilter | None = None,
) -> Page[User]:
    return await users.list_users(
        db=runtime.db,
        request=request,
        user_filter=user_filter or UserFilter(),
        order_column=order_column,
        descending=descending,
    )


def names(found: Page[User]) -> list[str]:
    return [user.username for user in found.items]


def flags(found: Page[User]) -> tuple[bool, bool]:
    return found.has_previous_page, found.has_next_page


async def create_many(runtime: Runtime, usernames: Sequence[str]) -> dict[str, User]:
    return {name: await create(runtime, name) for name in usernames}


async def test_list_users_pages_forwards(runtime: Runtime) -> None:
    await create_many(runtime, ["eve", "bob", "dan", "ann", "cat"])
    first = await page(runtime, PageRequest(first=2))
    assert (names(first), flags(first)) == (["ann", "bob"], (False, True))
    cursor = user_sort_key(first.items[-1], "username")
    second = await page(runtime, PageRequest(first=2, after=cursor))
    assert (names(second), flags(second)) == (["cat", "dan"], (True, True))
    cursor = user_sort_key(second.items[-1], "username")
    third = await page(runtime, PageRequest(first=2, after=cursor))
    assert (names(third), flags(third)) == (["eve"], (True, False))


async def test_list_users_pages_backwards(runtime: Runtime) -> None:
    await create_many(runtime, ["eve", "bob", "dan", "ann", "cat"])
    last = await page(runtime, PageRequest(last=2))
    assert (names(last), flags(last)) == (["dan", "eve"], (True, False))
    cursor = user_sort_key(last.items[0], "username")
    before = await page(runtime, PageRequest(last=2, before=cursor))
    assert (names(before), flags(before)) == (["bob", "cat"], (True, True))
    cursor = user_sort_key(before.items[0], "username")
    start = await page(runtime, PageRequest(last=2, before=cursor))
    assert (names(start), flags(start)) == (["ann"], (False, True))


async def test_list_users_descending(runtime: Runtime) -> None:
    await create_many(runtime, ["eve", "bob", "dan", "ann", "cat"])
    first = await page(runtime, PageRequest(first=3), descending=True)
    assert names(first) == ["eve", "dan", "cat"]
    cursor = user_sort_key(first.items[-1], "username")
    rest = await page(runtime, PageRequest(first=3, after=cursor), descending=True)
    assert (names(rest), flags(rest)) == (["bob", "ann"], (True, False))
    last = await page(runtime, PageRequest(last=2), descending=True)
    assert names(last) == ["bob", "ann"]


async def test_list_users_by_created_at_breaks_ties_by_id(runtime: Runtime) -> None:
    created = await create_many(runtime, ["ann", "bob", "cat", "dan", "eve"])
    same_instant = datetime(2024, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).values(created_at=same_instant))
    by_id = [user.username for user in sorted(created.values(), key=lambda user: user.id)]

    seen: list[str] = []
    request = PageRequest(first=2)
    while True:
        found = await page(runtime, request, order_column="created_at")
        assert all(user.created_at == same_instant for user in found.items)
        seen += names(found)
        if not found.has_next_page:
            break
        request = PageRequest(first=2, after=user_sort_key(found.items[-1], "created_at"))
    assert seen == by_id

    seen = []
    request = PageRequest(last=2)
    while True:
        found = await page(runtime, request, order_column="created_at")
        seen = names(found) + seen
        if not found.has_previous_page:
            break
        request = PageRequest(last=2, before=user_sort_key(found.items[0], "created_at"))
    assert seen == by_id


async def test_list_users_filters_and_counts(runtime: Runtime) -> None:
    root = await create(runtime, "root", admin=True)
    await create(runtime, "ann", display_name="Ann Lee")
    bob = await create(runtime, "bob", display_name="Bob 100%_sure")
    await users.set_user_active(db=runtime.db, actor_id=root.id, user_id=bob.id, active=False)

    async def usernames(user_filter: UserFilter) -> list[str]:
        found = await page(runtime, PageRequest(first=10), user_filter=user_filter)
        count = await users.count_users(db=runtime.db, user_filter=user_filter)
        assert count == len(found.items)
        return names(found)

    assert await usernames(UserFilter()) == ["ann", "bob", "root"]
    assert await usernames(UserFilter(search="LEE")) == ["ann"]
    assert await usernames(UserFilter(search="ROOT@EXAMPLE")) == ["root"]
    # LIKE wildcards in the search are literal characters.
    assert await usernames(UserFilter(search="%_")) == ["bob"]
    assert await usernames(UserFilter(role="admin")) == ["root"]
    assert await usernames(UserFilter(is_active=False)) == ["bob"]
    assert await usernames(UserFilter(is_active=True, role="user")) == ["ann", "root"]
