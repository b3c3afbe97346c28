"""Running `usergraph` as a real process, for the tests that talk to it over TCP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

Popen = subprocess.Popen[bytes]

CLI = [sys.executable, "-m", "usergraph.cli"]


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


@contextmanager
def serve(tmp_path: Path, *, workers: int = 1) -> Iterator[tuple[str, dict[str, str]]]:
    """Migrate a fresh SQLite file and run `usergraph serve` in tmp_path; yield its URL and env."""
    env = _env(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
    migrate(tmp_path, env)
    port = _free_port()
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--workers", str(workers)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base_url, process)
        yield base_url, env
    finally:
        _stop(process)


def server_env(database_url: str, **variables: str) -> dict[str, str]:
    """The environment of a test server: cheap hashes, no inherited REDIS_URL, then variables."""
    env = _env(database_url)
    env.pop("REDIS_URL", None)
    env.update(variables)
    return env


def migrate(cwd: Path, env: dict[str, str]) -> None:
    subprocess.run([*CLI, "migrate"], cwd=cwd, env=env, check=True, capture_output=True)


def _start(stack: ExitStack, cwd: Path, env: dict[str, str], name: str) -> tuple[str, Popen]:
    """Start `usergraph serve` with its output in cwd/<name>.log; stopped when stack closes."""
    port = _free_port()
    log = stack.enter_context((cwd / f"{name}.log").open("wb"))
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    stack.callback(_stop, process)
    return f"http://127.0.0.1:{port}", process


def _ready(cwd: Path, name: str, base_url: str, process: Popen) -> None:
    """Wait until it answers /readyz; else fail with the end of its log."""
    try:
        _wait_until_ready(base_url, process)
    except AssertionError as exc:
        output = (cwd / f"{name}.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"{name}: {exc}\n{output}") from None


@contextmanager
def run_servers(cwd: Path, env: dict[str, str], names: Sequence[str]) -> Iterator[list[str]]:
    """Run one `usergraph serve` per name with exactly env (its database already migrated).

    They start side by side; yields their URLs once all are ready. Each one's output goes to
    cwd/<name>.log, quoted when it does not start.
    """
    with ExitStack() as stack:
        started = [(name, *_start(stack, cwd, env, name)) for name in names]
        for name, base_url, process in started:
            _ready(cwd, name, base_url, process)
        yield [base_url for _name, base_url, _process in started]


@contextmanager
def run_server(cwd: Path, env: dict[str, str], name: str) -> Iterator[tuple[str, Popen]]:
    """Run one `usergraph serve` like run_servers, and yield its URL and its process too, for
    the tests that kill it (a killed process is simply reaped when the block ends)."""
    with ExitStack() as stack:
        base_url, process = _start(stack, cwd, env, name)
        _ready(cwd, name, base_url, process)
        yield base_url, process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
