"""Metrics with several workers: every worker's figures in one scrape (multiprocess mode)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.system.processes import _free_port, migrate, run_server, serve, server_env


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


def test_metrics_on_a_port_of_their_own(tmp_path: Path) -> None:
    port = _free_port()
    env = server_env(
        f"sqlite+aiosqlite:///{tmp_path / 'm.db'}",
        USERGRAPH_METRICS_PORT=str(port),
        USERGRAPH_METRICS_DIR=str(tmp_path / "figures"),
    )
    migrate(tmp_path, env)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "counter_999999.db").write_bytes(b"stale")  # an earlier run's
    (tmp_path / "figures" / "notes.txt").write_text("not prometheus'")  # someone else's
    with run_server(tmp_path, env, "metrics") as (base_url, _process):
        _traffic(base_url, 5)
        assert httpx.get(f"{base_url}/metrics", timeout=10).status_code == 404
        figures = scrape(f"http://127.0.0.1:{port}", "/")
    ping = (("operation_name", "Ping"), ("operation_type", "query"))
    assert figures[("usergraph_graphql_requests_total", ping)] == 5
    assert not (tmp_path / "figures" / "counter_999999.db").exists()  # emptied at start
    assert (tmp_path / "figures" / "notes.txt").exists()  # of its own files only
