"""usergraph.db.users against a real database: one query function at a time.

Paging and filtering through the service and the API are tested in tests/services/test_users.py
and tests/api/test_users.py; here each query's own contract.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from tests.client import DEFAULT_PASSWORD
from tests.helpers import sign_up
from usergraph.db import users as user_queries
from usergraph.db.keyset import PageRequest
from usergraph.db.models import ADMIN_ROLE, DEFAULT_ROLE, Role, User, user_roles
from usergraph.db.records import RoleRecord
from usergraph.db.users import UserFilter
from usergraph.runtime import Runtime
from usergraph.services.users import create_user
from usergraph.services.validation import login_key

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def create(
    runtime: Runtime,
    username: str,
    *,
    admin: bool = False,
    email: str | None = None,
    display_name: str | None = None,
) -> User:
    return await create_user(
        db=runtime.db,
        passwords=runtime.passwords,
        email=email or f"{username}@example.com",
        username=username,
        password=DEFAULT_PASSWORD,
        display_name=display_name,
        admin=admin,
    )


async def set_created_at(runtime: Runtime, user: User, created_at: datetime) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == user.id).values(created_at=created_at))


async def deactivate(runtime: Runtime, user: User) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == user.id).values(is_active=False))


async def stored(runtime: Runtime, user_id: int) -> User:
    async with runtime.db.sessionmaker() as s:
        user = await s.get(User, user_id)
    assert user is not None
    return user


def names(users: list[User]) -> list[str]:
    return [user.username for user in users]


# --- page_users / count_users --------------------------------------------------------------


async def test_page_users_orders_pages_and_flags(runtime: Runtime) -> None:
    # Created carl, ann, bob: the created_at order differs from the username order.
    carl, ann, bob = [await create(runtime, name) for name in ("carl", "ann", "bob")]
    for minutes, user in enumerate((carl, ann, bob)):
        await set_created_at(runtime, user, T0 + timedelta(minutes=minutes))

    async def page(
        request: PageRequest, column: user_queries.UserOrderColumn, descending: bool = False
    ) -> tuple[list[str], bool, bool]:
        async with runtime.db.sessionmaker() as s:
            found = await user_queries.page_users(
                s,
                request=request,
                user_filter=UserFilter(),
                order_column=column,
                descending=descending,
            )
        return names(found.items), found.has_next_page, found.has_previous_page

    assert await page(PageRequest(first=2), "username") == (["ann", "bob"], True, False)
    after_bob = user_queries.user_sort_key(bob, "username")
    assert after_bob == ("bob", bob.id)
    assert await page(PageRequest(first=2, after=after_bob), "username") == (["carl"], False, True)
    assert await page(PageRequest(first=2), "created_at") == (["carl", "ann"], True, False)
    assert await page(PageRequest(first=2), "created_at", descending=True) == (
        ["bob", "ann"],
        True,
        False,
    )
    # Backwards: the last rows, still in the asked order.
    assert await page(PageRequest(last=2), "username") == (["bob", "carl"], False, True)
    before_bob = (bob.username, bob.id)
    assert await page(PageRequest(last=2, before=before_bob), "username") == (
        ["ann"],
        True,
        False,
    )


async def test_page_users_and_count_users_apply_the_same_filter(runtime: Runtime) -> None:
    await create(runtime, "boss", admin=True, display_name="The Boss")
    await create(runtime, "ann_x", display_name="Ann")
    await create(runtime, "annax", email="Annax@Mail.Example.ORG")
    gone = await create(runtime, "gone", display_name="Gone Away")
    await deactivate(runtime, gone)
    cases = [
        (UserFilter(), ["ann_x", "annax", "boss", "gone"]),
        (UserFilter(search="BOSS"), ["boss"]),  # display name, any case
        (UserFilter(search="mail.example.org"), ["annax"]),  # the email key
        (UserFilter(search="n_x"), ["ann_x"]),  # "_" is no LIKE wildcard here
        (UserFilter(search="%"), []),
        (UserFilter(role=ADMIN_ROLE), ["boss"]),
        (UserFilter(role=DEFAULT_ROLE), ["ann_x", "annax", "boss", "gone"]),
        (UserFilter(role="no-such-role"), []),
        (UserFilter(is_active=False), ["gone"]),
        (UserFilter(is_active=True, search="ann"), ["ann_x", "annax"]),
        (UserFilter(is_active=True, role=ADMIN_ROLE, search="boss"), ["boss"]),
    ]
    async with runtime.db.sessionmaker() as s:
        for user_filter, expected in cases:
            found = await user_queries.page_users(
                s,
                request=PageRequest(first=10),
                user_filter=user_filter,
                order_column="username",
                descending=False,
            )
            assert names(found.items) == expected, user_filter
            assert await user_queries.count_users(s, user_filter=user_filter) == len(expected)


async def test_search_matches_a_display_name_with_non_ascii_capitals(runtime: Runtime) -> None:
    await create(runtime, "elodie", display_name="Élodie Martin")
    async with runtime.db.sessionmaker() as s:
        for search in ("élodie", "ÉLODIE"):
            assert await user_queries.count_users(s, user_filter=UserFilter(search=search)) == 1


# --- lookups ------------------------------------------------------------------------------


async def test_get_user_by_login_by_email_key_or_username(runtime: Runtime) -> None:
    ann = await create(runtime, "ann", email="Ann.Smith@Example.COM")
    await create(runtime, "bob")
    async with runtime.db.sessionmaker() as s:
        by_email = await user_queries.get_user_by_login(s, login_key(" ANN.smith@example.com "))
        by_name = await user_queries.get_user_by_login(s, login_key("Ann"))
        assert by_email is not None and by_email.id == ann.id
        assert by_email.email == "Ann.Smith@example.com"  # as typed (domain normalized)
        assert by_name is not None and by_name.id == ann.id
        # Lookups take login keys: the stored email as typed is not one.
        assert await user_queries.get_user_by_login(s, "Ann.Smith@example.com") is None
        assert await user_queries.get_user_by_login(s, "nobody") is None
        assert await user_queries.get_user_by_login(s, "nobody@example.com") is None


async def test_email_key_taken_and_username_taken(runtime: Runtime) -> None:
    await create(runtime, "ann", email="Ann@Example.com")
    async with runtime.db.sessionmaker() as s:
        assert await user_queries.email_key_taken(s, "ann@example.com") is True
        assert await user_queries.email_key_taken(s, "bob@example.com") is False
        assert await user_queries.username_taken(s, "ann") is True
        assert await user_queries.username_taken(s, "bob") is False
        # Exact keys: "ann" is not taken as "an" or "anne".
        assert await user_queries.username_taken(s, "an") is False
        assert await user_queries.username_taken(s, "anne") is False


async def test_get_users_by_ids_and_get_user_by_username(runtime: Runtime) -> None:
    ann, bob = await create(runtime, "ann"), await create(runtime, "bob")
    await create(runtime, "carl")
    async with runtime.db.sessionmaker() as s:
        found = await user_queries.get_users_by_ids(s, [bob.id, 999_999, ann.id])
        assert sorted(names(found)) == ["ann", "bob"]
        assert await user_queries.get_users_by_ids(s, []) == []
        by_name = await user_queries.get_user_by_username(s, "bob")
        assert by_name is not None and by_name.id == bob.id
        assert await user_queries.get_user_by_username(s, "BOB") is None


# --- compare-and-set ----------------------------------------------------------------------


async def test_update_user_if_hash_is_sets_values_when_the_hash_matches(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    old_hash = ann.password_hash
    async with runtime.db.sessionmaker() as s, s.begin():
        updated = await user_queries.update_user_if_hash_is(
            s,
            user_id=ann.id,
            password_hash=old_hash,
            values={"password_hash": "new-hash", "display_name": "Ann"},
        )
    assert updated is not None
    assert (updated.id, updated.password_hash, updated.display_name) == (ann.id, "new-hash", "Ann")
    again = await stored(runtime, ann.id)
    assert (again.password_hash, again.display_name) == ("new-hash", "Ann")


async def test_update_user_if_hash_is_changes_nothing_when_the_hash_differs(
    runtime: Runtime,
) -> None:
    ann = await create(runtime, "ann", display_name="Ann")
    bob = await create(runtime, "bob")
    async with runtime.db.sessionmaker() as s, s.begin():
        # Ann's hash has changed meanwhile; bob's hash is not ann's either.
        for password_hash in ("an-outdated-hash", bob.password_hash):
            assert (
                await user_queries.update_user_if_hash_is(
                    s,
                    user_id=ann.id,
                    password_hash=password_hash,
                    values={"password_hash": "new-hash", "display_name": "Changed"},
                )
                is None
            )
        # No such user: also None.
        assert (
            await user_queries.update_user_if_hash_is(
                s, user_id=999_999, password_hash=ann.password_hash, values={"display_name": "X"}
            )
            is None
        )
    again = await stored(runtime, ann.id)
    assert (again.password_hash, again.display_name) == (ann.password_hash, "Ann")


async def test_update_user_if_hash_is_wins_once(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    results = []
    for new_hash in ("first-hash", "second-hash"):
        async with runtime.db.sessionmaker() as s, s.begin():
            results.append(
                await user_queries.update_user_if_hash_is(
                    s,
                    user_id=ann.id,
                    password_hash=ann.password_hash,
                    values={"password_hash": new_hash},
                )
            )
    assert results[0] is not None and results[1] is None
    assert (await stored(runtime, ann.id)).password_hash == "first-hash"


# --- roles --------------------------------------------------------------------------------


async def test_role_names_of(runtime: Runtime) -> None:
    ann = await create(runtime, "ann")
    boss = await create(runtime, "boss", admin=True)
    async with runtime.db.sessionmaker() as s:
        assert await user_queries.role_names_of(s, ann.id) == [DEFAULT_ROLE]
        assert await user_queries.role_names_of(s, boss.id) == [ADMIN_ROLE, DEFAULT_ROLE]
        assert await user_queries.role_names_of(s, 999_999) == []


async def test_roles_by_user_ids_orders_each_users_roles_by_name(runtime: Runtime) -> None:
    ann, bob, carl = [await create(runtime, name) for name in ("ann", "bob", "carl")]
    # A third role whose id comes after "user" but whose name sorts before it: the order by
    # name is not the order by id or by insertion.
    async with runtime.db.sessionmaker() as s, s.begin():
        s.add(Role(name="moderator", description="test role"))
    try:
        async with runtime.db.sessionmaker() as s, s.begin():
            by_name = {
                r.name: r
                for r in await user_queries.get_roles_by_names(s, ["user", "moderator", "admin"])
            }
            await user_queries.set_roles(
                s,
                user_id=ann.id,
                roles=[by_name["user"], by_name["moderator"], by_name["admin"]],
            )
            await user_queries.set_roles(s, user_id=carl.id, roles=[])
        async with runtime.db.sessionmaker() as s:
            found = await user_queries.roles_by_user_ids(s, [carl.id, bob.id, ann.id, 999_999])
        assert {user_id: [r.name for r in roles] for user_id, roles in found.items()} == {
            ann.id: ["admin", "moderator", "user"],
            bob.id: ["user"],
        }
        # Plain records with the role's columns, not ORM objects (db/records.py).
        assert found[ann.id][0] == RoleRecord(
            by_name["admin"].id, "admin", by_name["admin"].description
        )
    finally:
        async with runtime.db.sessionmaker() as s, s.begin():
            await s.execute(delete(Role).where(Role.name == "moderator"))


async def test_get_roles_by_names_ignores_unknown_names(runtime: Runtime) -> None:
    async with runtime.db.sessionmaker() as s:
        roles = await user_queries.get_roles_by_names(s, [DEFAULT_ROLE, "nope", ADMIN_ROLE])
        assert sorted(role.name for role in roles) == [ADMIN_ROLE, DEFAULT_ROLE]
        assert await user_queries.get_roles_by_names(s, []) == []


async def test_set_roles_replaces_every_role(runtime: Runtime) -> None:
    ann, bob = await create(runtime, "ann"), await create(runtime, "bob")
    async with runtime.db.sessionmaker() as s, s.begin():
        [admin] = await user_queries.get_roles_by_names(s, [ADMIN_ROLE])
        await user_queries.set_roles(s, user_id=ann.id, roles=[admin])
    async with runtime.db.sessionmaker() as s:
        assert await user_queries.role_names_of(s, ann.id) == [ADMIN_ROLE]
        assert await user_queries.role_names_of(s, bob.id) == [DEFAULT_ROLE]  # untouched
    async with runtime.db.sessionmaker() as s, s.begin():
        await user_queries.set_roles(s, user_id=ann.id, roles=[])
    async with runtime.db.sessionmaker() as s:
        assert await user_queries.role_names_of(s, ann.id) == []
        assert await user_queries.role_names_of(s, bob.id) == [DEFAULT_ROLE]


async def test_count_active_admins_excludes_the_user_and_inactive_admins(
    runtime: Runtime,
) -> None:
    first = await create(runtime, "first", admin=True)
    second = await create(runtime, "second", admin=True)
    idle = await create(runtime, "idle", admin=True)
    ann = await create(runtime, "ann")
    await deactivate(runtime, idle)

    async def count(excluding: User) -> int:
        async with runtime.db.sessionmaker() as s:
            return await user_queries.count_active_admins(s, excluding_user_id=excluding.id)

    assert await count(ann) == 2
    assert await count(first) == 1
    assert await count(idle) == 2
    await deactivate(runtime, second)
    assert await count(first) == 0
    assert await count(ann) == 1


async def test_lock_role_blocks_other_lockers_but_not_role_grants(runtime: Runtime) -> None:
    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite's one write lock already serializes writers")
    ann = await create(runtime, "ann")
    async with runtime.db.sessionmaker() as holder, holder.begin():
        await user_queries.lock_role(holder, ADMIN_ROLE)
        async with runtime.db.sessionmaker() as other, other.begin():
            await other.execute(text("SET LOCAL lock_timeout = '5s'"))
            admin_id = await other.scalar(select(Role.id).where(Role.name == ADMIN_ROLE))
            # Granting the role takes only a key-share lock on it: not blocked.
            await other.execute(insert(user_roles).values(user_id=ann.id, role_id=admin_id))
            # A second lock_role is.
            with pytest.raises(DBAPIError, match="could not obtain lock"):
                async with other.begin_nested():
                    await other.execute(
                        select(Role.id)
                        .where(Role.name == ADMIN_ROLE)
                        .with_for_update(key_share=True, nowait=True)
                    )
    async with runtime.db.sessionmaker() as s:
        assert await user_queries.role_names_of(s, ann.id) == [ADMIN_ROLE, DEFAULT_ROLE]


# --- the viewer's query -------------------------------------------------------------------


async def test_user_with_session_only_for_the_sessions_own_user(runtime: Runtime) -> None:
    ann = await sign_up(runtime, "ann")
    bob = await sign_up(runtime, "bob")
    async with runtime.db.sessionmaker() as s:
        found = await user_queries.user_with_session(
            s, user_id=ann.user.id, session_id=ann.session_id
        )
        assert found is not None
        user, user_session = found
        assert (user.id, user.username) == (ann.user.id, "ann")
        assert (user_session.id, user_session.user_id) == (ann.session_id, ann.user.id)
        # Bob's session under ann's id, or a session that does not exist: nothing.
        assert (
            await user_queries.user_with_session(s, user_id=ann.user.id, session_id=bob.session_id)
            is None
        )
        assert (
            await user_queries.user_with_session(s, user_id=ann.user.id, session_id=uuid.uuid4())
            is None
        )
        assert (
            await user_queries.user_with_session(s, user_id=999_999, session_id=ann.session_id)
            is None
        )
