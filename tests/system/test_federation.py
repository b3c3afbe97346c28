"""usergraph as an Apollo Federation 2 subgraph behind a real gateway, all real processes.

A `usergraph serve` with USERGRAPH_FEDERATION=true; a tiny posts subgraph in Node
(tests/system/federation/posts.mjs: @apollo/subgraph and @apollo/server; its posts' authors are
the global ids of users this test registered, and it adds `User.posts`); and @apollo/gateway
(gateway.mjs) composing both with IntrospectAndCompose, forwarding the client's Authorization
header to each subgraph. The packages are pinned by tests/system/federation/package-lock.json
and installed there with `npm ci` when node_modules is missing.

Through the gateway: the supergraph composed (User an entity of both subgraphs); posts with
their authors from usergraph, whose email only the author (and an administrator) sees;
`me` with a token, also one that `login` through the gateway gave; `me { posts }` across the
other way; sessions of another user FORBIDDEN; without a token no email and no `me`. Once on
SQLite and once on PostgreSQL, each in about 10 s.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.client import DEFAULT_PASSWORD
from tests.environment import TEST_DATABASE_URL, migrate, postgres_database
from tests.system.processes import _free_port, run_server, server_env
from usergraph.db.engine import Database

pytestmark = pytest.mark.slow

FEDERATION_DIR = Path(__file__).with_name("federation")
READY_SECONDS = 30
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken user { id } userErrors { code } } }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken userErrors { code } } }"""
POSTS = "{ posts { title author { username email } } }"
GENEROUS = {
    "USERGRAPH_REGISTER_IP_LIMIT": "100000/minute",
    "USERGRAPH_LOGIN_IP_LIMIT": "100000/minute",
    "USERGRAPH_LOGIN_ACCOUNT_LIMIT": "1000/minute",
}
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=pytest.mark.skipif(
            not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL)"
        ),
    ),
]


@pytest.fixture(scope="module")
def federation_dir() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not on PATH (the gateway and the posts subgraph need them)")
    if not (FEDERATION_DIR / "node_modules" / "@apollo" / "gateway").is_dir():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=FEDERATION_DIR, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    return FEDERATION_DIR


# --- Processes -------------------------------------------------------------------------------


