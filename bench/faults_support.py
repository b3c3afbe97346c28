"""What every fault scenario (bench/faults.py) needs: a throwaway PostgreSQL database and Redis
prefix, `usergraph serve` processes seen through /proc, a GraphQL client that classifies every
answer, and the table row a scenario ends in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
from servers import Server, descendants, server_environment
from sqlalchemy.engine import make_url

from usergraph.auth.data_keys import new_data_key

PG_SERVER = os.environ.get("FAULTS_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("FAULTS_REDIS_URL", "redis://127.0.0.1:6379/0")
SIGNING_KEY = "faults-signing-key-that-is-long-enough-0123456789"
DATA_KEY = new_data_key()
PASSWORD = "faults password that is not common 4711"
WIDE_OPEN = "100000/minute"
CHEAP_ARGON2 = {
    "USERGRAPH_ARGON2_TIME_COST": "1",
    "USERGRAPH_ARGON2_MEMORY_COST_KIB": "1024",
    "USERGRAPH_ARGON2_PARALLELISM": "1",
}
CLI = [sys.executable, "-m", "usergraph.cli"]
RUN_ID = uuid.uuid4().hex[:8]

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken refreshToken user { id username } userErrors { code } } }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken refreshToken userErrors { code } } }"""
REFRESH = """mutation($input: RefreshInput!) { refresh(input: $input) {
  accessToken refreshToken userErrors { code } } }"""
CHANGE_PASSWORD = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
  user { id } userErrors { code } } }"""
ME = "{ me { id username email roles { name } } }"
USERS_PAGE = """query($after: String) { users(first: 50, after: $after) {
  edges { node { id username roles { name } } } pageInfo { hasNextPage endCursor } } }"""


# --- PostgreSQL and Redis ---------------------------------------------------------------------


def _dsn(url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def reachable(url: str) -> str | None:
    """None when PostgreSQL answers at url, else why not."""
    try:
        conn = await asyncpg.connect(_dsn(url), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {url}: {exc}"
    await conn.close()
    return None


async def redis_reachable(url: str) -> str | None:
    client = aioredis.from_url(url, socket_connect_timeout=5)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        return f"Redis at {url}: {exc}"
    finally:
        await client.aclose()
    return None


@dataclass
class Store:
    """A throwaway database (usergraph_faults_<run>_<name>) and Redis prefix of one scenario."""

    name: str
    database_url: str = ""
    redis_prefix: str = ""

    async def create(self) -> None:
        database = f"usergraph_faults_{RUN_ID}_{self.name}"
        admin = await asyncpg.connect(_dsn(PG_SERVER.rstrip("/") + "/postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
        self.database_url = f"{PG_SERVER.rstrip('/')}/{database}"
        self.redis_prefix = f"usergraph-faults-{RUN_ID}-{self.name}"

    async def drop(self) -> None:
        if not self.database_url:
            return
        database = make_url(self.database_url).database
        admin = await asyncpg.connect(_dsn(PG_SERVER.rstrip("/") + "/postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()
        client = aioredis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.redis_prefix}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(_dsn(self.database_url))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def scalar(self, query: str, *args: Any) -> Any:
        rows = await self.fetch(query, *args)
        return rows[0][0] if rows else None

    async def half_written(self) -> dict[str, int]:
        """Rows that only a torn transaction leaves: an account without its role or its
        verification token and email, a session without a refresh token."""
        checks = {
            "users without a role": "SELECT count(*) FROM users u WHERE NOT EXISTS "
            "(SELECT 1 FROM user_roles r WHERE r.user_id = u.id)",
            "users without a verification token": "SELECT count(*) FROM users u WHERE "
            "NOT EXISTS (SELECT 1 FROM email_tokens t WHERE t.user_id = u.id AND "
            "t.purpose = 'verify_email') AND NOT EXISTS (SELECT 1 FROM user_roles r JOIN roles "
            "o ON o.id = r.role_id WHERE r.user_id = u.id AND o.name = 'admin')",
            "verification tokens without their email": "SELECT count(*) FROM email_tokens t "
            "WHERE t.purpose = 'verify_email' AND NOT EXISTS (SELECT 1 FROM mail_outbox m "
            "WHERE m.kind = 'verify_email' AND m.to_address = t.email)",
            "sessions without a refresh token": "SELECT count(*) FROM sessions s WHERE NOT "
            "EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id)",
        }
        found = {}
        for what, query in checks.items():
            found[what] = int(await self.scalar(query) or 0)
        return found

    async def usernames(self) -> Counter[str]:
        rows = await self.fetch("SELECT username FROM users")
        return Counter(row["username"] for row in rows)


# --- server processes -----------------------------------------------------------------------


def environment(store: Store, *, cheap: bool = True, **settings: str) -> dict[str, str]:
    """A production server on the store's database and Redis prefix, throttles wide open."""
    values = {
        "DATABASE_URL": store.database_url,
        "REDIS_URL": REDIS_URL,
        "USERGRAPH_REDIS_KEY_PREFIX": store.redis_prefix,
        "USERGRAPH_ENV": "production",
        "USERGRAPH_SIGNING_KEY": SIGNING_KEY,
        "USERGRAPH_DATA_KEYS": DATA_KEY,
        "USERGRAPH_MAILER": "log",
        "USERGRAPH_LOGIN_ACCOUNT_LIMIT": WIDE_OPEN,
        "USERGRAPH_LOGIN_IP_LIMIT": WIDE_OPEN,
        "USERGRAPH_REGISTER_IP_LIMIT": WIDE_OPEN,
        "USERGRAPH_REFRESH_IP_LIMIT": WIDE_OPEN,
        "USERGRAPH_ACCESS_TOKEN_TTL_SECONDS": "7200",
        "USERGRAPH_PASSWORD_HASH_QUEUE": "1000",
        **(CHEAP_ARGON2 if cheap else {}),
        **settings,
    }
    return server_environment(**values)


