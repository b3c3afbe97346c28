"""Persisted queries and trusted documents (usergraph/guards/documents.py), and how
usergraph/http.py answers them; also the response encoder (orjson, json.dumps for what it
refuses).

Unit: DocumentCache (least recently used out, bounded in characters), TrustedDocuments.read
(Apollo's manifest, an object of id -> document, and every file it refuses), Documents.named.
Over HTTP (tests.client): automatic persisted queries by POST and GET, which documents are kept,
refusals and their status per media type, APQ turned off, the cache's bound and that it is per
process; trusted documents by hash and by text, and start-up refusing one that does not run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import strawberry
from sqlalchemy import func, select
from starlette.applications import Starlette

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.environment import make_settings
from usergraph.app import create_app
from usergraph.db.models import User
from usergraph.guards.documents import (
    NOT_FOUND_MESSAGE,
    DocumentCache,
    DocumentRefused,
    Documents,
    Named,
    TrustedDocuments,
    sha256_of,
)
from usergraph.http import APPLICATION_JSON, GRAPHQL_RESPONSE_JSON, GraphQLApp
from usergraph.runtime import documents
from usergraph.schema.errors import ErrorCode

TYPENAME = "{ __typename }"
BY_USERNAME = "query ByUsername($username: String!) { user(username: $username) { username } }"
TWO_OPERATIONS = "query Typename { __typename } query Me { me { username } }"
UNVALIDATED = "{ me { passwordHash } }"
UNPARSED = "{ me { id "
REGISTER = """mutation Register($input: RegisterInput!) { register(input: $input) {
  accessToken user { username displayName } userErrors { code } } }"""
NO_STORE = "private, no-cache, must-revalidate"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(document: str | None = None, *, digest: str | None = None) -> dict[str, Any]:
    """The extensions of an APQ request for document (or for a given hash)."""
    digest = digest if digest is not None else sha256(document or "")
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


def registration(username: str, display_name: str | None = None) -> dict[str, Any]:
    account = {"username": username, "email": f"{username}@example.com"}
    return {"input": {**account, "password": DEFAULT_PASSWORD, "displayName": display_name}}


async def send(
    client: httpx.AsyncClient,
    *,
    query: str | None = None,
    extensions: Any = None,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
    accept: str | None = APPLICATION_JSON,
    token: str | None = None,
    method: str = "POST",
) -> httpx.Response:
    """A GraphQL request by POST (JSON body) or GET (query parameters, JSON-encoded)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    params: dict[str, Any] = {}
    if query is not None:
        params["query"] = query
    if extensions is not None:
        params["extensions"] = extensions
    if variables is not None:
        params["variables"] = variables
    if operation_name is not None:
        params["operationName"] = operation_name
    request = (
        client.build_request("POST", "/graphql", json=params, headers=headers)
        if method == "POST"
        else client.build_request(
            "GET",
            "/graphql",
            params={k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()},
            headers=headers,
        )
    )
    if accept is None:
        del request.headers["accept"]
    else:
        request.headers["accept"] = accept
    return await client.send(request)


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0]


def refused(response: httpx.Response, status: int, code: str) -> str:
    """A request refused before execution: that status, one error with that code, no data;
    returns the error's message."""
    assert response.status_code == status, response.text
    assert media_type(response) in (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON)
    body = response.json()
    assert set(body) == {"errors"}, body
    [error] = body["errors"]
    assert error["extensions"] == {"code": code}, error
    message: str = error["message"]
    return message


def not_found(response: httpx.Response, status: int = 200) -> None:
    assert refused(response, status, "PERSISTED_QUERY_NOT_FOUND") == NOT_FOUND_MESSAGE
    assert response.headers["cache-control"] == NO_STORE


def data(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]
    return result


async def user_count(app: Starlette) -> int:
    async with app.state.runtime.db.sessionmaker() as session:
        count: int = await session.scalar(select(func.count()).select_from(User))
        return count


# --- DocumentCache -------------------------------------------------------------------------


def test_cache_keeps_documents_by_hash() -> None:
    cache = DocumentCache(100)
    assert cache.get("a" * 64) is None
    cache.put("a" * 64, TYPENAME)
    assert cache.get("a" * 64) == TYPENAME
    assert len(cache) == 1


