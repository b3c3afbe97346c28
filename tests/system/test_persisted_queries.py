"""Automatic persisted queries with a real Apollo Client 3 against a real `usergraph serve`.

tests/system/apollo_client/apq.mjs runs @apollo/client's createPersistedQueryLink (sha256 from
node:crypto) over an HttpLink whose fetch records every HTTP request; the packages are pinned by
tests/system/apollo_client/package-lock.json and installed there with `npm ci` when
node_modules is missing. The server runs on SQLite in tmp_path; its access log counts the
requests it answered, beside the client's own count.

- POST: the first run sends the hash alone, is told PersistedQueryNotFound and sends it again
  with the text (2 requests); the second run sends the hash alone (1 request). The data
  (variables included, a non-ASCII display name) is right every time.
- useGETForHashedQueries: the hash goes by GET with Accept */* and is answered with JSON, not
  GraphiQL; the retry with the text is a POST; the second run is one GET.
- A mutation (always POST): the hash-only request does not run it, the retry does, once.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client import DEFAULT_PASSWORD
from tests.environment import migrate
from tests.system.processes import run_server, server_env

pytestmark = pytest.mark.slow

APOLLO_DIR = Path(__file__).with_name("apollo_client")
DISPLAY_NAME = "Zoë 雪"
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { code } } }"""
BY_POST = """query ByPost($username: String!) {
  user(username: $username) { username displayName }
}"""
BY_GET = """query ByGet($username: String!) {
  user(username: $username) { username displayName }
}"""
REGISTER_BY_APOLLO = """mutation RegisterByApollo($input: RegisterInput!) {
  register(input: $input) { user { username displayName } userErrors { code } }
}"""
GENEROUS = {"USERGRAPH_REGISTER_IP_LIMIT": "100000/minute"}
ACCESS_LINE = re.compile(r'"(GET|POST) /graphql(\?\S*)? HTTP/1\.1" (\d{3})')


@pytest.fixture(scope="module")
def apollo_dir() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not on PATH (Apollo Client runs on Node.js)")
    if not (APOLLO_DIR / "node_modules" / "@apollo" / "client").is_dir():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=APOLLO_DIR, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    return APOLLO_DIR


@dataclass
class Server:
    graphql_url: str
    log: Path
    token: str

    def access_lines(self) -> list[tuple[str, str, int]]:
        """(method, query string, status) of each /graphql request the server logged."""
        text = self.log.read_text(errors="replace")
        return [(m[1], m[2] or "", int(m[3])) for m in ACCESS_LINE.finditer(text)]


@pytest.fixture(scope="module")
def server(apollo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cwd = tmp_path_factory.mktemp("apq")
    database_url = f"sqlite+aiosqlite:///{cwd / 'server.db'}"
    asyncio.run(migrate(database_url))
    env = server_env(database_url, USERGRAPH_LOG_LEVEL="INFO", **GENEROUS)
    with run_server(cwd, env, "usergraph") as (base_url, _process):
        graphql_url = f"{base_url}/graphql"
        account = {
            "username": "zoe",
            "email": "zoe@example.com",
            "displayName": DISPLAY_NAME,
            "password": DEFAULT_PASSWORD,
        }
        variables = {"input": account}
        response = httpx.post(
            graphql_url, json={"query": REGISTER, "variables": variables}, timeout=30
        )
        assert response.status_code == 200, response.text
        payload = response.json()["data"]["register"]
        assert payload["userErrors"] == [], payload
        yield Server(graphql_url, cwd / "usergraph.log", payload["accessToken"])


def apollo(server: Server, cases: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each case's runs as apq.mjs reports them: data (or error) and the requests made."""
    request = {"url": server.graphql_url, "token": server.token, "cases": cases}
    done = subprocess.run(
        ["node", str(APOLLO_DIR / "apq.mjs")],
        input=json.dumps(request), capture_output=True, text=True, timeout=60, cwd=APOLLO_DIR,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {result["name"]: result["runs"] for result in results}


def shape(requests: list[dict[str, Any]]) -> list[tuple[str, bool, bool, int]]:
    """(method, sent a hash, sent the text, status) of each request."""
    return [(r["method"], r["hash"] is not None, r["query"], r["status"]) for r in requests]


ZOE = {"user": {"__typename": "User", "username": "zoe", "displayName": DISPLAY_NAME}}


def test_apollo_client_registers_a_query_once_then_sends_only_its_hash(server: Server) -> None:
    before = len(server.access_lines())
    runs = apollo(
        server,
        [{"name": "post", "query": BY_POST, "variables": {"username": "zoe"}, "runs": 3}],
    )["post"]
    assert [run.get("data") for run in runs] == [ZOE, ZOE, ZOE], runs
    first, second, third = (shape(run["requests"]) for run in runs)
    assert first == [("POST", True, False, 200), ("POST", True, True, 200)]
    assert second == third == [("POST", True, False, 200)]
    hashes = {r["hash"] for run in runs for r in run["requests"]}
    assert len(hashes) == 1, hashes
    # The server answered exactly those four requests.
    assert [line[0] for line in server.access_lines()[before:]] == ["POST"] * 4


def test_apollo_client_sends_hashed_queries_by_get(server: Server) -> None:
    before = len(server.access_lines())
    runs = apollo(
        server,
        [
            {
                "name": "get",
                "query": BY_GET,
                "variables": {"username": "zoe"},
                "useGETForHashedQueries": True,
            }
        ],
    )["get"]
    assert [run.get("data") for run in runs] == [ZOE, ZOE], runs
    first, second = (shape(run["requests"]) for run in runs)
    # Not found by GET, sent again with the text by POST; then the hash alone by GET.
    assert first == [("GET", True, False, 200), ("POST", True, True, 200)]
    assert second == [("GET", True, False, 200)]
    assert runs[0]["requests"][0]["accept"] == "*/*"  # and still JSON, not GraphiQL's page
    logged = server.access_lines()[before:]
    assert [line[0] for line in logged] == ["GET", "POST", "GET"], logged
    assert "extensions=" in logged[0][1] and "query=" not in logged[0][1]


def test_apollo_client_mutation_runs_once(server: Server) -> None:
    account = {"username": "yuki", "email": "yuki@example.com", "displayName": DISPLAY_NAME}
    variables = {"input": {**account, "password": DEFAULT_PASSWORD}}
    runs = apollo(
        server,
        [
            {
                "name": "mutation",
                "query": REGISTER_BY_APOLLO,
                "variables": variables,
                "mutation": True,
                "useGETForHashedQueries": True,  # never for a mutation
                "runs": 1,
            }
        ],
    )["mutation"]
    [run] = runs
    assert shape(run["requests"]) == [("POST", True, False, 200), ("POST", True, True, 200)]
    assert run.get("data") == {
        "register": {
            "__typename": "AuthPayload",
            "user": {"__typename": "User", "username": "yuki", "displayName": DISPLAY_NAME},
            "userErrors": [],
        }
    }, run
    # Registered once: a second registration under the name would be refused.
    again = httpx.post(server.graphql_url, json={"query": REGISTER, "variables": variables})
    assert again.json()["data"]["register"]["userErrors"] != []
