"""Field permissions, declared on the fields they guard.

Who may see what is decided once, by services.access (Actor.may_act_for); these classes only
apply it to a field's source.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from strawberry import Info
from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension

from usergraph.db.models import User
from usergraph.db.records import UserRecord
from usergraph.schema.errors import SIGN_IN_MESSAGE, ErrorCode

if TYPE_CHECKING:
    from usergraph.context import Context
    from usergraph.services.access import Actor


class IsAuthenticated(BasePermission):
    message = SIGN_IN_MESSAGE
    error_extensions = {"code": ErrorCode.UNAUTHENTICATED.value}

    async def has_permission(self, source: Any, info: Info[Context, None], **kwargs: Any) -> bool:
        return await info.context.viewer() is not None


class IsAdmin(BasePermission):
    """Place after IsAuthenticated, so a missing token answers UNAUTHENTICATED first."""

    message = "Administrators only."
    error_extensions = {"code": ErrorCode.FORBIDDEN.value}

    async def has_permission(self, source: Any, info: Info[Context, None], **kwargs: Any) -> bool:
        viewer = await info.context.viewer()
        return viewer is not None and viewer.is_admin


class IsSelfOrAdmin(BasePermission):
    """The user the field belongs to (the source), or an administrator."""

    message = "Only this user and administrators may see this."
    error_extensions = {"code": ErrorCode.FORBIDDEN.value}

    async def has_permission(self, source: Any, info: Info[Context, None], **kwargs: Any) -> bool:
        assert isinstance(source, (User, UserRecord))
        return may_see(await info.context.viewer(), source.id)


class SelfOrAdminOrNull(FieldExtension):
    """The field's value for its own user and for administrators; null for anyone else.

    IsSelfOrAdmin with fail_silently, but synchronous once the request's viewer is known (it
    is under `me`, `users`, `user` and sign-in payloads, which settle it first), so the private
    fields of a page of users start no coroutine per field: one of the fast paths of
    usergraph.db.loaders ("Answering without awaiting").
    """

    def resolve(
        self, next_: Callable[..., Any], source: Any, info: Info[Context, None], **kwargs: Any
    ) -> Any:
        known, viewer = info.context.known_viewer()
        if known:
            return next_(source, info, **kwargs) if may_see(viewer, source.id) else None
        return self._after_viewer(next_, source, info, **kwargs)

    async def _after_viewer(
        self, next_: Callable[..., Any], source: Any, info: Info[Context, None], **kwargs: Any
    ) -> Any:
        viewer = await info.context.viewer()
        if not may_see(viewer, source.id):
            return None
        value = next_(source, info, **kwargs)
        return await value if inspect.isawaitable(value) else value  # a loader's future


def may_see(viewer: Actor | None, user_id: int) -> bool:
    """Whether the viewer (None when signed out) may see what belongs to the user user_id."""
    return viewer is not None and viewer.may_act_for(user_id)


def signed_in() -> list[FieldExtension]:
    return [PermissionExtension([IsAuthenticated()], use_directives=False)]


def admins_only() -> list[FieldExtension]:
    return [PermissionExtension([IsAuthenticated(), IsAdmin()], use_directives=False)]


def self_or_admin() -> list[FieldExtension]:
    """FORBIDDEN for anyone else (SelfOrAdminOrNull answers null instead)."""
    return [PermissionExtension([IsSelfOrAdmin()], use_directives=False)]