def migrate(env: dict[str, str], directory: Path) -> None:
    subprocess.run([*CLI, "migrate"], cwd=directory, env=env, check=True, capture_output=True)


def create_admin(env: dict[str, str], directory: Path, username: str) -> None:
    subprocess.run(
        [*CLI, "create-user", "--admin", "--password-stdin", "--username", username,
         "--email", f"{username}@example.com"],
        cwd=directory, env=env, input=(PASSWORD + "\n").encode(), check=True,
        capture_output=True,
    )  # fmt: skip


def start(name: str, env: dict[str, str], directory: Path, *, workers: int = 1) -> Server:
    """`usergraph serve` started and ready (its log in directory/<name>.log)."""
    argv = [*CLI, "serve", "--workers", str(workers)]
    server = Server(name, argv, env=env, directory=directory, ready_path="/readyz", cpus=None)
    server.start()
    server.wait_ready()
    return server


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def workers(server: Server) -> list[int]:
    """The processes that serve requests: uvicorn's spawned children (not multiprocessing's
    resource tracker), or the server itself when it runs one worker in-process."""
    below = descendants(server.pid)[1:]
    children = [pid for pid in below if "spawn_main" in cmdline(pid)]
    return children if len(below) else [server.pid]


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def established(pid: int, port: int) -> int:
    """TCP connections on the server's port that this process holds open (ESTABLISHED)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                local_port = int(parts[1].rsplit(":", 1)[1], 16)
                if local_port == port and parts[3] == "01":
                    inodes.add(parts[9])
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    count += 1
    return count


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop_all(server: Server) -> None:
    """Stop the server; SIGKILL whatever of it is left (a killed supervisor's orphans)."""
    pids = descendants(server.pid)
    server.stop()
    for pid in pids:
        if alive(pid):
            kill(pid)


# --- the client -----------------------------------------------------------------------------


@dataclass
class Answer:
    """What one request came to. code: OK, a userErrors code, a GraphQL error code, HTTP <n>
    or the transport exception's name."""

    op: str
    code: str
    status: int | None
    started: float
    latency: float
    payload: dict[str, Any] | None = None
    errors: list[Any] | None = None
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def transport(self) -> bool:
        return self.status is None


def classify(op: str, response: httpx.Response, started: float, latency: float) -> Answer:
    status = response.status_code
    text = response.text[:300]
    try:
        body = response.json()
    except ValueError:
        return Answer(op, f"HTTP {status}", status, started, latency, text=text)
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        codes = [str((e.get("extensions") or {}).get("code", "NO_CODE")) for e in errors]
        return Answer(op, codes[0], status, started, latency, errors=errors, text=text)
    if status != 200:
        return Answer(op, f"HTTP {status}", status, started, latency, text=text)
    data = body.get("data") or {}
    payload = next(iter(data.values()), None) if len(data) == 1 else data
    if isinstance(payload, dict) and payload.get("userErrors"):
        code = str(payload["userErrors"][0]["code"])
        return Answer(op, code, status, started, latency, payload=payload, text=text)
    return Answer(op, "OK", status, started, latency, payload=payload, text=text)


class Client:
    """GraphQL over HTTP to one server; every answer is classified and kept."""

    def __init__(
        self,
        base_url: str,
        *,
        connections: int = 100,
        keepalive: int | None = None,
        timeout: float = 60,
    ) -> None:
        """keepalive: idle connections kept for reuse (all of them by default; 0: every
        request on a new connection)."""
        self.base_url = base_url
        keep = connections if keepalive is None else keepalive
        # uvicorn closes a connection idle for 5 s: a client reusing one at that moment sees it
        # closed under its request. Give idle connections up well before.
        limits = httpx.Limits(
            max_connections=connections, max_keepalive_connections=keep, keepalive_expiry=2
        )
        self.http = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)
        self.answers: list[Answer] = []
        self.keep = True

    async def close(self) -> None:
        await self.http.aclose()

    async def send(
        self,
        op: str,
        *,
        content: bytes | None = None,
        body: dict[str, Any] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        all_headers = {"content-type": "application/json", **(headers or {})}
        if token:
            all_headers["authorization"] = f"Bearer {token}"
        if content is None:
            content = json.dumps(body).encode()
        started = time.monotonic()
        try:
            response = await self.http.post("/graphql", content=content, headers=all_headers)
        except httpx.HTTPError as exc:
            answer = Answer(op, type(exc).__name__, None, started, time.monotonic() - started)
            answer.text = repr(exc)[:300]
        else:
            answer = classify(op, response, started, time.monotonic() - started)
        if self.keep:
            self.answers.append(answer)
        return answer

    async def gql(
        self, op: str, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> Answer:
        return await self.send(op, body={"query": query, "variables": variables or {}}, token=token)

    async def register(self, username: str, password: str = PASSWORD) -> Answer:
        return await self.gql(
            "register",
            REGISTER,
            {"input": {"email": f"{username}@example.com", "username": username,
                       "password": password}},
        )  # fmt: skip

    async def login(self, login: str, password: str = PASSWORD) -> Answer:
        return await self.gql("login", LOGIN, {"input": {"login": login, "password": password}})

    async def refresh(self, refresh_token: str) -> Answer:
        return await self.gql("refresh", REFRESH, {"input": {"refreshToken": refresh_token}})

    async def change_password(self, token: str, current: str, new: str) -> Answer:
        variables = {"input": {"currentPassword": current, "newPassword": new}}
        return await self.gql("changePassword", CHANGE_PASSWORD, variables, token=token)

    async def me(self, token: str) -> Answer:
        return await self.gql("me", ME, token=token)

    async def users_page(self, token: str, after: str | None = None) -> Answer:
        return await self.gql("users", USERS_PAGE, {"after": after}, token=token)


@contextlib.asynccontextmanager
async def client(base_url: str, **kwargs: Any) -> AsyncIterator[Client]:
    c = Client(base_url, **kwargs)
    try:
        yield c
    finally:
        await c.close()


# --- figures and the table ------------------------------------------------------------------


def percentile(values: Iterable[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def codes(answers: Iterable[Answer]) -> str:
    """'code xN, ...' for the answers that were not OK, most common first."""
    tally = Counter(f"{a.op} {a.code}" for a in answers if not a.ok)
    return ", ".join(f"{what} x{n}" for what, n in tally.most_common()) or "none"


@dataclass
class Row:
    """One line of the table: what a scenario did and whether it met its goal."""

    scenario: str
    requests: int = 0
    failed: int = 0
    http_5xx: int = 0
    internal: int = 0
    lost: int = 0
    duplicated: int = 0
    figure: str = ""
    met: bool = True
    notes: list[str] = field(default_factory=list)

    def count(self, answers: Iterable[Answer], *, expected: Iterable[str] = ("OK",)) -> None:
        """Add answers: failed unless their code is expected; 5xx and internal errors."""
        allowed = set(expected)
        for answer in answers:
            self.requests += 1
            self.failed += answer.code not in allowed
            self.http_5xx += answer.status is not None and answer.status >= 500
            self.internal += answer.code == "INTERNAL_SERVER_ERROR" or any(
                (e.get("extensions") or {}).get("code") == "INTERNAL_SERVER_ERROR"
                for e in answer.errors or []
            )

    def miss(self, why: str) -> None:
        self.met = False
        self.notes.append(f"NOT MET: {why}")

    def note(self, what: str) -> None:
        self.notes.append(what)


def table(rows: list[Row]) -> str:
    header = ("scenario", "requests", "failed", "5xx", "internal", "lost/dup writes", "figure",
              "goal")  # fmt: skip
    cells = [header]
    for row in rows:
        cells.append(
            (
                row.scenario,
                str(row.requests),
                str(row.failed),
                str(row.http_5xx),
                str(row.internal),
                f"{row.lost} / {row.duplicated}",
                row.figure,
                "MET" if row.met else "NOT MET",
            )
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        line = "  ".join(
            c.rjust(w) if 0 < i < 6 else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        lines.append(line.rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"faults: {message}", flush=True)


async def sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
