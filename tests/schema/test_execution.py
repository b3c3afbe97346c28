"""usergraph.schema.execution: FastExecutor answers every document as graphql-core does.

The rule: the plan is an optimisation, never a second semantics. For every document the HTTP
answer (status and JSON body) is the same with USERGRAPH_FAST_EXECUTION on and off; only the
extensions.requestId of a masked internal error may differ. Checked here:

- over HTTP, by two apps on one database (fast_execution=True and False), as an anonymous
  client, an ordinary user, an administrator and a client with a forged token:
  - the suite's own documents: every string in tests/ that is a valid query operation
    (tests/schema/execution_documents.py), with variables from their declared types.
    Mutations are left out: they change what the next request sees (a session revoked, a
    password changed), so the second app would not be asked the same question;
  - hypothesis-graphql's query documents over me, user, users and node, with real ids and
    usernames in them;
- on a small Strawberry schema with no database, the cases the fast path must hand over:
  null where the type says non-null (a leaf, an object, a list item, two levels below a
  nullable field), a scalar that does not coerce, a resolver that raises, is_type_of false,
  resolvers that return awaitables, arguments, aliases, fragments, @skip/@include and
  __typename at every level; data, errors (in order) and which async resolvers ran must match;
- that the fast path is taken at all (graphql-core's execute_field counted on a page of users)
  and how way_of classifies the real schema's fields.

What these tests once found the fast path doing differently (errors of concurrent fields in
another order, a sibling's coroutine dropped when a field raised, a coroutine from a
synchronous resolver made twice, is_type_of asked without its info) stays here as plain tests:
ONCE_DIFFERENT and test_concurrent_errors_keep_graphql_cores_order."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import graphql
import httpx
import pytest
import strawberry
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis_graphql import from_schema
from strawberry import Parent
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionContext

from tests.client import Account, GraphQL, serving
from tests.helpers import tampered
from tests.schema.execution_documents import Operation, Values, suite_operations, variable_sets
from tests.system import test_fuzz
from tests.system.test_fuzz import (
    blocking,
    fuzz_settings,
    hypothesis_storage,  # noqa: F401 (the autouse fixture: Hypothesis' files in a tmp dir)
)
from tests.totp import enroll
from usergraph.db.models import ADMIN_ROLE, DEFAULT_ROLE
from usergraph.schema import build_schema
from usergraph.schema.errors import ErrorCode
from usergraph.schema.execution import FastExecutor, Kind, way_of
from usergraph.schema.permissions import SelfOrAdminOrNull
from usergraph.schema.relay import to_global_id
from usergraph.services.access import Actor

TESTS = Path(__file__).resolve().parents[1]
SCHEMA = build_schema()._schema
GENERATED_EXAMPLES = 150

# --- Two apps, one database ---------------------------------------------------------------------

Answer = tuple[int, Any]


def comparable(response: httpx.Response) -> Answer:
    """Status and body; a masked internal error's requestId (one per request) left out."""
    body = response.json()
    if isinstance(body, dict):
        for error in body.get("errors") or []:
            extensions = error.get("extensions") or {}
            if extensions.get("code") == ErrorCode.INTERNAL_SERVER_ERROR.value:
                extensions.pop("requestId", None)
    return response.status_code, body


def has_data(answer: Answer) -> bool:
    data = answer[1].get("data") if isinstance(answer[1], dict) else None
    return any(value is not None for value in (data or {}).values())


@dataclass
class Pair:
    """The same request to an app with the fast executor and to one without."""

    fast: GraphQL
    plain: GraphQL
    sent: int = 0

    async def answers(
        self,
        document: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        token: str | None = None,
    ) -> tuple[Answer, Answer]:
        payload: dict[str, Any] = {"query": document, "variables": variables or {}}
        if operation_name is not None:
            payload["operationName"] = operation_name
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.sent += 1
        # Side by side: the documents only read.
        fast, plain = await asyncio.gather(
            self.fast.client.post("/graphql", json=payload, headers=headers),
            self.plain.client.post("/graphql", json=payload, headers=headers),
        )
        return comparable(fast), comparable(plain)


