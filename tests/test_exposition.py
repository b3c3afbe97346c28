"""GET /metrics: what each figure counts, after known traffic (usergraph.metrics)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.client import GraphQL, serving

LOGIN = """mutation Login($input: LoginInput!) { login(input: $input) {
  accessToken userErrors { code } } }"""


async def figures(client: httpx.AsyncClient, **headers: str) -> dict[tuple[str, tuple], float]:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_count_operations_errors_and_sign_ins(gql: GraphQL) -> None:
    ann = await gql.register(f"ann{uuid.uuid4().hex[:6]}")
    before = await figures(gql.client)
    for _ in range(3):
        await gql.ok("query Me { me { id } }", token=ann.access_token)
    await gql(LOGIN, {"input": {"login": ann.username, "password": "wrong password!"}})
    await gql(LOGIN, {"input": {"login": ann.username, "password": ann.password}})
    await gql.post("{ me { id ")  # does not parse
    await gql.post("query Evil123 { nope }")  # parses, fails validation
    after = await figures(gql.client)

    requests = "usergraph_graphql_requests_total"
    assert delta(before, after, requests, operation_type="query", operation_name="Me") == 3
    assert delta(before, after, requests, operation_type="mutation", operation_name="Login") == 2
    assert delta(before, after, requests, operation_type="unparsed", operation_name="") == 1
    assert (
        delta(
            before,
            after,
            "usergraph_graphql_request_duration_seconds_count",
            operation_type="query",
            operation_name="Me",
        )
        == 3
    )
    errors = "usergraph_graphql_errors_total"
    assert delta(before, after, errors, code="GRAPHQL_PARSE_FAILED") == 1
    assert delta(before, after, errors, code="GRAPHQL_VALIDATION_FAILED") == 1
    sign_ins = "usergraph_sign_ins_total"
    assert delta(before, after, sign_ins, outcome="failed_credentials") == 1
    assert delta(before, after, sign_ins, outcome="succeeded") == 1
    assert delta(before, after, "usergraph_password_hasher_wait_seconds_count") == 2
    assert ("usergraph_mail_outbox_messages", (("status", "pending"),)) in after


async def test_operation_names_are_bounded(gql: GraphQL) -> None:
    before = await figures(gql.client)
    for index in range(60):
        await gql.post(f"query Name{uuid.uuid4().hex[:8]}{index} {{ __typename }}")
    after = await figures(gql.client)
    names = {
        dict(labels)["operation_name"]
        for (name, labels), value in after.items()
        if name == "usergraph_graphql_requests_total" and value
    }
    assert len(names) <= 50 + 2  # at most 50 names per process, then "other" (and "")
    assert delta(before, after, "usergraph_graphql_requests_total",
                 operation_type="query", operation_name="other") >= 10  # fmt: skip


async def test_a_metrics_token_is_required_when_set(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, metrics_token="s3cret-scrape-token") as gql:
        assert (await gql.client.get("/metrics")).status_code == 401
        wrong = await gql.client.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        assert await figures(gql.client, authorization="Bearer s3cret-scrape-token")


async def test_production_serves_no_metrics_unless_asked(database_url: str, tmp_path: Path) -> None:
    production = {
        "env": "production",
        "data_keys": ["dGVzdC1kYXRhLWtleS10aGF0LWlzLTMyLWJ5dGVzISE="],
    }
    async with serving(database_url, tmp_path, **production) as gql:
        assert (await gql.client.get("/metrics")).status_code == 404
    async with serving(database_url, tmp_path, metrics=True, **production) as gql:
        assert await figures(gql.client)
