"""OpenTelemetry traces (the optional extra `usergraph[otel]`, on with USERGRAPH_TRACING=true):
one trace per request, with the GraphQL operation, its resolvers and its SQL statements inside.

Instrumentation is OpenTelemetry's own: the ASGI middleware (the request's span), Strawberry's
OpenTelemetryExtension (operation, parsing, validation, resolvers) and the SQLAlchemy
instrumentor (one span per statement). Where spans go is the standard OTEL_* variables' say:
OTEL_TRACES_EXPORTER (otlp, the default, console or none), OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_SERVICE_NAME (default "usergraph"), OTEL_RESOURCE_ATTRIBUTES. A tracer provider set up
before (by `opentelemetry-instrument`, or a test) is used as it is.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

REQUEST_ID_ATTRIBUTE = "usergraph.request_id"
MISSING = (
    "USERGRAPH_TRACING=true needs the otel extra: pip install 'usergraph[otel]' "
    "(opentelemetry-sdk and its ASGI and SQLAlchemy instrumentation)"
)


def tracer_provider() -> Any:
    """The process's tracer provider: the one already set, else a new SDK provider exporting
    where OTEL_TRACES_EXPORTER says."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as error:
        raise RuntimeError(MISSING) from error
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "usergraph")})
    )
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter != "none":
        raise RuntimeError(f"OTEL_TRACES_EXPORTER={exporter!r}: use otlp, console or none")
    trace.set_tracer_provider(provider)
    return provider


def asgi_middleware(provider: Any) -> Any:
    """The Starlette middleware entry that opens each request's span (outermost)."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware

    return Middleware(OpenTelemetryMiddleware, tracer_provider=provider)


def schema_extension(provider: Any) -> Any:
    """Strawberry's extension: spans for the operation, parsing, validation and resolvers."""
    from strawberry.extensions.tracing import OpenTelemetryExtension

    return lambda: OpenTelemetryExtension(tracer_provider=provider)


class SqlTracing:
    """SQL spans for one engine, from start-up to shut-down (the instrumentor is one per
    process: a test's next app instruments its own engine anew)."""

    def __init__(self, provider: Any, engine: AsyncEngine) -> None:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        self._instrumentor = SQLAlchemyInstrumentor()
        self._provider = provider
        self._engine = engine

    def start(self) -> None:
        # The instrumentor declares SQLAlchemy < 2.1 and would otherwise decline 2.1 silently;
        # it only listens to the engine's cursor events, which 2.1 keeps (tests/test_tracing.py).
        self._instrumentor.instrument(
            engine=self._engine.sync_engine, tracer_provider=self._provider, skip_dep_check=True
        )

    def stop(self) -> None:
        self._instrumentor.uninstrument()


def mark_request(request_id: str) -> None:
    """Put the request id on the request's span, so a trace and a log line find each other."""
    try:
        from opentelemetry import trace
    except ImportError:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