@asynccontextmanager
async def both(database_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    async with (
        serving(database_url, tmp_path, fast_execution=True) as fast,
        serving(database_url, tmp_path, fast_execution=False) as plain,
    ):
        yield Pair(fast=fast, plain=plain)


SET_ACTIVE = """mutation($input: SetUserActiveInput!) { setUserActive(input: $input) {
  user { isActive } userErrors { code } } }"""
PAGE = """{ users(first: 20) { edges { cursor node { id sessions { edges {
  cursor node { id } } } } } } }"""


@dataclass
class World:
    """What the database holds: an administrator, seven users (one with a display name, one
    disabled, one with TOTP), a few sessions; and the values documents are given."""

    admin: Account
    user: Account  # the ordinary viewer, with three sessions
    others: list[Account]
    user_ids: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)

    @property
    def viewers(self) -> dict[str, str | None]:
        return {
            "anonymous": None,
            "user": self.user.access_token,
            "admin": self.admin.access_token,
            "garbage": tampered(self.admin.access_token),
        }

    @property
    def garbage_id(self) -> str:
        return to_global_id("User", "not-a-number")

    def values(self) -> Values:
        """Own id, another user's, a session's, garbage; usernames and a cursor."""
        return Values(
            ids=[self.user.id, self.others[0].id, self.session_ids[0], self.garbage_id],
            strings=[self.user.username, self.others[1].username, self.cursors[1]],
        )

    def scalar_nodes(self) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
        """hypothesis-graphql's values: the ids and usernames above, page sizes 0..101."""
        ids = [*self.user_ids, *self.session_ids, self.garbage_id]
        strings = [self.user.username, self.admin.username, *(a.username for a in self.others)]
        return {
            "ID": st.sampled_from(ids).map(lambda value: graphql.StringValueNode(value=value)),
            "String": st.sampled_from([*strings, *self.cursors[:2]]).map(
                lambda value: graphql.StringValueNode(value=value)
            ),
            "Int": st.integers(0, 101).map(lambda value: graphql.IntValueNode(value=str(value))),
        }


async def populate(gql: GraphQL) -> World:
    admin = await gql.admin("admin")
    user = await gql.register("ann", display_name="Ann Example")
    others = [await gql.register(name) for name in ("bob", "cat", "dan", "eve", "fay", "gus")]
    for account in (user, user, others[0]):
        assert (await gql.login(account.username))["accessToken"]
    disabled = await gql.ok(
        SET_ACTIVE, {"input": {"userId": others[4].id, "active": False}}, token=admin.access_token
    )
    assert disabled["setUserActive"] == {"user": {"isActive": False}, "userErrors": []}
    await enroll(gql, others[2])
    world = World(admin=admin, user=user, others=others)
    page = await gql.ok(PAGE, token=admin.access_token)
    for edge in page["users"]["edges"]:
        world.user_ids.append(edge["node"]["id"])
        world.cursors.append(edge["cursor"])
        for session in edge["node"]["sessions"]["edges"]:
            world.session_ids.append(session["node"]["id"])
            world.cursors.append(session["cursor"])
    assert len(world.user_ids) == 8 and len(world.session_ids) >= 6, page
    return world


def difference(what: str, viewer: str, fast: Answer, plain: Answer) -> str:
    return (
        f"{what} as {viewer}:\n  fast:  {json.dumps(fast)[:1500]}\n"
        f"  plain: {json.dumps(plain)[:1500]}"
    )


# --- 1. The suite's own documents ---------------------------------------------------------------

OWN_FILES = (Path(__file__), Path(__file__).with_name("execution_documents.py"))


@functools.cache
def corpus() -> list[Operation]:
    return suite_operations(SCHEMA, TESTS, exclude=OWN_FILES)


def test_the_corpus_is_the_suites_documents() -> None:
    """The walk finds what the suite sends: query operations only (a named operation of a
    document with several on its own), no f-strings, none of this module's documents."""
    operations = corpus()
    assert len({operation.document for operation in operations}) >= 60
    assert "{ me { id } }" in {operation.document for operation in operations}
    for operation in operations:
        definitions = graphql.parse(operation.document).definitions
        chosen = [
            definition
            for definition in definitions
            if isinstance(definition, graphql.OperationDefinitionNode)
            and (
                operation.name is None
                or (definition.name and definition.name.value == operation.name)
            )
        ]
        assert len(chosen) == 1, operation
        assert chosen[0].operation is graphql.OperationType.QUERY, operation
        assert not operation.found_in.startswith("tests/schema/test_execution"), operation
    assert {operation.name for operation in operations} >= {None, "A", "B"}


