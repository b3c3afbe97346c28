"""GraphQL over HTTP (usergraph/http.py): media types, status codes and request errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette

from tests.client import DEFAULT_PASSWORD, GraphQL
from usergraph.db.models import User
from usergraph.http import APPLICATION_JSON, GRAPHQL_RESPONSE_JSON, response_media_type

TYPENAME = {"query": "{ __typename }"}
# What the spec recommends clients send.
PREFER_GRAPHQL_RESPONSE = f"{GRAPHQL_RESPONSE_JSON}, {APPLICATION_JSON};q=0.9"
REGISTER_MALLORY = f"""mutation {{ register(input: {{
  email: "mallory@example.com", username: "mallory", password: "{DEFAULT_PASSWORD}"
}}) {{ accessToken }} }}"""


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0]


def assert_request_error(response: httpx.Response, status: int, message: str) -> None:
    """A request the view refused: GraphQL JSON with code BAD_REQUEST, no data."""
    assert response.status_code == status, response.text
    assert media_type(response) in (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON)
    body = response.json()
    assert set(body) == {"errors"}, body
    [error] = body["errors"]
    assert error["extensions"] == {"code": "BAD_REQUEST"}
    assert message in error["message"]


async def post(
    client: httpx.AsyncClient,
    content: bytes | str,
    *,
    content_type: str | None = APPLICATION_JSON,
    accept: str | None = None,
) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    if accept is not None:
        headers["accept"] = accept
    return await client.post("/graphql", content=content, headers=headers)


async def user_count(app: Starlette) -> int:
    async with app.state.runtime.db.sessionmaker() as session:
        count: int = await session.scalar(select(func.count()).select_from(User))
        return count


# --- Content negotiation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, APPLICATION_JSON),
        ("", APPLICATION_JSON),
        ("*/*", APPLICATION_JSON),
        ("application/*", APPLICATION_JSON),
        (APPLICATION_JSON, APPLICATION_JSON),
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        (PREFER_GRAPHQL_RESPONSE, GRAPHQL_RESPONSE_JSON),
        (f"{APPLICATION_JSON}, {GRAPHQL_RESPONSE_JSON}", APPLICATION_JSON),
        (f"{GRAPHQL_RESPONSE_JSON};q=0.5, {APPLICATION_JSON};q=0.8", APPLICATION_JSON),
        ("*/*, Application/GraphQL-Response+JSON", GRAPHQL_RESPONSE_JSON),
        (f"{APPLICATION_JSON};q=0, */*", GRAPHQL_RESPONSE_JSON),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", APPLICATION_JSON),
        ("text/html", None),
        (f"{APPLICATION_JSON};q=0", None),
        (f"{APPLICATION_JSON};q=banana", None),
        ("*/*;q=0", None),
    ],
)
def test_response_media_type(accept: str | None, expected: str | None) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, APPLICATION_JSON),
        (APPLICATION_JSON, APPLICATION_JSON),
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        (PREFER_GRAPHQL_RESPONSE, GRAPHQL_RESPONSE_JSON),
    ],
)
async def test_the_response_is_in_the_accepted_media_type(
    client: httpx.AsyncClient, accept: str | None, expected: str
) -> None:
    request = client.build_request("POST", "/graphql", json=TYPENAME)
    if accept is None:
        del request.headers["accept"]
    else:
        request.headers["accept"] = accept
    response = await client.send(request)
    assert response.status_code == 200
    assert media_type(response) == expected
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_get_query_in_graphql_response_json(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql", params=TYPENAME, headers={"accept": GRAPHQL_RESPONSE_JSON}
    )
    assert response.status_code == 200
    assert media_type(response) == GRAPHQL_RESPONSE_JSON
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("accept", ["text/plain", "text/html", f"{APPLICATION_JSON};q=0"])
async def test_not_acceptable(client: httpx.AsyncClient, accept: str) -> None:
    response = await post(client, json.dumps(TYPENAME), accept=accept)
    assert_request_error(response, 406, GRAPHQL_RESPONSE_JSON)
    assert media_type(response) == APPLICATION_JSON


async def test_graphiql_still_renders_for_a_browser(client: httpx.AsyncClient) -> None:
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = await client.get("/graphql", headers={"accept": accept})
    assert response.status_code == 200
    assert media_type(response) == "text/html"
    assert "graphiql" in response.text.lower()


# --- Failures before execution: no data; 400 only with application/graphql-response+json ----

DOCUMENT_FAILURES = [
    pytest.param({"query": "{ me { id "}, "GRAPHQL_PARSE_FAILED", id="parse"),
    pytest.param({"query": "{ me { passwordHash } }"}, "GRAPHQL_VALIDATION_FAILED", id="validate"),
    pytest.param(
        {"query": "query($id: ID!) { node(id: $id) { id } }", "variables": {"id": None}},
        "BAD_USER_INPUT",
        id="coerce-variables",
    ),
]


@pytest.mark.parametrize(("payload", "code"), DOCUMENT_FAILURES)
@pytest.mark.parametrize(
    ("accept", "status", "expected_type"),
    [
        (GRAPHQL_RESPONSE_JSON, 400, GRAPHQL_RESPONSE_JSON),
        (PREFER_GRAPHQL_RESPONSE, 400, GRAPHQL_RESPONSE_JSON),
        (APPLICATION_JSON, 200, APPLICATION_JSON),
        ("*/*", 200, APPLICATION_JSON),
    ],
)
async def test_failure_before_execution(
    client: httpx.AsyncClient,
    payload: dict[str, Any],
    code: str,
    accept: str,
    status: int,
    expected_type: str,
) -> None:
    response = await post(client, json.dumps(payload), accept=accept)
    assert response.status_code == status, response.text
    assert media_type(response) == expected_type
    body = response.json()
    assert "data" not in body, body
    assert [error["extensions"]["code"] for error in body["errors"]] == [code]


async def test_field_errors_keep_data_and_status_200(client: httpx.AsyncClient) -> None:
    # Execution started: the response has data (null here) and is a 200 in either media type.
    for accept in (GRAPHQL_RESPONSE_JSON, APPLICATION_JSON):
        response = await post(client, '{"query": "{ users { totalCount } }"}', accept=accept)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert body["errors"][0]["path"] == ["users"]


# --- Request errors: GraphQL JSON with code BAD_REQUEST -----------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param('{"query": ', "Unable to parse request body as JSON", id="not-json"),
        pytest.param("", "Unable to parse request body as JSON", id="empty-body"),
        pytest.param(b"\x80{}", "not valid UTF-8", id="not-utf8"),
        pytest.param("[" * 10_000 + "]" * 10_000, "nested too deeply", id="deeply-nested"),
        pytest.param(
            '{"query": "mutation($p: String!) { login(input: {login: \\"a\\", password: $p})'
            ' { accessToken } }", "variables": {"p": "\\ud800"}}',
            "lone UTF-16 surrogate",
            id="lone-surrogate",
        ),
        pytest.param(
            '{"query": "{ me { id } }", "variables": {"\\udfff": 1}}',
            "lone UTF-16 surrogate",
            id="lone-surrogate-in-a-key",
        ),
        pytest.param(
            '{"query": "{ me { id } }", "operationName": "A\\u0000"}',
            "NUL character",
            id="nul-in-the-operation-name",
        ),
        pytest.param("[]", "must be a JSON object", id="array"),
        pytest.param("0", "must be a JSON object", id="number"),
        pytest.param("null", "must be a JSON object", id="null"),
        pytest.param("{}", "`query` parameter (a GraphQL document) is missing", id="no-query"),
        pytest.param('{"query": ""}', "`query` parameter", id="empty-query"),
        pytest.param('{"qeury": "{ me { id } }"}', "`query` parameter", id="typo"),
        pytest.param('{"query": 1}', "`query` parameter must be a string", id="query-number"),
        pytest.param('{"query": ["{ me { id } }"]}', "`query` parameter must be", id="query-list"),
        pytest.param(
            '{"query": "{ me { id } }", "variables": "{}"}',
            "`variables` parameter must be an object",
            id="variables-string",
        ),
        pytest.param(
            '{"query": "{ me { id } }", "variables": [1]}',
            "`variables` parameter must be an object",
            id="variables-list",
        ),
        pytest.param(
            '{"query": "{ me { id } }", "operationName": {"a": 1}}',
            "`operationName` parameter must be a string",
            id="operation-name-object",
        ),
        pytest.param(
            '{"query": "{ me { id } }", "extensions": 0}',
            "`extensions` parameter must be an object",
            id="extensions-number",
        ),
        pytest.param(
            '{"query": "query A { me { id } }", "operationName": "B"}',
            'Unknown operation named "B"',
            id="unknown-operation",
        ),
    ],
)
@pytest.mark.parametrize("accept", [APPLICATION_JSON, GRAPHQL_RESPONSE_JSON])
async def test_malformed_post(
    client: httpx.AsyncClient, content: str, message: str, accept: str
) -> None:
    response = await post(client, content, accept=accept)
    assert_request_error(response, 400, message)
    assert media_type(response) == accept


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "`query` parameter (a GraphQL document) is missing"),
        ({"query": "{ me { id } }", "variables": "{nope"}, "must be JSON"),
        ({"query": "{ me { id } }", "variables": "[1]"}, "`variables` parameter must be an object"),
    ],
)
async def test_malformed_get(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await client.get("/graphql", params=params, headers={"accept": APPLICATION_JSON})
    assert_request_error(response, 400, message)


NUL_IN_A_VARIABLE = (
    '{"query": "query($u: String!) { user(username: $u) { id } }",'
    ' "variables": {"u": "ann\\u0000"}}'
)
NUL_IN_A_LITERAL = '{"query": "{ user(username: \\"ann\\\\u0000\\") { id } }"}'


@pytest.mark.parametrize(
    ("accept", "status"), [(APPLICATION_JSON, 200), (GRAPHQL_RESPONSE_JSON, 400)]
)
@pytest.mark.parametrize(
    "content", [NUL_IN_A_VARIABLE, NUL_IN_A_LITERAL], ids=["variable", "literal"]
)
async def test_nul_in_a_variable_is_bad_user_input_as_in_a_literal(
    client: httpx.AsyncClient, content: str, accept: str, status: int
) -> None:
    response = await post(client, content, accept=accept)
    assert response.status_code == status
    assert media_type(response) == accept
    body = response.json()
    assert "data" not in body  # refused before execution
    assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"]
    assert "NUL character" in body["errors"][0]["message"]


async def test_nul_in_a_get_variable_is_bad_user_input(client: httpx.AsyncClient) -> None:
    params = {
        "query": "query($u: String!) { user(username: $u) { id } }",
        "variables": '{"u": "a\\u0000"}',
    }
    response = await client.get("/graphql", params=params, headers={"accept": APPLICATION_JSON})
    assert response.status_code == 200
    assert [error["extensions"]["code"] for error in response.json()["errors"]] == [
        "BAD_USER_INPUT"
    ]


async def test_a_surrogate_pair_is_one_character(client: httpx.AsyncClient) -> None:
    content = (
        '{"query": "query($q: String!) { __type(name: $q) { name } }",'
        ' "variables": {"q": "\\ud83d\\ude00"}}'
    )
    response = await post(client, content, accept=APPLICATION_JSON)
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": None}}


async def test_null_optional_parameters_are_allowed(client: httpx.AsyncClient) -> None:
    payload = {**TYPENAME, "variables": None, "operationName": None, "extensions": None}
    response = await post(client, json.dumps(payload), accept=GRAPHQL_RESPONSE_JSON)
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


# --- Methods and content types: mutations only as POST with a JSON body ------------------------


async def test_mutation_over_get_is_405_and_does_nothing(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    response = await client.get("/graphql", params={"query": REGISTER_MALLORY})
    assert_request_error(response, 405, "Mutations must be sent with POST")
    assert response.headers["allow"] == "POST"
    assert await user_count(app) == 0


async def test_queries_over_get_are_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params=TYPENAME)
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/graphql", json=TYPENAME)
    assert_request_error(response, 405, "GET and POST")
    assert response.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/graphql",
        "application/jsonx",
        f"{APPLICATION_JSON}; charset=latin-1",
    ],
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    response = await post(client, json.dumps(TYPENAME), content_type=content_type)
    assert_request_error(response, 415, f"The request body must be {APPLICATION_JSON}")


@pytest.mark.parametrize(
    "content_type", [f"{APPLICATION_JSON}; charset=utf-8", "Application/JSON; Charset=UTF-8"]
)
async def test_json_with_utf8_charset(client: httpx.AsyncClient, content_type: str) -> None:
    payload = {"query": '{ __type(name: "Run🏃Swim🏊") { name } }'}
    response = await post(client, json.dumps(payload).encode(), content_type=content_type)
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": None}}


async def test_multipart_uploads_are_off(client: httpx.AsyncClient, app: Starlette) -> None:
    # The GraphQL multipart request spec (file uploads) is not accepted at all.
    operations = {"query": REGISTER_MALLORY, "variables": {}}
    response = await client.post(
        "/graphql",
        data={"operations": json.dumps(operations), "map": "{}"},
        files={"0": ("a.txt", b"x", "text/plain")},
    )
    assert_request_error(response, 415, "multipart/form-data")
    assert await user_count(app) == 0


async def test_a_cross_site_form_cannot_register(
    client: httpx.AsyncClient, app: Starlette, gql: GraphQL
) -> None:
    """What an HTML form on another site can send with the user's cookies: no mutation runs."""
    origin = {"origin": "https://evil.example"}
    urlencoded = await client.post("/graphql", data={"query": REGISTER_MALLORY}, headers=origin)
    assert_request_error(urlencoded, 415, "application/x-www-form-urlencoded")
    # <form enctype="text/plain"> can make the body look like JSON, but not the content type.
    text = await client.post(
        "/graphql",
        content=json.dumps({"query": REGISTER_MALLORY}),
        headers={**origin, "content-type": "text/plain"},
    )
    assert_request_error(text, 415, "text/plain")
    assert await user_count(app) == 0
    # The same mutation as JSON works: the refusals above were about how it was sent.
    await gql.ok(REGISTER_MALLORY)
    assert await user_count(app) == 1
