"""usergraph.schema.permissions: may_see, the permission classes, and what they answer over HTTP.

tests/api/test_user.py and tests/api/test_users.py test the same rules on `user` and
`users` in depth; here each rule once, on other fields than theirs where there are some.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytest
from strawberry.permission import PermissionExtension

from tests.client import GraphQL
from tests.helpers import me, tampered
from usergraph.db.models import ADMIN_ROLE, DEFAULT_ROLE, User
from usergraph.schema.permissions import (
    IsAdmin,
    IsAuthenticated,
    IsSelfOrAdmin,
    SelfOrAdminOrNull,
    admins_only,
    may_see,
    self_or_admin,
    signed_in,
)
from usergraph.services.access import Actor

ANN = Actor(user_id=1, roles=frozenset({DEFAULT_ROLE}))
ADMIN = Actor(user_id=2, roles=frozenset({ADMIN_ROLE, DEFAULT_ROLE}))


# --- may_see ------------------------------------------------------------------------------


def test_may_see() -> None:
    assert may_see(None, 1) is False
    assert may_see(ANN, 1) is True
    assert may_see(ANN, 2) is False
    assert may_see(ADMIN, 1) is True
    assert may_see(ADMIN, 2) is True
    assert may_see(Actor(user_id=3, roles=frozenset()), 3) is True


# --- the classes, with a stand-in Info ----------------------------------------------------


@dataclass
class FakeContext:
    actor: Actor | None
    known: bool

    def known_viewer(self) -> tuple[bool, Actor | None]:
        return (True, self.actor) if self.known else (False, None)

    async def viewer(self) -> Actor | None:
        return self.actor


@dataclass
class FakeInfo:
    context: FakeContext


def info(actor: Actor | None, *, known: bool = True) -> Any:
    return FakeInfo(FakeContext(actor, known))


def ann_user() -> User:
    return User(id=1, username="ann", email="ann@example.com")


def email_of(source: User, _info: Any) -> str:
    return source.email


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        (None, None),
        (ANN, "ann@example.com"),
        (ADMIN, "ann@example.com"),
        (Actor(3, frozenset()), None),
    ],
    ids=["signed-out", "self", "admin", "other"],
)
def test_self_or_admin_or_null_answers_at_once_when_the_viewer_is_known(
    actor: Actor | None, expected: str | None
) -> None:
    result = SelfOrAdminOrNull().resolve(email_of, ann_user(), info(actor))
    assert not inspect.isawaitable(result)
    assert result == expected


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        (None, None),
        (ANN, "ann@example.com"),
        (ADMIN, "ann@example.com"),
        (Actor(3, frozenset()), None),
    ],
    ids=["signed-out", "self", "admin", "other"],
)
async def test_self_or_admin_or_null_awaits_a_viewer_not_known_yet(
    actor: Actor | None, expected: str | None
) -> None:
    result = SelfOrAdminOrNull().resolve(email_of, ann_user(), info(actor, known=False))
    assert inspect.isawaitable(result)
    assert await result == expected


async def test_permission_classes() -> None:
    other = Actor(user_id=3, roles=frozenset({DEFAULT_ROLE}))
    user = ann_user()
    assert [await IsAuthenticated().has_permission(None, info(a)) for a in (None, ANN)] == [
        False,
        True,
    ]
    assert [await IsAdmin().has_permission(None, info(a)) for a in (None, ANN, ADMIN)] == [
        False,
        False,
        True,
    ]
    assert [
        await IsSelfOrAdmin().has_permission(user, info(a)) for a in (None, other, ANN, ADMIN)
    ] == [False, False, True, True]
    assert IsAuthenticated.error_extensions == {"code": "UNAUTHENTICATED"}
    assert IsAdmin.error_extensions == {"code": "FORBIDDEN"}
    assert IsSelfOrAdmin.error_extensions == {"code": "FORBIDDEN"}


def test_extension_lists() -> None:
    def kinds(extensions: list[Any]) -> list[list[type]]:
        assert all(isinstance(e, PermissionExtension) for e in extensions)
        return [[type(p) for p in e.permissions] for e in extensions]

    assert kinds(signed_in()) == [[IsAuthenticated]]
    # Authentication first, so a missing token answers UNAUTHENTICATED, not FORBIDDEN.
    assert kinds(admins_only()) == [[IsAuthenticated, IsAdmin]]
    assert kinds(self_or_admin()) == [[IsSelfOrAdmin]]
    # Each field gets its own instances.
    assert signed_in()[0] is not signed_in()[0]


# --- over HTTP ----------------------------------------------------------------------------

NODE_EMAIL = "query($id: ID!) { node(id: $id) { ... on User { username email } } }"
NODE_SESSIONS = (
    "query($id: ID!) { node(id: $id) { ... on User { username sessions { totalCount } } } }"
)
USERS = "{ users(first: 5) { totalCount } }"
SET_ACTIVE = """mutation($input: SetUserActiveInput!) {
  setUserActive(input: $input) { user { isActive } userErrors { code } } }"""
LOGOUT_ALL = "mutation { logoutAll { userErrors { code } } }"


async def test_email_is_null_for_others_and_visible_to_self_and_admin(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann, bob = await gql.register("ann"), await gql.register("bob")
    seen = {}
    for name, account in (("bob", bob), ("ann", ann), ("admin", admin)):
        data = await gql.ok(NODE_EMAIL, {"id": ann.id}, token=account.access_token)
        assert data["node"]["username"] == "ann"
        seen[name] = data["node"]["email"]
    assert seen == {"bob": None, "ann": "ann@example.com", "admin": "ann@example.com"}


async def test_sessions_are_forbidden_for_another_user(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann, bob = await gql.register("ann"), await gql.register("bob")
    body = await gql(NODE_SESSIONS, {"id": ann.id}, token=bob.access_token)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["path"] == ["node", "sessions"]
    for account in (ann, admin):
        data = await gql.ok(NODE_SESSIONS, {"id": ann.id}, token=account.access_token)
        assert data["node"]["sessions"]["totalCount"] == 1


async def test_signed_in_fields_need_a_valid_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    for token in (None, tampered(ann.access_token)):
        body = await gql(LOGOUT_ALL, token=token)
        assert body["data"] is None
        [error] = body["errors"]
        assert (error["extensions"]["code"], error["path"]) == ("UNAUTHENTICATED", ["logoutAll"])
    data = await gql.ok(LOGOUT_ALL, token=ann.access_token)
    assert data["logoutAll"]["userErrors"] == []


async def test_admins_only_fields(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann, bob = await gql.register("ann"), await gql.register("bob")
    disable_bob = {"input": {"userId": bob.id, "active": False}}
    for query, variables, field in (
        (USERS, None, "users"),
        (SET_ACTIVE, disable_bob, "setUserActive"),
    ):
        for token, code in ((None, "UNAUTHENTICATED"), (ann.access_token, "FORBIDDEN")):
            body = await gql(query, variables, token=token)
            assert body["data"] is None, body
            [error] = body["errors"]
            assert (error["extensions"]["code"], error["path"]) == (code, [field])
    # The refused mutation did nothing (bob is still signed in); the administrator's does.
    assert await me(gql, bob.access_token) == {"id": bob.id, "username": "bob"}
    assert (await gql.ok(USERS, token=admin.access_token))["users"]["totalCount"] == 3
    data = await gql.ok(SET_ACTIVE, disable_bob, token=admin.access_token)
    assert data["setUserActive"] == {"user": {"isActive": False}, "userErrors": []}
