"""Faults of a server's surroundings, short versions (issue 12, items 5 and 6); `make faults`
(bench/faults.py) runs the long ones with figures.

(a) `usergraph serve --workers 2` under light load, one worker SIGKILLed: uvicorn's supervisor
    starts a replacement that takes connections, the other worker keeps serving, and every
    registration that answered success logs in afterwards.
(b) SIGTERM with slow logins in flight (argon2 at a high time cost and little memory, one hash
    at a time): every one completes, new connections are refused once the listener is closed,
    the process exits 0; with more work than USERGRAPH_GRACEFUL_SHUTDOWN_SECONDS allows, the
    rest is cut and the process still exits.
(c) Acknowledged means durable: clients register, refresh and change passwords; the server is
    SIGKILLed mid-traffic and started again on the same database. Every acknowledged account
    logs in with its last acknowledged password, every acknowledged refresh token refreshes,
    and no account or session is half written. On SQLite and on PostgreSQL.

Workers are found in /proc (children of uvicorn's supervisor made by multiprocessing's spawn),
and the worker holding a connection through /proc/net/tcp and the workers' open sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.client import DEFAULT_PASSWORD
from tests.environment import TEST_DATABASE_URL, TEST_SIGNING_KEY, postgres_database
from tests.system.processes import CLI, migrate, server_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc"),
]

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken refreshToken userErrors { code } } }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken refreshToken userErrors { code } } }"""
REFRESH = """mutation($input: RefreshInput!) { refresh(input: $input) {
  accessToken refreshToken userErrors { code } } }"""
