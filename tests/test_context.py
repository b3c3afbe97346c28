"""Cookie mode (USERGRAPH_REFRESH_COOKIE): the refresh token also travels as an HttpOnly,
SameSite=Strict cookie on the GraphQL path, set on sign-in, rotated by refresh and cleared by
logout, logoutAll and a dead cookie. Without cookie mode no cookie is set or read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.helpers import REFRESH, assert_no_tokens, assert_only_error, me, problems
from usergraph.settings import Settings

NAME = "usergraph_refresh"
PATH = "/graphql"
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken refreshToken refreshTokenExpiresAt user { id username } userErrors { code field }
} }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken refreshToken user { id username } userErrors { code field }
} }"""
LOGOUT = """mutation($input: LogoutInput) { logout(input: $input) {
  revokedSessions userErrors { code field }
} }"""
LOGOUT_ALL = "mutation { logoutAll { revokedSessions userErrors { code field } } }"
MISSING_TOKEN = [("INVALID_INPUT", ["input", "refreshToken"])]
INVALID_TOKEN = [("INVALID_REFRESH_TOKEN", ["input", "refreshToken"])]


@dataclass
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str]  # lower-case names; flags (HttpOnly, Secure) map to ""
    header: str


def set_cookies(response: httpx.Response) -> list[SetCookie]:
    """The response's Set-Cookie headers, read as a browser would."""
    cookies = []
    for header in response.headers.get_list("set-cookie"):
        name_value, *parts = header.split(";")
        name = name_value.strip().partition("=")[0]
        # SimpleCookie unquotes the value ("" when cleared) as browsers do.
        parsed = SimpleCookie()
        parsed.load(name_value.strip())
        attributes = {}
        for part in parts:
            key, _, attribute = part.strip().partition("=")
            attributes[key.lower()] = attribute
        cookies.append(SetCookie(name, parsed[name].value, attributes, header))
    return cookies


def the_cookie(response: httpx.Response, name: str = NAME) -> SetCookie:
    """The one Set-Cookie of the response, for name, with the attributes every one must have."""
    [cookie] = set_cookies(response)
    assert cookie.name == name, cookie.header
    assert "httponly" in cookie.attributes, cookie.header
    assert cookie.attributes.get("samesite", "").lower() == "strict", cookie.header
    assert cookie.attributes.get("path") == PATH, cookie.header
    assert "domain" not in cookie.attributes, cookie.header
    return cookie


def assert_set(response: httpx.Response, token: str, settings: Settings) -> None:
    cookie = the_cookie(response, settings.refresh_cookie_name)
    assert cookie.value == token
    max_age = int(cookie.attributes["max-age"])
    assert settings.refresh_token_ttl_seconds - 60 <= max_age <= settings.refresh_token_ttl_seconds
    # Plain HTTP in development: a Secure cookie would never come back.
    assert "secure" not in cookie.attributes, cookie.header


def assert_cleared(response: httpx.Response) -> None:
    cookie = the_cookie(response)
    assert cookie.value == ""
    assert cookie.attributes.get("max-age") == "0", cookie.header
    if "expires" in cookie.attributes:  # for old browsers that ignore Max-Age: not in the future
        expires = parsedate_to_datetime(cookie.attributes["expires"])
        assert expires <= datetime.now(UTC) + timedelta(seconds=5), cookie.header


def cookie_header(token: str, name: str = NAME) -> dict[str, str]:
    return {"cookie": f"{name}={token}"}


