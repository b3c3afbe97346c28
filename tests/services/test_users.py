"""Accounts against a real database: creation, profiles and keyset-paged listing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from tests.helpers import (
    codes_and_fields,
    create_account,
    open_session_count,
    role_names,
    stored_user,
)
from usergraph.db.keyset import Page, PageRequest
from usergraph.db.models import User
from usergraph.db.users import UserFilter, UserOrderColumn, user_sort_key
from usergraph.runtime import Runtime
from usergraph.services import administration, users
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.users import KEEP

# --- create_user -------------------------------------------------------------------------


async def test_create_user_gives_roles_and_opens_no_session(runtime: Runtime) -> None:
    plain = await create_account(runtime, "ann")
    admin = await create_account(runtime, "root", admin=True)
    assert await role_names(runtime, plain.id) == ["user"]
    assert await role_names(runtime, admin.id) == ["admin", "user"]
    assert await open_session_count(runtime, plain.id) == 0


# --- update_profile ----------------------------------------------------------------------


async def test_update_profile_keeps_what_was_not_sent(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann", display_name="Ann Lee")
    updated = await users.update_profile(db=runtime.db, user_id=ann.id)
    assert (updated.username, updated.display_name) == ("ann", "Ann Lee")
    updated = await users.update_profile(
        db=runtime.db, user_id=ann.id, display_name=KEEP, username=KEEP
    )
    assert (updated.username, updated.display_name) == ("ann", "Ann Lee")
    stored = await stored_user(runtime, ann.id)
    assert (stored.username, stored.display_name) == ("ann", "Ann Lee")


async def test_update_profile_none_clears_the_display_name(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann", display_name="Ann Lee")
    updated = await users.update_profile(db=runtime.db, user_id=ann.id, display_name=None)
    assert updated.display_name is None
    stored = await stored_user(runtime, ann.id)
    assert (stored.username, stored.display_name) == ("ann", None)


async def test_update_profile_none_username_keeps_it(runtime: Runtime) -> None:
    # A username cannot be removed: None leaves it as it is.
    ann = await create_account(runtime, "ann")
    updated = await users.update_profile(db=runtime.db, user_id=ann.id, username=None)
    assert updated.username == "ann"
    assert (await stored_user(runtime, ann.id)).username == "ann"


async def test_update_profile_sets_cleaned_values(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann", display_name="Ann Lee")
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
    ann = await create_account(runtime, "ann")
    updated = await users.update_profile(db=runtime.db, user_id=ann.id, username="ANN")
    assert updated.username == "ann"


async def test_update_profile_username_taken(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann", display_name="Ann Lee")
    await create_account(runtime, "bob")
    with pytest.raises(Rejected) as caught:
        await users.update_profile(
            db=runtime.db, user_id=ann.id, username="Bob", display_name="Someone"
        )
    assert codes_and_fields(caught.value) == [(ProblemCode.USERNAME_TAKEN, ("input", "username"))]
    stored = await stored_user(runtime, ann.id)
    assert (stored.username, stored.display_name) == ("ann", "Ann Lee")


async def test_update_profile_reports_every_invalid_field(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
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
    return {name: await create_account(runtime, name) for name in usernames}


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
    root = await create_account(runtime, "root", admin=True)
    await create_account(runtime, "ann", display_name="Ann Lee")
    bob = await create_account(runtime, "bob", display_name="Bob 100%_sure")
    await administration.set_user_active(
        db=runtime.db, actor_id=root.id, user_id=bob.id, active=False
    )

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
