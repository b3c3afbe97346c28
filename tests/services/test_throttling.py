"""Throttling over HTTP: account lockout, per-ip limits on login, register and refresh.

Every test runs with the counters in memory and, when TEST_REDIS_URL is set, in Redis (on each
database backend).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.client import DEFAULT_PASSWORD, GraphQL
from tests.environment import LIMIT_STORAGES, TEST_REDIS_URL, make_settings
from tests.helpers import REFRESH, error_codes
from usergraph.settings import Settings

LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken user { id } userErrors { field message code retryAfter }
} }"""
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { field message code retryAfter }
} }"""
ACCOUNT_WINDOW = 15 * 60


@pytest.fixture(params=LIMIT_STORAGES)
def settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Settings:
    """Small limits; a fresh key prefix per test keeps Redis runs apart."""
    return make_settings(
        database_url,
        tmp_path,
        login_account_limit="3/15 minutes",
        login_ip_limit="20/minute",
        register_ip_limit="4/hour",
        refresh_ip_limit="3/minute",
        redis_url=TEST_REDIS_URL if request.param == "redis" else None,
        redis_key_prefix=f"usergraph-test-{uuid.uuid4().hex}",
    )


async def login(gql: GraphQL, name: str, password: str) -> dict[str, Any]:
    """The whole response body of a login."""
    return await gql(LOGIN, {"input": {"login": name, "password": password}})


def user_error(body: dict[str, Any]) -> dict[str, Any]:
    [error] = body["data"]["login"]["userErrors"]
    return dict(error)


def assert_locked(body: dict[str, Any]) -> int:
    error = user_error(body)
    assert error["code"] == "ACCOUNT_LOCKED"
    assert body["data"]["login"]["accessToken"] is None
    retry_after = error["retryAfter"]
    assert isinstance(retry_after, int) and 0 < retry_after <= ACCOUNT_WINDOW
    assert f"{retry_after} seconds" in error["message"]
    return retry_after


def assert_rate_limited(body: dict[str, Any], window: int) -> None:
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    retry_after = error["extensions"]["retryAfter"]
    assert isinstance(retry_after, int) and 0 < retry_after <= window


async def test_failed_logins_lock_the_account(gql: GraphQL) -> None:
    await gql.register("ann")
    for _ in range(3):
        assert user_error(await login(gql, "ann", "wrong password"))["code"] == (
            "INVALID_CREDENTIALS"
        )
    assert_locked(await login(gql, "ann", "wrong password"))
    # Locked means locked: the right password is refused too, without a session.
    assert_locked(await login(gql, "ann", DEFAULT_PASSWORD))
    # Other accounts are untouched.
    await gql.register("bob")
    assert user_error(await login(gql, "bob", "wrong password"))["code"] == "INVALID_CREDENTIALS"


async def test_a_successful_login_resets_the_account_counter(gql: GraphQL) -> None:
    await gql.register("ann")
    for _ in range(2):
        await login(gql, "ann", "wrong password")
    assert (await login(gql, "ann", DEFAULT_PASSWORD))["data"]["login"]["accessToken"]
    for _ in range(3):
        assert user_error(await login(gql, "ann", "wrong"))["code"] == "INVALID_CREDENTIALS"
    assert_locked(await login(gql, "ann", "wrong"))


async def test_the_account_counter_ignores_case_and_spaces(gql: GraphQL) -> None:
    await gql.register("ann", email="ann@example.com")
    for name in ("ann@example.com", "ANN@Example.com", " ann@example.com "):
        await login(gql, name, "wrong")
    assert_locked(await login(gql, "Ann@example.COM", DEFAULT_PASSWORD))


@pytest.mark.parametrize("finally_as", ["ann@example.com", "ann"])
async def test_the_account_counter_counts_every_name_of_the_account(
    gql: GraphQL, finally_as: str
) -> None:
    # Found from outside: alternating username and email gave an account twice the guesses.
    await gql.register("ann", email="ann@example.com")
    for name in ("ann", "ann@example.com", "ann"):
        assert user_error(await login(gql, name, "wrong"))["code"] == "INVALID_CREDENTIALS"
    assert_locked(await login(gql, finally_as, DEFAULT_PASSWORD))
    assert_locked(await login(gql, finally_as, "wrong"))


async def test_a_wrong_current_password_counts_against_the_same_account(gql: GraphQL) -> None:
    ann = await gql.register("ann", email="ann@example.com")
    change = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
      userErrors { code } } }"""
    variables = {"input": {"currentPassword": "wrong", "newPassword": "a brand new passphrase 42"}}
    await gql.ok(change, variables, token=ann.access_token)
    await login(gql, "ann@example.com", "wrong")
    await login(gql, "ann", "wrong")
    assert_locked(await login(gql, "ann@example.com", DEFAULT_PASSWORD))