def start_node(stack: ExitStack, cwd: Path, script: str, name: str, env: dict[str, str]) -> str:
    """Run `node <script>` from the federation directory (output in cwd/<name>.log) until the
    stack closes; wait until it writes its URL to the READY_FILE it is given, return the URL."""
    log_path, ready_file = cwd / f"{name}.log", cwd / f"{name}.ready"
    log = stack.enter_context(log_path.open("wb"))
    process = subprocess.Popen(
        ["node", str(FEDERATION_DIR / script)],
        cwd=FEDERATION_DIR, env={**env, "READY_FILE": str(ready_file)},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    stack.callback(_stop, process)
    deadline = time.monotonic() + READY_SECONDS
    while not (ready_file.exists() and ready_file.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            output = log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(f"{name} did not start (exit {process.returncode}):\n{output}")
        time.sleep(0.05)
    return ready_file.read_text()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "postgresql":
        with postgres_database() as url:
            yield url
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
    asyncio.run(migrate(url))
    yield url


async def _make_admin(database_url: str, username: str) -> None:
    db = Database.connect(database_url)
    try:
        async with db.sessionmaker() as s, s.begin():
            await s.execute(
                text(
                    "INSERT INTO user_roles (user_id, role_id) "
                    "SELECT u.id, r.id FROM users u, roles r "
                    "WHERE u.username = :username AND r.name = 'admin'"
                ),
                {"username": username},
            )
    finally:
        await db.dispose()


# --- The deployment --------------------------------------------------------------------------


@dataclass
class Account:
    id: str
    username: str
    email: str
    token: str


@dataclass
class Federation:
    usergraph: str  # usergraph's base URL
    gateway: str  # the gateway's GraphQL URL
    supergraph: str  # the composed supergraph's SDL, as the gateway wrote it
    ann: Account
    bob: Account
    admin: Account

    def post(self, url: str, query: str, variables: Any = None, token: str | None = None) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(
            url, json={"query": query, "variables": variables or {}}, headers=headers, timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()

    def through_gateway(self, query: str, variables: Any = None, token: str | None = None) -> Any:
        """The data of a gateway response that must have no errors."""
        body = self.post(self.gateway, query, variables, token)
        assert "errors" not in body, body
        return body["data"]


def _register(url: str, username: str) -> Account:
    email = f"{username}@example.com"
    variables = {"input": {"username": username, "email": email, "password": DEFAULT_PASSWORD}}
    response = httpx.post(url, json={"query": REGISTER, "variables": variables}, timeout=30)
    assert response.status_code == 200, response.text
    payload = response.json()["data"]["register"]
    assert payload["userErrors"] == [], payload
    return Account(payload["user"]["id"], username, email, payload["accessToken"])


@pytest.fixture(scope="module", params=BACKENDS)
def federation(
    request: pytest.FixtureRequest, federation_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Federation]:
    cwd = tmp_path_factory.mktemp(f"federation-{request.param}")
    with ExitStack() as stack:
        database_url = stack.enter_context(database(request.param, cwd))
        env = server_env(database_url, USERGRAPH_FEDERATION="true", **GENEROUS)
        base_url, _process = stack.enter_context(run_server(cwd, env, "usergraph"))
        graphql_url = f"{base_url}/graphql"
        ann, bob, admin = (_register(graphql_url, name) for name in ("ann", "bob", "root"))
        asyncio.run(_make_admin(database_url, "root"))

        node_env = {
            k: v for k, v in env.items() if not k.startswith(("USERGRAPH_", "APOLLO_", "NODE_"))
        }
        posts = [
            {"title": "Ann's first post", "author": ann.id},
            {"title": "Bob's post", "author": bob.id},
            {"title": "Ann's second post", "author": ann.id},
        ]
        posts_url = start_node(
            stack, cwd, "posts.mjs", "posts",
            {**node_env, "POSTS_PORT": str(_free_port()), "POSTS": json.dumps(posts)},
        )  # fmt: skip
        supergraph_file = cwd / "supergraph.graphql"
        gateway_url = start_node(
            stack, cwd, "gateway.mjs", "gateway",
            {
                **node_env,
                "GATEWAY_PORT": str(_free_port()),
                "USERS_URL": graphql_url,
                "POSTS_URL": posts_url,
                "SUPERGRAPH_FILE": str(supergraph_file),
            },
        )  # fmt: skip
        yield Federation(
            usergraph=base_url,
            gateway=gateway_url,
            supergraph=supergraph_file.read_text(),
            ann=ann,
            bob=bob,
            admin=admin,
        )


# --- Through the gateway ---------------------------------------------------------------------


def test_the_supergraph_composes_with_user_an_entity_of_both(federation: Federation) -> None:
    sdl = federation.supergraph
    assert 'join__graph(name: "users"' in sdl
    assert 'join__graph(name: "posts"' in sdl
    user = sdl[sdl.index("type User") :].split("\n{", 1)[0].split("{", 1)[0]
    assert '@join__type(graph: USERS, key: "id"' in user, user  # usergraph adds resolvable: true
    assert '@join__type(graph: POSTS, key: "id")' in user, user
    assert "interface Node" in sdl  # usergraph's own types came through


def test_posts_with_their_authors_from_usergraph(federation: Federation) -> None:
    ann = federation.ann
    data = federation.through_gateway(POSTS, token=ann.token)
    assert data["posts"] == [
        {"title": "Ann's first post", "author": {"username": "ann", "email": ann.email}},
        {"title": "Bob's post", "author": {"username": "bob", "email": None}},
        {"title": "Ann's second post", "author": {"username": "ann", "email": ann.email}},
    ]


def test_an_admin_sees_every_authors_email(federation: Federation) -> None:
    data = federation.through_gateway(POSTS, token=federation.admin.token)
    assert [post["author"]["email"] for post in data["posts"]] == [
        federation.ann.email,
        federation.bob.email,
        federation.ann.email,
    ]


def test_me_through_the_gateway(federation: Federation) -> None:
    for account in (federation.ann, federation.bob):
        data = federation.through_gateway("{ me { id username email } }", token=account.token)
        assert data["me"] == {
            "id": account.id,
            "username": account.username,
            "email": account.email,
        }


def test_login_through_the_gateway_gives_a_token_that_works_there(federation: Federation) -> None:
    variables = {"input": {"login": "bob", "password": DEFAULT_PASSWORD}}
    payload = federation.through_gateway(LOGIN, variables)["login"]
    assert payload["userErrors"] == [], payload
    data = federation.through_gateway("{ me { username } }", token=payload["accessToken"])
    assert data["me"] == {"username": "bob"}


def test_me_and_my_posts_across_both_subgraphs(federation: Federation) -> None:
    query = "{ me { username posts { title author { username } } } }"
    data = federation.through_gateway(query, token=federation.ann.token)
    assert data["me"] == {
        "username": "ann",
        "posts": [
            {"title": "Ann's first post", "author": {"username": "ann"}},
            {"title": "Ann's second post", "author": {"username": "ann"}},
        ],
    }


def test_sessions_of_another_author_are_forbidden_through_the_gateway(
    federation: Federation,
) -> None:
    query = "{ posts { title author { username sessions { totalCount } } } }"
    body = federation.post(federation.gateway, query, token=federation.ann.token)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN", error
    assert error["extensions"]["serviceName"] == "users", error
    assert error["path"] == ["posts", 1, "author", "sessions"]  # bob's; ann's own were fine
    # Post.author and posts are non-null in the supergraph: the null reaches the root.
    assert body["data"] is None
    data = federation.through_gateway(
        "{ me { sessions { totalCount } } }", token=federation.ann.token
    )
    assert data == {"me": {"sessions": {"totalCount": 1}}}  # the one registration opened


def test_without_a_token_no_email_and_no_me(federation: Federation) -> None:
    data = federation.through_gateway(POSTS)
    assert [post["author"] for post in data["posts"]] == [
        {"username": "ann", "email": None},
        {"username": "bob", "email": None},
        {"username": "ann", "email": None},
    ]
    assert federation.through_gateway("{ me { username } }") == {"me": None}


def test_a_bad_token_through_the_gateway_is_no_viewer(federation: Federation) -> None:
    data = federation.through_gateway("{ me { username } }", token=federation.ann.token + "x")
    assert data == {"me": None}


def test_usergraph_itself_serves_the_subgraph(federation: Federation) -> None:
    body = federation.post(f"{federation.usergraph}/graphql", "{ _service { sdl } }")
    sdl = body["data"]["_service"]["sdl"]
    assert '@link(url: "https://specs.apollo.dev/federation/v2' in sdl
    assert 'type User implements Node @key(fields: "id"' in sdl