CHANGE_PASSWORD = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
  user { id } userErrors { code } } }"""
GENEROUS = {
    "USERGRAPH_SIGNING_KEY": TEST_SIGNING_KEY,
    "USERGRAPH_LOGIN_ACCOUNT_LIMIT": "100000/minute",
    "USERGRAPH_LOGIN_IP_LIMIT": "100000/minute",
    "USERGRAPH_REGISTER_IP_LIMIT": "100000/minute",
    "USERGRAPH_REFRESH_IP_LIMIT": "100000/minute",
    "USERGRAPH_PASSWORD_HASH_QUEUE": "1000",
}
# A slow hash that costs little memory: about 0.3 s on an idle core of a 2-core machine.
SLOW_HASH = {
    "USERGRAPH_ARGON2_TIME_COST": "600",
    "USERGRAPH_PASSWORD_HASH_CONCURRENCY": "1",
}


# --- processes ------------------------------------------------------------------------------


@dataclass
class Served:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(cwd: Path, env: dict[str, str], name: str, *, workers: int = 1) -> Iterator[Served]:
    """`usergraph serve --workers N` with its output in cwd/<name>.log, ready; stopped (and
    anything left of it killed) when the block ends."""
    port = _free_port()
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), "--workers", str(workers)],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    served = Served(f"http://127.0.0.1:{port}", port, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"{name} exited:\n{served.log_tail()}"
            assert time.monotonic() < deadline, f"{name} not ready in 60 s:\n{served.log_tail()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{served.base_url}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield served
    finally:
        left = _descendants(process.pid)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def workers(process: subprocess.Popen[bytes]) -> list[int]:
    """uvicorn's workers: the supervisor's children made by multiprocessing's spawn."""
    found = []
    for pid in _descendants(process.pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"spawn_main" in f.read() and _alive(pid):
                found.append(pid)
    return sorted(found)


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections on the server's port that the process holds open."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "01":
                    inodes.add(parts[9])
    held = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


async def wait_for(
    condition: Any, what: str, within: float = 60, server: Served | None = None
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        log = f":\n{server.log_tail()}" if server is not None else ""
        assert time.monotonic() < deadline, f"timed out waiting until {what}{log}"
        await asyncio.sleep(0.05)


# --- a client that keeps what it was told ---------------------------------------------------


@dataclass
class Answer:
    code: str  # OK, a userErrors code, a GraphQL error code, HTTP <n>, or the exception's name
    payload: dict[str, Any] = field(default_factory=dict)
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def cut(self) -> bool:
        """No answer at all: the connection failed."""
        return self.code.endswith("Error")


async def call(
    client: httpx.AsyncClient, query: str, input: dict[str, str], token: str | None = None
) -> Answer:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = await client.post(
            "/graphql", json={"query": query, "variables": {"input": input}}, headers=headers
        )
    except httpx.TransportError as exc:
        return Answer(type(exc).__name__, finished=time.monotonic())
    finished = time.monotonic()
    if response.status_code != 200:
        return Answer(f"HTTP {response.status_code}", finished=finished)
    body = response.json()
    if body.get("errors"):
        return Answer(str(body["errors"][0]["extensions"]["code"]), finished=finished)
    (payload,) = body["data"].values()
    if payload["userErrors"]:
        return Answer(payload["userErrors"][0]["code"], payload, finished)
    return Answer("OK", payload, finished)


async def register(client: httpx.AsyncClient, username: str) -> Answer:
    return await call(
        client,
        REGISTER,
        {"email": f"{username}@example.com", "username": username, "password": DEFAULT_PASSWORD},
    )


async def login(
    client: httpx.AsyncClient, username: str, password: str = DEFAULT_PASSWORD
) -> Answer:
    return await call(client, LOGIN, {"login": username, "password": password})


async def all_log_in(base_url: str, accounts: dict[str, str]) -> dict[str, str]:
    """Every account's login answer that is not a sign-in."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        answers = {name: await login(client, name, pw) for name, pw in accounts.items()}
    return {name: a.code for name, a in answers.items() if not a.ok}


# --- (a) a worker killed ----------------------------------------------------------------------


async def test_a_killed_worker_is_replaced_and_no_acknowledged_write_is_lost(
    tmp_path: Path,
) -> None:
    env = server_env(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}", **GENEROUS)
    migrate(tmp_path, env)
    acknowledged: dict[str, str] = {}
    answers: list[Answer] = []
    stop = asyncio.Event()
    with serving(tmp_path, env, "workers", workers=2) as server:
        await wait_for(lambda: len(workers(server.process)) == 2, "2 workers run")
        before = workers(server.process)
        # Each request on a new connection: the kernel picks a worker for every one.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as c:

            async def user(i: int) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    name = f"w{i}n{n}"
                    answer = await register(c, name)
                    answers.append(answer)
                    if answer.ok:
                        acknowledged[name] = DEFAULT_PASSWORD

            clients = [asyncio.create_task(user(i)) for i in range(4)]
            try:
                await wait_for(lambda: len(acknowledged) >= 20, "20 registrations answered")
                victim, survivor = before
                os.kill(victim, signal.SIGKILL)
                killed_at = len(answers)
                await wait_for(
                    lambda: (
                        len(workers(server.process)) == 2 and victim not in workers(server.process)
                    ),
                    "the supervisor started a replacement",
                    server=server,
                )
            finally:
                stop.set()
                await asyncio.gather(*clients)
            served_by_survivor = sum(a.ok for a in answers[killed_at:])
        # The replacement is the worker beside the survivor once two run again (read after the
        # clients stopped: a replacement still starting up may be replaced in turn by uvicorn's
        # health check on a loaded machine, and that is uvicorn's business, not a lost write).
        await wait_for(
            lambda: len(workers(server.process)) == 2 and survivor in workers(server.process),
            "two workers run beside the survivor",
            server=server,
        )
        after = workers(server.process)
        (replacement,) = set(after) - {survivor}

        # The replacement takes connections of its own: hold some open until it has one.
        async def replacement_takes_a_connection() -> bool:
            for _ in range(50):
                async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
                    checks = await asyncio.gather(*(c.get("/healthz") for _ in range(8)))
                    assert [r.status_code for r in checks] == [200] * 8
                    if connections_held(replacement, server.port):
                        return True
            return False

        assert await replacement_takes_a_connection(), "the replacement took no connection"
        assert survivor in after and _alive(survivor)
        assert served_by_survivor > 0, "nothing was served after the kill"
        failed = [a.code for a in answers if not a.ok]
        # Only requests in flight on the killed worker may fail, and only by a cut connection.
        assert all(a.cut for a in answers if not a.ok), failed
        assert len(failed) <= 4, failed
        assert await all_log_in(server.base_url, acknowledged) == {}


# --- (b) SIGTERM ------------------------------------------------------------------------------


@dataclass
class Shutdown:
    """What a SIGTERM with logins in flight came to."""

    workers: int
    answers: list[Answer]
    signalled: float
    exit_status: int | None
    exited_after: float = 0.0  # s after the signal
    # (s after the signal when the probe began, outcome); the last may begin after the exit
    probes: list[tuple[float, str]] = field(default_factory=list)

    @property
    def draining_until(self) -> float:
        """When the last request in flight was answered (s after the signal)."""
        return max(a.finished for a in self.answers) - self.signalled

    @property
    def first_refused(self) -> float | None:
        """When the first probe that was refused began, if that was while the requests in
        flight were still being answered."""
        return next(
            (
                at
                for at, outcome in self.probes
                if outcome == "refused" and at < self.draining_until
            ),
            None,
        )


async def _probe(port: int) -> str:
    """A new connection and a GET /healthz on it: served, refused, reset (closed unanswered)
    or hung (no answer within 2 s)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, OSError):
        return "hung"
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 2)
        return "served" if line.startswith(b"HTTP/1.1 200") else "reset"
    except TimeoutError:
        return "hung"
    except OSError:
        return "reset"
    finally:
        writer.close()


