"""The Starlette application: middleware, routes and the lifespan that owns shared resources."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from usergraph import graphiql, metrics, tracing
from usergraph.db.migrate import current_revision, head_revision
from usergraph.exposition import METRICS_PATH, scrape
from usergraph.guards import schema_extensions
from usergraph.http import GraphQLApp
from usergraph.middleware import (
    REQUEST_ID_HEADER,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from usergraph.pages import PAGES, page
from usergraph.runtime import Runtime, build_runtime, build_sender
from usergraph.schema import build_schema
from usergraph.settings import Settings
from usergraph.wellknown import DISCOVERY_PATH, JWKS_PATH, discovery, jwks


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers, its schema is at the newest migration and the
    rate-limit storage (Redis, when configured) answers."""
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
    if not await runtime.throttle.reachable():
        # Sign-in fails closed without its rate-limit counters.
        return JSONResponse({"status": "unavailable", "redis": "unreachable"}, status_code=503)
    if current != expected:
        return JSONResponse(
            {"status": "unavailable", "database": "not migrated", "revision": current},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "revision": current})


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; settings default to the environment."""
    settings = settings or Settings()
    problem = settings.missing_signing_key()
    if problem:
        raise RuntimeError(problem)
    runtime = build_runtime(settings)
    provider = tracing.tracer_provider() if settings.tracing else None
    sql_tracing = tracing.SqlTracing(provider, runtime.db.engine) if provider else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.runtime = runtime
        app.state.head_revision = head_revision()
        metrics.worker_started()
        if sql_tracing is not None:
            sql_tracing.start()
        await runtime.passwords.prepare()
        runtime.outbox.messages.check()
        stop_sending = asyncio.Event()
        sender = (
            asyncio.create_task(build_sender(runtime).run(stop_sending), name="mail sender")
            if settings.mail_sender
            else None
        )
        if settings.gc_freeze:
            # What start-up made lives as long as the process: keep it out of every collection.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            stop_sending.set()
            if sender is not None:
                await sender
            await runtime.close()
            metrics.worker_stopping()
            if sql_tracing is not None:
                sql_tracing.stop()

    extensions = schema_extensions(settings)
    if provider is not None:
        extensions.append(tracing.schema_extension(provider))
    schema = build_schema(settings, extensions=extensions)
    if runtime.documents.trusted is not None:
        problem = runtime.documents.trusted.problem(schema._schema)
        if problem:
            raise RuntimeError(f"{settings.trusted_documents}: {problem}")
    graphql = GraphQLApp(
        schema,
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        documents=runtime.documents,
    )
    middleware = [
        Middleware(SecurityHeadersMiddleware, hsts=settings.cookies_secure),
        Middleware(RequestIdMiddleware, mark=tracing.mark_request if provider else None),
    ]
    if settings.cors_origins:  # no origins, no CORS headers: skip the layer altogether
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", REQUEST_ID_HEADER],
                allow_credentials=settings.refresh_cookie,
                expose_headers=[REQUEST_ID_HEADER],
                max_age=600,
            )
        )
    if provider is not None:  # the request's span encloses everything below
        middleware.insert(0, tracing.asgi_middleware(provider))
    if settings.trusted_proxies:
        # Outermost: everything after it, logs and limits included, sees the real client.
        middleware.insert(
            0, Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
        )
    return Starlette(
        routes=[
            # Bodies over the limit are refused with 413 while they stream in, before parsing.
            # Every method reaches the view, which answers the wrong ones in GraphQL JSON.
            Route("/graphql", graphql, max_body_size=settings.max_body_bytes),
            # GraphiQL's files, from npm at install time (usergraph.graphiql).
            *(
                [Route(f"{graphiql.ASSETS_PATH}/{{name}}", graphiql.asset, methods=["GET"])]
                if settings.graphiql_enabled
                else []
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            # Prometheus (usergraph.exposition), unless it has a port of its own.
            *(
                [Route(METRICS_PATH, scrape, methods=["GET"])]
                if settings.metrics_enabled and settings.metrics_port is None
                else []
            ),
            # What other services verify tokens with (usergraph.wellknown).
            Route(JWKS_PATH, jwks, methods=["GET"]),
            Route(DISCOVERY_PATH, discovery, methods=["GET"]),
            # What email links open by default (usergraph.pages).
            *(Route(path, page, methods=["GET"]) for path in PAGES),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
