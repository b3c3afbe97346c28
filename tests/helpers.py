"""Plain helper functions shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from tests.client import DEFAULT_PASSWORD, GraphQL
from usergraph.auth.throttle import Throttle
from usergraph.db import sessions as session_queries
from usergraph.db import users as user_queries
from usergraph.db.models import User, UserSession, utcnow
from usergraph.runtime import Runtime
from usergraph.services import auth, sessions, users
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.sessions import ClientInfo, SignedIn

# --- GraphQL over HTTP -------------------------------------------------------------------

ME = "{ me { id username } }"
SESSION_COUNT = "{ me { sessions { totalCount } } }"
REFRESH = """mutation($input: RefreshInput!) { refresh(input: $input) {
  accessToken refreshToken tokenType accessTokenExpiresAt refreshTokenExpiresAt
  user { id username }
  userErrors { field message code }
} }"""
# What a successful sign-in payload hands out; a refused one leaves every one of them null.
TOKEN_FIELDS = (
    "accessToken",
    "refreshToken",
    "tokenType",
    "accessTokenExpiresAt",
    "refreshTokenExpiresAt",
    "user",
)


# What the request id middleware keeps or makes: short and plain, so it cannot forge log lines.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
# The headers every response carries (usergraph.middleware.SecurityHeadersMiddleware).
BASE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
# Trusted proxies (USERGRAPH_TRUSTED_PROXIES): a network holding the test client's address.
PROXIES = ["203.0.113.0/24"]
_REGISTER_FOR_SESSION_IP = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { code field }
} }"""
_SESSION_IPS = "{ me { sessions { edges { node { ipAddress } } } } }"