async def test_unknown_accounts_lock_exactly_like_real_ones(gql: GraphQL) -> None:
    await gql.register("ann")
    bodies = {}
    for name in ("ann", "nobody"):
        for _ in range(3):
            await login(gql, name, "wrong")
        bodies[name] = user_error(await login(gql, name, "wrong"))
    # Same code, same field, same message shape: nothing tells a real account apart.
    real, unknown = bodies["ann"], bodies["nobody"]
    assert real["code"] == unknown["code"] == "ACCOUNT_LOCKED"
    assert real["field"] == unknown["field"]
    assert real["message"].split(" try again")[0] == unknown["message"].split(" try again")[0]


async def test_failed_logins_per_ip_are_rate_limited(gql: GraphQL) -> None:
    # Successful logins do not count against the ip.
    await gql.register("ann")
    for _ in range(8):
        assert (await login(gql, "ann", DEFAULT_PASSWORD))["data"]["login"]["accessToken"]
    # Twenty failures use up the ip's window; refusals of a locked account count too.
    for index in range(20):
        body = await login(gql, f"nobody{index % 5}", "wrong")
        assert user_error(body)["code"] in {"INVALID_CREDENTIALS", "ACCOUNT_LOCKED"}
    body = await login(gql, "ann", DEFAULT_PASSWORD)
    assert_rate_limited(body, 60)


async def test_registrations_per_ip_are_rate_limited(gql: GraphQL) -> None:
    def register_input(name: str, password: str = DEFAULT_PASSWORD) -> dict[str, Any]:
        return {"input": {"email": f"{name}@example.com", "username": name, "password": password}}

    # Refused input costs nothing: it is checked before the limit.
    weak = await gql(REGISTER, register_input("weak", "123"))
    assert weak["data"]["register"]["userErrors"][0]["code"] == "WEAK_PASSWORD"
    for index in range(3):
        await gql.register(f"user{index}")
    # A taken email counts: that answer is information.
    taken = await gql(REGISTER, register_input("user0"))
    assert {e["code"] for e in taken["data"]["register"]["userErrors"]} == {
        "EMAIL_TAKEN",
        "USERNAME_TAKEN",
    }
    assert_rate_limited(await gql(REGISTER, register_input("late")), 3600)
    assert user_error(await login(gql, "late", DEFAULT_PASSWORD))["code"] == ("INVALID_CREDENTIALS")


async def test_refreshes_per_ip_are_rate_limited(gql: GraphQL) -> None:
    account = await gql.register("ann")
    token = account.refresh_token
    for _ in range(3):
        payload = (await gql.ok(REFRESH, {"input": {"refreshToken": token}}))["refresh"]
        assert payload["userErrors"] == []
        token = payload["refreshToken"]
    body = await gql(REFRESH, {"input": {"refreshToken": token}})
    assert_rate_limited(body, 60)
    assert error_codes(body) == ["RATE_LIMITED"]


async def test_concurrent_wrong_passwords_cannot_overshoot_the_account_limit(
    gql: GraphQL,
) -> None:
    await gql.register("ann")
    bodies = await asyncio.gather(*(login(gql, "ann", f"guess {n}") for n in range(12)))
    codes = sorted(user_error(body)["code"] for body in bodies)
    # Exactly the limit's worth of guesses were checked; every other attempt was refused.
    assert codes == ["ACCOUNT_LOCKED"] * 9 + ["INVALID_CREDENTIALS"] * 3


async def test_concurrent_failures_are_all_counted_against_the_ip(gql: GraphQL) -> None:
    # Fifteen failures at once on fifteen accounts (no account lock): none may be lost.
    bodies = await asyncio.gather(*(login(gql, f"nobody{n}", "wrong") for n in range(15)))
    assert {user_error(body)["code"] for body in bodies} == {"INVALID_CREDENTIALS"}
    # The window holds 20: five more failures fit, and then the ip is refused.
    for n in range(5):
        assert user_error(await login(gql, f"later{n}", "wrong"))["code"] == "INVALID_CREDENTIALS"
    assert_rate_limited(await login(gql, "one-too-many", "wrong"), 60)
