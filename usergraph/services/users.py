"""Accounts: creating them, listing them, changing profiles. What administrators change
(roles, activity) is in administration.py."""

from __future__ import annotations

import enum
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.auth.passwords import PasswordHasher
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.keyset import Page, PageRequest
from usergraph.db.models import ADMIN_ROLE, DEFAULT_ROLE, User, utcnow
from usergraph.db.records import UserRecord
from usergraph.db.users import UserFilter, UserOrderColumn
from usergraph.services import validation
from usergraph.services.errors import Problem, ProblemCode, Problems, Rejected


class Keep(enum.Enum):
    """Marks an optional update argument the client did not send: leave the value as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


EMAIL_TAKEN = Problem(
    ProblemCode.EMAIL_TAKEN, "This email is already registered.", ("input", "email")
)
USERNAME_TAKEN = Problem(
    ProblemCode.USERNAME_TAKEN, "This username is taken.", ("input", "username")
)


def _taken_problem(exc: IntegrityError) -> Problem:
    """Which unique constraint a concurrent insert or update lost on."""
    # PostgreSQL names the constraint (uq_users_email_key, uq_users_username), SQLite the
    # column (users.email_key, users.username).
    text = str(exc.orig)
    if "email_key" in text:
        return EMAIL_TAKEN
    if "username" in text:
        return USERNAME_TAKEN
    raise exc


async def _check_free(s: AsyncSession, *, email_key: str | None, username: str | None) -> None:
    problems = []
    if email_key is not None and await user_queries.email_key_taken(s, email_key):
        problems.append(EMAIL_TAKEN)
    if username is not None and await user_queries.username_taken(s, username):
        problems.append(USERNAME_TAKEN)
    if problems:
        raise Rejected(problems)


def clean_new_account(
    *, email: str, username: str, password: str, display_name: str | None
) -> tuple[str, str, str | None]:
    """Validate a new account's fields; return email, username and display name, cleaned.

    Every problem is reported at once, each with its input field.
    """
    problems = Problems()
    clean_email = problems.check(validation.clean_email, email, "input", "email")
    clean_username = problems.check(validation.clean_username, username, "input", "username")
    problems.check(
        validation.check_password,
        password,
        "input",
        "password",
        email=email.strip(),
        username=username.strip(),
    )
    clean_display = problems.check(
        validation.clean_display_name, display_name, "input", "displayName"
    )
    problems.raise_any()
    assert clean_email is not None and clean_username is not None
    return clean_email, clean_username, clean_display


async def insert_user(
    s: AsyncSession,
    *,
    email: str,
    username: str,
    password_hash: str,
    display_name: str | None,
    roles: Sequence[str],
) -> User:
    """Insert a validated account with roles inside the caller's transaction.

    Raises Rejected with EMAIL_TAKEN or USERNAME_TAKEN, also when a concurrent request wins.
    """
    key = validation.email_key(email)
    await _check_free(s, email_key=key, username=username)
    now = utcnow()
    user = User(
        email=email,
        email_key=key,
        username=username,
        display_name=display_name,
        password_hash=password_hash,
        is_active=True,
        created_at=now,
        updated_at=now,
    )
    try:
        async with s.begin_nested():
            s.add(user)
            await s.flush()
    except IntegrityError as exc:
        raise Rejected([_taken_problem(exc)]) from None
    await user_queries.set_roles(
        s, user_id=user.id, roles=await user_queries.get_roles_by_names(s, roles)
    )
    return user


async def create_user(
    *,
    db: Database,
    passwords: PasswordHasher,
    email: str,
    username: str,
    password: str,
    display_name: str | None = None,
    admin: bool = False,
) -> User:
    """Create an account without signing it in (the CLI); return it."""
    email, username, display_name = clean_new_account(
        email=email, username=username, password=password, display_name=display_name
    )
    password_hash = await passwords.hash(password)
    async with db.sessionmaker() as s, s.begin():
        return await insert_user(
            s,
            email=email,
            username=username,
            password_hash=password_hash,
            display_name=display_name,
            roles=[ADMIN_ROLE, DEFAULT_ROLE] if admin else [DEFAULT_ROLE],
        )


async def list_users(
    *,
    db: Database,
    request: PageRequest,
    user_filter: UserFilter,
    order_column: UserOrderColumn,
    descending: bool,
) -> Page[UserRecord]:
    """Return one keyset page of users."""
    async with db.reader.connect() as conn:
        return await user_queries.page_users(
            conn,
            request=request,
            user_filter=user_filter,
            order_column=order_column,
            descending=descending,
        )


async def count_users(*, db: Database, user_filter: UserFilter) -> int:
    async with db.reader.connect() as conn:
        return await user_queries.count_users(conn, user_filter=user_filter)


async def get_user_by_username(*, db: Database, username: str) -> User | None:
    async with db.read_sessionmaker() as s:
        return await user_queries.get_user_by_username(s, validation.login_key(username))


async def update_profile(
    *,
    db: Database,
    user_id: int,
    display_name: str | Keep | None = KEEP,
    username: str | Keep | None = KEEP,
) -> User:
    """Change the user's display name and/or username; return the user."""
    problems = Problems()
    new_display: str | Keep | None = KEEP
    new_username: str | Keep | None = KEEP
    if not isinstance(display_name, Keep):
        new_display = problems.check(
            validation.clean_display_name, display_name, "input", "displayName"
        )
    if isinstance(username, str):
        new_username = problems.check(validation.clean_username, username, "input", "username")
    problems.raise_any()
    async with db.sessionmaker() as s, s.begin():
        user = await get_user_or_reject(s, user_id, field=())
        if isinstance(new_username, str) and new_username != user.username:
            await _check_free(s, email_key=None, username=new_username)
            user.username = new_username
        if not isinstance(new_display, Keep):
            user.display_name = new_display
        try:
            async with s.begin_nested():
                await s.flush()
        except IntegrityError as exc:
            raise Rejected([_taken_problem(exc)]) from None
        return user


async def get_user_or_reject(s: AsyncSession, user_id: int, *, field: tuple[str, ...] = ()) -> User:
    """The user with this id, or Rejected with NOT_FOUND (at field)."""
    user = await s.get(User, user_id)
    if user is None:
        raise Rejected([Problem(ProblemCode.NOT_FOUND, "No such user.", field)])
    return user
