"""Fuzzing the whole schema over HTTP: whatever a client sends, the answer is a GraphQL response.

Positive documents (valid queries and mutations with random argument values, from
hypothesis-graphql) and negative ones (schema violations, garbled documents, random text,
variables of the wrong shape, odd HTTP bodies) go through the app anonymously, with an
administrator's token, with an ordinary user's token and with a garbage token. Every answer must
have a status below 500, a JSON body that is a well-formed GraphQL response, and a code on every
error; INTERNAL_SERVER_ERROR (a masked exception) is a bug.

How Hypothesis meets the async fixtures: `@given` cannot wrap an anyio test that takes
function-scoped fixtures, and drawing with `.example()` is discouraged. Each test instead runs a
plain `@given` function in a worker thread (`anyio.to_thread.run_sync`); each example sends its
request back on the test's event loop with `anyio.from_thread.run`, where the `client` fixture and
the app's database pools live. Hypothesis therefore drives real requests, and a failure shrinks
to a small document with its variables, printed as the falsifying example.

Bounded and reproducible: a fixed number of examples per test, `derandomize=True` (the same
choices on every run; only values taken from the ids and tokens of the run differ), no deadline
and no example database (no .hypothesis directory). A failing run takes longer: shrinking sends
more requests.
"""

from __future__ import annotations

import base64
import functools
import json
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import graphql
import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, given, note
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis_graphql import Mode, from_schema

from tests.client import DEFAULT_PASSWORD, Account, GraphQL
from usergraph.schema import build_schema
from usergraph.schema.errors import ErrorCode

pytestmark = pytest.mark.slow

P = ParamSpec("P")
R = TypeVar("R")

SCHEMA = graphql.build_schema(build_schema().as_str())

# Examples per test, and per root field where a test takes each in turn (drawn from one
# strategy for all of them, Hypothesis favours a few fields and leaves others a handful).
# About 770 requests in all: under 40 s per database on a two-core machine.
EXAMPLES = 200
PER_FIELD = 15


def fuzz_settings(max_examples: int = EXAMPLES) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        # Shrinking re-sends requests, so a failure reports a small document; the explain
        # phase would re-send many more for little.
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=(
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ),
    )


@pytest.fixture(autouse=True, scope="module")
def hypothesis_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Even without an example database Hypothesis caches constants and Unicode tables on disk,
    # in ./.hypothesis unless told otherwise.
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


# --- What every response must be -------------------------------------------------------------

# Valid documents are never rejected as unparsable or invalid.
DOCUMENT_ERRORS = {ErrorCode.GRAPHQL_PARSE_FAILED.value, ErrorCode.GRAPHQL_VALIDATION_FAILED.value}


def check_response(
    response: httpx.Response, accept: str, *, valid_document: bool = False
) -> dict[str, Any]:
    """The body of a well-formed GraphQL response; fails on anything a client could not handle."""
    status = response.status_code
    where = f"HTTP {status}: {response.text[:2000]!r}"
    assert status < 500, where
    assert status == 200 or 400 <= status < 500, where
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    # The media type the client asked for (first in its Accept header), whatever went wrong.
    assert content_type == accept.split(",")[0].strip(), f"content-type {content_type}; {where}"
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(f"body is not JSON; {where}") from exc
    assert isinstance(body, dict), where
    assert set(body) <= {"data", "errors", "extensions"}, where
    assert "data" in body or "errors" in body, where
    data = body.get("data")
    assert data is None or isinstance(data, dict), where
    if status != 200 or data is None:
        assert body.get("errors"), f"no data and no errors; {where}"
    if "errors" in body:
        errors = body["errors"]
        assert isinstance(errors, list) and errors, where
        for error in errors:
            check_error(error, where)
            code = error["extensions"]["code"]
            assert code != ErrorCode.INTERNAL_SERVER_ERROR.value, f"internal error (a bug); {where}"
            if valid_document:
                assert code not in DOCUMENT_ERRORS, where
    return body


