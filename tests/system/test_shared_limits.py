"""Two `usergraph serve` processes on one database share their rate limits through Redis.

Each test starts two separate server processes (not one with --workers 2: separate processes
cannot share anything but the database and Redis) and alternates its requests between them.
With REDIS_URL set, the second process sees the first one's counts; the control tests run the
same sequence with in-memory counters and show each process counting on its own, so the sharing
comes from Redis and not from the database or the client.

Needs TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL; CI sets both.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.client import DEFAULT_PASSWORD
from tests.environment import TEST_DATABASE_URL, TEST_REDIS_URL, TEST_SIGNING_KEY, postgres_database
from tests.system.processes import run_servers, server_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL)"),
    pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set (Redis)"),
]

WRONG_PASSWORD = "not the password at all"
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken refreshToken userErrors { code retryAfter } } }"""
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken refreshToken userErrors { code retryAfter } } }"""
REFRESH = """mutation($input: RefreshInput!) { refresh(input: $input) {
  accessToken refreshToken userErrors { code retryAfter } } }"""

# Generous limits for everything a test does not look at.
GENEROUS = {
    "USERGRAPH_LOGIN_ACCOUNT_LIMIT": "1000/minute",
    "USERGRAPH_LOGIN_IP_LIMIT": "100000/minute",
    "USERGRAPH_REGISTER_IP_LIMIT": "100000/minute",
    "USERGRAPH_REFRESH_IP_LIMIT": "100000/minute",
}


@dataclass(frozen=True)
class Outcome:
    """What one sign-in mutation came to: SIGNED_IN, a userErrors code, or a GraphQL error code."""

    code: str
    retry_after: int | None = None
    refresh_token: str | None = None


SIGNED_IN = "SIGNED_IN"


class Server:
    """One server process, seen by a client."""

    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.client = httpx.Client(base_url=base_url, timeout=30)

    def mutate(self, query: str, field: str, input: dict[str, Any]) -> Outcome:
        response = self.client.post(
            "/graphql", json={"query": query, "variables": {"input": input}}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        if body.get("errors"):
            assert body["data"] is None, body
            (error,) = body["errors"]
            return Outcome(error["extensions"]["code"], error["extensions"].get("retryAfter"))
        payload = body["data"][field]
        if payload["userErrors"]:
            (problem,) = payload["userErrors"]
            return Outcome(problem["code"], problem["retryAfter"])
        assert payload["accessToken"] and payload["refreshToken"], payload
        return Outcome(SIGNED_IN, refresh_token=payload["refreshToken"])

    def login(self, login: str, password: str = DEFAULT_PASSWORD) -> Outcome:
        return self.mutate(LOGIN, "login", {"login": login, "password": password})

    def register(self, username: str) -> Outcome:
        return self.mutate(
            REGISTER,
            "register",
            {
                "email": f"{username}@example.com",
                "username": username,
                "password": DEFAULT_PASSWORD,
            },
        )

    def refresh(self, refresh_token: str) -> Outcome:
        return self.mutate(REFRESH, "refresh", {"refreshToken": refresh_token})


def assert_refused(outcome: Outcome, code: str, *, window_seconds: int) -> None:
    """Refused with this code and a retryAfter within the limit's window."""
    assert outcome.code == code, outcome
    assert outcome.retry_after is not None, outcome
    assert 0 < outcome.retry_after <= window_seconds, outcome


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this module, migrated, dropped afterwards."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """A Redis key prefix of this test alone; its keys are deleted afterwards."""
    assert TEST_REDIS_URL is not None
    prefix = f"usergraph-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    with redis.Redis.from_url(TEST_REDIS_URL) as connection:
        for key in connection.scan_iter(match=f"{prefix}:*"):
            connection.delete(key)


def redis_keys(prefix: str) -> list[bytes]:
    assert TEST_REDIS_URL is not None
    with redis.Redis.from_url(TEST_REDIS_URL) as connection:
        return list(connection.scan_iter(match=f"{prefix}:*"))


Start = Callable[..., tuple[Server, Server]]


@pytest.fixture
def start_pair(database_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Start]:
    """start_pair(shared=..., **limits): two server processes on the same database.

    shared=True gives both REDIS_URL (and this test's key prefix); shared=False leaves the
    counters in each process's memory. limits are USERGRAPH_* variables over GENEROUS.
    """
    with ExitStack() as stack:

        def start(*, shared: bool, **limits: str) -> tuple[Server, Server]:
            env = server_env(
                database_url,
                USERGRAPH_SIGNING_KEY=TEST_SIGNING_KEY,
                USERGRAPH_REDIS_KEY_PREFIX=key_prefix,
                **{**GENEROUS, **limits},
            )
            if shared:
                assert TEST_REDIS_URL is not None
                env["REDIS_URL"] = TEST_REDIS_URL
            urls = stack.enter_context(run_servers(tmp_path, env, ["a", "b"]))
            servers = [Server(name, url) for name, url in zip("ab", urls, strict=True)]
            for server in servers:
                stack.callback(server.client.close)
            return servers[0], servers[1]

        yield start


def unique(name: str) -> str:
    """A username no other test (or earlier run on this database) has used."""
    return f"{name}{uuid.uuid4().hex[:8]}"


# --- (a) account lockout ------------------------------------------------------------------


def test_account_lockout_is_shared_through_redis(start_pair: Start, key_prefix: str) -> None:
    a, b = start_pair(shared=True, USERGRAPH_LOGIN_ACCOUNT_LIMIT="3/15 minutes")
    alice = unique("alice")
    assert a.register(alice).code == SIGNED_IN
    for server in (a, b, a):
        assert server.login(alice, WRONG_PASSWORD).code == "INVALID_CREDENTIALS"
    # b has seen one failure itself; the other two reached it through Redis.
    assert_refused(b.login(alice, WRONG_PASSWORD), "ACCOUNT_LOCKED", window_seconds=15 * 60)
    assert_refused(a.login(alice, WRONG_PASSWORD), "ACCOUNT_LOCKED", window_seconds=15 * 60)
    # Locked means locked: the right password is refused too, on either process.
    for server in (a, b):
        assert_refused(server.login(alice), "ACCOUNT_LOCKED", window_seconds=15 * 60)
    assert redis_keys(key_prefix), "the counters should live in Redis"


def test_account_lockout_is_per_process_without_redis(start_pair: Start, key_prefix: str) -> None:
    a, b = start_pair(shared=False, USERGRAPH_LOGIN_ACCOUNT_LIMIT="3/15 minutes")
    alice = unique("alice")
    assert a.register(alice).code == SIGNED_IN
    for server in (a, b, a):
        assert server.login(alice, WRONG_PASSWORD).code == "INVALID_CREDENTIALS"
    # The same fourth attempt as above: b has counted only its own one failure.
    assert b.login(alice, WRONG_PASSWORD).code == "INVALID_CREDENTIALS"
    # Each process does lock on its own count: a's third failure locks alice on a only ...
    assert a.login(alice, WRONG_PASSWORD).code == "INVALID_CREDENTIALS"
    assert_refused(a.login(alice), "ACCOUNT_LOCKED", window_seconds=15 * 60)
    # ... while b, with two, still lets the right password in.
    assert b.login(alice).code == SIGNED_IN
    assert redis_keys(key_prefix) == []


# --- (b) failed logins per ip ---------------------------------------------------------------


def test_login_ip_limit_is_shared_through_redis(start_pair: Start) -> None:
    a, b = start_pair(shared=True, USERGRAPH_LOGIN_IP_LIMIT="4/minute")
    carol = unique("carol")
    assert a.register(carol).code == SIGNED_IN
    # Four failures for four different (unknown) accounts, two on each process.
    for server, n in zip((a, b, a, b), range(4), strict=True):
        assert server.login(unique(f"nobody{n}"), WRONG_PASSWORD).code == "INVALID_CREDENTIALS"
    assert_refused(a.login(unique("nobody"), WRONG_PASSWORD), "RATE_LIMITED", window_seconds=60)
    assert_refused(b.login(unique("nobody"), WRONG_PASSWORD), "RATE_LIMITED", window_seconds=60)
    # The ip is refused before any password is checked, the right one too.
    assert_refused(b.login(carol), "RATE_LIMITED", window_seconds=60)


def test_login_ip_limit_is_per_process_without_redis(start_pair: Start) -> None:
    a, b = start_pair(shared=False, USERGRAPH_LOGIN_IP_LIMIT="4/minute")
    carol = unique("carol")
    assert a.register(carol).code == SIGNED_IN
    for server, n in zip((a, b, a, b), range(4), strict=True):
        assert server.login(unique(f"nobody{n}"), WRONG_PASSWORD).code == "INVALID_CREDENTIALS"
    # The same fifth failure as above is only a's third.
    assert a.login(unique("nobody"), WRONG_PASSWORD).code == "INVALID_CREDENTIALS"
    assert a.login(unique("nobody"), WRONG_PASSWORD).code == "INVALID_CREDENTIALS"
    assert_refused(a.login(carol), "RATE_LIMITED", window_seconds=60)
    assert b.login(carol).code == SIGNED_IN


# --- registrations and refreshes per ip ----------------------------------------------------


def test_register_and_refresh_limits_are_shared_through_redis(start_pair: Start) -> None:
    a, b = start_pair(
        shared=True,
        USERGRAPH_REGISTER_IP_LIMIT="2/hour",
        USERGRAPH_REFRESH_IP_LIMIT="2/minute",
    )
    dave = a.register(unique("dave"))
    assert dave.code == SIGNED_IN
    assert b.register(unique("erin")).code == SIGNED_IN
    assert_refused(a.register(unique("frank")), "RATE_LIMITED", window_seconds=3600)
    assert_refused(b.register(unique("frank")), "RATE_LIMITED", window_seconds=3600)

    # One token family, rotated on b then on a (the database is shared too) ...
    assert dave.refresh_token is not None
    first = b.refresh(dave.refresh_token)
    assert first.code == SIGNED_IN and first.refresh_token is not None
    second = a.refresh(first.refresh_token)
    assert second.code == SIGNED_IN and second.refresh_token is not None
    # ... and the third refresh from this ip is refused, wherever it lands.
    assert_refused(b.refresh(second.refresh_token), "RATE_LIMITED", window_seconds=60)
    assert_refused(a.refresh(second.refresh_token), "RATE_LIMITED", window_seconds=60)


def test_register_and_refresh_limits_are_per_process_without_redis(start_pair: Start) -> None:
    a, b = start_pair(
        shared=False,
        USERGRAPH_REGISTER_IP_LIMIT="2/hour",
        USERGRAPH_REFRESH_IP_LIMIT="2/minute",
    )
    dave = a.register(unique("dave"))
    assert dave.code == SIGNED_IN
    assert b.register(unique("erin")).code == SIGNED_IN
    # The same third registration as above is only a's second; a's third is refused.
    assert a.register(unique("frank")).code == SIGNED_IN
    assert_refused(a.register(unique("gina")), "RATE_LIMITED", window_seconds=3600)

    assert dave.refresh_token is not None
    first = b.refresh(dave.refresh_token)
    assert first.code == SIGNED_IN and first.refresh_token is not None
    second = a.refresh(first.refresh_token)
    assert second.code == SIGNED_IN and second.refresh_token is not None
    third = b.refresh(second.refresh_token)
    assert third.code == SIGNED_IN and third.refresh_token is not None
    assert_refused(b.refresh(third.refresh_token), "RATE_LIMITED", window_seconds=60)