async def sigterm_in_flight(
    tmp_path: Path, *, workers_n: int, in_flight: int, graceful: int
) -> Shutdown:
    """in_flight slow logins written on open connections, then SIGTERM; probe new connections
    every 0.1 s until the process exits (within graceful + 60 s, else it is killed)."""
    env = server_env(
        f"sqlite+aiosqlite:///{tmp_path / 'server.db'}",
        **GENEROUS,
        **SLOW_HASH,
        USERGRAPH_GRACEFUL_SHUTDOWN_SECONDS=str(graceful),
    )
    migrate(tmp_path, env)
    with serving(tmp_path, env, "sigterm", workers=workers_n) as server:
        await wait_for(lambda: len(workers(server.process)) == workers_n or workers_n == 1, "up")
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as c:
            assert (await register(c, "slow")).ok
            # Open the connections first, so every login below is written at once.
            await asyncio.gather(*(c.get("/healthz") for _ in range(in_flight)))
            logins = [asyncio.create_task(login(c, "slow")) for _ in range(in_flight)]
            await asyncio.sleep(0.25)  # written and read; the first hashes under way
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            exited = asyncio.ensure_future(asyncio.to_thread(server.process.wait, graceful + 60))
            probes = []
            while not exited.done():
                began = time.monotonic() - signalled
                probes.append((began, await _probe(server.port)))
                await asyncio.sleep(0.1)
            exit_status = await exited
            exited_after = time.monotonic() - signalled
            answers = list(await asyncio.gather(*logins))
    return Shutdown(workers_n, answers, signalled, exit_status, exited_after, probes)


