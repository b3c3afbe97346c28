"""Mutation.login over HTTP."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import jwt
import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL
from tests.helpers import assert_no_tokens, session_count
from usergraph.settings import Settings

LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken refreshToken tokenType accessTokenExpiresAt refreshTokenExpiresAt
  user { id username roles { name } }
  userErrors { field message code }
} }"""
SET_ACTIVE = """mutation($input: SetUserActiveInput!) { setUserActive(input: $input) {
  user { isActive } userErrors { code }
} }"""
ME = "{ me { id username lastLoginAt } }"
SESSIONS = "{ me { sessions { totalCount edges { node { id current } } } } }"
WRONG_PASSWORD = "not the right password"


async def login(gql: GraphQL, login: str, password: str = DEFAULT_PASSWORD) -> dict[str, Any]:
    payload: dict[str, Any] = (
        await gql.ok(LOGIN, {"input": {"login": login, "password": password}})
    )["login"]
    return payload


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def local_id(global_id: str) -> str:
    """The database id inside a Relay global id ("Type:id", base64)."""
    decoded = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    return decoded.partition(":")[2]


async def set_active(gql: GraphQL, admin_token: str, user_id: str, active: bool) -> None:
    data = await gql.ok(
        SET_ACTIVE, {"input": {"userId": user_id, "active": active}}, token=admin_token
    )
    assert data["setUserActive"] == {"user": {"isActive": active}, "userErrors": []}


@pytest.mark.parametrize(
    "login_as",
    ["ann@example.com", "ANN@EXAMPLE.COM", "Ann@Example.Com", "ann", "ANN", "Ann"],
)
async def test_login_by_email_in_any_case_or_by_username(gql: GraphQL, login_as: str) -> None:
    ann = await gql.register("ann", email="ann@example.com")
    payload = await login(gql, login_as)
    assert payload["userErrors"] == []
    assert payload["tokenType"] == "Bearer"
    assert payload["accessToken"] and payload["refreshToken"]
    assert payload["accessTokenExpiresAt"] and payload["refreshTokenExpiresAt"]
    assert payload["user"] == {"id": ann.id, "username": "ann", "roles": [{"name": "user"}]}
    me = (await gql.ok(ME, token=payload["accessToken"]))["me"]
    assert me["id"] == ann.id


async def test_login_by_email_registered_with_capitals(gql: GraphQL) -> None:
    ann = await gql.register("ann", email="Ann.Smith@Example.com")
    for login_as in ("ann.smith@example.com", "ANN.SMITH@EXAMPLE.COM", "Ann.Smith@Example.com"):
        payload = await login(gql, login_as)
        assert payload["userErrors"] == [], login_as
        assert payload["user"]["id"] == ann.id


async def test_login_failures_do_not_reveal_which_accounts_exist(gql: GraphQL) -> None:
    await gql.register("ann", email="ann@example.com")
    wrong_password = await login(gql, "ann", WRONG_PASSWORD)
    wrong_password_by_email = await login(gql, "ann@example.com", WRONG_PASSWORD)
    unknown_username = await login(gql, "nobody", WRONG_PASSWORD)
    unknown_email = await login(gql, "nobody@example.com", DEFAULT_PASSWORD)
    for payload in (wrong_password, wrong_password_by_email, unknown_username, unknown_email):
        assert_no_tokens(payload)
    assert [e["code"] for e in wrong_password["userErrors"]] == ["INVALID_CREDENTIALS"]
    # Identical answers: same code, message and field.
    assert wrong_password_by_email["userErrors"] == wrong_password["userErrors"]
    assert unknown_username["userErrors"] == wrong_password["userErrors"]
    assert unknown_email["userErrors"] == wrong_password["userErrors"]
    message = wrong_password["userErrors"][0]["message"]
    assert "nobody" not in message and WRONG_PASSWORD not in message


@pytest.mark.parametrize("password", ["", DEFAULT_PASSWORD.upper(), DEFAULT_PASSWORD + " "])
async def test_login_needs_the_exact_password(gql: GraphQL, password: str) -> None:
    await gql.register("ann")
    payload = await login(gql, "ann", password)
    assert_no_tokens(payload)
    assert [e["code"] for e in payload["userErrors"]] == ["INVALID_CREDENTIALS"]


