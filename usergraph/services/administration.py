"""What administrators change on accounts: roles, and whether an account is active.

No change may leave the server without an active administrator: nobody could undo it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.db import sessions as session_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.models import ADMIN_ROLE, Role, User, utcnow
from usergraph.services.audit import log_security_event
from usergraph.services.errors import Problem, ProblemCode, Rejected
from usergraph.services.users import get_user_or_reject


async def set_user_roles(
    *, db: Database, actor_id: int, user_id: int, role_names: Sequence[str]
) -> User:
    """Replace the user's roles with role_names; return the user."""
    wanted = list(dict.fromkeys(_role_key(name) for name in role_names))
    async with db.sessionmaker() as s, s.begin():
        user = await get_user_or_reject(s, user_id, field=("input", "userId"))
        roles = await user_queries.get_roles_by_names(s, wanted)
        known = {role.name for role in roles}
        unknown = [
            Problem(
                ProblemCode.INVALID_INPUT, f"Unknown role {name!r}.", ("input", "roles", str(index))
            )
            for index, name in enumerate(role_names)
            if _role_key(name) not in known
        ]
        if unknown:
            raise Rejected(unknown)
        if ADMIN_ROLE not in known:
            await _keep_an_admin(s, user_id=user.id)
        await user_queries.set_roles(s, user_id=user.id, roles=_in_order(roles, wanted))
        user.updated_at = utcnow()
    log_security_event(
        "roles_changed", user_id=user.id, actor_id=actor_id, roles=",".join(wanted) or None
    )
    return user


def _role_key(name: str) -> str:
    return name.strip().lower()


def _in_order(roles: Sequence[Role], names: Sequence[str]) -> list[Role]:
    by_name = {role.name: role for role in roles}
    return [by_name[name] for name in names]


async def _keep_an_admin(s: AsyncSession, *, user_id: int) -> None:
    """Refuse a change that would leave no active administrator (nobody could undo it)."""
    # Every change that may remove an administrator takes this one lock first, so the queries
    # below see what a concurrent demotion committed (PostgreSQL; SQLite's write lock already
    # serializes). FOR UPDATE on the users rows alone would not: PostgreSQL re-checks a locked
    # row but not the user_roles row it was joined with.
    await user_queries.lock_role(s, ADMIN_ROLE)
    roles = await user_queries.roles_by_user_ids(s, [user_id])
    is_admin = any(role.name == ADMIN_ROLE for role in roles.get(user_id, []))
    if is_admin and await user_queries.count_active_admins(s, excluding_user_id=user_id) == 0:
        raise Rejected.one(
            ProblemCode.INVALID_INPUT,
            "This would leave no active administrator.",
            "input",
            "userId",
        )


async def set_user_active(*, db: Database, actor_id: int, user_id: int, active: bool) -> User:
    """Enable or disable the account; disabling ends all of its sessions. Return the user."""
    async with db.sessionmaker() as s, s.begin():
        user = await get_user_or_reject(s, user_id, field=("input", "userId"))
        if not active:
            if user.id == actor_id:
                raise Rejected.one(
                    ProblemCode.INVALID_INPUT,
                    "You cannot disable your own account.",
                    "input",
                    "active",
                )
            await _keep_an_admin(s, user_id=user.id)
            await session_queries.revoke_sessions(
                s, now=utcnow(), reason="account_disabled", user_id=user.id
            )
        changed = user.is_active != active
        if changed:
            user.is_active = active
            user.updated_at = utcnow()
    if changed:
        log_security_event(
            "account_enabled" if active else "account_disabled", user_id=user.id, actor_id=actor_id
        )
    return user
