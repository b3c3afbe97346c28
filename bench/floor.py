"""The floor: what the benchmark's queries cost without GraphQL, the ORM or dataloaders.

A plain Starlette app on SQLAlchemy Core (asyncpg) that answers the benchmark's two documents
with the same SQL statements usergraph runs for them, and with byte-identical JSON:

    me      the viewer: the bearer JWT checked with usergraph's own TokenCodec, then the user
            joined with the token's session, and the user's roles (2 statements)
    users   the viewer as above, admins only, then the page (LIMIT n + 1 after the cursor), the
            roles of the page's users and the total count (5 statements)

When usergraph's SQL changes, change these to match: the table's SQL/req column shows both.

What it leaves out is what a hand-written endpoint would: no transaction per statement (the
connection is in autocommit, one per request), no pre-ping, no per-field execution. Global ids
and cursors come from usergraph.schema.relay, so they match. It runs under uvicorn with the
same options as `usergraph serve`.

    .venv/bin/python bench/floor.py --port 8001     (settings from the environment)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import uvicorn
from sqlalchemy import Integer, bindparam, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from usergraph.auth.tokens import AccessClaims, InvalidAccessToken, TokenCodec
from usergraph.context import bearer_token
from usergraph.db.engine import overflow_of
from usergraph.db.models import Role, User, UserSession, user_roles, utcnow
from usergraph.db.records import ROLE_COLUMNS, SESSION_COLUMNS, USER_COLUMNS
from usergraph.logs import logging_config
from usergraph.runtime import token_codec
from usergraph.schema.relay import decode_cursor, to_global_id
from usergraph.settings import Settings

ME_QUERY = "{ me { id username email roles { name } } }"
PAGE_SIZE = 50
USERS_QUERY = (
    f"query Users($after: String) {{ users(first: {PAGE_SIZE}, after: $after) "
    "{ totalCount edges { node { id username email roles { name } } } } }"
)
USER_CURSOR = "uc"  # usergraph.resolvers.users: cursors of the default order (created_at, id)
ADMIN_ROLE = "admin"

users_table = User.__table__
sessions_table = UserSession.__table__
roles_table = Role.__table__

# The statements usergraph runs (its SQL seen with a before_cursor_execute listener), as Core
# statements built once, with bound parameters.
USER_WITH_SESSION = (
    select(*USER_COLUMNS, *SESSION_COLUMNS)
    .join(sessions_table, sessions_table.c.user_id == users_table.c.id)
    .where(
        users_table.c.id == bindparam("user_id"),
        sessions_table.c.id == bindparam("session_id"),
    )
)
ROLES_OF_USERS = (
    select(user_roles.c.user_id, *ROLE_COLUMNS)
    .join(roles_table, roles_table.c.id == user_roles.c.role_id)
    .where(user_roles.c.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(roles_table.c.name)
)
_PAGE_ORDER = (users_table.c.created_at.asc(), users_table.c.id.asc())
_LIMIT = bindparam("limit", type_=Integer())
FIRST_PAGE = select(*USER_COLUMNS).order_by(*_PAGE_ORDER).limit(_LIMIT)
PAGE_AFTER = (
    select(*USER_COLUMNS)
    .where(
        tuple_(users_table.c.created_at, users_table.c.id)
        > tuple_(
            bindparam("after_created_at", type_=users_table.c.created_at.type),
            bindparam("after_id", type_=users_table.c.id.type),
        )
    )
    .order_by(*_PAGE_ORDER)
    .limit(_LIMIT)
)
COUNT_USERS = select(func.count()).select_from(users_table)


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _dumps(value: Any) -> bytes:
    # What usergraph's view does (usergraph.http encode_json), so the bytes match.
    return orjson.dumps(value)


def _graphql_error(message: str, code: str, path: str) -> dict[str, Any]:
    return {"message": message, "path": [path], "extensions": {"code": code}}


class Viewer(NamedTuple):
    id: int
    username: str
    email: str
    roles: list[str]


async def _roles_by_user_id(conn: AsyncConnection, user_ids: list[int]) -> dict[int, list[str]]:
    rows = await conn.execute(ROLES_OF_USERS, {"user_ids": user_ids})
    by_user: dict[int, list[str]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row.name)
    return by_user


async def _viewer(conn: AsyncConnection, claims: AccessClaims | None) -> Viewer | None:
    """The signed-in user whose session and account are live (usergraph.context)."""
    if claims is None:
        return None
    found = (
        await conn.execute(
            USER_WITH_SESSION, {"user_id": claims.user_id, "session_id": claims.session_id}
        )
    ).first()
    if found is None:
        return None
    row = found._mapping
    live = (
        row[users_table.c.is_active]
        and row[sessions_table.c.revoked_at] is None
        and row[sessions_table.c.expires_at] > utcnow()
    )
    if not live:
        return None
    user_id = row[users_table.c.id]
    roles = await _roles_by_user_id(conn, [user_id])
    username, email = row[users_table.c.username], row[users_table.c.email]
    return Viewer(user_id, username, email, roles.get(user_id, []))


def _user_node(user_id: int, username: str, email: str, roles: list[str]) -> dict[str, Any]:
    return {
        "id": to_global_id("User", user_id),
        "username": username,
        "email": email,
        "roles": [{"name": name} for name in roles],
    }


async def _me(
    conn: AsyncConnection, claims: AccessClaims | None, variables: dict[str, Any]
) -> dict[str, Any]:
    viewer = await _viewer(conn, claims)
    return {"data": {"me": _user_node(*viewer) if viewer else None}}


async def _users(
    conn: AsyncConnection, claims: AccessClaims | None, variables: dict[str, Any]
) -> dict[str, Any]:
    viewer = await _viewer(conn, claims)
    if viewer is None or ADMIN_ROLE not in viewer.roles:
        code, message = (
            ("UNAUTHENTICATED", "Sign in to do this.")
            if viewer is None
            else ("FORBIDDEN", "Administrators only.")
        )
        return {"data": None, "errors": [_graphql_error(message, code, "users")]}
    limit = {"limit": PAGE_SIZE + 1}  # PAGE_SIZE as written in USERS_QUERY, and one more
    after = variables.get("after")
    if after:
        try:
            created_at, user_id = decode_cursor(after, USER_CURSOR, (datetime, int))
        except Exception:
            raise Refused(400, "malformed cursor") from None
        bounds = {"after_created_at": created_at, "after_id": user_id}
        rows = (await conn.execute(PAGE_AFTER, {**limit, **bounds})).all()
    else:
        rows = (await conn.execute(FIRST_PAGE, limit)).all()
    page = rows[:PAGE_SIZE]
    roles = await _roles_by_user_id(conn, [row.id for row in page])
    total = int(await conn.scalar(COUNT_USERS) or 0)
    edges = [
        {"node": _user_node(row.id, row.username, row.email, roles.get(row.id, []))} for row in page
    ]
    return {"data": {"users": {"totalCount": total, "edges": edges}}}


HANDLERS = {ME_QUERY: _me, USERS_QUERY: _users}


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    codec: TokenCodec = token_codec(settings)
    engine: AsyncEngine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=overflow_of(settings.database_pool_size),
        isolation_level="AUTOCOMMIT",
    )

    async def graphql(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            handler = HANDLERS.get(body.get("query")) if isinstance(body, dict) else None
            if handler is None:
                raise Refused(400, "the floor answers only the benchmark's documents")
            variables = body.get("variables") or {}
            token = bearer_token(request)
            try:
                claims = codec.decode_access_token(token) if token else None
            except InvalidAccessToken:
                claims = None
            async with engine.connect() as conn:
                result = await handler(conn, claims, variables)
        except (Refused, ValueError) as exc:
            status = exc.status if isinstance(exc, Refused) else 400
            return JSONResponse({"errors": [{"message": str(exc)}]}, status_code=status)
        return Response(_dumps(result), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings()
    # The same uvicorn options as `usergraph serve` (usergraph.cli): only the app differs.
    uvicorn.run(
        create_app,
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        log_config=logging_config(settings.log_level),
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
