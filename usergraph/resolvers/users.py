"""Resolvers for reading users and for the account mutations."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from strawberry import ID, UNSET, Info

from usergraph.context import Context
from usergraph.db import models
from usergraph.db.users import UserFilter as DbUserFilter
from usergraph.schema.errors import bad_user_input
from usergraph.schema.inputs import (
    OrderDirection,
    SetUserActiveInput,
    SetUserRolesInput,
    UpdateProfileInput,
    UserFilter,
    UserOrder,
    UserOrderField,
    given,
)
from usergraph.schema.lookahead import selects
from usergraph.schema.payloads import UpdateProfilePayload, UserPayload, user_errors
from usergraph.schema.relay import (
    decode_cursor,
    encode_cursor,
    from_global_id,
    page_request,
    session_pk,
    user_pk,
)
from usergraph.schema.types import Node, User, UserConnection
from usergraph.services import users as user_service
from usergraph.services.errors import Rejected
from usergraph.services.users import KEEP

DEFAULT_ORDER = UserOrder(field=UserOrderField.CREATED_AT, direction=OrderDirection.ASC)
# Cursor tags: a cursor made under one order is refused under another.
_CURSOR_TAGS = {UserOrderField.CREATED_AT: "uc", UserOrderField.USERNAME: "uu"}
_CURSOR_KINDS = {UserOrderField.CREATED_AT: (datetime, int), UserOrderField.USERNAME: (str, int)}


async def me(info: Info[Context, None]) -> User | None:
    viewer = await info.context.viewer()
    return viewer.user if viewer else None  # type: ignore[return-value]


async def node(info: Info[Context, None], id: ID) -> Node | None:
    type_name, _ = from_global_id(id)
    viewer = await info.context.viewer()
    if type_name == "User":
        user = await info.context.loaders.user_by_id.load(user_pk(id))
        return user if viewer is not None else None
    if type_name == "Session":
        found: models.UserSession | None = await info.context.loaders.session_by_id.load(
            session_pk(id)
        )
        visible = (
            found is not None
            and viewer is not None
            and (viewer.is_admin or viewer.user.id == found.user_id)
        )
        return found if visible else None  # type: ignore[return-value]
    return None


async def user(
    info: Info[Context, None], id: ID | None = UNSET, username: str | None = UNSET
) -> User | None:
    if bool(id) == bool(username):
        raise bad_user_input("Give exactly one of id and username.")
    if id:
        return await info.context.loaders.user_by_id.load(user_pk(id))  # type: ignore[no-any-return]
    assert username
    found = await user_service.get_user_by_username(db=info.context.db, username=username)
    if found is not None:
        info.context.loaders.prime_user(found)
    return found  # type: ignore[return-value]


async def users(
    info: Info[Context, None],
    first: int | None = 20,
    after: str | None = UNSET,
    last: int | None = UNSET,
    before: str | None = UNSET,
    filter: UserFilter | None = UNSET,
    order_by: UserOrder | None = DEFAULT_ORDER,
) -> UserConnection:
    order = order_by or DEFAULT_ORDER
    tag, kinds = _CURSOR_TAGS[order.field], _CURSOR_KINDS[order.field]
    request = page_request(
        info,
        first=first,
        after=decode_cursor(after, tag, kinds) if after else None,
        last=given(last),
        before=decode_cursor(before, tag, kinds) if before else None,
    )
    user_filter = DbUserFilter(
        search=given(filter.search) if filter else None,
        role=given(filter.role) if filter else None,
        is_active=given(filter.is_active) if filter else None,
    )
    db = info.context.db
    page = await user_service.list_users(
        db=db,
        request=request,
        user_filter=user_filter,
        order_field=order.field.value,
        descending=order.direction is OrderDirection.DESC,
    )
    if selects(info, "edges", "node", "roles"):
        # One query for the page's roles now: each user's `roles` then resolves without a
        # coroutine of its own.
        await info.context.loaders.roles_by_user_id.load_many([row.id for row in page.items])
    field_name = order.field.value

    def cursor(row: models.User) -> str:
        return encode_cursor(tag, (getattr(row, field_name), row.id))

    return UserConnection.from_page(
        page, cursor=cursor, count=partial(user_service.count_users, db=db, user_filter=user_filter)
    )


async def update_profile(
    info: Info[Context, None], input: UpdateProfileInput
) -> UpdateProfilePayload:
    viewer = await info.context.viewer()
    assert viewer is not None  # the field requires sign-in
    try:
        updated = await user_service.update_profile(
            db=info.context.db,
            user_id=viewer.user.id,
            display_name=KEEP if input.display_name is UNSET else input.display_name,
            username=KEEP if input.username in (UNSET, None) else input.username,
        )
    except Rejected as exc:
        return UpdateProfilePayload(user_errors=user_errors(exc))
    info.context.loaders.prime_user(updated)
    return UpdateProfilePayload(user=updated)  # type: ignore[arg-type]


async def set_user_roles(info: Info[Context, None], input: SetUserRolesInput) -> UserPayload:
    viewer = await info.context.viewer()
    assert viewer is not None
    try:
        updated = await user_service.set_user_roles(
            db=info.context.db,
            actor_id=viewer.user.id,
            user_id=user_pk(input.user_id),
            role_names=input.roles,
        )
    except Rejected as exc:
        return UserPayload(user_errors=user_errors(exc))
    info.context.loaders.forget_user(updated.id)
    info.context.loaders.prime_user(updated)
    return UserPayload(user=updated)  # type: ignore[arg-type]


async def set_user_active(info: Info[Context, None], input: SetUserActiveInput) -> UserPayload:
    viewer = await info.context.viewer()
    assert viewer is not None
    try:
        updated = await user_service.set_user_active(
            db=info.context.db,
            actor_id=viewer.user.id,
            user_id=user_pk(input.user_id),
            active=input.active,
        )
    except Rejected as exc:
        return UserPayload(user_errors=user_errors(exc))
    info.context.loaders.forget_user(updated.id)
    info.context.loaders.forget_sessions()
    info.context.loaders.prime_user(updated)
    return UserPayload(user=updated)  # type: ignore[arg-type]
