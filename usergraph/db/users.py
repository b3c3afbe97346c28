"""Queries on users and their roles."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from usergraph.db.keyset import (
    Page,
    PageRequest,
    bound_paginate,
    bound_values,
    paginate,
    to_page,
)
from usergraph.db.models import ADMIN_ROLE, Role, User, UserSession, user_roles
from usergraph.db.records import (
    ROLE_COLUMNS,
    SESSION_COLUMNS,
    USER_COLUMNS,
    AnyUser,
    RoleRecord,
    SessionRecord,
    UserRecord,
    role_record,
    session_record,
    user_record,
)

# The reads below run on a Core connection on the hot paths (loaders, pages) and on an ORM
# session inside a service's transaction; either way they answer records (db/records.py).
Reader = AsyncConnection | AsyncSession

# The column a page of users is ordered by (then by id).
UserOrderColumn = Literal["created_at", "username"]


@dataclass(frozen=True, slots=True)
class UserFilter:
    search: str | None = None
    role: str | None = None
    is_active: bool | None = None


def _filtered(query: Select[Any], user_filter: UserFilter) -> Select[Any]:
    if user_filter.search:
        term = user_filter.search.lower()
        query = query.where(
            or_(
                User.username.contains(term, autoescape=True),
                func.lower(User.display_name).contains(term, autoescape=True),
                User.email_key.contains(term, autoescape=True),
            )
        )
    if user_filter.role is not None:
        query = query.where(
            User.id.in_(
                select(user_roles.c.user_id)
                .join(Role, Role.id == user_roles.c.role_id)
                .where(Role.name == user_filter.role)
            )
        )
    if user_filter.is_active is not None:
        query = query.where(User.is_active.is_(user_filter.is_active))
    return query


def user_sort_key(user: AnyUser, field: UserOrderColumn) -> tuple[Any, ...]:
    return (getattr(user, field), user.id)


async def page_users(
    reader: Reader,
    *,
    request: PageRequest,
    user_filter: UserFilter,
    order_column: UserOrderColumn,
    descending: bool,
) -> Page[UserRecord]:
    column = User.created_at if order_column == "created_at" else User.username
    if user_filter == _NO_FILTER:  # the common listing: one statement per shape, built once
        shape = (
            order_column,
            descending,
            request.after is None,
            request.before is None,
            request.backwards,
        )
        query = _PAGES.get(shape)
        if query is None:
            query = bound_paginate(
                select(*USER_COLUMNS), [column, User.id], request, descending=descending
            )
            _PAGES[shape] = query
        rows = (await reader.execute(query, bound_values(request))).all()
    else:
        query = paginate(
            _filtered(select(*USER_COLUMNS), user_filter),
            [column, User.id],
            request,
            descending=descending,
        )
        rows = (await reader.execute(query)).all()
    return to_page([user_record(row) for row in rows], request)


_NO_FILTER = UserFilter()
_PAGES: dict[tuple[Any, ...], Select[Any]] = {}
_COUNT_ALL = select(func.count()).select_from(User)


async def count_users(reader: Reader, *, user_filter: UserFilter) -> int:
    query = _COUNT_ALL if user_filter == _NO_FILTER else _filtered(_COUNT_ALL, user_filter)
    return int((await reader.execute(query)).scalar() or 0)


async def get_user_by_login(session: AsyncSession, login_key: str) -> User | None:
    """Find a user by email or username, given as a login key (services.validation.login_key)."""
    column = User.email_key if "@" in login_key else User.username
    return await session.scalar(select(User).where(column == login_key))


async def email_key_taken(session: AsyncSession, email_key: str) -> bool:
    return await session.scalar(select(User.id).where(User.email_key == email_key)) is not None


async def username_taken(session: AsyncSession, username: str) -> bool:
    return await session.scalar(select(User.id).where(User.username == username)) is not None


async def update_user_if_hash_is(
    session: AsyncSession, *, user_id: int, password_hash: str, values: dict[str, Any]
) -> User | None:
    """Set values on the user if their stored hash is still password_hash (compare-and-set).

    The hash is checked outside any transaction (it takes long); None tells the caller that the
    password changed meanwhile (a concurrent login upgraded the hash, or a password change).
    """
    result = await session.execute(
        update(User)
        .where(User.id == user_id, User.password_hash == password_hash)
        .values(**values)
        .returning(User)
    )
    return result.scalar_one_or_none()


# The hottest statements, built once: building a statement per request costs more CPU than
# running it (SQLAlchemy then finds the compiled form in its cache by the statement's key).
_USER_WITH_SESSION = (
    select(*USER_COLUMNS, *SESSION_COLUMNS)
    .join(UserSession, UserSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), UserSession.id == bindparam("session_id"))
)
_ROLES_OF_USERS = (
    select(user_roles.c.user_id, *ROLE_COLUMNS)
    .join(Role, Role.id == user_roles.c.role_id)
    .where(user_roles.c.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(Role.name)
)
_USERS_BY_IDS = select(*USER_COLUMNS).where(User.id.in_(bindparam("ids", expanding=True)))
_USER_FIELDS = len(USER_COLUMNS)


async def user_with_session(
    reader: Reader, *, user_id: int, session_id: uuid.UUID
) -> tuple[UserRecord, SessionRecord] | None:
    """The user and the session, if the session belongs to that user."""
    params = {"user_id": user_id, "session_id": session_id}
    row = (await reader.execute(_USER_WITH_SESSION, params)).first()
    if row is None:
        return None
    return user_record(row[:_USER_FIELDS]), session_record(row[_USER_FIELDS:])


async def get_users_by_ids(reader: Reader, ids: Sequence[int]) -> list[UserRecord]:
    rows = await reader.execute(_USERS_BY_IDS, {"ids": list(ids)})
    return [user_record(row) for row in rows]


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    """The user with exactly this (normalized) username."""
    return await session.scalar(select(User).where(User.username == username))


async def roles_by_user_ids(reader: Reader, user_ids: Sequence[int]) -> dict[int, list[RoleRecord]]:
    rows = await reader.execute(_ROLES_OF_USERS, {"user_ids": list(user_ids)})
    by_user: dict[int, list[RoleRecord]] = {}
    for row in rows:
        by_user.setdefault(row[0], []).append(role_record(row[1:]))
    return by_user


async def role_names_of(session: AsyncSession, user_id: int) -> list[str]:
    roles = await roles_by_user_ids(session, [user_id])
    return [role.name for role in roles.get(user_id, [])]


async def get_roles_by_names(session: AsyncSession, names: Sequence[str]) -> list[Role]:
    return list((await session.scalars(select(Role).where(Role.name.in_(names)))).all())


async def set_roles(session: AsyncSession, *, user_id: int, roles: Sequence[Role]) -> None:
    await session.execute(delete(user_roles).where(user_roles.c.user_id == user_id))
    if roles:
        await session.execute(
            insert(user_roles), [{"user_id": user_id, "role_id": role.id} for role in roles]
        )


async def lock_role(session: AsyncSession, name: str) -> None:
    """Lock the role's row until the transaction ends.

    FOR NO KEY UPDATE: inserts into user_roles (which take only a key-share lock on the role
    for their foreign key) are not blocked.
    """
    await session.execute(select(Role.id).where(Role.name == name).with_for_update(key_share=True))


async def count_active_admins(session: AsyncSession, *, excluding_user_id: int) -> int:
    query = (
        select(func.count())
        .select_from(user_roles)
        .join(Role, Role.id == user_roles.c.role_id)
        .join(User, User.id == user_roles.c.user_id)
        .where(Role.name == ADMIN_ROLE, User.is_active.is_(True), User.id != excluding_user_id)
    )
    return int((await session.scalar(query)) or 0)
