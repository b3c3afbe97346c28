"""OpenTelemetry traces (usergraph.tracing): one trace per request, the GraphQL operation and
its SQL inside it, the request id on the request's span. Spans go to an in-memory exporter."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.client import serving
from usergraph import tracing

EXPORTER = InMemorySpanExporter()
_exporting: list[TracerProvider] = []


@pytest.fixture(autouse=True)
def provider() -> Iterator[TracerProvider]:
    """The process's tracer provider (set once per process), exporting to memory; the
    exporter is added once, however often pytest regroups this module's tests."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
    if current not in _exporting:
        current.add_span_processor(SimpleSpanProcessor(EXPORTER))
        _exporting.append(current)
    yield current


def by_trace(spans: tuple[ReadableSpan, ...]) -> dict[int, list[ReadableSpan]]:
    traces: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        assert span.context is not None
        traces[span.context.trace_id].append(span)
    return traces


def root_of(spans: list[ReadableSpan]) -> ReadableSpan:
    [root] = [span for span in spans if span.parent is None]
    return root


async def test_a_request_is_one_trace_with_its_operation_and_sql_inside(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, tracing=True) as gql:
        ann = await gql.register(f"ann{uuid.uuid4().hex[:8]}")
        EXPORTER.clear()
        response = await gql.client.post(
            "/graphql",
            json={"query": "query Me { me { id username } }"},
            headers={"authorization": f"Bearer {ann.access_token}", "x-request-id": "trace-me-001"},
        )
        assert response.json()["data"]["me"]["username"] == ann.username
    traces = by_trace(EXPORTER.get_finished_spans())
    assert len(traces) == 1, {key: [s.name for s in spans] for key, spans in traces.items()}
    [spans] = traces.values()
    root = root_of(spans)
    assert (root.attributes or {})[tracing.REQUEST_ID_ATTRIBUTE] == "trace-me-001"
    names = [span.name for span in spans]
    assert any("Me" in name or "GraphQL" in name for name in names), names  # the operation
    sql = [span for span in spans if (span.attributes or {}).get("db.system")]
    assert sql, names  # the viewer's SELECT, inside the request's trace
    for span in sql:
        assert span.context is not None and span.context.trace_id == root.context.trace_id


async def test_two_requests_are_two_traces(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, tracing=True) as gql:
        EXPORTER.clear()
        await gql.ok("{ __typename }")
        await gql.ok("{ __typename }")
    traces = by_trace(EXPORTER.get_finished_spans())
    assert len(traces) == 2
    ids = {
        (root_of(spans).attributes or {})[tracing.REQUEST_ID_ATTRIBUTE] for spans in traces.values()
    }
    assert len(ids) == 2  # each request its own id


async def test_no_spans_without_tracing(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path) as gql:
        EXPORTER.clear()
        await gql.ok("{ __typename }")
    assert EXPORTER.get_finished_spans() == ()


def test_an_unknown_exporter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: object())
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
    with pytest.raises(RuntimeError, match="use otlp, console or none"):
        tracing.tracer_provider()