async def test_login_to_a_disabled_account(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    unknown = await login(gql, "nobody", WRONG_PASSWORD)
    await set_active(gql, admin.access_token, ann.id, False)

    # Only someone who knows the password learns that the account is disabled.
    wrong = await login(gql, "ann", WRONG_PASSWORD)
    assert_no_tokens(wrong)
    assert wrong["userErrors"] == unknown["userErrors"]
    right = await login(gql, "ann")
    assert_no_tokens(right)
    assert [(e["code"], e["field"]) for e in right["userErrors"]] == [("ACCOUNT_DISABLED", [])]
    assert right["userErrors"][0]["message"]

    await set_active(gql, admin.access_token, ann.id, True)
    assert (await login(gql, "ann"))["userErrors"] == []


async def test_each_login_opens_a_new_session(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert await session_count(gql, ann.access_token) == 1
    tokens = [ann.access_token]
    refresh_tokens = [ann.refresh_token]
    for expected in (2, 3):
        payload = await login(gql, "ann")
        assert payload["userErrors"] == []
        tokens.append(payload["accessToken"])
        refresh_tokens.append(payload["refreshToken"])
        assert await session_count(gql, payload["accessToken"]) == expected
    assert len({claims_of(token)["sid"] for token in tokens}) == 3
    assert len(set(refresh_tokens)) == 3
    # Every session's access token still works.
    for token in tokens:
        assert (await gql.ok(ME, token=token))["me"]["id"] == ann.id


async def test_failed_login_opens_no_session(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    await login(gql, "ann", WRONG_PASSWORD)
    assert await session_count(gql, ann.access_token) == 1


async def test_login_sets_last_login_at(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    before = (await gql.ok(ME, token=ann.access_token))["me"]["lastLoginAt"]
    payload = await login(gql, "ann")
    issued_at = claims_of(payload["accessToken"])["iat"]
    last_login = (await gql.ok(ME, token=payload["accessToken"]))["me"]["lastLoginAt"]
    assert last_login is not None
    # Set by this login: the same instant the access token was issued.
    assert int(datetime.fromisoformat(last_login).timestamp()) == issued_at
    assert datetime.fromisoformat(last_login) >= datetime.fromisoformat(before)
    # A failed login leaves it alone.
    await login(gql, "ann", WRONG_PASSWORD)
    assert (await gql.ok(ME, token=ann.access_token))["me"]["lastLoginAt"] == last_login


async def test_login_access_token_claims(gql: GraphQL, settings: Settings) -> None:
    ann = await gql.register("ann")
    payload = await login(gql, "ann")
    token = payload["accessToken"]

    header = jwt.get_unverified_header(token)
    assert isinstance(header.get("kid"), str) and header["kid"]
    assert header["alg"] == "HS256"

    claims = claims_of(token)
    assert {"iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "roles", "typ"} <= set(claims)
    assert claims["typ"] == "access"
    assert claims["iss"] == settings.jwt_issuer
    assert claims["aud"] == settings.jwt_audience
    assert isinstance(claims["sub"], str)
    assert claims["sub"] == local_id(ann.id)
    assert claims["roles"] == ["user"]
    assert claims["nbf"] <= claims["iat"] < claims["exp"]
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl_seconds
    assert claims["exp"] == int(datetime.fromisoformat(payload["accessTokenExpiresAt"]).timestamp())
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims["jti"] != claims_of(ann.access_token)["jti"]

    # sid names the session this token belongs to.
    sessions = (await gql.ok(SESSIONS, token=token))["me"]["sessions"]["edges"]
    current = [edge["node"]["id"] for edge in sessions if edge["node"]["current"]]
    assert len(current) == 1
    assert uuid.UUID(local_id(current[0])) == uuid.UUID(claims["sid"])


async def test_login_access_token_carries_every_role(gql: GraphQL) -> None:
    await gql.admin("root")
    payload = await login(gql, "root")
    assert payload["userErrors"] == []
    assert sorted(role["name"] for role in payload["user"]["roles"]) == ["admin", "user"]
    assert sorted(claims_of(payload["accessToken"])["roles"]) == ["admin", "user"]


async def test_login_records_the_client_of_the_session(gql: GraphQL) -> None:
    await gql.register("ann")
    response = await gql.post(
        LOGIN,
        {"input": {"login": "ann", "password": DEFAULT_PASSWORD}},
        headers={"user-agent": "usergraph-tests/1.0 (login)"},
    )
    assert response.status_code == 200, response.text
    token = response.json()["data"]["login"]["accessToken"]
    data = await gql.ok(
        "{ me { sessions { edges { node { current ipAddress userAgent } } } } }", token=token
    )
    nodes = [edge["node"] for edge in data["me"]["sessions"]["edges"] if edge["node"]["current"]]
    assert nodes == [
        {"current": True, "ipAddress": "203.0.113.7", "userAgent": "usergraph-tests/1.0 (login)"}
    ]


async def test_the_session_opened_by_login_is_current_in_its_payload(gql: GraphQL) -> None:
    await gql.register("carol")
    data = await gql.ok(
        """mutation { login(input: {login: "carol", password: "correct horse battery staple"}) {
             user { sessions { edges { node { current } } } } } }"""
    )
    currents = [e["node"]["current"] for e in data["login"]["user"]["sessions"]["edges"]]
    assert sorted(currents) == [False, True]
