"""The Query root."""

from __future__ import annotations

import strawberry

from usergraph.resolvers import users
from usergraph.schema.permissions import admins_only, signed_in
from usergraph.schema.types import Node, User, UserConnection


@strawberry.type
class Query:
    me: User | None = strawberry.field(
        resolver=users.me,
        description="The signed-in user; null when the request has no valid access token.",
    )
    node: Node | None = strawberry.field(
        resolver=users.node,
        description="Any entity by global id; null when it does not exist or the viewer may "
        "not see it.",
    )
    user: User | None = strawberry.field(
        resolver=users.user,
        extensions=signed_in(),
        description="A user by global id or by username (exactly one of the two). "
        "Requires sign-in.",
    )
    users: UserConnection = strawberry.field(
        resolver=users.users,
        extensions=admins_only(),
        description="All users, for administrators (role `admin`). Keyset-paginated.",
    )
