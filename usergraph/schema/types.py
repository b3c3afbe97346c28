"""The object types clients see. They resolve straight from what the loaders and services return,
with no copying: ORM models after a write, plain records on the hot reads (db/records.py)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import strawberry
from graphql import GraphQLError
from strawberry import Parent

from usergraph.db import models
from usergraph.db.keyset import Page
from usergraph.db.loaders import SessionsPageKey
from usergraph.db.records import AnySession, AnyUser, SessionRecord, UserRecord
from usergraph.db.second_factors import FactorState
from usergraph.schema.permissions import SelfOrAdminOrNull, self_or_admin
from usergraph.schema.relay import (
    DEFAULT_PAGE_SIZE,
    PageInfo,
    decode_cursor,
    encode_cursor,
    page_request,
    to_global_id,
    user_pk,
)

if TYPE_CHECKING:
    from usergraph.context import Context

SESSION_CURSOR = "s"


@strawberry.interface(description="An object with a global id.")
class Node:
    id: strawberry.ID


@strawberry.type(description="A named set of permissions.")
class Role:
    name: str
    description: str | None


@strawberry.type(description="A user account.")
class User(Node):
    username: str
    display_name: str | None
    is_active: bool
    created_at: datetime

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (models.User, UserRecord))

    @classmethod
    async def resolve_reference(
        cls, info: strawberry.Info[Context, None], id: strawberry.ID
    ) -> AnyUser | None:
        """A user a federated gateway refers to (`_entities`), by its global id: through the
        request's loaders, so every field's permission applies as under `user`."""
        try:
            pk = user_pk(id)
        except GraphQLError:
            return None  # as `node`: an id that is no user's is no user
        user: AnyUser | None = await info.context.loaders.user_by_id.load(pk)
        return user

    @strawberry.field  # type: ignore[misc]
    def id(self, root: Parent[AnyUser]) -> strawberry.ID:  # type: ignore[override]
        return to_global_id("User", root.id)

    @strawberry.field(
        description="Visible to the user and administrators; null (no error) for anyone else.",
        extensions=[SelfOrAdminOrNull()],
    )
    def email(self, root: Parent[AnyUser]) -> str | None:
        return root.email

    @strawberry.field(
        description="Visible to the user and administrators; null for anyone else.",
        extensions=[SelfOrAdminOrNull()],
    )
    def last_login_at(self, root: Parent[AnyUser]) -> datetime | None:
        return root.last_login_at

    @strawberry.field(
        description="True once the user proved they receive mail at `email`. The user and "
        "administrators; null for anyone else.",
        extensions=[SelfOrAdminOrNull()],
    )
    def email_verified(self, root: Parent[AnyUser]) -> bool | None:
        return root.email_verified_at is not None

    @strawberry.field(extensions=[SelfOrAdminOrNull()])
    def email_verified_at(self, root: Parent[AnyUser]) -> datetime | None:
        return root.email_verified_at

    @strawberry.field(
        description="The user's second factors. The user and administrators; null for anyone else.",
        extensions=[SelfOrAdminOrNull()],
    )
    def second_factors(
        self, root: Parent[AnyUser], info: strawberry.Info[Context, None]
    ) -> SecondFactors | None:
        # The loader's future (the executor awaits it): the factors of a page share one batch.
        state: SecondFactors = info.context.loaders.second_factors_by_user_id.load(root.id)  # type: ignore[assignment]
        return state

    @strawberry.field
    def roles(self, root: Parent[AnyUser], info: strawberry.Info[Context, None]) -> list[Role]:
        # Synchronous when already loaded (the viewer's, a prefetched page's): a page of users
        # then starts no coroutine per user (usergraph.db.loaders, "Answering without
        # awaiting"). Otherwise the loader's future; the futures of one tick share one query.
        roles: list[Role] = info.context.loaders.roles_by_user_id.known_or_load(root.id)
        return roles

    @strawberry.field(
        description=(
            "The user's open sessions. The user and administrators only; FORBIDDEN for anyone else."
        ),
        extensions=self_or_admin(),
    )
    async def sessions(
        self,
        root: Parent[AnyUser],
        info: strawberry.Info[Context, None],
        first: int | None = DEFAULT_PAGE_SIZE,
        after: str | None = strawberry.UNSET,
    ) -> SessionConnection:
        key = decode_cursor(after, SESSION_CURSOR, (datetime, uuid.UUID)) if after else None
        request = page_request(
            info, first=first if first is not None else DEFAULT_PAGE_SIZE, after=key
        )
        assert request.first is not None
        page: Page[models.UserSession] = await info.context.loaders.open_sessions_by_user_id.load(
            SessionsPageKey(root.id, request.first, key)
        )
        return SessionConnection.from_page(page, user_id=root.id)


@strawberry.type
class SecondFactors:
    """Resolves from db.second_factors.FactorState."""

    @strawberry.field
    def totp_enabled(self, root: Parent[FactorState]) -> bool:
        return root.totp_enabled_at is not None

    @strawberry.field
    def totp_enabled_at(self, root: Parent[FactorState]) -> datetime | None:
        return root.totp_enabled_at

    @strawberry.field(description="Unused recovery codes left (0 when TOTP is off).")
    def recovery_codes_remaining(self, root: Parent[FactorState]) -> int:
        return root.recovery_codes_left if root.totp_enabled_at is not None else 0


@strawberry.type(name="Session", description="A signed-in device: one refresh-token family.")
class Session(Node):
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip_address: str | None
    revoked_at: datetime | None = strawberry.field(
        description="When the session was ended; null while it is open."
    )

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, (models.UserSession, SessionRecord))

    @strawberry.field  # type: ignore[misc]
    def id(self, root: Parent[AnySession]) -> strawberry.ID:  # type: ignore[override]
        return to_global_id("Session", root.id)

    @strawberry.field
    async def user(self, root: Parent[AnySession], info: strawberry.Info[Context, None]) -> User:
        user: User = await info.context.loaders.user_by_id.load(root.user_id)
        return user

    @strawberry.field(
        description="True for the session that the request's access token belongs to."
    )
    def current(self, root: Parent[AnySession], info: strawberry.Info[Context, None]) -> bool:
        return info.context.current_session_id == root.id


@strawberry.type
class UserEdge:
    cursor: str
    node: User


@strawberry.type
class SessionEdge:
    cursor: str
    node: Session


def session_cursor(row: models.UserSession) -> str:
    return encode_cursor(SESSION_CURSOR, (row.created_at, row.id))


@strawberry.type
class SessionConnection:
    edges: list[SessionEdge]
    page_info: PageInfo
    user_id: strawberry.Private[int]

    @classmethod
    def from_page(cls, page: Page[models.UserSession], *, user_id: int) -> SessionConnection:
        edges = [SessionEdge(cursor=session_cursor(row), node=row) for row in page.items]  # type: ignore[arg-type]
        page_info = PageInfo.of(page, [edge.cursor for edge in edges])
        return cls(edges=edges, page_info=page_info, user_id=user_id)

    @strawberry.field
    async def total_count(self, info: strawberry.Info[Context, None]) -> int:
        count: int = await info.context.loaders.open_session_count_by_user_id.load(self.user_id)
        return count


@strawberry.type
class UserConnection:
    edges: list[UserEdge]
    page_info: PageInfo
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="Computed only when selected.")
    async def total_count(self) -> int:
        return await self.count()

    @classmethod
    def from_page(
        cls,
        page: Page[UserRecord],
        *,
        cursor: Callable[[AnyUser], str],
        count: Callable[[], Awaitable[int]],
    ) -> UserConnection:
        edges = [UserEdge(cursor=cursor(row), node=row) for row in page.items]  # type: ignore[arg-type]
        page_info = PageInfo.of(page, [edge.cursor for edge in edges])
        return cls(edges=edges, page_info=page_info, count=count)
