"""Resolvers for reading users and for the account mutations."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import strawberry
from strawberry import ID, UNSET

from usergraph.db.records import AnySession, AnyUser
from usergraph.db.users import UserFilter, UserOrderColumn, user_sort_key
from usergraph.resolvers.answers import answers, signed_in_viewer
from usergraph.schema.errors import bad_user_input
from usergraph.schema.inputs import (
    OrderDirection,
    SetUserActiveInput,
    SetUserRolesInput,
    UpdateProfileInput,
    UserFilterInput,
    UserOrderField,
    UserOrderInput,
    unset_as_none,
)
from usergraph.schema.lookahead import selects
from usergraph.schema.payloads import UpdateProfilePayload, UserPayload
from usergraph.schema.permissions import may_see
from usergraph.schema.relay import (
    DEFAULT_PAGE_SIZE,
    decode_cursor,
    encode_cursor,
    from_global_id,
    page_request,
    session_pk,
    user_pk,
)
from usergraph.schema.types import Node, User, UserConnection
from usergraph.services import administration
from usergraph.services import users as user_service
from usergraph.services.users import KEEP

if TYPE_CHECKING:
    from usergraph.context import Context

DEFAULT_ORDER = UserOrderInput(field=UserOrderField.CREATED_AT, direction=OrderDirection.ASC)
# Cursor tags: a cursor made under one order is refused under another.
_CURSOR_TAGS = {UserOrderField.CREATED_AT: "uc", UserOrderField.USERNAME: "uu"}
_CURSOR_KINDS = {UserOrderField.CREATED_AT: (datetime, int), UserOrderField.USERNAME: (str, int)}


async def me(info: strawberry.Info[Context, None]) -> User | None:
    viewer = await info.context.viewer()
    return viewer.user if viewer else None  # type: ignore[return-value]


async def node(info: strawberry.Info[Context, None], id: ID) -> Node | None:
    type_name, _ = from_global_id(id)
    viewer = await info.context.viewer()
    if type_name == "User":
        user = await info.context.loaders.user_by_id.load(user_pk(id))
        return user if viewer is not None else None
    if type_name == "Session":
        found: AnySession | None = await info.context.loaders.session_by_id.load(session_pk(id))
        return found if found is not None and may_see(viewer, found.user_id) else None  # type: ignore[return-value]
    return None


async def user(
    info: strawberry.Info[Context, None], id: ID | None = UNSET, username: str | None = UNSET
) -> User | None:
    if bool(id) == bool(username):
        raise bad_user_input("Give exactly one of id and username.")
    if id:
        return await info.context.loaders.user_by_id.load(user_pk(id))  # type: ignore[no-any-return]
    assert username
    found = await user_service.get_user_by_username(db=info.context.runtime.db, username=username)
    if found is not None:
        info.context.loaders.prime_user(found)
    return found  # type: ignore[return-value]


async def users(
    info: strawberry.Info[Context, None],
    first: int | None = DEFAULT_PAGE_SIZE,
    after: str | None = UNSET,
    last: int | None = UNSET,
    before: str | None = UNSET,
    filter: UserFilterInput | None = UNSET,
    order_by: UserOrderInput | None = DEFAULT_ORDER,
) -> UserConnection:
    order = order_by or DEFAULT_ORDER
    tag, kinds = _CURSOR_TAGS[order.field], _CURSOR_KINDS[order.field]
    request = page_request(
        info,
        first=first,
        after=decode_cursor(after, tag, kinds) if after else None,
        last=unset_as_none(last),
        before=decode_cursor(before, tag, kinds) if before else None,
    )
    user_filter = UserFilter(
        search=unset_as_none(filter.search) if filter else None,
        role=unset_as_none(filter.role) if filter else None,
        is_active=unset_as_none(filter.is_active) if filter else None,
    )
    db = info.context.runtime.db
    page = await user_service.list_users(
        db=db,
        request=request,
        user_filter=user_filter,
        order_column=order.field.value,
        descending=order.direction is OrderDirection.DESC,
    )
    if selects(info, "edges", "node", "roles"):
        # The lookahead fast path (usergraph.db.loaders, "Answering without awaiting").
        await info.context.loaders.prefetch_roles([row.id for row in page.items])
    order_column: UserOrderColumn = order.field.value

    def cursor(row: AnyUser) -> str:
        return encode_cursor(tag, user_sort_key(row, order_column))

    return UserConnection.from_page(
        page, cursor=cursor, count=partial(user_service.count_users, db=db, user_filter=user_filter)
    )


@answers(UpdateProfilePayload)
async def update_profile(
    info: strawberry.Info[Context, None], input: UpdateProfileInput
) -> UpdateProfilePayload:
    viewer = await signed_in_viewer(info)
    updated = await user_service.update_profile(
        db=info.context.runtime.db,
        user_id=viewer.user.id,
        display_name=KEEP if input.display_name is UNSET else input.display_name,
        username=KEEP if input.username in (UNSET, None) else input.username,
    )
    info.context.loaders.prime_user(updated)
    return UpdateProfilePayload(user=updated)  # type: ignore[arg-type]


@answers(UserPayload)
async def set_user_roles(
    info: strawberry.Info[Context, None], input: SetUserRolesInput
) -> UserPayload:
    viewer = await signed_in_viewer(info)
    updated = await administration.set_user_roles(
        db=info.context.runtime.db,
        actor_id=viewer.user.id,
        user_id=user_pk(input.user_id),
        role_names=input.roles,
    )
    info.context.loaders.replace_user(updated)
    return UserPayload(user=updated)  # type: ignore[arg-type]


@answers(UserPayload)
async def set_user_active(
    info: strawberry.Info[Context, None], input: SetUserActiveInput
) -> UserPayload:
    viewer = await signed_in_viewer(info)
    updated = await administration.set_user_active(
        db=info.context.runtime.db,
        actor_id=viewer.user.id,
        user_id=user_pk(input.user_id),
        active=input.active,
    )
    info.context.loaders.replace_user(updated)
    info.context.loaders.forget_sessions()
    return UserPayload(user=updated)  # type: ignore[arg-type]