@dataclass
class CookieClient:
    gql: GraphQL
    settings: Settings

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[httpx.Response, dict[str, Any]]:
        """The response (status 200) and its data, which must have no errors."""
        response = await self.gql.post(query, variables, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return response, body["data"]

    async def register(self) -> tuple[httpx.Response, dict[str, Any]]:
        username = f"u{uuid.uuid4().hex[:12]}"  # apps built here share the database, unemptied
        variables = {
            "input": {
                "email": f"{username}@example.com",
                "username": username,
                "password": DEFAULT_PASSWORD,
            }
        }
        response, data = await self.post(REGISTER, variables)
        assert data["register"]["userErrors"] == [], data
        return response, data["register"]

    async def refresh(
        self, input: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, dict[str, Any]]:
        response, data = await self.post(REFRESH, {"input": input}, headers=headers)
        return response, data["refresh"]


@asynccontextmanager
async def client_of(
    database_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[CookieClient]:
    async with serving(database_url, tmp_path, **overrides) as gql:
        yield CookieClient(gql, gql.app.state.runtime.settings)


@pytest.fixture
async def cookies(database_url: str, tmp_path: Path) -> AsyncIterator[CookieClient]:
    """A client of an app in cookie mode; its cookie jar keeps the refresh cookie."""
    async with client_of(database_url, tmp_path, refresh_cookie=True) as client:
        yield client


@pytest.fixture
def jar(cookies: CookieClient) -> httpx.Cookies:
    return cookies.gql.client.cookies


async def test_register_and_login_set_the_cookie(cookies: CookieClient, jar: httpx.Cookies) -> None:
    response, registered = await cookies.register()
    assert_set(response, registered["refreshToken"], cookies.settings)
    assert jar.get(NAME) == registered["refreshToken"]

    username = registered["user"]["username"]
    response, data = await cookies.post(
        LOGIN, {"input": {"login": username, "password": DEFAULT_PASSWORD}}
    )
    assert_set(response, data["login"]["refreshToken"], cookies.settings)
    assert data["login"]["refreshToken"] != registered["refreshToken"]
    # The jar now holds the newer session's token: a browser keeps one cookie per name.
    assert jar.get(NAME) == data["login"]["refreshToken"]


async def test_a_failed_login_sets_no_cookie(cookies: CookieClient) -> None:
    _, registered = await cookies.register()
    response, data = await cookies.post(
        LOGIN, {"input": {"login": registered["user"]["username"], "password": "wrong password"}}
    )
    assert problems(data["login"]) == [("INVALID_CREDENTIALS", [])]
    assert response.headers.get_list("set-cookie") == []


async def test_refresh_from_the_cookie_rotates_it(
    cookies: CookieClient, jar: httpx.Cookies
) -> None:
    _, registered = await cookies.register()
    old = registered["refreshToken"]

    response, payload = await cookies.refresh({})

    assert payload["userErrors"] == []
    new = payload["refreshToken"]
    assert new and new != old
    assert payload["user"] == registered["user"]
    assert_set(response, new, cookies.settings)
    assert jar.get(NAME) == new
    assert await me(cookies.gql, payload["accessToken"]) == registered["user"]

    # The old cookie was single use.
    jar.clear()
    response, refused = await cookies.refresh({}, headers=cookie_header(old))
    assert problems(refused) == INVALID_TOKEN
    assert_no_tokens(refused)
    assert_cleared(response)

    # The new one works, once.
    response, again = await cookies.refresh({}, headers=cookie_header(new))
    assert again["userErrors"] == []
    assert_set(response, again["refreshToken"], cookies.settings)


async def test_refresh_input_null_also_uses_the_cookie(cookies: CookieClient) -> None:
    _, registered = await cookies.register()
    response, payload = await cookies.refresh({"refreshToken": None})
    assert payload["userErrors"] == []
    assert payload["user"] == registered["user"]
    assert_set(response, payload["refreshToken"], cookies.settings)


async def test_a_token_in_the_input_wins_over_the_cookie(
    cookies: CookieClient, jar: httpx.Cookies
) -> None:
    _, first = await cookies.register()
    _, second = await cookies.register()  # the jar now holds second's cookie

    response, payload = await cookies.refresh({"refreshToken": first["refreshToken"]})
    assert payload["userErrors"] == []
    assert payload["user"] == first["user"]
    assert_set(response, payload["refreshToken"], cookies.settings)

    # A refused token from the input says nothing about the cookie: it is left alone.
    jar.clear()
    response, refused = await cookies.refresh(
        {"refreshToken": "ugr_not-a-token"}, headers=cookie_header(second["refreshToken"])
    )
    assert problems(refused) == INVALID_TOKEN
    assert response.headers.get_list("set-cookie") == []
    _, still = await cookies.refresh({}, headers=cookie_header(second["refreshToken"]))
    assert still["userErrors"] == []


async def test_refresh_without_token_or_cookie(cookies: CookieClient) -> None:
    response, payload = await cookies.refresh({})
    assert problems(payload) == MISSING_TOKEN
    assert_no_tokens(payload)
    assert response.headers.get_list("set-cookie") == []


@pytest.mark.parametrize("dead", ["bogus", "logged-out"])
async def test_a_dead_cookie_is_refused_and_cleared(
    cookies: CookieClient, jar: httpx.Cookies, dead: str
) -> None:
    _, registered = await cookies.register()
    token = "ugr_" + "x" * 43
    if dead == "logged-out":
        token = registered["refreshToken"]
        await cookies.post(LOGOUT, {"input": {"refreshToken": token}})
    jar.clear()

    response, payload = await cookies.refresh({}, headers=cookie_header(token))

    assert problems(payload) == INVALID_TOKEN
    assert_no_tokens(payload)
    assert_cleared(response)


async def test_logout_ends_the_cookies_session_and_clears_it(
    cookies: CookieClient, jar: httpx.Cookies
) -> None:
    _, other = await cookies.register()  # someone else's session must survive
    _, registered = await cookies.register()
    assert jar.get(NAME) == registered["refreshToken"]

    response, data = await cookies.post(LOGOUT, {"input": {}})

    assert data["logout"] == {"revokedSessions": 1, "userErrors": []}
    assert_cleared(response)
    assert jar.get(NAME) is None
    assert await me(cookies.gql, registered["accessToken"]) is None
    _, refused = await cookies.refresh({}, headers=cookie_header(registered["refreshToken"]))
    assert problems(refused) == INVALID_TOKEN
    assert await me(cookies.gql, other["accessToken"]) == other["user"]


async def test_logout_without_input_uses_the_cookie(cookies: CookieClient) -> None:
    _, registered = await cookies.register()
    response, data = await cookies.post(LOGOUT)
    assert data["logout"] == {"revokedSessions": 1, "userErrors": []}
    assert_cleared(response)
    assert await me(cookies.gql, registered["accessToken"]) is None


async def test_logout_with_a_dead_cookie_clears_it(
    cookies: CookieClient, jar: httpx.Cookies
) -> None:
    _, registered = await cookies.register()
    jar.clear()
    response, data = await cookies.post(LOGOUT, headers=cookie_header("ugr_" + "x" * 43))
    assert data["logout"]["revokedSessions"] == 0
    assert_cleared(response)
    # Nobody else's session was touched.
    assert await me(cookies.gql, registered["accessToken"]) == registered["user"]


async def test_logout_all_clears_the_cookie(cookies: CookieClient, jar: httpx.Cookies) -> None:
    _, registered = await cookies.register()
    username = registered["user"]["username"]
    await cookies.post(LOGIN, {"input": {"login": username, "password": DEFAULT_PASSWORD}})

    response, data = await cookies.post(LOGOUT_ALL, token=registered["accessToken"])

    assert data["logoutAll"] == {"revokedSessions": 2, "userErrors": []}
    assert_cleared(response)
    assert jar.get(NAME) is None


async def test_the_cookie_name_is_a_setting(database_url: str, tmp_path: Path) -> None:
    async with client_of(
        database_url, tmp_path, refresh_cookie=True, refresh_cookie_name="app_rt"
    ) as cookies:
        response, registered = await cookies.register()
        assert the_cookie(response, "app_rt").value == registered["refreshToken"]
        response, payload = await cookies.refresh({})
        assert payload["userErrors"] == []
        assert the_cookie(response, "app_rt").value == payload["refreshToken"]
        # A cookie under the default name is not the one this app reads.
        cookies.gql.client.cookies.clear()
        response, refused = await cookies.refresh(
            {}, headers=cookie_header(payload["refreshToken"], NAME)
        )
        assert problems(refused) == MISSING_TOKEN


# --- without cookie mode (the default) ----------------------------------------------------


async def test_without_cookie_mode_no_cookie_is_set(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    responses = [
        await gql.post(LOGIN, {"input": {"login": "ann", "password": DEFAULT_PASSWORD}}),
        await gql.post(REFRESH, {"input": {"refreshToken": ann.refresh_token}}),
        await gql.post(LOGOUT, {}, token=ann.access_token),
    ]
    for response in responses:
        assert response.status_code == 200
        assert "errors" not in response.json(), response.text
        assert response.headers.get_list("set-cookie") == []
    assert len(gql.client.cookies) == 0


async def test_without_cookie_mode_a_cookie_is_ignored(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    cookie = cookie_header(ann.refresh_token)

    refreshed = await gql.post(REFRESH, {"input": {}}, headers=cookie)
    assert problems(refreshed.json()["data"]["refresh"]) == MISSING_TOKEN
    assert refreshed.headers.get_list("set-cookie") == []

    logout = await gql.post(LOGOUT, {}, headers=cookie)
    assert_only_error(logout.json(), "UNAUTHENTICATED", ["logout"])
    assert logout.headers.get_list("set-cookie") == []
    # The cookie's session lives on.
    assert await me(gql, ann.access_token) == {"id": ann.id, "username": "ann"}