def problems(payload: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The (code, field) of each user error of a mutation payload."""
    return [(error["code"], error["field"]) for error in payload["userErrors"]]


def assert_no_tokens(payload: dict[str, Any]) -> None:
    """The payload hands out no tokens and no user."""
    for key in TOKEN_FIELDS:
        assert payload[key] is None, key


def error_codes(body: dict[str, Any]) -> list[str]:
    """The codes of a response's top-level errors."""
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def assert_only_error(body: dict[str, Any], code: str, path: list[str] | None = None) -> None:
    """The response has no data and exactly one top-level error, with this code (and path)."""
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == code
    if path is not None:
        assert error["path"] == path


def tampered(token: str) -> str:
    """The token with its signature reversed."""
    header, payload, signature = token.split(".")
    return f"{header}.{payload}.{signature[::-1]}"


async def me(gql: GraphQL, token: str) -> dict[str, Any] | None:
    viewer: dict[str, Any] | None = (await gql.ok(ME, token=token))["me"]
    return viewer


async def session_count(gql: GraphQL, token: str) -> int:
    count: int = (await gql.ok(SESSION_COUNT, token=token))["me"]["sessions"]["totalCount"]
    return count


async def refresh(gql: GraphQL, refresh_token: str | None) -> dict[str, Any]:
    """The payload of Mutation.refresh for the token."""
    payload: dict[str, Any] = (await gql.ok(REFRESH, {"input": {"refreshToken": refresh_token}}))[
        "refresh"
    ]
    return payload


async def refresh_codes(gql: GraphQL, refresh_token: str) -> list[str]:
    """The user error codes of Mutation.refresh for the token."""
    return [error["code"] for error in (await refresh(gql, refresh_token))["userErrors"]]


async def session_ip(gql: GraphQL, headers: dict[str, str]) -> str | None:
    """Register a new account with these request headers; the ip its session recorded."""
    username = f"u{uuid.uuid4().hex[:12]}"  # apps built here share the database, unemptied
    variables = {
        "input": {
            "email": f"{username}@example.com",
            "username": username,
            "password": DEFAULT_PASSWORD,
        }
    }
    response = await gql.post(_REGISTER_FOR_SESSION_IP, variables, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    payload = body["data"]["register"]
    assert payload["userErrors"] == [], payload
    data = await gql.ok(_SESSION_IPS, token=payload["accessToken"])
    [edge] = data["me"]["sessions"]["edges"]
    ip: str | None = edge["node"]["ipAddress"]
    return ip


# --- services against the database -------------------------------------------------------

CLIENT = ClientInfo(ip_address="203.0.113.7", user_agent="pytest")


def codes_and_fields(exc: Rejected) -> list[tuple[ProblemCode, tuple[str, ...]]]:
    """The (code, field) of each problem of a refusal."""
    return [(problem.code, problem.field) for problem in exc.problems]


async def sign_up(
    runtime: Runtime,
    username: str = "ann",
    *,
    email: str | None = None,
    password: str = DEFAULT_PASSWORD,
    display_name: str | None = None,
    client: ClientInfo = CLIENT,
    throttle: Throttle | None = None,
) -> SignedIn:
    """auth.register, with an email made from the username unless one is given."""
    signed_in = await auth.register(
        db=runtime.db,
        passwords=runtime.passwords,
        policy=runtime.policy,
        throttle=throttle or runtime.throttle,
        outbox=runtime.outbox,
        email_policy=runtime.email,
        email=email or f"{username}@example.com",
        username=username,
        password=password,
        display_name=display_name,
        client=client,
    )
    assert signed_in is not None  # verification is optional unless a test says otherwise
    return signed_in


async def sign_in(
    runtime: Runtime,
    login: str,
    password: str = DEFAULT_PASSWORD,
    *,
    client: ClientInfo = CLIENT,
    throttle: Throttle | None = None,
) -> SignedIn:
    """auth.login, for an account without a second factor."""
    signed_in = await auth.login(
        db=runtime.db,
        passwords=runtime.passwords,
        policy=runtime.policy,
        factors=runtime.factors,
        throttle=throttle or runtime.throttle,
        login=login,
        password=password,
        client=client,
    )
    assert isinstance(signed_in, SignedIn), signed_in
    return signed_in


async def refreshed(runtime: Runtime, token: str, *, grace: timedelta | None = None) -> SignedIn:
    """sessions.refresh, with another reuse grace when one is given."""
    policy = runtime.policy
    if grace is not None:
        policy = dataclasses.replace(policy, reuse_grace=grace)
    return await sessions.refresh(
        db=runtime.db, policy=policy, throttle=runtime.throttle, refresh_token=token, client=CLIENT
    )


async def stored_session(runtime: Runtime, session_id: uuid.UUID) -> UserSession:
    async with runtime.db.sessionmaker() as s:
        user_session = await s.get(UserSession, session_id)
    assert user_session is not None
    return user_session


async def disable(runtime: Runtime, user_id: int) -> None:
    """Disable the account straight in the database."""
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == user_id).values(is_active=False))


async def create_account(
    runtime: Runtime, username: str, *, admin: bool = False, display_name: str | None = None
) -> User:
    """services.users.create_user, with an email made from the username."""
    return await users.create_user(
        db=runtime.db,
        passwords=runtime.passwords,
        email=f"{username}@example.com",
        username=username,
        password=DEFAULT_PASSWORD,
        display_name=display_name,
        admin=admin,
    )


async def role_names(runtime: Runtime, user_id: int) -> list[str]:
    async with runtime.db.read_sessionmaker() as s:
        roles = await user_queries.roles_by_user_ids(s, [user_id])
    return [role.name for role in roles.get(user_id, [])]


async def stored_user(runtime: Runtime, user_id: int) -> User:
    async with runtime.db.read_sessionmaker() as s:
        user = await s.get(User, user_id)
    assert user is not None
    return user


async def open_session_count(runtime: Runtime, user_id: int) -> int:
    async with runtime.db.read_sessionmaker() as s:
        counts = await session_queries.count_open_sessions(s, user_ids=[user_id], now=utcnow())
    return counts.get(user_id, 0)
