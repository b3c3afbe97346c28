"""Mutation.refresh over HTTP: rotation, reuse detection, concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import delete, func, select, update

from tests.client import GraphQL
from tests.environment import make_settings
from tests.helpers import REFRESH, assert_no_tokens, me, problems, refresh, session_count
from usergraph.app import create_app
from usergraph.db.engine import Database
from usergraph.db.models import RefreshToken, User, UserSession, user_roles

SET_ACTIVE = """mutation($input: SetUserActiveInput!) { setUserActive(input: $input) {
  user { isActive } userErrors { code }
} }"""
FIELD = ["input", "refreshToken"]


def assert_refused(payload: dict[str, Any], code: str = "INVALID_REFRESH_TOKEN") -> None:
    assert problems(payload) == [(code, FIELD)], payload
    assert_no_tokens(payload)


def session_id(access_token: str) -> uuid.UUID:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return uuid.UUID(claims["sid"])


async def live_refresh_tokens(db: Database, sid: uuid.UUID) -> int:
    """How many refresh tokens of the session can still be traded in."""
    async with db.sessionmaker() as s:
        count = await s.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.session_id == sid, RefreshToken.used_at.is_(None))
        )
    return int(count or 0)


async def _empty_tables(db: Database) -> None:
    async with db.sessionmaker() as s, s.begin():
        # Children first, as conftest does (the roles table keeps its seeded rows).
        await s.execute(delete(RefreshToken))
        await s.execute(delete(UserSession))
        await s.execute(delete(user_roles))
        await s.execute(delete(User))


@pytest.fixture
async def no_grace_gql(database_url: str, tmp_path: Path) -> AsyncIterator[GraphQL]:
    """An app that treats any second use of a refresh token as theft (grace window 0)."""
    app = create_app(make_settings(database_url, tmp_path, refresh_reuse_grace_seconds=0))
    async with app.router.lifespan_context(app):
        await _empty_tables(app.state.runtime.db)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield GraphQL(client=client, app=app)


async def test_refresh_rotates_the_token_pair(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    payload = await refresh(gql, ann.refresh_token)
    assert payload["userErrors"] == []
    assert payload["tokenType"] == "Bearer"
    assert payload["accessTokenExpiresAt"] and payload["refreshTokenExpiresAt"]
    assert payload["user"] == {"id": ann.id, "username": "ann"}
    assert payload["refreshToken"] and payload["refreshToken"] != ann.refresh_token
    assert payload["accessToken"] and payload["accessToken"] != ann.access_token
    # The new access token works, in the same session: no new session was opened.
    assert await me(gql, payload["accessToken"]) == {"id": ann.id, "username": "ann"}
    assert session_id(payload["accessToken"]) == session_id(ann.access_token)
    assert await session_count(gql, payload["accessToken"]) == 1


async def test_refresh_chain_keeps_working(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    token = ann.refresh_token
    seen = {token}
    for _ in range(3):
        payload = await refresh(gql, token)
        assert payload["userErrors"] == []
        token = payload["refreshToken"]
        assert token not in seen
        seen.add(token)
        assert await me(gql, payload["accessToken"]) == {"id": ann.id, "username": "ann"}


async def test_refresh_token_is_single_use_within_the_grace_window(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    rotated = await refresh(gql, ann.refresh_token)
    assert rotated["userErrors"] == []

    again = await refresh(gql, ann.refresh_token)
    assert_refused(again)
    # Within the grace window a reuse is only refused: the session lives on.
    assert await me(gql, rotated["accessToken"]) == {"id": ann.id, "username": "ann"}
    newest = await refresh(gql, rotated["refreshToken"])
    assert newest["userErrors"] == []
    assert await me(gql, newest["accessToken"]) == {"id": ann.id, "username": "ann"}


async def test_refresh_token_reused_after_the_grace_window_ends_the_session(
    no_grace_gql: GraphQL,
) -> None:
    gql = no_grace_gql
    ann = await gql.register("ann")
    other = await gql.login("ann")  # a second device of the same user
    rotated = await refresh(gql, ann.refresh_token)
    assert rotated["userErrors"] == []

    reused = await refresh(gql, ann.refresh_token)
    assert_refused(reused, "REFRESH_TOKEN_REUSED")
    assert reused["userErrors"][0]["message"]

    # The whole session is gone: its newest tokens no longer work...
    assert_refused(await refresh(gql, rotated["refreshToken"]))
    assert await me(gql, rotated["accessToken"]) is None
    assert await me(gql, ann.access_token) is None
    # ...but the user's other session is untouched.
    assert await me(gql, other["accessToken"]) == {"id": ann.id, "username": "ann"}
    assert (await refresh(gql, other["refreshToken"]))["userErrors"] == []


async def test_refresh_reuse_detection_leaves_other_users_alone(no_grace_gql: GraphQL) -> None:
    gql = no_grace_gql
    ann = await gql.register("ann")
    bob = await gql.register("bob")
    assert (await refresh(gql, ann.refresh_token))["userErrors"] == []
    assert_refused(await refresh(gql, ann.refresh_token), "REFRESH_TOKEN_REUSED")
    assert await me(gql, bob.access_token) == {"id": bob.id, "username": "bob"}
    assert (await refresh(gql, bob.refresh_token))["userErrors"] == []


@pytest.mark.parametrize("variables", [{}, {"refreshToken": None}, {"refreshToken": ""}])
async def test_refresh_without_a_token(gql: GraphQL, variables: dict[str, Any]) -> None:
    payload = (await gql.ok(REFRESH, {"input": variables}))["refresh"]
    assert_refused(payload, "INVALID_INPUT")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("ugr_" + "A" * 43, id="well-formed-unknown"),
        pytest.param("x" * 5000, id="very-long"),
        pytest.param(" ", id="blank"),
    ],
)
async def test_refresh_with_an_unknown_token(gql: GraphQL, token: str) -> None:
    await gql.register("ann")
    assert_refused(await refresh(gql, token))


async def test_refresh_refuses_an_access_token(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    assert_refused(await refresh(gql, ann.access_token))


async def test_refresh_refuses_a_disabled_users_token(gql: GraphQL) -> None:
    admin = await gql.admin()
    ann = await gql.register("ann")
    data = await gql.ok(
        SET_ACTIVE, {"input": {"userId": ann.id, "active": False}}, token=admin.access_token
    )
    assert data["setUserActive"]["userErrors"] == []
    assert_refused(await refresh(gql, ann.refresh_token))
    # Enabling the account again does not bring the ended session back.
    data = await gql.ok(
        SET_ACTIVE, {"input": {"userId": ann.id, "active": True}}, token=admin.access_token
    )
    assert data["setUserActive"]["userErrors"] == []
    assert_refused(await refresh(gql, ann.refresh_token))


async def test_refresh_refuses_a_token_whose_user_is_inactive(gql: GraphQL) -> None:
    # Even if the session itself were still open (set the flag directly, as a bulk admin job
    # might), an inactive user gets no new tokens.
    ann = await gql.register("ann")
    db: Database = gql.app.state.runtime.db
    async with db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.username == "ann").values(is_active=False))
    assert_refused(await refresh(gql, ann.refresh_token))


async def test_refresh_after_logout_is_refused(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    data = await gql.ok("mutation { logout { revokedSessions } }", token=ann.access_token)
    assert data["logout"]["revokedSessions"] == 1
    assert_refused(await refresh(gql, ann.refresh_token))


async def test_concurrent_refreshes_with_one_token_succeed_at_most_once(gql: GraphQL) -> None:
    ann = await gql.register("ann")
    sid = session_id(ann.access_token)
    payloads = await asyncio.gather(*(refresh(gql, ann.refresh_token) for _ in range(20)))

    winners = [p for p in payloads if not p["userErrors"]]
    losers = [p for p in payloads if p["userErrors"]]
    assert len(winners) == 1, [p["userErrors"] for p in payloads]
    for payload in losers:
        assert_refused(payload)

    db: Database = gql.app.state.runtime.db
    assert await live_refresh_tokens(db, sid) == 1
    winner = winners[0]
    assert session_id(winner["accessToken"]) == sid
    assert await me(gql, winner["accessToken"]) == {"id": ann.id, "username": "ann"}
    again = await refresh(gql, winner["refreshToken"])
    assert again["userErrors"] == []
    assert await live_refresh_tokens(db, sid) == 1
    assert await session_count(gql, again["accessToken"]) == 1
