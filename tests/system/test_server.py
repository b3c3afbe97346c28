"""`usergraph serve` as a real process, over TCP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.client import DEFAULT_PASSWORD
from tests.system.processes import serve

pytestmark = pytest.mark.slow

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken refreshToken userErrors { code } } }"""
ME = "{ me { username email } }"


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """`usergraph serve --workers N` on a fresh SQLite file, started in tmp_path."""
    with serve(tmp_path, workers=getattr(request, "param", 1)) as (base_url, _env):
        yield base_url


def _register(client: httpx.Client, username: str) -> dict[str, str]:
    response = client.post(
        "/graphql",
        json={
            "query": REGISTER,
            "variables": {
                "input": {
                    "email": f"{username}@example.com",
                    "username": username,
                    "password": DEFAULT_PASSWORD,
                }
            },
        },
    )
    assert response.status_code == 200
    payload: dict[str, str] = response.json()["data"]["register"]
    assert payload["userErrors"] == []
    return payload


def test_register_and_me_over_tcp(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        tokens = _register(client, "ann")
        response = client.post(
            "/graphql",
            json={"query": ME},
            headers={"authorization": f"Bearer {tokens['accessToken']}"},
        )
        assert response.json() == {"data": {"me": {"username": "ann", "email": "ann@example.com"}}}
        assert len(response.headers["x-request-id"]) >= 8


@pytest.mark.parametrize("server", [2], indirect=True)
def test_workers_share_the_generated_signing_key(server: str, tmp_path: Path) -> None:
    # With no key configured, the first worker makes an ES256 key pair in the key directory
    # and the others read it: a token issued by one worker is accepted by every other.
    [key_file] = (tmp_path / ".usergraph-keys").glob("*.json")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(key_file.read_text())["alg"] == "ES256"
    assert not (tmp_path / ".usergraph-signing-key").exists()
    with httpx.Client(base_url=server, timeout=10) as client:
        tokens = _register(client, "bob")
        for _ in range(20):
            # A fresh connection each time, so the kernel spreads them over the workers.
            response = httpx.post(
                f"{server}/graphql",
                json={"query": ME},
                headers={"authorization": f"Bearer {tokens['accessToken']}"},
                timeout=10,
            )
            assert response.json()["data"]["me"]["username"] == "bob"