def test_cache_evicts_the_least_recently_used_first() -> None:
    cache = DocumentCache(30)
    cache.put("a", "a" * 10)
    cache.put("b", "b" * 10)
    cache.put("c", "c" * 10)
    assert cache.get("a") == "a" * 10  # a is now the most recently used
    cache.put("d", "d" * 10)  # 40 characters: b goes
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == ["a" * 10, "c" * 10, "d" * 10]
    assert len(cache) == 3


def test_cache_evicts_as_many_as_a_large_document_needs() -> None:
    cache = DocumentCache(30)
    for key in "abc":
        cache.put(key, key * 10)
    cache.put("big", "x" * 25)
    assert [cache.get(k) for k in "abc"] == [None, None, None]
    assert cache.get("big") == "x" * 25
    cache.put("e", "e" * 5)  # 30: fits beside it
    assert cache.get("big") == "x" * 25 and cache.get("e") == "e" * 5


def test_cache_never_keeps_a_document_longer_than_its_budget() -> None:
    cache = DocumentCache(10)
    cache.put("a", "a" * 5)
    cache.put("long", "l" * 11)
    assert cache.get("long") is None
    assert cache.get("a") == "a" * 5  # and nothing was evicted for it
    cache.put("exact", "e" * 10)  # exactly the budget: kept, alone
    assert cache.get("exact") == "e" * 10
    assert cache.get("a") is None
    assert len(cache) == 1


def test_cache_counts_a_document_put_twice_once() -> None:
    cache = DocumentCache(20)
    cache.put("a", "a" * 10)
    cache.put("a", "a" * 10)
    cache.put("b", "b" * 10)  # 20 characters if a counted once
    assert cache.get("a") == "a" * 10 and cache.get("b") == "b" * 10


def test_cache_with_no_budget_keeps_nothing() -> None:
    cache = DocumentCache(0)
    cache.put("a", TYPENAME)
    assert cache.get("a") is None
    assert len(cache) == 0


# --- TrustedDocuments.read -------------------------------------------------------------------


def manifest(*documents: str, **extra: Any) -> dict[str, Any]:
    operations = [
        {"id": sha256(body), "name": f"Op{i}", "type": "query", "body": body}
        for i, body in enumerate(documents)
    ]
    return {"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations}


def write(tmp_path: Path, content: Any, name: str = "trusted.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_reads_an_apollo_manifest(tmp_path: Path) -> None:
    trusted = TrustedDocuments.read(write(tmp_path, manifest(TYPENAME, BY_USERNAME)))
    assert trusted.documents == {sha256(TYPENAME): TYPENAME, sha256(BY_USERNAME): BY_USERNAME}


def test_reads_an_object_of_documents_with_or_without_the_sha256_prefix(tmp_path: Path) -> None:
    content = {sha256(TYPENAME): TYPENAME, f"sha256:{sha256(BY_USERNAME)}": BY_USERNAME}
    trusted = TrustedDocuments.read(write(tmp_path, content))
    assert trusted.documents == {sha256(TYPENAME): TYPENAME, sha256(BY_USERNAME): BY_USERNAME}


def test_reads_an_empty_object(tmp_path: Path) -> None:
    assert TrustedDocuments.read(write(tmp_path, {})).documents == {}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param("{ not json", "", id="not-json"),
        pytest.param([TYPENAME], "neither an Apollo manifest", id="a-list"),
        pytest.param('"text"', "neither an Apollo manifest", id="a-string"),
        pytest.param(
            {"format": "apollo-persisted-query-manifest", "operations": {}},
            "`operations` is not a list",
            id="operations-not-a-list",
        ),
        pytest.param(
            {"format": "apollo-persisted-query-manifest", "operations": [TYPENAME]},
            "an operation is not an object",
            id="operation-not-an-object",
        ),
        pytest.param(
            {"format": "apollo-persisted-query-manifest", "operations": [{"body": TYPENAME}]},
            "must be strings",
            id="operation-without-id",
        ),
        pytest.param(
            {
                "format": "apollo-persisted-query-manifest",
                "operations": [{"id": sha256(TYPENAME), "body": None}],
            },
            "must be strings",
            id="operation-without-body",
        ),
        pytest.param({sha256(TYPENAME): 1}, "must be strings", id="document-not-a-string"),
        pytest.param({sha256(TYPENAME): BY_USERNAME}, "is not the SHA-256", id="wrong-id"),
        pytest.param(
            {sha256(TYPENAME).upper(): TYPENAME}, "is not the SHA-256", id="upper-case-id"
        ),
        pytest.param({"Op0": TYPENAME}, "is not the SHA-256", id="a-name-for-id"),
        pytest.param(
            {
                "format": "apollo-persisted-query-manifest",
                "operations": [{"id": sha256(TYPENAME), "body": TYPENAME + " "}],
            },
            "is not the SHA-256",
            id="manifest-wrong-id",
        ),
    ],
)
def test_a_file_it_cannot_use_is_a_value_error(tmp_path: Path, content: Any, problem: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match="trusted documents") as raised:
        TrustedDocuments.read(path)
    assert problem in str(raised.value)
    assert str(path) in str(raised.value)