async def test_the_suites_query_documents_answer_alike(
    app: Any, database_url: str, tmp_path: Path
) -> None:
    # `app` empties the database; both apps below share it.
    operations = corpus()
    async with both(database_url, tmp_path) as pair:
        world = await populate(pair.fast)
        values = world.values()
        compared: set[Operation] = set()
        with_data: set[Operation] = set()
        skipped: list[Operation] = []
        differences: list[str] = []
        for operation in operations:
            sets = variable_sets(operation, SCHEMA, values)
            if sets is None:
                skipped.append(operation)
                continue
            compared.add(operation)
            for variables in sets:
                for viewer, token in world.viewers.items():
                    fast, plain = await pair.answers(
                        operation.document, variables, operation.name, token
                    )
                    if fast != plain:
                        differences.append(
                            difference(f"{operation} with {variables}", viewer, fast, plain)
                        )
                    if has_data(fast):
                        with_data.add(operation)
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences[:10])
    documents = {operation.document for operation in compared}
    data_documents = {operation.document for operation in with_data}
    assert len(documents) >= 30, (len(documents), skipped)
    assert len(data_documents) >= 10, len(data_documents)
    assert len(skipped) <= len(compared) // 10, [str(operation) for operation in skipped]
    print(  # the size of the comparison, under -s
        f"suite documents: {len(documents)} compared ({len(data_documents)} with data), "
        f"{len(skipped)} skipped, {pair.sent} requests to each app"
    )


# --- 2. hypothesis-graphql's documents ----------------------------------------------------------


def without_error_order(answer: Answer) -> Answer:
    status, body = answer
    if not isinstance(body, dict) or not body.get("errors"):
        return answer
    errors = sorted(json.dumps(error, sort_keys=True) for error in body["errors"])
    return status, {**body, "errors": errors}


async def test_generated_query_documents_answer_alike(
    app: Any, database_url: str, tmp_path: Path
) -> None:
    """Equal answers, the order of errors from concurrent fields included."""
    async with both(database_url, tmp_path) as pair:
        world = await populate(pair.fast)
        answers = blocking(pair.answers)
        stats: Counter[str] = Counter()
        documents = from_schema(
            test_fuzz.SCHEMA,  # from the printed SDL, as the fuzz tests draw from it
            fields=["me", "user", "users", "node"],
            custom_scalars=world.scalar_nodes(),
        )

        @fuzz_settings(GENERATED_EXAMPLES)
        @given(documents, st.sampled_from(sorted(world.viewers)))
        def alike(document: str, viewer: str) -> None:
            note(f"as {viewer}: {document}")
            fast, plain = answers(document, None, None, world.viewers[viewer])
            stats["examples"] += 1
            stats["some data"] += has_data(fast)
            assert fast == plain, difference(repr(document), viewer, fast, plain)

        await anyio.to_thread.run_sync(alike)
    assert stats["examples"] >= GENERATED_EXAMPLES, stats
    assert stats["some data"] >= stats["examples"] // 5, stats
    print(f"generated documents: {dict(stats)}")


CONCURRENT_ERRORS = """query($id: ID!) {
  node(id: $id) { ... on User { sessions(first: 0, after: "ann") { totalCount } } }
  user(id: $id, username: "ann") { emailVerifiedAt }
}"""


async def test_concurrent_errors_keep_graphql_cores_order(
    app: Any, database_url: str, tmp_path: Path
) -> None:
    async with both(database_url, tmp_path) as pair:
        world = await populate(pair.fast)
        fast, plain = await pair.answers(
            CONCURRENT_ERRORS, {"id": world.admin.id}, token=world.admin.access_token
        )
    assert without_error_order(fast) == without_error_order(plain)
    assert len(fast[1]["errors"]) == 2
    assert fast == plain, difference("concurrent errors", "admin", fast, plain)


# --- 3. Error semantics on a small schema -------------------------------------------------------


