"""Shared fixtures.

Every test that takes `app`, `client`, `gql` or `runtime` runs once on SQLite and once on
PostgreSQL; the PostgreSQL run needs TEST_DATABASE_URL (CI sets it) and otherwise skips with
that reason. Each session gets a fresh migrated database; each test starts with no users.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from usergraph.app import create_app
from usergraph.db.engine import Database
from usergraph.db.migrate import upgrade_to_head
from usergraph.runtime import Runtime, build_runtime
from usergraph.settings import Settings

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
# Parameters for rate-limit counters: in memory, and in Redis when CI gives one.
LIMIT_STORAGES = [
    "memory",
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(
            not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set (Redis-backed limits)"
        ),
    ),
]
TEST_SIGNING_KEY = "test-signing-key-that-is-long-enough-0123456789"
DEFAULT_PASSWORD = "correct horse battery staple"
CLIENT_IP = "203.0.113.7"  # where the test client connects from


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    # Every async test runs on anyio's asyncio backend, without a marker in each module.
    if inspect.iscoroutinefunction(obj) and name.startswith("test"):
        pytest.mark.anyio(obj)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


async def _create_postgres_database(admin_url: str) -> str:
    """Create a throwaway database next to admin_url's and return its URL."""
    url = make_url(admin_url)
    name = f"usergraph_test_{uuid.uuid4().hex[:12]}"
    db = Database.connect(url.render_as_string(hide_password=False))
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await db.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    db = Database.connect(admin_url)
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await db.dispose()


async def _migrate(url: str) -> None:
    db = Database.connect(url)
    try:
        await upgrade_to_head(db.engine)
    finally:
        await db.dispose()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway, migrated database beside TEST_DATABASE_URL's, dropped afterwards."""
    assert TEST_DATABASE_URL is not None
    url = asyncio.run(_create_postgres_database(TEST_DATABASE_URL))
    try:
        asyncio.run(_migrate(url))
        yield url
    finally:
        asyncio.run(_drop_postgres_database(TEST_DATABASE_URL, url))


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
        asyncio.run(_migrate(url))
        yield url
        return
    with postgres_database() as url:
        yield url


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "signing_key": TEST_SIGNING_KEY,
        "signing_key_file": tmp_path / "signing-key",
        # Cheap hashes: the tests check behaviour, the benchmark checks cost.
        "argon2_time_cost": 1,
        "argon2_memory_cost_kib": 1024,
        "argon2_parallelism": 1,
        "password_hash_concurrency": 2,
        "password_hash_queue": 1000,
        # Freezing would keep every test's garbage for the rest of the session.
        "gc_freeze": False,
        # Masking is what clients see in production; tests of development's unmasked messages
        # ask for it.
        "expose_internal_errors": False,
        # The suite signs in hundreds of times from one address; the throttling tests set
        # their own limits.
        "login_account_limit": "1000/minute",
        "login_ip_limit": "100000/minute",
        "register_ip_limit": "100000/minute",
        "refresh_ip_limit": "100000/minute",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


async def _empty(db: Database) -> None:
    async with db.sessionmaker() as s, s.begin():
        for table in ("refresh_tokens", "sessions", "user_roles", "users"):
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


def _client(app: Starlette, peer: str = CLIENT_IP) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as client:
        yield client


@asynccontextmanager
async def serving(
    database_url: str, tmp_path: Path, *, peer: str = CLIENT_IP, **overrides: Any
) -> AsyncIterator[GraphQL]:
    """A client (connecting from peer) of an app built with other settings.

    Apps built here share the test's database and do not empty it: use fresh names.
    """
    app = create_app(make_settings(database_url, tmp_path, **overrides))
    async with app.router.lifespan_context(app), _client(app, peer) as client:
        yield GraphQL(client=client, app=app)


@dataclass
class Account:
    id: str
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str


@dataclass
class GraphQL:
    """Posts GraphQL over HTTP like a client would; helpers for common set-up."""

    client: httpx.AsyncClient
    app: Starlette
    counter: int = field(default=0)

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token:
            all_headers["authorization"] = f"Bearer {token}"
        return await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
        )

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """The response body; the HTTP status must be 200."""
        response = await self.post(query, variables, token=token)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def ok(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """The data of a response that must have no errors."""
        body = await self(query, variables, token=token)
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def register(
        self,
        username: str | None = None,
        *,
        email: str | None = None,
        password: str = DEFAULT_PASSWORD,
        display_name: str | None = None,
    ) -> Account:
        self.counter += 1
        username = username or f"user{self.counter}"
        email = email or f"{username}@example.com"
        data = await self.ok(
            """mutation($input: RegisterInput!) { register(input: $input) {
                 accessToken refreshToken user { id username } userErrors { code field message }
               } }""",
            {
                "input": {
                    "email": email,
                    "username": username,
                    "password": password,
                    "displayName": display_name,
                }
            },
        )
        payload = data["register"]
        assert payload["userErrors"] == [], payload
        return Account(
            id=payload["user"]["id"],
            username=payload["user"]["username"],
            email=email,
            password=password,
            access_token=payload["accessToken"],
            refresh_token=payload["refreshToken"],
        )

    async def login(self, login: str, password: str = DEFAULT_PASSWORD) -> dict[str, Any]:
        data = await self.ok(
            """mutation($input: LoginInput!) { login(input: $input) {
                 accessToken refreshToken user { id username } userErrors { code field message }
               } }""",
            {"input": {"login": login, "password": password}},
        )
        payload: dict[str, Any] = data["login"]
        return payload

    async def admin(self, username: str = "admin") -> Account:
        """Register an account and make it an administrator (as the CLI would)."""
        account = await self.register(username)
        db: Database = self.app.state.runtime.db
        async with db.sessionmaker() as s, s.begin():
            await s.execute(
                text(
                    "INSERT INTO user_roles (user_id, role_id) "
                    "SELECT u.id, r.id FROM users u, roles r "
                    "WHERE u.username = :username AND r.name = 'admin'"
                ),
                {"username": account.username},
            )
        return account


@pytest.fixture
def gql(client: httpx.AsyncClient, app: Starlette) -> GraphQL:
    return GraphQL(client=client, app=app)


@dataclass
class StatementCounter:
    statements: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.statements.clear()

    @property
    def count(self) -> int:
        return len(self.statements)


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