def test_a_missing_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trusted documents"):
        TrustedDocuments.read(tmp_path / "nowhere.json")


def test_a_file_that_is_not_utf8_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ValueError, match="trusted documents"):
        TrustedDocuments.read(path)


def test_a_bad_file_stops_the_app_from_being_built(database_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, {sha256(TYPENAME): BY_USERNAME})
    with pytest.raises(ValueError, match="is not the SHA-256"):
        create_app(make_settings(database_url, tmp_path, trusted_documents=path))


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        pytest.param(UNVALIDATED, "passwordHash", id="validation"),
        pytest.param(UNPARSED, "Syntax Error", id="parse"),
    ],
)
def test_a_trusted_document_that_does_not_run_stops_the_start(
    database_url: str, tmp_path: Path, document: str, problem: str
) -> None:
    path = write(tmp_path, manifest(TYPENAME, document))
    with pytest.raises(RuntimeError) as raised:
        create_app(make_settings(database_url, tmp_path, trusted_documents=path))
    assert sha256(document) in str(raised.value)
    assert sha256(TYPENAME) not in str(raised.value)
    assert problem in str(raised.value)


# --- Settings ----------------------------------------------------------------------------------


def test_by_default_persisted_queries_are_on_and_every_document_runs(tmp_path: Path) -> None:
    settings = make_settings("sqlite+aiosqlite://", tmp_path)
    built = documents(settings)
    assert built.cache is not None and built.cache.max_chars == 4_000_000
    assert built.trusted is None


def test_the_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, manifest(TYPENAME))
    monkeypatch.setenv("USERGRAPH_PERSISTED_QUERIES", "false")
    monkeypatch.setenv("USERGRAPH_PERSISTED_QUERIES_CACHE_CHARS", "123")
    monkeypatch.setenv("USERGRAPH_TRUSTED_DOCUMENTS", str(path))
    settings = make_settings("sqlite+aiosqlite://", tmp_path)
    assert settings.persisted_queries_cache_chars == 123
    built = documents(settings)
    assert built.cache is None
    assert built.trusted is not None and built.trusted.documents == {sha256(TYPENAME): TYPENAME}


def test_a_negative_cache_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="persisted_queries_cache_chars"):
        make_settings("sqlite+aiosqlite://", tmp_path, persisted_queries_cache_chars=-1)


# --- Documents.named -------------------------------------------------------------------------


def test_named_without_a_hash_is_the_query_and_nothing_to_remember() -> None:
    documents = Documents(cache=DocumentCache(100))
    assert documents.named(TYPENAME, None) == Named(TYPENAME)
    assert documents.named(TYPENAME, {"other": 1}) == Named(TYPENAME)
    assert documents.named(None, None) is None


def test_named_with_hash_and_query_remembers_only_when_told() -> None:
    documents = Documents(cache=DocumentCache(100))
    assert documents.named(TYPENAME, persisted(TYPENAME)) == Named(TYPENAME, sha256(TYPENAME))
    with pytest.raises(DocumentRefused) as raised:
        documents.named(None, persisted(TYPENAME))  # not kept by named itself
    assert raised.value.code == ErrorCode.PERSISTED_QUERY_NOT_FOUND
    assert raised.value.status == 404
    documents.remember(sha256(TYPENAME), TYPENAME)
    assert documents.named(None, persisted(TYPENAME)) == Named(TYPENAME)


