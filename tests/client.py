"""The GraphQL test client: posts GraphQL over HTTP like a client would, as an Account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from starlette.applications import Starlette

from tests.environment import make_settings
from usergraph.app import create_app
from usergraph.db.engine import Database

DEFAULT_PASSWORD = "correct horse battery staple"
CLIENT_IP = "203.0.113.7"  # where the test client connects from


def http_client(app: Starlette, peer: str = CLIENT_IP) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@asynccontextmanager
async def serving(
    database_url: str, tmp_path: Path, *, peer: str = CLIENT_IP, **overrides: Any
) -> AsyncIterator[GraphQL]:
    """A client (connecting from peer) of an app built with other settings.

    Apps built here share the test's database and do not empty it: use fresh names.
    """
    app = create_app(make_settings(database_url, tmp_path, **overrides))
    async with app.router.lifespan_context(app), http_client(app, peer) as client:
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


@dataclass
class StatementCounter:
    statements: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.statements.clear()

    @property
    def count(self) -> int:
        return len(self.statements)
