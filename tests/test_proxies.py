"""The client's ip behind reverse proxies (USERGRAPH_TRUSTED_PROXIES).

X-Forwarded-For is believed only from a trusted peer, and then only up to the right-most hop
that is not itself a trusted proxy: a client can prepend whatever it likes, but not the entry
its own proxy appends. The ip ends up on the session, in the rate limits and in the logs.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.client import GraphQL, serving
from tests.environment import make_settings
from tests.helpers import error_codes, problems
from usergraph.logs import RequestIdFilter
from usergraph.settings import Settings

PEER = "203.0.113.7"  # the socket's address, as in conftest's client
PROXIES = ["203.0.113.0/24"]
CLIENT = "198.51.100.9"

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { code field }
} }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken userErrors { code field }
} }"""
SESSION_IPS = "{ me { sessions { edges { node { ipAddress } } } } }"


async def session_ip(gql: GraphQL, headers: dict[str, str]) -> str:
    """Register a new account with these request headers; the ip its session recorded."""
    username = f"u{uuid.uuid4().hex[:12]}"  # apps built here share the database, unemptied
    variables = {
        "input": {
            "email": f"{username}@example.com",
            "username": username,
            "password": "correct horse battery staple",
        }
    }
    response = await gql.post(REGISTER, variables, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    payload = body["data"]["register"]
    assert payload["userErrors"] == [], payload
    data = await gql.ok(SESSION_IPS, token=payload["accessToken"])
    [edge] = data["me"]["sessions"]["edges"]
    ip: str = edge["node"]["ipAddress"]
    return ip


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


async def test_a_network_written_with_host_bits_is_honoured_or_refused(
    database_url: str, tmp_path: Path
) -> None:
    """ "203.0.113.1/24" is a common way to write a proxy's subnet. Settings must either refuse
    it or make it trust the network; accepting it while trusting nothing fails silently."""
    try:
        make_settings(database_url, tmp_path, trusted_proxies=["203.0.113.1/24"])
    except ValidationError:
        return
    async with serving(database_url, tmp_path, trusted_proxies=["203.0.113.1/24"]) as gql:
        assert await session_ip(gql, {"x-forwarded-for": CLIENT}) == CLIENT


@pytest.mark.parametrize(
    "forwarded_for",
    ["x" * 60, f"{'f' * 60}, 203.0.113.50"],
    ids=["long-garbage", "long-garbage-through-a-proxy"],
)
async def test_a_forwarded_value_that_is_not_an_ip_does_not_break_sign_in(
    database_url: str, tmp_path: Path, forwarded_for: str
) -> None:
    """What a trusted proxy forwards is still text from the network: a value that is not an ip
    (a client inside the trusted network, a proxy passing the header on as it came) must
    neither fail the request nor be recorded as the client's address."""
    async with serving(database_url, tmp_path, trusted_proxies=PROXIES) as gql:
        ip = await session_ip(gql, {"x-forwarded-for": forwarded_for})
    if ip is not None:
        ipaddress.ip_address(ip)


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


@pytest.mark.parametrize("value", ["not-an-ip", "10.0.0.1, not-an-ip", "10.0.0.0/33"], ids=str)
def test_settings_refuse_a_bad_trusted_proxy(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings("sqlite+aiosqlite://", tmp_path, trusted_proxies=value)
    bad = value.split(",")[-1].strip()
    assert f"{bad!r} is not an ip address or network" in str(refused.value)

    monkeypatch.setenv("USERGRAPH_TRUSTED_PROXIES", value)
    with pytest.raises(ValidationError, match="is not an ip address or network"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_settings_read_trusted_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USERGRAPH_TRUSTED_PROXIES", " 10.0.0.1 , 203.0.113.0/24,")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.trusted_proxies == ["10.0.0.1", "203.0.113.0/24"]
