"""Field permissions, declared on the fields they guard."""

from __future__ import annotations

from typing import Any

from strawberry import Info
from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension

from usergraph.context import Context
from usergraph.db.models import User
from usergraph.schema.errors import ErrorCode


class IsAuthenticated(BasePermission):
    message = "Sign in to do this."
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
        viewer = await info.context.viewer()
        if viewer is None:
            return False
        assert isinstance(source, User)
        return viewer.is_admin or viewer.user.id == source.id


def signed_in() -> list[FieldExtension]:
    return [PermissionExtension([IsAuthenticated()], use_directives=False)]


def admins_only() -> list[FieldExtension]:
    return [PermissionExtension([IsAuthenticated(), IsAdmin()], use_directives=False)]


def self_or_admin(*, silent: bool) -> list[FieldExtension]:
    """silent: answer null instead of a FORBIDDEN error (for nullable private fields)."""
    return [PermissionExtension([IsSelfOrAdmin()], fail_silently=silent, use_directives=False)]
