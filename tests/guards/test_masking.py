"""Top-level GraphQL errors over HTTP: codes, and the masking of internal faults."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import httpx
import pytest

from tests.client import Account, GraphQL
from tests.helpers import SAFE_REQUEST_ID
from usergraph.logs import RequestIdFilter
from usergraph.services import users as user_service

SECRET = "boom-secret"


async def explode(**_kwargs: Any) -> NoReturn:
    raise RuntimeError(SECRET)


def internal_error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR
        and record.exc_info is not None
        and isinstance(record.exc_info[1], RuntimeError)
        and str(record.exc_info[1]) == SECRET
    ]


def assert_masked(response: httpx.Response, path: list[str]) -> dict[str, Any]:
    assert SECRET not in response.text
    body: dict[str, Any] = response.json()
    [error] = body["errors"]
    assert error["message"] == "Internal server error"
    assert error["path"] == path
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert "RuntimeError" not in response.text
    return body


async def admin_with_failing_users(
    gql: GraphQL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Account:
    """An admin, while the users service fails and error logs are captured with request ids."""
    admin = await gql.admin()
    monkeypatch.setattr(user_service, "list_users", explode)
    caplog.set_level(logging.ERROR)
    caplog.handler.addFilter(RequestIdFilter())
    return admin


async def test_internal_error_in_users_is_masked_and_logged(
    gql: GraphQL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await admin_with_failing_users(gql, monkeypatch, caplog)

    response = await gql.post("{ users { totalCount } }", token=admin.access_token)

    body = assert_masked(response, ["users"])
    assert body["data"] is None
    request_id = response.headers["x-request-id"]
    assert SAFE_REQUEST_ID.fullmatch(request_id)
    [record] = internal_error_records(caplog)
    assert record.levelno == logging.ERROR
    # The log line carries the same request id as the response, and the original traceback.
    assert getattr(record, "request_id", None) == request_id
    assert record.exc_info is not None
    assert record.exc_info[2] is not None
    assert SECRET in caplog.text
    assert "Traceback" in caplog.text
    assert "explode" in caplog.text


async def test_internal_error_in_user_by_username_is_masked(
    gql: GraphQL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await gql.register("ann")
    # The resolver calls through its module reference to the service: patch it there.
    monkeypatch.setattr("usergraph.resolvers.users.user_service.get_user_by_username", explode)
    caplog.set_level(logging.ERROR)

    response = await gql.post(
        '{ me { username } user(username: "ann") { id } }', token=ann.access_token
    )

    body = assert_masked(response, ["user"])
    # Only the failing field is lost; its siblings still answer.
    assert body["data"] == {"me": {"username": "ann"}, "user": None}
    assert len(internal_error_records(caplog)) == 1


async def test_internal_error_uses_the_client_request_id(
    gql: GraphQL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await admin_with_failing_users(gql, monkeypatch, caplog)

    response = await gql.post(
        "{ users { totalCount } }",
        token=admin.access_token,
        headers={"x-request-id": "abc12345-req"},
    )

    assert response.headers["x-request-id"] == "abc12345-req"
    body = assert_masked(response, ["users"])
    assert body["errors"][0]["extensions"]["requestId"] == "abc12345-req"
    [record] = internal_error_records(caplog)
    assert getattr(record, "request_id", None) == "abc12345-req"


async def test_syntax_error_is_not_masked(gql: GraphQL) -> None:
    response = await gql.post("{ me { id ")
    body = response.json()
    [error] = body["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert error["message"].startswith("Syntax Error")
    assert "data" not in body  # refused before execution: no data entry at all


async def test_unknown_field_is_a_validation_error(gql: GraphQL) -> None:
    response = await gql.post("{ me { id passwordHash } }")
    body = response.json()
    [error] = body["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "passwordHash" in error["message"]
    assert "data" not in body  # refused before execution: no data entry at all


async def test_unknown_argument_is_a_validation_error(gql: GraphQL) -> None:
    response = await gql.post("{ users(offset: 10) { totalCount } }")
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($first: Int) { users(first: $first) { totalCount } }", {"first": "ten"}),
        ("query($id: ID!) { node(id: $id) { id } }", {}),
        ("query($id: ID!) { node(id: $id) { id } }", {"id": {"nested": 1}}),
        (
            "query($o: UserOrder) { users(orderBy: $o) { totalCount } }",
            {"o": {"field": "EMAIL", "direction": "ASC"}},
        ),
    ],
    ids=["int-as-string", "missing-required", "object-as-id", "unknown-enum-value"],
)
async def test_variable_of_the_wrong_type_is_bad_user_input(
    gql: GraphQL, query: str, variables: dict[str, Any]
) -> None:
    response = await gql.post(query, variables)
    body = response.json()
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["message"].startswith("Variable ")
    assert "data" not in body  # refused before execution: no data entry at all


async def test_errors_without_a_cause_are_not_masked(gql: GraphQL) -> None:
    """Expected request errors keep their message (nothing secret in them)."""
    response = await gql.post("{ users { totalCount } }")
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["message"] != "Internal server error"
    assert "requestId" not in error["extensions"]


async def test_input_errors_do_not_echo_secrets(
    gql: GraphQL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cases = [
        (
            "mutation($i: LoginInput!) { login(input: $i) { userErrors { code } } }",
            {"i": {"login": "ann", "password": "Sup3rSecret-pw", "remember": True}},
            "Sup3rSecret-pw",
        ),
        (
            "mutation($i: RefreshInput!) { refresh(input: $i) { userErrors { code } } }",
            {"i": {"refresh_token": "ugr_leaked-token-value"}},
            "ugr_leaked-token-value",
        ),
        (
            'mutation { login(input: {login: "ann", password: "Inline-Secret-1", x: 1}) '
            "{ userErrors { code } } }",
            None,
            "Inline-Secret-1",
        ),
    ]
    for query, variables, secret in cases:
        response = await gql.post(query, variables)
        assert secret not in response.text
        assert response.json()["errors"][0]["extensions"]["code"] in (
            "BAD_USER_INPUT",
            "GRAPHQL_VALIDATION_FAILED",
        )
    assert not any(
        secret in record.getMessage() for record in caplog.records for *_, secret in cases
    )


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        ("query($q: String) { __typename }", {}, "GRAPHQL_VALIDATION_FAILED"),  # never used
        ("{ user(username: $u) { id } }", {}, "GRAPHQL_VALIDATION_FAILED"),  # not defined
        ("query($u: String!) { user(username: $u) { id } }", {}, "BAD_USER_INPUT"),
        ("query($u: String!) { user(username: $u) { id } }", {"u": 7}, "BAD_USER_INPUT"),
    ],
    ids=["unused", "undefined", "missing-value", "wrong-type"],
)
async def test_variable_errors_tell_document_from_values(
    gql: GraphQL, query: str, variables: dict[str, Any], code: str
) -> None:
    body = await gql(query, variables)
    assert [error["extensions"]["code"] for error in body["errors"]] == [code]


@pytest.mark.parametrize(
    "query",
    [
        "{ " + " ".join(["__typename"] * 710) + " }",  # within the 2,000-token limit
        "{ me { " + " ".join(["id"] * 900) + " } }",
    ],
    ids=["root", "nested"],
)
async def test_validation_that_gives_up_is_query_too_complex(gql: GraphQL, query: str) -> None:
    # graphql-core's overlapping-fields rule stops comparing past its budget ("Validation
    # aborted."): that is a limit, and it is named like ours.
    body = await gql(query)
    assert "data" not in body
    [error] = body["errors"]
    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "limit": "validation",
        "maximum": 500_000,
    }
    assert error["message"] == "The query is too complex: too much work to validate."


async def test_many_different_fields_still_validate(gql: GraphQL) -> None:
    # Far below the budget: distinct sibling fields compare quickly and the query runs.
    body = await gql("{ " + " ".join(f"a{i}: __typename" for i in range(15)) + " }")
    assert body["data"]["a0"] == "Query" and "errors" not in body