def check_error(error: Any, where: str) -> None:
    assert isinstance(error, dict), where
    assert isinstance(error.get("message"), str) and error["message"], where
    extensions = error.get("extensions")
    assert isinstance(extensions, dict), f"error without extensions; {where}"
    assert isinstance(extensions.get("code"), str) and extensions["code"], f"no code; {where}"
    for location in error.get("locations", []):
        assert isinstance(location, dict), where
        assert isinstance(location.get("line"), int), where
        assert isinstance(location.get("column"), int), where
    assert all(isinstance(step, str | int) for step in error.get("path") or []), where


# --- The client side: who sends, and how -----------------------------------------------------

VIEWERS = ("anonymous", "admin", "user", "garbage")
viewers = st.sampled_from(VIEWERS)
# Most clients ask for application/json; GraphQL-over-HTTP clients ask for the newer type.
accepts = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json",
        "application/graphql-response+json",
        "application/graphql-response+json, application/json;q=0.9",
    ]
)
garbage_tokens = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300),
    st.sampled_from(["null", "undefined", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "Bearer"]),
)


def dumps(value: Any) -> bytes:
    # ensure_ascii sends lone surrogates as \udXXX escapes (valid JSON text, an invalid str for
    # the server to meet); allow_nan sends NaN and Infinity, which Python's json.loads accepts.
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


@dataclass
class Fuzzer:
    """Sends requests as one of VIEWERS and keeps the administrator's token working."""

    gql: GraphQL
    admin: Account
    user: Account
    admin_token: str
    ids: list[str] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)
    sent: int = 0
    admins: int = 0
    stats: Counter[str] = field(default_factory=Counter)

    @classmethod
    async def start(cls, gql: GraphQL) -> Fuzzer:
        admin = await gql.admin("fuzzadmin")
        user = await gql.register("fuzzuser", display_name="Fuzz User")
        fuzzer = cls(gql=gql, admin=admin, user=user, admin_token=admin.access_token)
        page = await gql.ok(
            """{ users(first: 5) { edges { cursor node { id sessions { edges {
                 cursor node { id } } } } } } }""",
            token=admin.access_token,
        )
        for edge in page["users"]["edges"]:
            fuzzer.ids.append(edge["node"]["id"])
            fuzzer.cursors.append(edge["cursor"])
            for session in edge["node"]["sessions"]["edges"]:
                fuzzer.ids.append(session["node"]["id"])
                fuzzer.cursors.append(session["cursor"])
        fuzzer.strings = [
            admin.username,
            admin.email,
            user.username,
            user.email,
            DEFAULT_PASSWORD,
            user.refresh_token,
            "admin",
            *fuzzer.ids,
            *fuzzer.cursors,
        ]
        return fuzzer

    def token(self, viewer: str, garbage: str) -> str | None:
        return {
            "anonymous": None,
            "admin": self.admin_token,
            "user": self.user.access_token,
            "garbage": garbage,
        }[viewer]

    async def send(
        self,
        document: str,
        variables: Any = None,
        *,
        viewer: str = "anonymous",
        garbage: str = "",
        accept: str = "application/json",
        valid_document: bool = False,
    ) -> httpx.Response:
        payload: dict[str, Any] = {"query": document}
        if variables is not None:
            payload["variables"] = variables
        headers = {"accept": accept, "content-type": "application/json"}
        token = self.token(viewer, garbage)
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        self.sent += 1
        response = await self.gql.client.post("/graphql", content=dumps(payload), headers=headers)
        check_response(response, accept, valid_document=valid_document)
        if viewer == "admin" and "mutation" in document:
            await self.keep_admin()
        return response

    async def keep_admin(self) -> None:
        """A working administrator's token again, after logoutAll, setUserRoles and the like."""
        me = await self.gql.ok("{ me { roles { name } } }", token=self.admin_token)
        if me["me"] and {"name": "admin"} in me["me"]["roles"]:
            return
        login = await self.gql.login(self.admin.email)
        if login["accessToken"]:
            me = await self.gql.ok("{ me { roles { name } } }", token=login["accessToken"])
            if me["me"] and {"name": "admin"} in me["me"]["roles"]:
                self.admin_token = login["accessToken"]
                return
        self.admins += 1
        self.admin = await self.gql.admin(f"fuzzadmin{self.admins}")
        self.admin_token = self.admin.access_token