class Row:
    """A source for the small schema's types: any attributes, None wherever a case wants."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


class CheckedRow(Row):
    pass


async def _eventually(value: str) -> str:
    await asyncio.sleep(0)
    return value


@strawberry.type
class Leaf:
    name: str
    nickname: str | None
    count: int

    @strawberry.field
    def loud(self) -> str:
        return self.name.upper()  # AttributeError when name is None

    @strawberry.field
    def broken(self) -> str | None:
        raise ValueError("broken on purpose")

    @strawberry.field
    def repeated(self, times: int = 2) -> str:
        return self.name * times

    @strawberry.field
    async def later(self, info: strawberry.Info) -> str:
        await asyncio.sleep(0)
        info.context.ran.append(f"later {self.name}")
        return f"later {self.name}"

    @strawberry.field
    async def fails_later(self, info: strawberry.Info, ticks: int = 1) -> str | None:
        for _ in range(ticks):
            await asyncio.sleep(0)
        info.context.ran.append(f"failsLater {self.name}")
        raise ValueError(f"{self.name} failed after {ticks} ticks")

    @strawberry.field
    def promised(self) -> str:
        """A Future, as a loader's load gives."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        future.set_result(f"promised {self.name}")
        return future  # type: ignore[return-value]

    @strawberry.field
    def awaited(self) -> str:
        """A coroutine from a synchronous resolver."""
        return _eventually(f"awaited {self.name}")  # type: ignore[return-value]

    @strawberry.field
    def field_label(self, info: strawberry.Info) -> str:
        return f"{info.field_name} of {self.name}"  # more of info than its context

    @strawberry.field
    def flag(self, info: strawberry.Info) -> str:
        flag: str = info.context.flag
        return flag


@strawberry.type
class Checked:
    value: int

    @classmethod
    def is_type_of(cls, obj: Any, _info: Any) -> bool:
        return isinstance(obj, CheckedRow)


@strawberry.type
class Inspected:
    """is_type_of that reads its info, as graphql-core allows."""

    value: int

    @classmethod
    def is_type_of(cls, obj: Any, info: Any) -> bool:
        return isinstance(obj, CheckedRow) and info.parent_type.name == "Middle"


@strawberry.type
class Private:
    """A field behind SelfOrAdminOrNull, as User.email."""

    @strawberry.field(extensions=[SelfOrAdminOrNull()])
    def secret(self, root: Parent[Row]) -> str | None:
        secret: str | None = root.secret
        return secret


@strawberry.type
class Middle:
    leaf: Leaf
    maybe_leaf: Leaf | None
    leaves: list[Leaf]
    maybe_leaves: list[Leaf | None] | None
    checked: Checked | None
    inspected: Inspected | None
    privates: list[Private]


@strawberry.type
class Top:
    label: str
    middle: Middle
    maybe_middle: Middle | None


def leaf(name: Any = "leaf", **values: Any) -> Row:
    return Row(**{"name": name, "nickname": None, "count": 1, **values})


def middle(**values: Any) -> Row:
    fields = {
        "leaf": leaf("one"),
        "maybe_leaf": None,
        "leaves": [leaf("two"), leaf("three")],
        "maybe_leaves": [leaf("four"), None],
        "checked": CheckedRow(value=5),
        "inspected": CheckedRow(value=6),
        "privates": [Row(id=1, secret="ones"), Row(id=2, secret="twos")],
    }
    return Row(**{**fields, **values})


CASES: dict[str, Callable[[], Row]] = {
    "good": lambda: Row(label="good", middle=middle(), maybe_middle=middle()),
    "nullLeaf": lambda: Row(
        label="null leaf",
        middle=middle(leaf=leaf(None)),
        maybe_middle=middle(leaf=leaf(None), leaves=[leaf(), leaf(None)]),
    ),
    "nullObject": lambda: Row(label="null object", middle=middle(leaf=None), maybe_middle=None),
    "nullItem": lambda: Row(
        label="null item",
        middle=middle(leaves=[leaf(), None, leaf()]),
        maybe_middle=middle(leaves=[None], maybe_leaves=[None, leaf(), None]),
    ),
    "nullList": lambda: Row(
        label="null list",
        middle=middle(leaves=None),
        maybe_middle=middle(leaves=None, maybe_leaves=None),
    ),
    "notAList": lambda: Row(label="not a list", middle=middle(leaves=leaf()), maybe_middle=None),
    "uncoercible": lambda: Row(
        label="uncoercible",
        middle=middle(leaf=leaf(count="x"), leaves=[leaf(count=2.5), leaf(count=2**40)]),
        maybe_middle=middle(leaf=leaf(name=7, count=True)),
    ),
    "wrongType": lambda: Row(
        label="wrong type", middle=middle(checked=Row(value=1)), maybe_middle=None
    ),
    "nullLabel": lambda: Row(label=None, middle=middle(), maybe_middle=middle()),
}


