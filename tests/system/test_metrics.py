"""Metrics with several workers: every worker's figures in one scrape (multiprocess mode)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.system.processes import serve


def scrape(base_url: str, path: str = "/metrics") -> dict[tuple[str, tuple], float]:
    response = httpx.get(base_url + path, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _traffic(base_url: str, count: int) -> None:
    for _ in range(count):
        # A new connection each time, so the kernel spreads them over the workers.
        response = httpx.post(
            f"{base_url}/graphql", json={"query": "query Ping { __typename }"}, timeout=10
        )
        assert response.status_code == 200


def test_two_workers_count_every_request_once(tmp_path: Path) -> None:
    with serve(tmp_path, workers=2) as (base_url, _env):
        _traffic(base_url, 40)
        name = f"L{uuid.uuid4().hex[:8]}"
        for _ in range(3):
            httpx.post(
                f"{base_url}/graphql",
                json={
                    "query": f'mutation {name} {{ login(input: {{login: "nobody", '
                    'password: "wrong password"}) { accessToken } }'
                },
                timeout=10,
            )
        figures = scrape(base_url)
    key = (
        "usergraph_graphql_requests_total",
        (("operation_name", "Ping"), ("operation_type", "query")),
    )
    assert figures[key] == 40
    failed = ("usergraph_sign_ins_total", (("outcome", "failed_credentials"),))
    assert figures[failed] == 3
    # Both workers hold a pool: their gauges add up (each at least 1 open connection).
    assert figures[("usergraph_db_pool_connections_open", ())] >= 2