def observe(response: httpx.Response, stats: Counter[str]) -> None:
    """Count how far the examples got: statuses, error codes and answers with data."""
    body = response.json()
    stats[f"HTTP {response.status_code}"] += 1
    if any(value is not None for value in (body.get("data") or {}).values()):
        stats["some data"] += 1
    for code in {error["extensions"]["code"] for error in body.get("errors", [])}:
        stats[code] += 1


async def fuzz(fuzzer: Fuzzer, run: Callable[[], None], *, min_data: float = 0.0) -> None:
    """Run @given functions in a worker thread; their examples call back into this event loop.

    min_data: the share of responses that must carry some data, so that a fuzzer stopped at
    authentication, validation or the query limits does not pass unnoticed.
    """
    await anyio.to_thread.run_sync(run)
    assert fuzzer.sent > 0
    assert fuzzer.stats["some data"] >= min_data * fuzzer.sent, fuzzer.stats


def blocking(function: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """function, called from the worker thread, runs on the test's event loop."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return anyio.from_thread.run(functools.partial(function, *args, **kwargs))

    return call


# --- Values: random, nasty and known ---------------------------------------------------------

NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202eadmin",
    "\ufeff",
    "ß" * 3,
    "🙂" * 50,
    "%s%n%x",
    "'; DROP TABLE users; --",
    '" OR 1=1 --',
    "\\",
    "*",
    "%",
    "_",
    "null",
    "true",
    "-1",
    "9" * 40,
    "x" * 5000,
    "a@b",
    "user@example.com\x00",
    "\n\r\t",
]
nasty_text = st.one_of(st.text(), st.sampled_from(NASTY_STRINGS))
# Text that databases and encoders choke on: PostgreSQL refuses NUL in text. A document cannot
# hold a lone surrogate (a parse error), but JSON variables can: dumps() sends \udXXX escapes.
odd_unicode = st.sampled_from(["\x00", "a\x00b", "\ufffe", "\U0010ffff", "\u0085"])
surrogates = st.sampled_from(["\ud800", "x\udfffy", "\udc80\ud800"])


# What a register or login needs to get past validation now and then.
plausible_strings = st.one_of(
    st.emails(),
    st.from_regex(r"[a-z][a-z0-9_]{2,20}", fullmatch=True),
    st.just("another correct horse battery staple"),
)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode().rstrip("=")


# Global ids and cursors that decode, almost decode, or name things that do not exist.
global_ids = st.builds(
    lambda kind, local: b64(f"{kind}:{local}"),
    st.sampled_from(["User", "Session", "Role", "RefreshToken", "", "user", "User:User"]),
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.just("9" * 18),
        st.just("9" * 19),
        st.uuids().map(str),
        st.text(max_size=40),
    ),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 10**400]),
    st.floats(),
    nasty_text,
    odd_unicode,
    surrogates,
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
cursors = st.one_of(
    json_values.map(lambda value: b64(json.dumps(value))),
    st.text(max_size=60),
    st.builds(lambda tag: b64(json.dumps([tag, "2020-01-01T00:00:00", 1])), st.text(max_size=8)),
)


@st.composite
def mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """good seven times in eight: wrong values deep inside a request stop it at coercion.

    (st.one_of(good, good, bad) would not do: it drops the duplicate branch.)
    """
    return draw(bad if draw(st.integers(0, 7)) == 7 else good)


def scalars(fuzzer: Fuzzer, *, in_json: bool) -> dict[str, st.SearchStrategy[Any]]:
    """Values of the right type: real ids, cursors and credentials among random ones."""
    odd = st.one_of(odd_unicode, surrogates) if in_json else odd_unicode
    return {
        # Hypothesis draws early branches more often: the text that breaks things first.
        "String": st.one_of(
            odd, nasty_text, st.sampled_from(fuzzer.strings), cursors, plausible_strings
        ),
        "ID": st.one_of(st.sampled_from(fuzzer.ids), global_ids, nasty_text, odd),
        # Page sizes and other small numbers more often than anything in 32 bits.
        "Int": st.one_of(st.integers(0, 101), st.integers(-(2**31), 2**31 - 1)),
        "Boolean": st.booleans(),
        "Float": st.floats(allow_nan=False, allow_infinity=False),
    }


def scalar_nodes(fuzzer: Fuzzer) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    """The same values as literals, for hypothesis-graphql (it asks for custom scalars so)."""
    values = scalars(fuzzer, in_json=False)
    strings = values["String"].map(lambda value: graphql.StringValueNode(value=value))
    ints = values["Int"].map(lambda value: graphql.IntValueNode(value=str(value)))
    return {
        "String": strings,
        "ID": st.one_of(values["ID"].map(lambda value: graphql.StringValueNode(value=value)), ints),
        "Int": ints,
    }


# --- Documents ---------------------------------------------------------------------------------


ROOT_FIELDS = [
    name for root in (SCHEMA.query_type, SCHEMA.mutation_type) if root for name in root.fields
]


def valid_documents(fuzzer: Fuzzer, root_field: str | None = None) -> st.SearchStrategy[str]:
    """Documents that select root_field, or any root fields when it is None."""
    fields = None if root_field is None else [root_field]
    return from_schema(SCHEMA, fields=fields, custom_scalars=scalar_nodes(fuzzer))


def invalid_documents(fuzzer: Fuzzer) -> st.SearchStrategy[str]:
    """Schema violations, damaged valid documents, and text that is barely GraphQL."""
    return st.one_of(
        from_schema(SCHEMA, mode=Mode.NEGATIVE, custom_scalars=scalar_nodes(fuzzer)),
        st.builds(garble, valid_documents(fuzzer), st.lists(edits, min_size=1, max_size=4)),
        st.text(),
        st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join),
        st.sampled_from(ODD_DOCUMENTS),
    )


TOKENS = [
    *"{}()[]:$@!=|&.",
    "...",
    "query",
    "mutation",
    "subscription",
    "fragment",
    "on",
    "__typename",
    "__schema",
    "__type",
    "me",
    "node",
    "user",
    "users",
    "id",
    "login",
    "register",
    "input",
    "first",
    "$x",
    "$input",
    "ID!",
    "String",
    "Int",
    "1",
    "-1",
    "1e999",
    "99999999999999999999",
    '"x"',
    '"""block"""',
    '"\\u0000"',
    '"\\uD800"',
    "null",
    "true",
    "#",
    "\n",
    "\x00",
]
ODD_DOCUMENTS = [
    "",
    " ",
    "{",
    "}",
    "{ }",
    "{ me }",
    "{ me { id } } { me { id } }",
    "query A { me { id } } query A { me { id } }",
    "query A { me { id } } query B { me { id } }",
    "subscription { me { id } }",
    "{ __schema { types { name } } }",
    '{ __type(name: "User") { fields { name } } }',
    "{ node(id: 1e999) { id } }",
    '{ user(id: "\\uD800") { id } }',
    '{ user(username: "\\u0000") { id } }',
    '{ node(id: """\\u0000""") { id } }',
    "query($id: ID!) { node(id: $id) { id } }",
    "query($x: Int = 99999999999999) { users(first: $x) { totalCount } }",
    "{ users(first: -1) { totalCount } }",
    "{ users(first: 2147483647) { totalCount } }",
    "{ users(last: 5) { totalCount } }",
    "{ users(first: 1, last: 1) { totalCount } }",
    "fragment F on User { ...F } { me { ...F } }",
    "{ me { ...Missing } }",
    "{ me @skip(if: true) { id } }",
    "{ me @include(if: $x) { id } }",
    "{ me @unknown { id } }",
    "{ me(arg: 1) { id } }",
    "{ a: me { id } a: node(id: 1) { id } }",
    "mutation { logoutAll { revokedSessions } logoutAll { revokedSessions } }",
    "{ " + "me { " * 60 + "id" + " }" * 60 + " }",
    "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(300)) + " }",
    "{ " + "__typename " * 5000 + "}",
    "{ me { sessions(first: 100) { edges { node { user { sessions(first: 100) { edges { node {"
    " user { sessions(first: 100) { totalCount } } } } } } } } } } }",
]


def edit(document: str, kind: str, position: float, text: str) -> str:
    at = int(position * len(document))
    if kind == "delete":
        return document[:at] + document[at + len(text) + 1 :]
    if kind == "insert":
        return document[:at] + text + document[at:]
    if kind == "truncate":
        return document[:at]
    if kind == "duplicate":
        return document[:at] + document[at : at + 40] + document[at:]
    return document[:at] + text + document[at + len(text) :]  # overwrite


edits = st.tuples(
    st.sampled_from(["delete", "insert", "truncate", "duplicate", "overwrite"]),
    st.floats(min_value=0, max_value=1),
    st.one_of(st.sampled_from(TOKENS), st.text(max_size=5)),
)


def garble(document: str, changes: list[tuple[str, float, str]]) -> str:
    for kind, position, text in changes:
        document = edit(document, kind, position, text)
    return document


# --- Documents with variables ----------------------------------------------------------------


def selection(type_: graphql.GraphQLOutputType, depth: int = 0) -> str:
    """A small selection set of leaves and argument-free objects (two levels)."""
    named = graphql.get_named_type(type_)
    if not isinstance(named, graphql.GraphQLObjectType | graphql.GraphQLInterfaceType):
        return ""
    parts = ["__typename"]
    for name, field_ in named.fields.items():
        if any(graphql.is_required_argument(arg) for arg in field_.args.values()):
            continue
        inner = graphql.get_named_type(field_.type)
        if graphql.is_leaf_type(inner):
            parts.append(name)
        elif depth < 1:
            parts.append(f"{name} {selection(field_.type, depth + 1)}")
    return "{ " + " ".join(parts) + " }"


@dataclass(frozen=True)
class Operation:
    """One root field with every argument passed as a variable."""

    document: str
    arguments: dict[str, graphql.GraphQLArgument]


def operations() -> list[Operation]:
    found = []
    for kind, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type)):
        assert root is not None
        for name, field_ in root.fields.items():
            if not field_.args:
                continue
            declared = ", ".join(f"${arg}: {field_.args[arg].type}" for arg in field_.args)
            passed = ", ".join(f"{arg}: ${arg}" for arg in field_.args)
            document = f"{kind} Fuzz({declared}) {{ {name}({passed}) {selection(field_.type)} }}"
            found.append(Operation(document, dict(field_.args)))
    return found


OPERATIONS = operations()


def json_for(
    type_: graphql.GraphQLInputType, values: dict[str, st.SearchStrategy[Any]], depth: int = 0
) -> st.SearchStrategy[Any]:
    """Mostly the right shape for type_ with nasty values, now and then the wrong shape."""
    if isinstance(type_, graphql.GraphQLNonNull):
        return json_for(type_.of_type, values, depth)
    wrong = json_values if depth < 3 else json_leaves
    if isinstance(type_, graphql.GraphQLList):
        return mostly(st.lists(json_for(type_.of_type, values, depth + 1), max_size=4), wrong)
    if isinstance(type_, graphql.GraphQLEnumType):
        return mostly(st.sampled_from(list(type_.values)), st.one_of(nasty_text, wrong))
    if isinstance(type_, graphql.GraphQLInputObjectType):
        return mostly(input_object(type_, values, depth), wrong)
    assert isinstance(type_, graphql.GraphQLScalarType)
    return mostly(values.get(type_.name, json_leaves), json_leaves)


def input_object(
    type_: graphql.GraphQLInputObjectType, values: dict[str, st.SearchStrategy[Any]], depth: int
) -> st.SearchStrategy[dict[str, Any]]:
    """Every required field, some optional ones, and now and then a field the type lacks."""
    required, optional = {}, {}
    for name, field_ in type_.fields.items():
        strategy = json_for(field_.type, values, depth + 1)
        if graphql.is_required_input_field(field_):
            required[name] = strategy
        else:
            optional[name] = strategy
    shaped = st.fixed_dictionaries(required, optional=optional)
    unknown = st.dictionaries(st.text(max_size=12), json_leaves, min_size=1, max_size=2)
    return mostly(shaped, st.builds(lambda given, more: {**more, **given}, shaped, unknown))


def variables_for(operation: Operation, fuzzer: Fuzzer) -> st.SearchStrategy[Any]:
    """Variables for every required argument and some optional ones; or any JSON at all."""
    values = scalars(fuzzer, in_json=True)
    required, optional = {}, {}
    for name, argument in operation.arguments.items():
        strategy = json_for(argument.type, values)
        if graphql.is_required_argument(argument):
            required[name] = strategy
        else:
            optional[name] = strategy
    return mostly(
        st.fixed_dictionaries(required, optional=optional),
        st.one_of(st.dictionaries(st.text(max_size=10), json_values, max_size=4), json_values),
    )


# --- The tests -----------------------------------------------------------------------------------


async def test_valid_documents(gql: GraphQL) -> None:
    fuzzer = await Fuzzer.start(gql)
    send = blocking(fuzzer.send)

    def fuzz_root_field(root_field: str | None) -> None:
        @fuzz_settings(PER_FIELD)
        @given(valid_documents(fuzzer, root_field), viewers, garbage_tokens, accepts)
        def valid(document: str, viewer: str, garbage: str, accept: str) -> None:
            note(f"as {viewer}: {document!r}")
            response = send(
                document, viewer=viewer, garbage=garbage, accept=accept, valid_document=True
            )
            observe(response, fuzzer.stats)

        valid()

    def run() -> None:
        # Mostly one root field per document (one failing non-null field nulls all the data),
        # then any mix of them.
        for root_field in [*ROOT_FIELDS, None]:
            fuzz_root_field(root_field)

    await fuzz(fuzzer, run, min_data=0.1)


async def test_invalid_documents(gql: GraphQL) -> None:
    fuzzer = await Fuzzer.start(gql)
    send = blocking(fuzzer.send)

    @fuzz_settings()
    @given(invalid_documents(fuzzer), viewers, garbage_tokens, accepts)
    def invalid(document: str, viewer: str, garbage: str, accept: str) -> None:
        note(f"as {viewer}: {document!r}")
        observe(send(document, viewer=viewer, garbage=garbage, accept=accept), fuzzer.stats)

    await fuzz(fuzzer, invalid)


async def test_random_variables(gql: GraphQL) -> None:
    fuzzer = await Fuzzer.start(gql)
    send = blocking(fuzzer.send)

    def fuzz_operation(operation: Operation) -> None:
        @fuzz_settings(PER_FIELD)
        @given(variables_for(operation, fuzzer), viewers, garbage_tokens, accepts)
        def with_variables(variables: Any, viewer: str, garbage: str, accept: str) -> None:
            note(f"as {viewer}: {operation.document!r}")
            response = send(
                operation.document, variables, viewer=viewer, garbage=garbage, accept=accept
            )
            observe(response, fuzzer.stats)

        with_variables()

    def run() -> None:
        for operation in OPERATIONS:
            fuzz_operation(operation)

    await fuzz(fuzzer, run, min_data=0.1)


# Whole request bodies, not only documents: what a broken or hostile client might post.
bodies = st.one_of(
    st.fixed_dictionaries(
        {"query": st.one_of(st.just("{ me { id } }"), json_values)},
        optional={
            "variables": json_values,
            "operationName": json_values,
            "extensions": json_values,
        },
    ).map(dumps),
    json_values.map(dumps),
    st.lists(st.just({"query": "{ me { id } }"}), max_size=3).map(dumps),
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"query": "{ me { id } }"',
            b'{"query": "{ me { id } }"}}',
            b'{"query": "{ me { id } }", "query": "{ __typename }"}',
            b'{"query": "{ me { id } }", "variables": NaN}',
            b'{"query": "{ me { id } }", "variables": "{\\"a\\": 1}"}',
            b'{"query": "{ me { id } }", "operationName": "Nope"}',
            b'{"query": "query A { me { id } } query B { me { id } }"}',
            b'{"query": "\\ud800"}',
            b"\xff\xfe{\x00}\x00",
            b"query=%7B+me+%7B+id+%7D+%7D",
            b"[" * 10000 + b"]" * 10000,
            b'{"query": "' + b"{ __typename }" * 2000 + b'"}',
        ]
    ),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=latin-1",
        "application/graphql",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ]
)
query_strings = st.dictionaries(
    st.sampled_from(["query", "variables", "operationName", "extensions", "x"]),
    st.one_of(
        st.sampled_from(["{ me { id } }", "mutation { logoutAll { revokedSessions } }", "{"]),
        st.text(max_size=30),
        odd_unicode,
        json_values.map(json.dumps),
    ),
    max_size=4,
)


async def test_raw_http_requests(gql: GraphQL) -> None:
    fuzzer = await Fuzzer.start(gql)

    async def send(
        method: str,
        body: bytes,
        params: dict[str, str],
        content_type: str,
        viewer: str,
        accept: str,
    ) -> httpx.Response:
        headers = {"accept": accept}
        if content_type:
            headers["content-type"] = content_type
        token = fuzzer.token(viewer, "garbage")
        if token:
            headers["authorization"] = f"Bearer {token}"
        fuzzer.sent += 1
        if method == "GET":
            response = await gql.client.get("/graphql", params=params, headers=headers)
        else:
            response = await gql.client.post("/graphql", content=body, headers=headers)
        check_response(response, accept)
        if viewer == "admin":
            await fuzzer.keep_admin()
        return response

    send_blocking = blocking(send)

    @fuzz_settings(EXAMPLES - 50)
    @given(
        st.sampled_from(["POST", "POST", "POST", "GET"]),
        bodies,
        query_strings,
        content_types,
        viewers,
        accepts,
    )
    def raw(
        method: str,
        body: bytes,
        params: dict[str, str],
        content_type: str,
        viewer: str,
        accept: str,
    ) -> None:
        observe(send_blocking(method, body, params, content_type, viewer, accept), fuzzer.stats)

    await fuzz(fuzzer, raw)


async def test_fuzzer_reaches_the_resolvers(gql: GraphQL) -> None:
    """The known ids and credentials work, so the fuzz tests do more than fail validation."""
    fuzzer = await Fuzzer.start(gql)
    body = (
        await fuzzer.send(
            "query($id: ID!) { node(id: $id) { id } }", {"id": fuzzer.ids[0]}, viewer="admin"
        )
    ).json()
    assert body["data"]["node"] == {"id": fuzzer.ids[0]}
    body = (
        await fuzzer.send(
            "mutation { logoutAll { revokedSessions } }", viewer="admin", valid_document=True
        )
    ).json()
    assert body["data"]["logoutAll"]["revokedSessions"] == 1
    # keep_admin signed the administrator in again.
    body = (await fuzzer.send("{ me { id } }", viewer="admin")).json()
    assert body["data"]["me"] == {"id": fuzzer.admin.id}
