"""The Starlette application: middleware, routes and the lifespan that owns shared resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.types import ExecutionResult

from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.tokens import SigningKey, TokenCodec, read_or_create_key_file
from usergraph.context import Context, bearer_token, client_info
from usergraph.db.engine import Database
from usergraph.db.loaders import Loaders
from usergraph.db.migrate import current_revision, head_revision
from usergraph.middleware import REQUEST_ID_HEADER, RequestIdMiddleware
from usergraph.schema import build_schema
from usergraph.schema.extensions import with_code
from usergraph.services.sessions import SessionPolicy
from usergraph.settings import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    """What lives as long as the process: settings, database, hasher, token policy."""

    settings: Settings
    db: Database
    passwords: PasswordHasher
    policy: SessionPolicy


def token_codec(settings: Settings) -> TokenCodec:
    if settings.signing_key is not None:
        secret = settings.signing_key.get_secret_value()
    else:  # development only: Settings refuses a missing key in production
        secret = read_or_create_key_file(settings.signing_key_file)
    return TokenCodec(
        current_key=SigningKey.from_secret(secret),
        previous_keys=[
            SigningKey.from_secret(key.get_secret_value()) for key in settings.previous_signing_keys
        ],
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        leeway=timedelta(seconds=settings.jwt_leeway_seconds),
    )


def build_runtime(settings: Settings) -> Runtime:
    return Runtime(
        settings=settings,
        db=Database.connect(settings.database_url, pool_size=settings.database_pool_size),
        passwords=PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
            concurrency=settings.password_hash_concurrency,
        ),
        policy=SessionPolicy(
            tokens=token_codec(settings),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
            reuse_grace=timedelta(seconds=settings.refresh_reuse_grace_seconds),
        ),
    )


class GraphQLApp(GraphQL[Context, None]):
    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        assert isinstance(request, Request) and isinstance(response, Response)
        runtime: Runtime = request.app.state.runtime
        return Context(
            request=request,
            response=response,
            settings=runtime.settings,
            db=runtime.db,
            passwords=runtime.passwords,
            policy=runtime.policy,
            loaders=Loaders.create(runtime.db.read_sessionmaker),
            request_id=request.state.request_id,
            client=client_info(request),
            bearer_token=bearer_token(request),
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        if result.errors:
            request_id = getattr(request.state, "request_id", None)
            result.errors = [with_code(error, request_id) for error in result.errors]
        return process_result(result)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers and its schema is at the newest migration."""
    runtime: Runtime = request.app.state.runtime
    expected = request.app.state.head_revision
    try:
        # A read session: on SQLite it must not queue for the write lock behind a writer.
        async with runtime.db.read_sessionmaker() as session:
            connection = await session.connection()
            await connection.execute(text("SELECT 1"))
            current = await connection.run_sync(current_revision)
    except Exception:  # any failure to reach the database means "not ready"
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    if current != expected:
        return JSONResponse(
            {"status": "unavailable", "database": "not migrated", "revision": current},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "revision": current})


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; settings default to the environment."""
    settings = settings or Settings()
    runtime = build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.runtime = runtime
        app.state.head_revision = head_revision()
        await runtime.passwords.prepare()
        try:
            yield
        finally:
            await runtime.db.dispose()

    graphql = GraphQLApp(
        build_schema(settings),
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
    )
    return Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", REQUEST_ID_HEADER],
                expose_headers=[REQUEST_ID_HEADER],
                max_age=600,
            ),
        ],
        lifespan=lifespan,
    )