@pytest.fixture(scope="module", params=[1, 2], ids=["1 worker", "2 workers"])
def shutdown(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Shutdown:
    workers_n: int = request.param
    return asyncio.run(
        sigterm_in_flight(
            tmp_path_factory.mktemp("sigterm"), workers_n=workers_n, in_flight=12, graceful=30
        )
    )


def test_sigterm_lets_the_requests_in_flight_complete(shutdown: Shutdown) -> None:
    assert [a.code for a in shutdown.answers] == ["OK"] * len(shutdown.answers)
    # They were in flight: some were answered after the signal (12 hashes of ~0.3 s, one at a
    # time per worker, and the signal came 0.25 s after they were sent).
    assert any(a.finished > shutdown.signalled for a in shutdown.answers)


def test_sigterm_ends_the_process_with_status_0(shutdown: Shutdown) -> None:
    # uvicorn raises SIGTERM again after its graceful shutdown; usergraph serve exits 0 instead.
    assert shutdown.exit_status == 0


def test_sigterm_refuses_new_connections_once_the_listener_is_closed(
    shutdown: Shutdown,
) -> None:
    # With workers, the supervisor closes its copy of the listening socket at once.
    first = shutdown.first_refused
    # Refused while the requests in flight were still being answered, not only once they
    # were done and the process was going.
    assert first is not None, (shutdown.draining_until, shutdown.probes)
    # One made before the listener closed may be served or closed unanswered; after the first
    # refusal every new connection is refused.
    assert all(outcome == "refused" for at, outcome in shutdown.probes if at >= first), (
        shutdown.probes
    )


async def test_sigterm_cuts_what_the_graceful_timeout_does_not_allow(tmp_path: Path) -> None:
    # 24 hashes of ~0.3 s one at a time: ~7 s of work, 1 s allowed.
    result = await sigterm_in_flight(tmp_path, workers_n=1, in_flight=24, graceful=1)
    assert result.exit_status is not None
    cut = [a for a in result.answers if not a.ok]
    assert cut, "everything completed: the graceful timeout was not applied"
    assert any(a.ok for a in result.answers)


# --- (c) acknowledged means durable -----------------------------------------------------------


@dataclass
class Account:
    name: str
    registered: bool = False
    password: str = DEFAULT_PASSWORD
    cut_password: str | None = None  # a change cut by the kill: either password may hold
    access: str = ""
    refresh: str = ""
    settled: bool = True  # False once an operation on it was cut: its session is unknown
    cut_registration: bool = False


async def _traffic(c: httpx.AsyncClient, i: int, accounts: list[Account], stop: Any) -> None:
    """Register, then refresh and change passwords of this client's own accounts in turn."""
    n = 0
    while not stop.is_set():
        n += 1
        usable = [a for a in accounts if a.registered and a.settled]
        if len(usable) < 2 or n % 3 == 0:
            account = Account(f"d{i}n{n}")
            accounts.append(account)
            answer = await register(c, account.name)
            if answer.ok:
                account.registered = True
                account.access = answer.payload["accessToken"]
                account.refresh = answer.payload["refreshToken"]
            else:
                account.cut_registration = answer.cut
            continue
        account = usable[n % len(usable)]
        if n % 2:
            answer = await call(c, REFRESH, {"refreshToken": account.refresh})
            if answer.ok:
                account.access = answer.payload["accessToken"]
                account.refresh = answer.payload["refreshToken"]
            else:
                account.settled = False
        else:
            new = f"changed {account.name} at {n}"
            input = {"currentPassword": account.password, "newPassword": new}
            answer = await call(c, CHANGE_PASSWORD, input, token=account.access)
            if answer.ok:
                account.password = new
            else:
                account.settled = False
                account.cut_password = new
        assert answer.ok or answer.cut, answer.code


TORN = {
    "users without a role": "SELECT count(*) FROM users u WHERE NOT EXISTS "
    "(SELECT 1 FROM user_roles r WHERE r.user_id = u.id)",
    "users without a verification email": "SELECT count(*) FROM users u WHERE NOT EXISTS "
    "(SELECT 1 FROM email_tokens t WHERE t.user_id = u.id AND t.purpose = 'verify_email') "
    "OR NOT EXISTS (SELECT 1 FROM mail_outbox m WHERE m.to_address = u.email)",
    "sessions without a refresh token": "SELECT count(*) FROM sessions s WHERE NOT EXISTS "
    "(SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id)",
    "sessions with two live refresh tokens": "SELECT count(*) FROM (SELECT session_id FROM "
    "refresh_tokens WHERE used_at IS NULL GROUP BY session_id HAVING count(*) > 1) twice",
}


async def _torn_rows(database_url: str) -> tuple[dict[str, int], set[str]]:
    from usergraph.db.engine import Database

    db = Database.connect(database_url)
    try:
        async with db.engine.connect() as conn:
            torn = {what: (await conn.execute(text(q))).scalar_one() for what, q in TORN.items()}
            names = set((await conn.execute(text("SELECT username FROM users"))).scalars())
    finally:
        await db.dispose()
    return torn, names


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL)"
            ),
        ),
    ]
)
def durable_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
        migrate(tmp_path, server_env(url))
        yield url
        return
    with postgres_database() as url:
        yield url


async def test_acknowledged_writes_survive_a_sigkill(tmp_path: Path, durable_database: str) -> None:
    env = server_env(durable_database, **GENEROUS)
    clients = 6
    accounts: list[list[Account]] = [[] for _ in range(clients)]
    with serving(tmp_path, env, "first") as server:
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            loops = [asyncio.create_task(_traffic(c, i, accounts[i], stop)) for i in range(clients)]
            await wait_for(
                lambda: sum(a.registered for mine in accounts for a in mine) >= 30,
                "30 registrations answered",
            )
            server.process.send_signal(signal.SIGKILL)
            stop.set()
            await asyncio.gather(*loops)
        server.process.wait(timeout=30)
    everyone = [a for mine in accounts for a in mine]
    acknowledged = [a for a in everyone if a.registered]
    torn, names = await _torn_rows(durable_database)
    assert torn == dict.fromkeys(TORN, 0)
    assert {a.name for a in acknowledged} <= names
    # A registration cut by the kill may have committed; if so, it is whole (above) and works.
    committed_anyway = [a for a in everyone if a.cut_registration and a.name in names]
    with serving(tmp_path, env, "second") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            problems = []
            for a in acknowledged:
                if a.settled:
                    refreshed = await call(c, REFRESH, {"refreshToken": a.refresh})
                    if not refreshed.ok:
                        problems.append((a.name, "refresh", refreshed.code))
                signed_in = await login(c, a.name, a.password)
                if not signed_in.ok and a.cut_password:
                    signed_in = await login(c, a.name, a.cut_password)
                if not signed_in.ok:
                    problems.append((a.name, "login", signed_in.code))
            for a in committed_anyway:
                signed_in = await login(c, a.name)
                if not signed_in.ok:
                    problems.append((a.name, "login after a cut registration", signed_in.code))
    assert problems == []
    assert len(acknowledged) >= 30