@strawberry.type
class Query:
    @strawberry.field
    def top(self, case: str) -> Top | None:
        return CASES[case]()  # type: ignore[return-value]

    @strawberry.field
    def tops(self, cases: list[str]) -> list[Top | None]:
        return [CASES[case]() for case in cases]  # type: ignore[misc]

    @strawberry.field
    async def fails(self, ticks: int) -> str | None:
        for _ in range(ticks):
            await asyncio.sleep(0)
        raise ValueError(f"failed after {ticks} ticks")


class QuietSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[graphql.GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None


FAST_SMALL = QuietSchema(query=Query, execution_context_class=FastExecutor)
PLAIN_SMALL = QuietSchema(query=Query)


@dataclass
class SmallContext:
    """The part of usergraph's Context the small schema reads, and which async resolvers ran."""

    actor: Actor | None
    known: bool
    flag: str = "flag"
    ran: list[str] = field(default_factory=list)

    def known_viewer(self) -> tuple[bool, Actor | None]:
        return (True, self.actor) if self.known else (False, None)

    async def viewer(self) -> Actor | None:
        return self.actor


CONTEXTS: dict[str, Callable[[], SmallContext]] = {
    "admin, known": lambda: SmallContext(Actor(9, frozenset({ADMIN_ROLE, DEFAULT_ROLE})), True),
    "user 1, known": lambda: SmallContext(Actor(1, frozenset({DEFAULT_ROLE})), True),
    "user 1, not yet known": lambda: SmallContext(Actor(1, frozenset({DEFAULT_ROLE})), False),
    "signed out": lambda: SmallContext(None, True),
}

LEAF_FIELDS = "__typename name nickname count"
EVERYTHING = f"""
query Everything($case: String!, $yes: Boolean = true, $no: Boolean = false, $times: Int = 3) {{
  __typename
  top(case: $case) {{
    __typename
    label
    again: label
    middle {{ ...MiddleFields }}
    maybeMiddle {{
      __typename
      ... on Middle {{ leaf {{ {LEAF_FIELDS} loud }} }}
      maybeLeaf {{ name }}
      leaves @include(if: $yes) {{ ...LeafFields }}
      maybeLeaves @skip(if: $no) {{ {LEAF_FIELDS} }}
      skipped: leaves @skip(if: $yes) {{ name }}
      checked {{ __typename value }}
    }}
  }}
}}
fragment MiddleFields on Middle {{
  __typename
  leaf {{ ...LeafFields repeated(times: $times) twice: repeated }}
  leaves {{ ... on Leaf {{ {LEAF_FIELDS} }} name }}
  maybeLeaves {{ n: name }}
  checked {{ value }}
  privates {{ __typename secret }}
}}
fragment LeafFields on Leaf {{ {LEAF_FIELDS} loud fieldLabel flag }}
"""
SMALL_DOCUMENTS: dict[str, str] = {
    "everything": EVERYTHING,
    "resolvers that raise": """query($case: String!) { top(case: $case) {
      maybeMiddle { leaf { broken loud } } middle { leaves { broken name } } } }""",
    "null two levels below a nullable field": """query($case: String!) { top(case: $case) {
      label maybeMiddle { label: __typename leaf { name } } middle { leaf { name } } } }""",
    "null in a list of several tops": """query($cases: [String!]!) { tops(cases: $cases) {
      label middle { leaves { name count } } } }""",
    # Only where nothing fails beside the awaitables (else the known difference below).
    "awaitables (async def, a Future)": """query($case: String!) { top(case: $case) {
      label middle { leaf { later promised name } leaves { promised later count }
      maybeLeaves { later nickname } } } }""",
    "async resolvers that raise": """query($case: String!) { top(case: $case) {
      middle { leaves { failsLater name } } } }""",
}


# The cases of each document (all of them unless said).
SMALL_CASES = {"awaitables (async def, a Future)": ["good", "wrongType", "nullLabel"]}
SMALL_MATRIX = [
    (name, case) for name in SMALL_DOCUMENTS for case in SMALL_CASES.get(name, sorted(CASES))
]


def small_variables(name: str, case: str) -> dict[str, Any]:
    if name == "null in a list of several tops":
        return {"cases": ["good", case, "good"]}
    return {"case": case}


SmallAnswer = tuple[Any, list[Any], list[str]]


async def execute_small(
    schema: strawberry.Schema, document: str, variables: dict[str, Any], context: SmallContext
) -> SmallAnswer:
    """data, formatted errors (in order), and which async resolvers ran."""
    result = await schema.execute(document, variable_values=variables, context_value=context)
    for _ in range(5):  # what graphql-core settles in the background
        await asyncio.sleep(0)
    errors = [error.formatted for error in result.errors or []]
    return result.data, errors, sorted(context.ran)


async def execute_watched(
    schema: strawberry.Schema, document: str, variables: dict[str, Any], context: SmallContext
) -> tuple[SmallAnswer, list[str]]:
    """execute_small, and the warnings raised (a coroutine never awaited is one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = await execute_small(schema, document, variables, context)
        gc.collect()  # an error's traceback keeps the frames that held the dropped awaitables
    return answer, [f"{w.category.__name__}: {w.message}" for w in caught]


@pytest.mark.parametrize(("name", "case"), SMALL_MATRIX)
async def test_small_schema_answers_alike(name: str, case: str) -> None:
    document, variables = SMALL_DOCUMENTS[name], small_variables(name, case)
    for context in CONTEXTS.values():
        fast = await execute_small(FAST_SMALL, document, variables, context())
        plain = await execute_small(PLAIN_SMALL, document, variables, context())
        assert fast == plain, context()


async def test_small_schema_cases_reach_their_errors() -> None:
    """The cases above are what they say: each fails the way it is named."""
    admin = CONTEXTS["admin, known"]

    async def messages(case: str) -> list[str]:
        _, errors, _ = await execute_small(PLAIN_SMALL, EVERYTHING, {"case": case}, admin())
        return [error["message"] for error in errors]

    data, errors, _ = await execute_small(PLAIN_SMALL, EVERYTHING, {"case": "good"}, admin())
    assert errors == [] and data["top"]["middle"]["privates"][1]["secret"] == "twos"
    expected = {
        "nullLeaf": "Cannot return null for non-nullable field Leaf.name.",
        "nullObject": "Cannot return null for non-nullable field Middle.leaf.",
        "nullItem": "Cannot return null for non-nullable field Middle.leaves.",
        "nullList": "Cannot return null for non-nullable field Middle.leaves.",
        "uncoercible": "Int cannot represent non-integer value: 'x'",
        "wrongType": "Expected value of type 'Checked' but got: <Row instance>.",
        "notAList": "Expected Iterable, but did not find one for field 'Middle.leaves'.",
        "nullLabel": "Cannot return null for non-nullable field Top.label.",
    }
    for case, message in expected.items():
        assert message in await messages(case), case
    user = CONTEXTS["user 1, known"]
    data, _, _ = await execute_small(FAST_SMALL, EVERYTHING, {"case": "good"}, user())
    assert data["top"]["middle"]["privates"] == [
        {"__typename": "Private", "secret": "ones"},
        {"__typename": "Private", "secret": None},
    ]


# What the fast path once did differently (the differential tests found each): now answered as
# graphql-core does.
ONCE_DIFFERENT = [
    pytest.param(
        """{ a: top(case: "good") { middle { leaf { failsLater(ticks: 0) } } }
             b: fails(ticks: 1) }""",
        id="concurrent-errors-order",
    ),
    pytest.param(
        """{ top(case: "nullLeaf") { maybeMiddle { leaf { later name } } } }""",
        id="awaitable-beside-propagating-null",
    ),
    pytest.param(
        """{ top(case: "good") { middle { leaf { awaited } } } }""",
        id="coroutine-from-sync-resolver",
    ),
    pytest.param(
        """{ top(case: "good") { middle { inspected { value } } } }""",
        id="is-type-of-reads-info",
    ),
]


@pytest.mark.parametrize("document", ONCE_DIFFERENT)
async def test_small_schema_once_different(document: str) -> None:
    context = CONTEXTS["admin, known"]
    fast = await execute_watched(FAST_SMALL, document, {}, context())
    plain = await execute_watched(PLAIN_SMALL, document, {}, context())
    assert fast == plain


async def test_a_broken_fast_path_would_be_seen() -> None:
    """The comparisons can fail: a fast path that answers a leaf wrongly is caught."""

    class Broken(FastExecutor):
        def _fast_field(self, way: Any, *args: Any) -> Any:
            value = super()._fast_field(way, *args)
            return "wrong" if way.kind is Kind.LEAF and isinstance(value, str) else value

    broken = QuietSchema(query=Query, execution_context_class=Broken)
    context = CONTEXTS["admin, known"]
    wrong = await execute_small(broken, EVERYTHING, {"case": "good"}, context())
    right = await execute_small(PLAIN_SMALL, EVERYTHING, {"case": "good"}, context())
    assert wrong != right


# --- 4. The fast path is taken -------------------------------------------------------------------

USERS_PAGE = """{ users(first: 50) { totalCount edges { cursor node {
  id username email roles { name } } } } }"""


async def test_a_page_of_users_skips_graphql_cores_per_field_work(
    app: Any, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: Counter[bool] = Counter()  # by whether the executor was FastExecutor
    original = StrawberryGraphQLCoreExecutionContext.execute_field

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[isinstance(self, FastExecutor)] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_field", counting)
    async with both(database_url, tmp_path) as pair:
        world = await populate(pair.fast)
        calls.clear()
        fast, plain = await pair.answers(USERS_PAGE, token=world.admin.access_token)
    assert fast == plain
    assert fast[1]["data"]["users"]["totalCount"] == 8
    assert all(edge["node"]["email"] for edge in fast[1]["data"]["users"]["edges"])
    assert calls[True] <= 10, calls
    assert calls[False] >= 8 * 5, calls
    print(f"execute_field calls: fast {calls[True]}, plain {calls[False]}")


# --- 5. way_of on the real schema ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "field_name", "kind", "self_or_admin", "object_type"),
    [
        ("User", "username", Kind.LEAF, False, None),
        ("User", "id", Kind.LEAF, False, None),
        ("User", "email", Kind.LEAF, True, None),
        ("User", "lastLoginAt", Kind.LEAF, True, None),
        ("User", "sessions", Kind.SLOW, False, None),  # arguments, async, a permission
        ("User", "roles", Kind.OBJECTS, False, "Role"),
        ("User", "secondFactors", Kind.OBJECT, True, "SecondFactors"),
        ("User", "__typename", Kind.TYPENAME, False, None),
        ("UserConnection", "totalCount", Kind.SLOW, False, None),  # async
        ("UserConnection", "edges", Kind.OBJECTS, False, "UserEdge"),
        ("UserConnection", "pageInfo", Kind.OBJECT, False, "PageInfo"),
        ("UserEdge", "node", Kind.OBJECT, False, "User"),
        ("UserEdge", "cursor", Kind.LEAF, False, None),
        ("Session", "user", Kind.SLOW, False, None),  # async
        ("SecondFactors", "totpEnabled", Kind.LEAF, False, None),
    ],
)
def test_way_of(
    type_name: str, field_name: str, kind: Kind, self_or_admin: bool, object_type: str | None
) -> None:
    parent = SCHEMA.get_type(type_name)
    assert isinstance(parent, graphql.GraphQLObjectType)
    way = way_of(parent, field_name, SCHEMA)
    assert way.kind is kind
    assert way.self_or_admin is self_or_admin
    assert (way.object_type.name if way.object_type else None) == object_type
    if way.object_type is not None:
        assert way.object_type is SCHEMA.get_type(object_type or "")
    assert way_of(parent, field_name, SCHEMA) is way  # decided once


def test_way_of_user_fields_that_need_the_request() -> None:
    user = SCHEMA.get_type("User")
    assert isinstance(user, graphql.GraphQLObjectType)
    assert way_of(user, "roles", SCHEMA).wants_info  # the request's loaders
    assert not way_of(user, "username", SCHEMA).wants_info
    assert way_of(user, "username", SCHEMA).non_null
    assert not way_of(user, "email", SCHEMA).non_null
