"""The HTTP surface outside GraphQL: health, readiness, GraphiQL, CORS, request ids."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from tests.environment import TEST_SIGNING_KEY, make_settings
from usergraph.app import create_app
from usergraph.db.engine import Database
from usergraph.db.migrate import upgrade_to_head


async def _get(app: Starlette, path: str, **kwargs: object) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(path, **kwargs)  # type: ignore[arg-type]


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_migrated(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["revision"] == "0001_initial"


async def test_readyz_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", tmp_path))
    response = await _get(app, "/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "not migrated"


async def test_readyz_refuses_an_unreachable_database(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "x.db"
    app = create_app(make_settings(f"sqlite+aiosqlite:///{missing}", tmp_path))
    response = await _get(app, "/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


async def test_graphiql_in_development(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_no_graphiql_or_introspection_in_production(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, env="production", signing_key=TEST_SIGNING_KEY)
    app = create_app(settings)
    page = await _get(app, "/graphql", headers={"accept": "text/html"})
    assert "graphiql" not in page.text.lower()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            body = (
                await c.post("/graphql", json={"query": "{ __schema { types { name } } }"})
            ).json()
            typo = (await c.post("/graphql", json={"query": "{ mee { id } }"})).json()
    assert body.get("data") is None
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Did you mean" not in typo["errors"][0]["message"]


async def test_cors_allows_only_configured_origins(database_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path, cors_origins=["https://app.example"]))
    preflight = {"access-control-request-method": "POST"}
    allowed = await _get(app, "/healthz", headers={"origin": "https://app.example", **preflight})
    other = await _get(app, "/healthz", headers={"origin": "https://evil.example", **preflight})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={"x-request-id": "client-chosen-id-42"})
    assert echoed.headers["x-request-id"] == "client-chosen-id-42"
    made = await client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert made.headers["x-request-id"] != "bad id\twith spaces"
    assert len(made.headers["x-request-id"]) == 32


async def test_readyz_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
    db = Database.connect(url)
    await upgrade_to_head(db.engine)
    app = create_app(make_settings(url, tmp_path))
    try:
        async with db.sessionmaker() as s, s.begin():
            # Holds SQLite's write lock (BEGIN IMMEDIATE) while the probe runs.
            await s.execute(text("UPDATE roles SET description = description"))
            response = await _get(app, "/readyz")
    finally:
        await db.dispose()
    assert response.status_code == 200


async def test_not_ready_while_the_rate_limit_storage_is_unreachable(
    database_url: str, tmp_path: Path
) -> None:
    # Nothing listens on port 1: sign-in would fail closed, so the probe says not ready.
    app = create_app(make_settings(database_url, tmp_path, redis_url="redis://127.0.0.1:1/0"))
    response = await _get(app, "/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "redis": "unreachable"}


async def test_start_up_freezes_what_it_made_when_asked(database_url: str, tmp_path: Path) -> None:
    import gc

    gc.unfreeze()
    try:
        app = create_app(make_settings(database_url, tmp_path))  # tests: gc_freeze off
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() == 0
        app = create_app(make_settings(database_url, tmp_path, gc_freeze=True))
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("pre_ping", [False, True])
def test_pre_ping_follows_the_setting(database_url: str, tmp_path: Path, pre_ping: bool) -> None:
    from usergraph.runtime import build_runtime

    runtime = build_runtime(make_settings(database_url, tmp_path, database_pre_ping=pre_ping))
    # SQLite connections are files: there is nothing to ping.
    expected = pre_ping and not database_url.startswith("sqlite")
    assert runtime.db.engine.pool._pre_ping is expected  # type: ignore[attr-defined]
