"""`usergraph serve` as a real process, over TCP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_PASSWORD

pytestmark = pytest.mark.slow

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken refreshToken userErrors { code } } }"""
ME = "{ me { username email } }"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERGRAPH_")}
    env.update(
        DATABASE_URL=database_url,
        USERGRAPH_ARGON2_TIME_COST="1",
        USERGRAPH_ARGON2_MEMORY_COST_KIB="1024",
        USERGRAPH_ARGON2_PARALLELISM="1",
    )
    return env


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready in 30 s")


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Migrate a fresh SQLite file, start `usergraph serve --workers N` in tmp_path."""
    workers = getattr(request, "param", 1)
    env = _env(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
    cli = [sys.executable, "-m", "usergraph.cli"]
    subprocess.run([*cli, "migrate"], cwd=tmp_path, env=env, check=True, capture_output=True)
    port = _free_port()
    process = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--workers", str(workers)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base_url, process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    # With no key configured, the first worker writes one to a file and the others read it:
    # a token issued by one worker is accepted by every other.
    key_file = tmp_path / ".usergraph-signing-key"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o777 == 0o600
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
