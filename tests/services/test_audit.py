"""The security log: one structured line per security event, with request id, user id and
client ip, and never a password, token or hash."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.client import DEFAULT_PASSWORD, GraphQL
from tests.environment import make_settings
from tests.helpers import REFRESH
from usergraph.logs import FORMAT, RequestIdFilter
from usergraph.settings import Settings

CLIENT_IP = "203.0.113.7"  # the test client's socket address (conftest)
WRONG = "not the password at all"
NEW_PASSWORD = "a brand new passphrase for ann"
SET_ROLES = """mutation($input: SetUserRolesInput!) {
  setUserRoles(input: $input) { userErrors { code } } }"""
SET_ACTIVE = """mutation($input: SetUserActiveInput!) {
  setUserActive(input: $input) { userErrors { code } } }"""
CHANGE_PASSWORD = """mutation($input: ChangePasswordInput!) {
  changePassword(input: $input) { userErrors { code } } }"""


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Reuse after the grace window is theft at once; two failures lock an account.
    return make_settings(
        database_url, tmp_path, refresh_reuse_grace_seconds=0, login_account_limit="2/15 minutes"
    )


@pytest.fixture
def security_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="usergraph.security")
    caplog.handler.addFilter(RequestIdFilter())
    caplog.handler.setFormatter(logging.Formatter(FORMAT))
    return caplog


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "usergraph.security"]


def event_named(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [
        {**r.security_event, "request_id": r.request_id, "client_ip": r.client_ip}  # type: ignore[attr-defined]
        for r in events(caplog)
        if r.security_event["event"] == name  # type: ignore[attr-defined]
    ]


async def test_each_security_event_is_one_line_with_who_and_where(
    gql: GraphQL, security_log: pytest.LogCaptureFixture
) -> None:
    admin = await gql.admin("root")
    ann = await gql.register("ann")

    # Login success and failure, then a lockout.
    ok = await gql.post(
        "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
        {"i": {"login": "ann", "password": DEFAULT_PASSWORD}},
    )
    [succeeded] = event_named(security_log, "login_succeeded")
    assert isinstance(succeeded["user_id"], int)
    assert succeeded["request_id"] == ok.headers["x-request-id"]
    assert succeeded["client_ip"] == CLIENT_IP
    for _ in range(3):
        await gql.login("ann", WRONG)
    failed = event_named(security_log, "login_failed")
    assert [e["reason"] for e in failed] == ["credentials", "credentials", "locked"]
    assert failed[0]["user_id"] == succeeded["user_id"]
    assert all(e["client_ip"] == CLIENT_IP for e in failed)
    [locked] = event_named(security_log, "account_locked")
    assert locked["retry_after"] > 0

    # Refresh-token reuse after the grace window: detected, and the session revoked.
    first = (await gql.ok(REFRESH, {"input": {"refreshToken": ann.refresh_token}}))["refresh"]
    assert first["userErrors"] == []
    await gql.ok(REFRESH, {"input": {"refreshToken": ann.refresh_token}})
    [reused] = event_named(security_log, "refresh_token_reused")
    assert reused["user_id"] == succeeded["user_id"]
    assert reused["session_revoked"] is True
    assert reused["session_id"] is not None

    # Password change.
    bob = await gql.register("bob")
    await gql.ok(
        CHANGE_PASSWORD,
        {"input": {"currentPassword": DEFAULT_PASSWORD, "newPassword": NEW_PASSWORD}},
        token=bob.access_token,
    )
    [changed] = event_named(security_log, "password_changed")
    bob_id = changed["user_id"]
    assert bob_id is not None and bob_id != succeeded["user_id"]

    # Role change and account disabled, by an admin: both the target and the actor.
    await gql.ok(
        SET_ROLES,
        {"input": {"userId": bob.id, "roles": ["user", "admin"]}},
        token=admin.access_token,
    )
    await gql.ok(
        SET_ACTIVE, {"input": {"userId": bob.id, "active": False}}, token=admin.access_token
    )
    [roles] = event_named(security_log, "roles_changed")
    [disabled] = event_named(security_log, "account_disabled")
    for event in (roles, disabled):
        assert event["user_id"] == bob_id
        assert event["actor_id"] not in (None, bob_id)
        assert event["client_ip"] == CLIENT_IP
        assert event["request_id"] != "-"
    assert roles["roles"] == "user,admin"

    # One line each; nothing secret in any of them.
    lines = [security_log.handler.format(r) for r in events(security_log)]
    assert all("\n" not in line for line in lines)
    assert all("event=" in line and f"client_ip={CLIENT_IP}" in line for line in lines)
    secrets = [DEFAULT_PASSWORD, WRONG, NEW_PASSWORD, ann.refresh_token, ann.access_token]
    secrets += [first["refreshToken"], first["accessToken"], bob.refresh_token, "$argon2"]
    db = gql.app.state.runtime.db
    async with db.sessionmaker() as s:
        secrets += list((await s.scalars(text("SELECT password_hash FROM users"))).all())
        secrets += list((await s.scalars(text("SELECT token_hash FROM refresh_tokens"))).all())
    whole_log = "\n".join(lines) + security_log.text
    for secret in secrets:
        assert secret not in whole_log
