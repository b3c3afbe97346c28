"""The app (usergraph/app.py): health, readiness, GraphiQL, CORS, start-up, the request body
limit, and the client's ip behind trusted proxies (the middleware the app puts in front)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from tests.client import CLIENT_IP, DEFAULT_PASSWORD, GraphQL, serving
from tests.environment import TEST_SIGNING_KEY, make_settings
from tests.helpers import BASE_HEADERS, PROXIES, error_codes, problems, session_ip
from usergraph.app import create_app
from usergraph.db.engine import Database
from usergraph.db.migrate import head_revision, upgrade_to_head
from usergraph.logs import RequestIdFilter
from usergraph.settings import Settings

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  user { username } userErrors { code field }
} }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken userErrors { code field }
} }"""
PEER = CLIENT_IP  # the socket's address, as in conftest's client
CLIENT = "198.51.100.9"  # a client behind the trusted proxies


async def _get(app: Starlette, path: str, **kwargs: object) -> httpx.Response:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(path, **kwargs)  # type: ignore[arg-type]


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_migrated(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["revision"] == head_revision() == "0003_second_factors"


async def test_readyz_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", tmp_path))
    response = await _get(app, "/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "not migrated"


async def test_readyz_refuses_an_unreachable_database(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "x.db"
    app = create_app(make_settings(f"sqlite+aiosqlite:///{missing}", tmp_path))
    response = await _get(app, "/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


async def test_graphiql_in_development(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_no_graphiql_or_introspection_in_production(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, env="production", signing_key=TEST_SIGNING_KEY)
    app = create_app(settings)
    page = await _get(app, "/graphql", headers={"accept": "text/html"})
    assert "graphiql" not in page.text.lower()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            body = (
                await c.post("/graphql", json={"query": "{ __schema { types { name } } }"})
            ).json()
            typo = (await c.post("/graphql", json={"query": "{ mee { id } }"})).json()
    assert "data" not in body  # refused at validation, before execution
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Did you mean" not in typo["errors"][0]["message"]


async def test_cors_allows_only_configured_origins(database_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(database_url, tmp_path, cors_origins=["https://app.example"]))
    preflight = {"access-control-request-method": "POST"}
    allowed = await _get(app, "/healthz", headers={"origin": "https://app.example", **preflight})
    other = await _get(app, "/healthz", headers={"origin": "https://evil.example", **preflight})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


async def test_readyz_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
    db = Database.connect(url)
    await upgrade_to_head(db.engine)
    app = create_app(make_settings(url, tmp_path))
    try:
        async with db.sessionmaker() as s, s.begin():
            # Holds SQLite's write lock (BEGIN IMMEDIATE) while the probe runs.
            await s.execute(text("UPDATE roles SET description = description"))
            response = await _get(app, "/readyz")
    finally:
        await db.dispose()
    assert response.status_code == 200


async def test_not_ready_while_the_rate_limit_storage_is_unreachable(
    database_url: str, tmp_path: Path
) -> None:
    # Nothing listens on port 1: sign-in would fail closed, so the probe says not ready.
    app = create_app(make_settings(database_url, tmp_path, redis_url="redis://127.0.0.1:1/0"))
    response = await _get(app, "/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "redis": "unreachable"}


async def test_start_up_freezes_what_it_made_when_asked(database_url: str, tmp_path: Path) -> None:
    import gc

    gc.unfreeze()
    try:
        app = create_app(make_settings(database_url, tmp_path))  # tests: gc_freeze off
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() == 0
        app = create_app(make_settings(database_url, tmp_path, gc_freeze=True))
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


# --- the body limit ---------------------------------------------------------------------------


def body_of_size(size: int, query: str, variables: dict[str, Any] | None = None) -> bytes:
    """A JSON request of exactly size bytes (padded with trailing whitespace, valid JSON)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def register_body(size: int, username: str) -> bytes:
    variables = {
        "input": {
            "email": f"{username}@example.com",
            "username": username,
            "password": DEFAULT_PASSWORD,
        }
    }
    return body_of_size(size, REGISTER, variables)


async def post_body(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post("/graphql", content=body, headers={"content-type": "application/json"})


async def assert_no_account(gql: GraphQL, username: str) -> None:
    """Nothing was registered under username: registering it now succeeds."""
    data = await gql.ok(
        REGISTER,
        {
            "input": {
                "email": f"{username}@example.com",
                "username": username,
                "password": DEFAULT_PASSWORD,
            }
        },
    )
    assert data["register"] == {"user": {"username": username}, "userErrors": []}


async def test_a_body_over_the_limit_is_refused_unread(gql: GraphQL, settings: Settings) -> None:
    limit = settings.max_body_bytes
    assert limit == 1024 * 1024

    response = await post_body(gql.client, register_body(limit + 1, "huge"))

    assert response.status_code == 413
    for header, value in BASE_HEADERS.items():
        assert response.headers.get(header) == value, header
    assert "huge" not in response.text
    await assert_no_account(gql, "huge")


async def test_a_body_at_the_limit_is_processed(gql: GraphQL, settings: Settings) -> None:
    response = await post_body(gql.client, register_body(settings.max_body_bytes, "atlimit"))
    assert response.status_code == 200, response.text[:200]
    assert response.json()["data"]["register"] == {
        "user": {"username": "atlimit"},
        "userErrors": [],
    }


async def test_a_streamed_body_over_the_limit_is_refused(gql: GraphQL, settings: Settings) -> None:
    """Without a Content-Length (chunked), the limit applies while the body streams in."""
    body = register_body(settings.max_body_bytes + 1, "streamed")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await gql.client.post(
        "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    await assert_no_account(gql, "streamed")


async def test_the_body_limit_is_configurable(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, max_body_bytes=2048) as gql:
        at_limit = await post_body(gql.client, body_of_size(2048, "{ me { id } }"))
        over = await post_body(gql.client, body_of_size(2049, "{ me { id } }"))
        default_sized = await post_body(gql.client, body_of_size(4096, "{ me { id } }"))
    assert at_limit.status_code == 200
    assert at_limit.json() == {"data": {"me": None}}
    assert over.status_code == 413
    assert default_sized.status_code == 413


# --- the client's ip behind reverse proxies (USERGRAPH_TRUSTED_PROXIES) -----------------------
# X-Forwarded-For is believed only from a trusted peer, and then only up to the right-most hop
# that is not itself a trusted proxy: a client can prepend whatever it likes, but not the entry
# its own proxy appends. The ip ends up on the session, in the rate limits and in the logs.


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(gql: GraphQL) -> None:
    assert await session_ip(gql, {"x-forwarded-for": CLIENT}) == PEER
    assert await session_ip(gql, {}) == PEER


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        (CLIENT, CLIENT),
        # The client wrote the first entry itself; its proxy appended the real address.
        (f"1.2.3.4, {CLIENT}", CLIENT),
        # Through two of our own proxies: the last untrusted hop is the client.
        (f"{CLIENT}, 203.0.113.50", CLIENT),
        (f"1.2.3.4, {CLIENT}, 203.0.113.50", CLIENT),
    ],
    ids=["one-hop", "spoofed-first-entry", "two-trusted-proxies", "spoofed-through-two"],
)
async def test_a_trusted_proxy_names_the_client(
    database_url: str, tmp_path: Path, forwarded_for: str, client: str
) -> None:
    async with serving(database_url, tmp_path, trusted_proxies=PROXIES) as gql:
        assert await session_ip(gql, {"x-forwarded-for": forwarded_for}) == client
        # Without the header the peer itself is the client.
        assert await session_ip(gql, {}) == PEER


async def test_an_untrusted_peer_keeps_its_socket_ip(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, peer="192.0.2.10", trusted_proxies=PROXIES) as gql:
        assert await session_ip(gql, {"x-forwarded-for": CLIENT}) == "192.0.2.10"
        assert await session_ip(gql, {"x-forwarded-for": "203.0.113.50"}) == "192.0.2.10"


async def test_trusted_proxies_as_a_comma_separated_string(
    database_url: str, tmp_path: Path
) -> None:
    async with serving(database_url, tmp_path, trusted_proxies="10.0.0.1, 203.0.113.0/24") as gql:
        assert await session_ip(gql, {"x-forwarded-for": CLIENT}) == CLIENT


async def test_a_network_written_with_host_bits_is_honoured(
    database_url: str, tmp_path: Path
) -> None:
    """ "203.0.113.1/24" is a common way to write a proxy's subnet. Settings take it as the
    network (accepting it while trusting nothing would fail silently)."""
    settings = make_settings(database_url, tmp_path, trusted_proxies=["203.0.113.1/24"])
    assert settings.trusted_proxies == ["203.0.113.0/24"]
    async with serving(database_url, tmp_path, trusted_proxies=["203.0.113.1/24"]) as gql:
        assert await session_ip(gql, {"x-forwarded-for": CLIENT}) == CLIENT


async def failed_login(gql: GraphQL, forwarded_for: str) -> dict[str, Any]:
    variables = {"input": {"login": "nobody", "password": "wrong password"}}
    response = await gql.post(LOGIN, variables, headers={"x-forwarded-for": forwarded_for})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_spoofed_first_entry_does_not_escape_the_ip_limit(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(RequestIdFilter())
    async with serving(
        database_url, tmp_path, trusted_proxies=PROXIES, login_ip_limit="3/minute"
    ) as gql:
        for fake in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
            body = await failed_login(gql, f"{fake}, {CLIENT}")
            assert problems(body["data"]["login"]) == [("INVALID_CREDENTIALS", [])], body

        refused = await failed_login(gql, f"4.4.4.4, {CLIENT}")
        assert error_codes(refused) == ["RATE_LIMITED"], refused
        assert refused["data"] is None
        retry_after = refused["errors"][0]["extensions"]["retryAfter"]
        assert isinstance(retry_after, int)
        assert 0 < retry_after <= 60

        # Counted per forwarded client, not per proxy: another client behind it is not limited.
        other = await failed_login(gql, "1.1.1.1, 198.51.100.10")
        assert problems(other["data"]["login"]) == [("INVALID_CREDENTIALS", [])], other

    # The log lines of those requests name the forwarded client, not the proxy.
    limited = [
        r for r in caplog.records if getattr(r, "security_event", {}).get("event") == "rate_limited"
    ]
    assert limited, [r.getMessage() for r in caplog.records]
    assert {getattr(r, "client_ip", None) for r in limited} == {CLIENT}
