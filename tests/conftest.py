"""Shared fixtures (the helpers they use live in tests/environment.py and tests/client.py).

Every test that takes `app`, `client`, `gql` or `runtime` runs once on SQLite and once on
PostgreSQL; the PostgreSQL run needs TEST_DATABASE_URL (CI sets it) and otherwise skips with
that reason. Each session gets a fresh migrated database; each test starts with no users.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from starlette.applications import Starlette

from tests.client import GraphQL, StatementCounter, http_client, serving
from tests.environment import TEST_DATABASE_URL, make_settings, migrate, postgres_database
from tests.totp import STRICT_LIMIT, Clock, install_clock
from usergraph.app import create_app
from usergraph.db.engine import Database
from usergraph.runtime import Runtime, build_runtime
from usergraph.settings import Settings


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    # Every async test runs on anyio's asyncio backend, without a marker in each module.
    if inspect.iscoroutinefunction(obj) and name.startswith("test"):
        pytest.mark.anyio(obj)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(
    scope="session",
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL run)"
            ),
        ),
    ],
)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A freshly migrated database for this test session, on each backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "usergraph.db"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(migrate(url))
        yield url
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


# Children first: each test starts with no users and nothing that refers to one.
TABLES = (
    "mail_outbox",
    "second_factor_challenges",
    "recovery_codes",
    "totp_factors",
    "email_tokens",
    "refresh_tokens",
    "sessions",
    "user_roles",
    "users",
)


async def _empty(db: Database) -> None:
    async with db.sessionmaker() as s, s.begin():
        for table in TABLES:
            await s.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (fixed names)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """The app's shared resources without HTTP, for service tests."""
    runtime = build_runtime(settings)
    await _empty(runtime.db)
    try:
        yield runtime
    finally:
        await runtime.close()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    app = create_app(settings)
    # httpx's ASGITransport does not run the lifespan: run it here.
    async with app.router.lifespan_context(app):
        await _empty(app.state.runtime.db)
        yield app


@pytest.fixture
def clock(app: Starlette) -> Clock:
    """The app's TOTP clock, under the test's control (it starts mid-step)."""
    return install_clock(app)


@pytest.fixture
async def strict(
    app: Starlette, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[GraphQL, Clock]]:
    """A client of an app whose accounts lock after STRICT_LIMIT failures a minute, and its
    TOTP clock (it shares the database `app` emptied for this test)."""
    overrides = {"login_account_limit": f"{STRICT_LIMIT}/minute"}
    async with serving(database_url, tmp_path, **overrides) as gql:
        yield gql, install_clock(gql.app)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(app) as client:
        yield client


@pytest.fixture
def gql(client: httpx.AsyncClient, app: Starlette) -> GraphQL:
    return GraphQL(client=client, app=app)


@pytest.fixture
def sql_counter(app: Starlette) -> Iterator[StatementCounter]:
    """Counts the SQL statements the app sends (a before_cursor_execute listener)."""
    counter = StatementCounter()
    engine = app.state.runtime.db.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counter.statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", record)