def test_sha256_of_is_lower_case_hex_of_utf8() -> None:
    assert sha256_of("{ é }") == hashlib.sha256("{ é }".encode()).hexdigest()
    assert sha256_of(TYPENAME) == sha256_of(TYPENAME).lower()


# --- Automatic persisted queries over HTTP ---------------------------------------------------


# Accept -> the status of PERSISTED_QUERY_NOT_FOUND: 200 unless graphql-response+json is chosen.
NOT_FOUND_STATUS = {
    None: 200,
    "*/*": 200,
    APPLICATION_JSON: 200,
    GRAPHQL_RESPONSE_JSON: 404,
    f"{GRAPHQL_RESPONSE_JSON}, {APPLICATION_JSON};q=0.9": 404,
}


async def test_an_unknown_hash_is_not_found(client: httpx.AsyncClient) -> None:
    for method in ("POST", "GET"):
        for accept, status in NOT_FOUND_STATUS.items():
            response = await send(
                client, extensions=persisted(TYPENAME), accept=accept, method=method
            )
            not_found(response, status)
            expected = GRAPHQL_RESPONSE_JSON if status == 404 else APPLICATION_JSON
            assert media_type(response) == expected, (method, accept)


async def test_a_query_sent_with_its_hash_runs_and_is_kept(client: httpx.AsyncClient) -> None:
    not_found(await send(client, extensions=persisted(TYPENAME)))
    first = await send(client, query=TYPENAME, extensions=persisted(TYPENAME))
    assert data(first) == {"__typename": "Query"}
    again = await send(client, extensions=persisted(TYPENAME))
    assert data(again) == {"__typename": "Query"}
    assert again.headers.get("cache-control") != NO_STORE  # only the miss is marked so


async def test_a_kept_document_runs_with_the_requests_variables_and_operation(
    gql: GraphQL, client: httpx.AsyncClient
) -> None:
    ann, bob = await gql.register("ann"), await gql.register("bob")
    token = ann.access_token
    variables = {"username": "ann"}
    response = await send(
        client, query=BY_USERNAME, extensions=persisted(BY_USERNAME), variables=variables,
        token=token,
    )  # fmt: skip
    assert data(response) == {"user": {"username": "ann"}}
    by_hash = await send(
        client, extensions=persisted(BY_USERNAME), variables={"username": bob.username},
        token=token,
    )  # fmt: skip
    assert data(by_hash) == {"user": {"username": "bob"}}

    hashed = persisted(TWO_OPERATIONS)
    first = await send(
        client, query=TWO_OPERATIONS, extensions=hashed, operation_name="Typename", token=token
    )
    assert data(first) == {"__typename": "Query"}
    me = await send(client, extensions=hashed, operation_name="Me", token=token)
    assert data(me) == {"me": {"username": "ann"}}
    for method in ("POST", "GET"):
        typename = await send(
            client, extensions=hashed, operation_name="Typename", token=token, method=method
        )
        assert data(typename) == {"__typename": "Query"}


async def test_a_kept_document_runs_over_get_with_variables(
    gql: GraphQL, client: httpx.AsyncClient
) -> None:
    ann = await gql.register("ann")
    hashed = persisted(BY_USERNAME)
    variables = {"username": "ann"}
    not_found(await send(client, extensions=hashed, variables=variables, method="GET"))
    token = ann.access_token
    data(await send(client, query=BY_USERNAME, extensions=hashed, variables=variables, token=token))
    response = await send(
        client, extensions=hashed, variables=variables, token=token, method="GET",
        accept="*/*",
    )  # fmt: skip
    assert media_type(response) == APPLICATION_JSON
    assert data(response) == {"user": {"username": "ann"}}


@pytest.mark.parametrize("accept", ["*/*", BROWSER_ACCEPT, None])
async def test_a_get_with_only_extensions_is_not_graphiql(
    client: httpx.AsyncClient, accept: str | None
) -> None:
    data(await send(client, query=TYPENAME, extensions=persisted(TYPENAME)))
    response = await send(client, extensions=persisted(TYPENAME), accept=accept, method="GET")
    assert media_type(response) == APPLICATION_JSON
    assert data(response) == {"__typename": "Query"}
    unknown = await send(client, extensions=persisted(digest="0" * 64), accept=accept, method="GET")
    not_found(unknown)


