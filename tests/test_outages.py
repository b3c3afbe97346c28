"""A dependency that is down is a defined answer (issue 12, items 1 and 2).

The app reaches PostgreSQL and Redis through a loopback TCP proxy (tests/proxy.py) that the
tests cut, restore and "restart" (every open connection dropped, new ones accepted at once).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from tests.client import GraphQL, http_client
from tests.environment import TEST_DATABASE_URL, TEST_REDIS_URL, make_settings
from tests.proxy import TcpProxy, proxy_to
from usergraph.app import create_app
from usergraph.db.engine import Database
from usergraph.guards import masking
from usergraph.logs import OutageLog

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
ME = "{ me { id username } }"
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken userErrors { code } } }"""
needs_postgres = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL outages)"
)
needs_redis = pytest.mark.skipif(not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set")


@pytest.fixture
async def db_proxy(database_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A proxy in front of this session's PostgreSQL database, and the URL through it."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("SQLite has no connection to lose")
    async with proxy_to(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        yield proxy, proxied.render_as_string(hide_password=False)


async def _app(settings: Any) -> AsyncIterator[tuple[Starlette, GraphQL]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app), http_client(app) as client:
        yield app, GraphQL(client=client, app=app)


@pytest.fixture
async def through_db_proxy(
    db_proxy: tuple[TcpProxy, str], tmp_path: Path
) -> AsyncIterator[tuple[TcpProxy, Starlette, GraphQL]]:
    proxy, url = db_proxy
    async for app, gql in _app(make_settings(url, tmp_path, database_pool_size=5)):
        yield proxy, app, gql


@pytest.fixture(autouse=True)
def fresh_outage_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's outage is a new one (the log of a worker lives as long as the process)."""
    monkeypatch.setattr(masking, "outages", OutageLog())


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


@needs_postgres
async def test_a_database_that_is_down_is_service_unavailable(
    through_db_proxy: tuple[TcpProxy, Starlette, GraphQL], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, _, gql = through_db_proxy
    ann = await gql.register(f"ann{uuid.uuid4().hex[:8]}")
    await proxy.cut()
    caplog.set_level(logging.WARNING)

    body = await gql(ME, token=ann.access_token)
    assert body["data"] == {"me": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["retryAfter"] == 5
    assert error["path"] == ["me"]
    assert "database" in error["message"] and "Internal" not in error["message"]
    login = await gql(LOGIN, {"input": {"login": ann.username, "password": ann.password}})
    assert codes(login) == ["SERVICE_UNAVAILABLE"]
    # With the spec's media type: 503 and Retry-After.
    response = await gql.client.post(
        "/graphql", json={"query": ME}, headers={"accept": GRAPHQL_RESPONSE_JSON,
        "authorization": f"Bearer {ann.access_token}"},
    )  # fmt: skip
    assert (response.status_code, response.headers["retry-after"]) == (503, "5")
    assert codes(response.json()) == ["SERVICE_UNAVAILABLE"]
    assert (await gql.client.get("/readyz")).status_code == 503
    # Logged once for the outage, not once per request; no internal error, no trace.
    outage_lines = [r for r in caplog.records if r.name == "usergraph.outages"]
    assert len(outage_lines) == 1, [r.getMessage() for r in outage_lines]
    assert "database unavailable" in outage_lines[0].getMessage()
    assert not [r for r in caplog.records if r.name == "usergraph.errors"]

    await proxy.restore()
    assert (await gql.ok(ME, token=ann.access_token))["me"]["username"] == ann.username
    assert (await gql.client.get("/readyz")).status_code == 200


@needs_postgres
async def test_no_request_fails_after_the_database_restarts(
    through_db_proxy: tuple[TcpProxy, Starlette, GraphQL],
) -> None:
    proxy, _, gql = through_db_proxy
    accounts = [await gql.register(f"u{uuid.uuid4().hex[:8]}") for _ in range(4)]
    # A warm pool: every connection has been used, and is idle in the pool.
    await asyncio.gather(*(gql(ME, token=a.access_token) for a in accounts * 5))
    await proxy.restart()  # every pooled connection is dead now; new ones connect

    async def one(i: int) -> dict[str, Any]:
        account = accounts[i % len(accounts)]
        if i % 10 == 0:  # some mutations too: no write had begun on the dead connection
            return await gql(
                LOGIN, {"input": {"login": account.username, "password": account.password}}
            )
        return await gql(ME, token=account.access_token)

    bodies = await asyncio.gather(*(one(i) for i in range(100)))
    failed = [body for body in bodies if "errors" in body]
    assert failed == []
    assert all(body["data"].get("me") or body["data"]["login"]["accessToken"] for body in bodies)


@needs_postgres
async def test_no_request_fails_after_every_backend_is_terminated(
    database_url: str, tmp_path: Path
) -> None:
    # As an operator's restart looks from the pool: pg_terminate_backend on every connection.
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("SQLite has no connection to lose")
    async for _, gql in _app(make_settings(database_url, tmp_path, database_pool_size=5)):
        accounts = [await gql.register(f"t{uuid.uuid4().hex[:8]}") for _ in range(4)]
        await asyncio.gather(*(gql(ME, token=a.access_token) for a in accounts * 5))
        await _terminate_backends(database_url)
        bodies = await asyncio.gather(
            *(gql(ME, token=accounts[i % 4].access_token) for i in range(100))
        )
        assert [body for body in bodies if "errors" in body] == []
        assert all(body["data"]["me"] for body in bodies)


async def _terminate_backends(database_url: str) -> None:
    name = make_url(database_url).database
    admin = Database.connect(database_url)
    try:
        async with admin.engine.connect() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            await connection.commit()
    finally:
        await admin.dispose()


@needs_redis
async def test_redis_that_is_down_fails_sign_in_closed_and_reads_go_on(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert TEST_REDIS_URL is not None
    redis = make_url(TEST_REDIS_URL.replace("redis://", "postgresql://", 1))
    async with proxy_to(redis.host or "127.0.0.1", redis.port or 6379) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/{redis.database or 0}"
        settings = make_settings(
            database_url, tmp_path, redis_url=url, redis_key_prefix=f"outage-{uuid.uuid4().hex}"
        )
        async for _, gql in _app(settings):
            ann = await gql.register(f"r{uuid.uuid4().hex[:8]}")
            await proxy.cut()
            caplog.set_level(logging.WARNING)
            for _ in range(3):
                login = await gql(
                    LOGIN, {"input": {"login": ann.username, "password": ann.password}}
                )
                assert codes(login) == ["SERVICE_UNAVAILABLE"]
                assert "redis" in login["errors"][0]["message"]
            # Reads that need no counters keep working.
            assert (await gql.ok(ME, token=ann.access_token))["me"]["username"] == ann.username
            assert (await gql.client.get("/readyz")).status_code == 503
            lines = [r for r in caplog.records if r.name == "usergraph.outages"]
            assert len(lines) == 1, [r.getMessage() for r in caplog.records]
            assert "redis unavailable" in lines[0].getMessage()
            await proxy.restore()
            login = await gql(LOGIN, {"input": {"login": ann.username, "password": ann.password}})
            assert login["data"]["login"]["accessToken"]


async def test_an_unreachable_database_at_sign_in_is_service_unavailable(tmp_path: Path) -> None:
    # Nothing listens on port 1: the connection is refused (on any machine, with SQLite too).
    settings = make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/none", tmp_path)
    async for _, gql in _app(settings):
        body = await gql(LOGIN, {"input": {"login": "ann", "password": "x" * 10}})
    assert codes(body) == ["SERVICE_UNAVAILABLE"]
    assert body["errors"][0]["extensions"]["retryAfter"] == 5
