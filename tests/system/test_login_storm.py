"""A login storm against a real server: the password hasher's queue is bounded.

The server hashes one password at a time (password_hash_concurrency=1) and lets 4 more wait
(password_hash_queue=4); beyond those 5 a login is refused at once with RATE_LIMITED. Forty
logins sent together must all be answered with well-formed GraphQL, exactly 5 of them may have
their password checked, and afterwards the server must sign people in as before.

Why "exactly 5 checked" holds without asserting on time: the first five logins to reach the
hasher always find room, so at least 5 are checked whatever the timing. At most 5 are checked
as long as all 40 reach the hasher before the first admitted hash finishes, because only a
finished hash frees a place. That part does depend on timing, so the margin is made wide:
a hash is slow here (argon2 time cost 1500 at 1 MiB: about 0.75 s on an idle core) and the
arrival quick: 40 connections are opened and used once beforehand, then the 40 requests are
written to them in one loop without waiting for any answer, so the server reads them all in the
same turn of its event loop. What is left is the server's own few milliseconds per login on
the way to the hasher. Measured on a 2-core machine: all 40 reached the hasher within
0.05-0.16 s while idle; three times oversubscribed, within 0.4 s while the first hash took
1.3 s. Both sides scale with the speed of the machine, so a slower runner keeps the margin.
If this ever fails with 6 checked, the runner stalled the server for most of a second.

httpx is not used for the storm: its connection pool queues requests behind busy connections,
which spreads the arrivals over many round trips.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.client import DEFAULT_PASSWORD
from tests.environment import TEST_SIGNING_KEY
from tests.system.processes import migrate, run_servers, server_env

pytestmark = pytest.mark.slow

CONCURRENCY = 1
QUEUE = 4
STORM = 40
WRONG_PASSWORD = "not the password at all"
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken userErrors { code } } }"""
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { code } } }"""

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _environment(tmp_path: Path) -> dict[str, str]:
    return server_env(
        f"sqlite+aiosqlite:///{tmp_path / 'server.db'}",
        USERGRAPH_SIGNING_KEY=TEST_SIGNING_KEY,
        # Slow in time, cheap in memory: see the module docstring.
        USERGRAPH_ARGON2_TIME_COST="1500",
        USERGRAPH_PASSWORD_HASH_CONCURRENCY=str(CONCURRENCY),
        USERGRAPH_PASSWORD_HASH_QUEUE=str(QUEUE),
        # Throttling must not answer before the hasher does.
        USERGRAPH_LOGIN_ACCOUNT_LIMIT="1000/minute",
        USERGRAPH_LOGIN_IP_LIMIT="100000/minute",
        USERGRAPH_REGISTER_IP_LIMIT="100000/minute",
    )


def _login_input(i: int) -> tuple[dict[str, str], bool]:
    """The i-th login of a wave: even ones with the right password, odd ones with a wrong one."""
    right = i % 2 == 0
    return {"login": "stormy", "password": DEFAULT_PASSWORD if right else WRONG_PASSWORD}, right


def _outcome(status: int, content_type: str, raw: bytes, *, right_password: bool) -> str:
    """CHECKED when the password was checked (and answered as it should be), else BUSY."""
    assert status == 200, raw
    assert content_type.startswith("application/json"), content_type
    body: dict[str, Any] = json.loads(raw)
    if "errors" in body:
        assert body["data"] is None, body
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED", body
        assert error["extensions"]["retryAfter"] >= 1, body
        return "BUSY"
    payload = body["data"]["login"]
    if right_password:
        assert payload["accessToken"] and payload["userErrors"] == [], body
    else:
        assert payload["accessToken"] is None, body
        assert payload["userErrors"] == [{"code": "INVALID_CREDENTIALS"}], body
    return "CHECKED"


async def _post(client: httpx.AsyncClient, query: str, input: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": {"input": input}})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _wave(client: httpx.AsyncClient, count: int) -> list[str]:
    """count logins sent together through httpx; the outcome of each."""

    async def one(i: int) -> str:
        input, right = _login_input(i)
        response = await client.post(
            "/graphql", json={"query": LOGIN, "variables": {"input": input}}
        )
        content_type = response.headers.get("content-type", "")
        return _outcome(response.status_code, content_type, response.content, right_password=right)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


# --- the storm, on plain sockets ------------------------------------------------------------


def _request(host: str, method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: status, headers (lower-case names), body (by Content-Length)."""
    status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


async def _storm(base_url: str) -> list[str]:
    url = urlsplit(base_url)
    assert url.hostname and url.port
    connections: list[Connection] = [
        await asyncio.open_connection(url.hostname, url.port) for _ in range(STORM)
    ]
    try:
        # Each connection is accepted and served once, so the storm pays no connection set-up.
        for _, writer in connections:
            writer.write(_request(url.hostname, "GET", "/healthz"))
        for reader, _ in connections:
            assert (await _response(reader))[0] == 200
        rights = []
        for i, (_, writer) in enumerate(connections):
            input, right = _login_input(i)
            rights.append(right)
            body = json.dumps({"query": LOGIN, "variables": {"input": input}}).encode()
            writer.write(_request(url.hostname, "POST", "/graphql", body))
        answers = await asyncio.gather(*(_response(reader) for reader, _ in connections))
    finally:
        for _, writer in connections:
            writer.close()
    return [
        _outcome(status, headers.get("content-type", ""), raw, right_password=right)
        for (status, headers, raw), right in zip(answers, rights, strict=True)
    ]


async def test_a_login_storm_is_bounded_and_the_server_recovers(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    migrate(tmp_path, env)
    with run_servers(tmp_path, env, ["server"]) as (base_url,):
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
            body = await _post(
                client,
                REGISTER,
                {"email": "stormy@example.com", "username": "stormy", "password": DEFAULT_PASSWORD},
            )
            assert body["data"]["register"]["userErrors"] == [], body
            # Parsed and validated once, then cached: a password over 1024 characters is
            # refused before any hashing, so this costs no hash.
            body = await _post(client, LOGIN, {"login": "stormy", "password": "x" * 1025})
            assert body["data"]["login"]["userErrors"] == [{"code": "INVALID_CREDENTIALS"}], body

            outcomes = await _storm(base_url)
            checked = outcomes.count("CHECKED")
            assert outcomes.count("BUSY") == STORM - checked
            assert checked == CONCURRENCY + QUEUE, (
                f"{checked} of {STORM} logins were checked; at most {CONCURRENCY + QUEUE} fit "
                "in the hasher at once (more means one finished before all had arrived)"
            )

            # Recovered: no place in the queue leaked, so as many logins as fit are all checked
            # (and the right passwords among them sign in, as _outcome checks).
            fit = CONCURRENCY + QUEUE
            assert await _wave(client, fit) == ["CHECKED"] * fit
            assert (await client.get("/readyz")).status_code == 200