async def test_a_get_with_only_extensions_and_accept_html_is_refused_not_graphiql(
    client: httpx.AsyncClient,
) -> None:
    response = await send(client, extensions=persisted(TYPENAME), accept="text/html", method="GET")
    refused(response, 406, "BAD_REQUEST")
    # Without extensions the same request gets the page.
    page = await client.get("/graphql", headers={"accept": BROWSER_ACCEPT})
    assert media_type(page) == "text/html"


async def test_a_kept_mutation_is_still_refused_over_get(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    hashed = persisted(REGISTER)
    response = await send(client, query=REGISTER, extensions=hashed, variables=registration("ann"))
    assert data(response)["register"]["userErrors"] == []
    by_get = await send(client, extensions=hashed, variables=registration("bob"), method="GET")
    assert refused(by_get, 405, "BAD_REQUEST")
    assert by_get.headers["allow"] == "POST"
    assert await user_count(app) == 1
    by_post = await send(client, extensions=hashed, variables=registration("bob"))
    assert data(by_post)["register"]["userErrors"] == []
    assert await user_count(app) == 2


async def test_a_hash_that_is_not_the_querys_is_refused_and_nothing_kept(
    client: httpx.AsyncClient,
) -> None:
    other = sha256("{ me { id } }")
    for accept in (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON):
        response = await send(
            client, query=TYPENAME, extensions=persisted(digest=other), accept=accept
        )
        assert "SHA-256" in refused(response, 400, "BAD_REQUEST")
    not_found(await send(client, extensions=persisted(digest=other)))
    not_found(await send(client, extensions=persisted(TYPENAME)))


@pytest.mark.parametrize(
    ("document", "code"),
    [(UNVALIDATED, "GRAPHQL_VALIDATION_FAILED"), (UNPARSED, "GRAPHQL_PARSE_FAILED")],
)
async def test_a_document_that_fails_before_execution_is_not_kept(
    client: httpx.AsyncClient, document: str, code: str
) -> None:
    response = await send(client, query=document, extensions=persisted(document))
    assert response.status_code == 200
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == code
    not_found(await send(client, extensions=persisted(document)))


async def test_a_document_whose_fields_fail_while_running_is_kept(
    client: httpx.AsyncClient,
) -> None:
    # `user` requires sign-in: an error of the field, raised while executing.
    variables = {"username": "nobody"}
    response = await send(
        client, query=BY_USERNAME, extensions=persisted(BY_USERNAME), variables=variables
    )
    body = response.json()
    assert body["data"] == {"user": None}
    assert body["errors"][0]["path"] == ["user"]
    again = (await send(client, extensions=persisted(BY_USERNAME), variables=variables)).json()
    assert again["data"] == {"user": None}  # it ran again, from the kept document
    assert [error["extensions"]["code"] for error in again["errors"]] == [
        error["extensions"]["code"] for error in body["errors"]
    ]


MALFORMED = [
    "abc",
    [1, sha256(TYPENAME)],
    1,
    {"sha256Hash": sha256(TYPENAME)},
    {"version": 2, "sha256Hash": sha256(TYPENAME)},
    {"version": "1", "sha256Hash": sha256(TYPENAME)},
    {"version": 1},
    {"version": 1, "sha256Hash": None},
    {"version": 1, "sha256Hash": sha256(TYPENAME).upper()},
    {"version": 1, "sha256Hash": sha256(TYPENAME)[:-1]},
    {"version": 1, "sha256Hash": sha256(TYPENAME) + "0"},
    {"version": 1, "sha256Hash": "g" * 64},
    {"version": 1, "sha256Hash": sha256(TYPENAME) + "\n"},
    {"version": 1, "sha256Hash": int("9" * 64)},
]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_malformed_persisted_query_is_a_bad_request(
    client: httpx.AsyncClient, method: str
) -> None:
    for persisted_query in MALFORMED:
        for query in (None, TYPENAME):
            response = await send(
                client, query=query, extensions={"persistedQuery": persisted_query},
                method=method,
            )  # fmt: skip
            message = refused(response, 400, "BAD_REQUEST")
            assert "persistedQuery" in message, (persisted_query, query, message)


async def test_persisted_query_version_true_is_a_bad_request(client: httpx.AsyncClient) -> None:
    extensions = {"persistedQuery": {"version": True, "sha256Hash": sha256(TYPENAME)}}
    response = await send(client, query=TYPENAME, extensions=extensions)
    assert "persistedQuery" in refused(response, 400, "BAD_REQUEST")


async def test_a_null_persisted_query_names_no_document(client: httpx.AsyncClient) -> None:
    # Null is taken for absent: with a query the query runs, without one nothing does.
    extensions = {"persistedQuery": None}
    assert data(await send(client, query=TYPENAME, extensions=extensions)) == {
        "__typename": "Query"
    }
    response = await send(client, extensions=extensions)
    assert "`query`" in refused(response, 400, "BAD_REQUEST")


async def test_with_persisted_queries_off_a_hash_is_not_supported(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, persisted_queries=False) as gql:
        assert gql.app.state.runtime.documents.cache is None
        for method in ("POST", "GET"):
            for query in (None, TYPENAME):
                for accept in (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON):
                    response = await send(
                        gql.client, query=query, extensions=persisted(TYPENAME), accept=accept,
                        method=method,
                    )  # fmt: skip
                    refused(response, 400, "PERSISTED_QUERY_NOT_SUPPORTED")
        # Plain queries run as ever, with other extensions too.
        assert await gql.ok(TYPENAME) == {"__typename": "Query"}
        response = await send(gql.client, query=TYPENAME, extensions={"tracing": True})
        assert data(response) == {"__typename": "Query"}


async def test_the_cache_is_bounded_in_characters(
    database_url: str, tmp_path: Path, app: Starlette
) -> None:
    first = "query First { __typename }"
    second = "query Other { __typename }"
    longer = "query Longer { __typename }"
    assert len(first) == len(second) < len(longer)
    async with serving(database_url, tmp_path, persisted_queries_cache_chars=len(first)) as gql:
        for document in (first, second, longer):
            response = await send(gql.client, query=document, extensions=persisted(document))
            assert data(response) == {"__typename": "Query"}
        # second pushed first out; longer ran but was never kept, and evicted nothing.
        not_found(await send(gql.client, extensions=persisted(first)))
        not_found(await send(gql.client, extensions=persisted(longer)))
        kept = await send(gql.client, extensions=persisted(second))
        assert data(kept) == {"__typename": "Query"}


async def test_the_cache_is_per_process(database_url: str, tmp_path: Path, app: Starlette) -> None:
    document = "query PerProcess { __typename }"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    async with (
        serving(database_url, tmp_path / "one") as one,
        serving(database_url, tmp_path / "two") as two,
    ):
        data(await send(one.client, query=document, extensions=persisted(document)))
        assert data(await send(one.client, extensions=persisted(document))) == {
            "__typename": "Query"
        }
        not_found(await send(two.client, extensions=persisted(document)))


# --- Trusted documents over HTTP -------------------------------------------------------------

TRUSTED = [TYPENAME, BY_USERNAME, REGISTER]
UNTRUSTED_REGISTER = REGISTER.replace("Register(", "Sneaky(")


@pytest.fixture(params=["manifest", "object"])
async def trusted(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path, app: Starlette
) -> AsyncIterator[GraphQL]:
    """A client of an app that runs only TRUSTED (both kinds of file); shares app's database."""
    content: Any = (
        manifest(*TRUSTED)
        if request.param == "manifest"
        else {f"sha256:{sha256(doc)}": doc for doc in TRUSTED}
    )
    path = write(tmp_path, content)
    async with serving(database_url, tmp_path, trusted_documents=path) as gql:
        yield gql


async def test_a_trusted_document_runs_by_hash(trusted: GraphQL) -> None:
    for method in ("POST", "GET"):
        response = await send(trusted.client, extensions=persisted(TYPENAME), method=method)
        assert data(response) == {"__typename": "Query"}
    variables = registration("ann")
    response = await send(trusted.client, extensions=persisted(REGISTER), variables=variables)
    payload = data(response)["register"]
    assert payload["user"]["username"] == "ann"
    token = payload["accessToken"]
    response = await send(
        trusted.client, extensions=persisted(BY_USERNAME), variables={"username": "ann"},
        token=token,
    )  # fmt: skip
    assert data(response) == {"user": {"username": "ann"}}


async def test_a_trusted_document_runs_by_text(trusted: GraphQL) -> None:
    assert await trusted.ok(TYPENAME) == {"__typename": "Query"}
    response = await send(trusted.client, query=TYPENAME, method="GET")
    assert data(response) == {"__typename": "Query"}
    response = await send(trusted.client, query=TYPENAME, extensions=persisted(TYPENAME))
    assert data(response) == {"__typename": "Query"}


async def test_an_unknown_hash_with_trusted_documents_is_not_found(trusted: GraphQL) -> None:
    for method in ("POST", "GET"):
        for accept, status in NOT_FOUND_STATUS.items():
            response = await send(
                trusted.client, extensions=persisted(digest="0" * 64), accept=accept,
                method=method,
            )  # fmt: skip
            not_found(response, status)


async def test_an_untrusted_document_is_refused_and_does_not_run(trusted: GraphQL) -> None:
    for accept in (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON):
        for extensions in (None, persisted(UNTRUSTED_REGISTER)):
            response = await send(
                trusted.client, query=UNTRUSTED_REGISTER, variables=registration("mallory"),
                extensions=extensions, accept=accept,
            )  # fmt: skip
            refused(response, 403, "DOCUMENT_NOT_TRUSTED")
        # Not the introspection GraphiQL sends, nor a trusted document spaced otherwise.
        for document in ("{ __schema { queryType { name } } }", TYPENAME.replace(" ", "")):
            response = await send(trusted.client, query=document, accept=accept)
            refused(response, 403, "DOCUMENT_NOT_TRUSTED")
    assert await user_count(trusted.app) == 0
    # Nor does a hash it was sent with make it known.
    not_found(await send(trusted.client, extensions=persisted(UNTRUSTED_REGISTER)))


async def test_a_trusted_text_with_a_hash_that_is_not_its_own_is_a_bad_request(
    trusted: GraphQL,
) -> None:
    wrong = persisted(digest=sha256(BY_USERNAME))
    response = await send(trusted.client, query=TYPENAME, extensions=wrong)
    assert "SHA-256" in refused(response, 400, "BAD_REQUEST")
    untrusted = await send(trusted.client, query=UNTRUSTED_REGISTER, extensions=wrong)
    refused(untrusted, 400, "BAD_REQUEST")


async def test_trusted_documents_run_with_persisted_queries_off(
    database_url: str, tmp_path: Path, app: Starlette
) -> None:
    path = write(tmp_path, manifest(TYPENAME))
    async with serving(
        database_url, tmp_path, trusted_documents=path, persisted_queries=False
    ) as gql:
        response = await send(gql.client, extensions=persisted(TYPENAME))
        assert data(response) == {"__typename": "Query"}
        refused(await send(gql.client, query="{ me { id } }"), 403, "DOCUMENT_NOT_TRUSTED")


# --- Response encoding -----------------------------------------------------------------------


async def test_non_ascii_text_round_trips_as_utf8(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    name = "Zoë 雪"
    response = await send(client, query=REGISTER, variables=registration("zoe", name))
    assert data(response)["register"]["user"]["displayName"] == name
    assert name.encode() in response.content
    assert b"\\u" not in response.content
    response.content.decode("utf-8")


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def view() -> GraphQLApp:
    @strawberry.type
    class Query:
        ok: bool = True

    return GraphQLApp(strawberry.Schema(query=Query), documents=Documents(cache=None))


def test_encode_json_is_compact_utf8(view: GraphQLApp) -> None:
    encoded = view.encode_json({"data": {"name": "Zoë 雪", "n": [1, None, True]}})
    assert isinstance(encoded, bytes)
    assert encoded == '{"data":{"name":"Zoë 雪","n":[1,null,true]}}'.encode()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("lone \ud800 surrogate", id="lone-surrogate"),
        pytest.param(2**64, id="past-64-bits"),
        pytest.param(-(2**63) - 1, id="past-64-bits-negative"),
        pytest.param(nested_lists(300), id="deeper-than-255"),
    ],
)
def test_encode_json_falls_back_for_what_orjson_refuses(view: GraphQLApp, value: Any) -> None:
    encoded = view.encode_json({"data": {"value": value}})
    assert json.loads(encoded) == {"data": {"value": value}}
    text = encoded if isinstance(encoded, str) else encoded.decode()
    assert " " not in text.replace("lone \\ud800 surrogate", "")  # still compact
