"""Plain, typed rows for the hot reads: the viewer (user, session, roles) and pages of users.

They are read with SQLAlchemy Core on a connection, never through an ORM Session: no identity
map, no instrumented attributes, nothing to expunge when the session closes (on `me` the ORM
was about a fifth of the time). Writes keep the ORM models of models.py; the schema's types
resolve from either, by the same attribute names, so a user just written (a login's payload)
and a user just read answer alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Row

from usergraph.db.models import Role, User, UserSession


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as the schema shows them (no password hash: no read path needs it)."""

    id: int
    email: str
    username: str
    display_name: str | None
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None
    email_verified_at: datetime | None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: uuid.UUID
    user_id: int
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    user_agent: str | None
    ip_address: str | None
    auth_methods: str
    authenticated_at: datetime

    def is_open(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now

    @property
    def amr(self) -> tuple[str, ...]:
        return tuple(self.auth_methods.split())


@dataclass(frozen=True, slots=True)
class RoleRecord:
    id: int
    name: str
    description: str | None


# What the read path hands the schema: a record, or a model a write just returned.
AnyUser = User | UserRecord
AnySession = UserSession | SessionRecord


def _columns(record: type[Any], model: type[Any]) -> tuple[Column[Any], ...]:
    table = model.__table__
    return tuple(table.c[f.name] for f in fields(record))


# The columns to select, in the records' field order, so a row's values are their arguments.
USER_COLUMNS = _columns(UserRecord, User)
SESSION_COLUMNS = _columns(SessionRecord, UserSession)
ROLE_COLUMNS = _columns(RoleRecord, Role)


def user_record(values: Sequence[Any] | Row[Any]) -> UserRecord:
    return UserRecord(*values)


def session_record(values: Sequence[Any] | Row[Any]) -> SessionRecord:
    return SessionRecord(*values)


def role_record(values: Sequence[Any] | Row[Any]) -> RoleRecord:
    return RoleRecord(*values)
