"""Seed a PostgreSQL database for the benchmark: N users with roles and some open sessions.

Creates the database if it is missing and migrates it (as `usergraph migrate` does), then
loads the rows with COPY in one transaction. Every account has the same password, hashed once
with the default argon2 costs: seeding must not spend N hashes. Idempotent: a database that
already holds exactly this seed is left alone; one with another number of users is emptied and
seeded again.

    seeded users  u0000001 .. uNNNNNNN (u0000001@example.com), created one second apart;
                  every one has the role `user`, every 100th also `admin`; every 5th has an
                  open session, every 10th two
    known         bench_admin (admin, user) and bench_user (user), created after the others
    password      BENCH_PASSWORD, for all of them

    .venv/bin/python bench/seed.py [--users 100000]   (DATABASE_URL names the database)

Without DATABASE_URL the database is `usergraph_bench` for 100,000 users and
`usergraph_bench_<N>` for any other N, so a quick run and a 1M run keep their own seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from usergraph.auth.passwords import PasswordHasher
from usergraph.db.engine import create_engine
from usergraph.db.migrate import upgrade_to_head
from usergraph.settings import Settings

DEFAULT_USERS = 100_000
DEFAULT_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
BENCH_PASSWORD = "bench password that is not common 7291"
ADMIN_USERNAME = "bench_admin"
USER_USERNAME = "bench_user"
# Rows the benchmark itself writes, removed by reset_bench_writes() before each run.
REGISTERED_PREFIX = "reg_"
BENCH_USER_AGENT = "usergraph-bench"
SEED_USER_AGENT = "usergraph-bench-seed"
SEEDED_USERNAME = r"^u[0-9]{7}$"
FIRST_CREATED_AT = datetime(2020, 1, 1, tzinfo=UTC)
USER_COLUMNS = (
    "id",
    "email",
    "email_key",
    "username",
    "display_name",
    "password_hash",
    "is_active",
    "created_at",
    "updated_at",
    "last_login_at",
)
SESSION_COLUMNS = (
    "id",
    "user_id",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
    "revoked_reason",
    "user_agent",
    "ip_address",
    "auth_methods",
    "authenticated_at",
)


def default_database_url(users: int) -> str:
    name = "usergraph_bench" if users == DEFAULT_USERS else f"usergraph_bench_{users}"
    return f"{DEFAULT_SERVER}/{name}"


def database_url(users: int) -> str:
    return os.environ.get("DATABASE_URL") or default_database_url(users)


def seeded_username(n: int) -> str:
    return f"u{n:07d}"


def created_at(n: int) -> datetime:
    """When seeded user n was created: users sort by (created_at, id) in seed order."""
    return FIRST_CREATED_AT + timedelta(seconds=n)


async def create_database(url: URL) -> bool:
    """Create url's database if it does not exist; return whether it was created."""
    name = url.database
    assert name, "DATABASE_URL names no database"
    server = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with server.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists:
                return False
            quoted = server.dialect.identifier_preparer.quote(name)
            await conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        await server.dispose()


async def _count_seeded(engine: AsyncEngine) -> tuple[int, int, int]:
    """(seeded users, known accounts, any other accounts) in the database."""
    async with engine.connect() as conn:
        others = await conn.scalar(
            text(
                "SELECT count(*) FROM users WHERE username !~ :pattern "
                "AND username NOT IN (:admin, :user) AND username NOT LIKE :prefix"
            ),
            {
                "pattern": SEEDED_USERNAME,
                "admin": ADMIN_USERNAME,
                "user": USER_USERNAME,
                "prefix": REGISTERED_PREFIX.replace("_", r"\_") + "%",
            },
        )
        seeded = await conn.scalar(
            text("SELECT count(*) FROM users WHERE username ~ :pattern"),
            {"pattern": SEEDED_USERNAME},
        )
        known = await conn.scalar(
            text("SELECT count(*) FROM users WHERE username IN (:admin, :user)"),
            {"admin": ADMIN_USERNAME, "user": USER_USERNAME},
        )
    return int(seeded or 0), int(known or 0), int(others or 0)


async def reset_bench_writes(engine: AsyncEngine) -> tuple[int, int]:
    """Remove what earlier benchmark runs wrote: registered accounts and login sessions."""
    async with engine.begin() as conn:
        users = await conn.execute(
            text("DELETE FROM users WHERE username LIKE :prefix"),
            {"prefix": REGISTERED_PREFIX.replace("_", r"\_") + "%"},
        )
        sessions = await conn.execute(
            text("DELETE FROM sessions WHERE user_agent = :agent"), {"agent": BENCH_USER_AGENT}
        )
    return users.rowcount, sessions.rowcount


async def _password_hash() -> str:
    defaults = Settings.model_fields
    hasher = PasswordHasher(
        time_cost=defaults["argon2_time_cost"].default,
        memory_cost_kib=defaults["argon2_memory_cost_kib"].default,
        parallelism=defaults["argon2_parallelism"].default,
    )
    return await hasher.hash(BENCH_PASSWORD)


def _user_rows(users: int, password_hash: str) -> Iterator[tuple[Any, ...]]:
    for n in range(1, users + 1):
        name = seeded_username(n)
        email = f"{name}@example.com"
        at = created_at(n)
        yield (n, email, email, name, f"User {n}", password_hash, True, at, at, None)
    for offset, name in enumerate((ADMIN_USERNAME, USER_USERNAME), start=1):
        email = f"{name}@example.com"
        at = created_at(users + offset)
        yield (users + offset, email, email, name, name, password_hash, True, at, at, None)


def _role_rows(users: int, admin_id: int, user_id: int) -> Iterator[tuple[int, int]]:
    for n in range(1, users + 1):
        yield (n, user_id)
        if n % 100 == 0:
            yield (n, admin_id)
    yield (users + 1, admin_id)
    yield (users + 1, user_id)
    yield (users + 2, user_id)


def _session_rows(users: int) -> Iterator[tuple[Any, ...]]:
    expires = datetime.now(UTC) + timedelta(days=3650)
    for n in range(5, users + 1, 5):
        at = created_at(n) + timedelta(hours=1)
        for _ in range(2 if n % 10 == 0 else 1):
            yield (
                uuid.uuid4(), n, at, at, expires, None, None, SEED_USER_AGENT, "127.0.0.1",
                "pwd", at,
            )  # fmt: skip


async def _load(engine: AsyncEngine, users: int, password_hash: str) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pg: Any = raw.driver_connection  # the asyncpg connection, for COPY
        async with pg.transaction():
            # CASCADE: every table that refers to users (tokens, factors, outbox) empties too.
            await pg.execute("TRUNCATE users, sessions, refresh_tokens, user_roles CASCADE")
            roles = {row["name"]: row["id"] for row in await pg.fetch("SELECT id, name FROM roles")}
            await pg.copy_records_to_table(
                "users", records=_user_rows(users, password_hash), columns=USER_COLUMNS
            )
            await pg.copy_records_to_table(
                "user_roles",
                records=_role_rows(users, roles["admin"], roles["user"]),
                columns=("user_id", "role_id"),
            )
            await pg.copy_records_to_table(
                "sessions", records=_session_rows(users), columns=SESSION_COLUMNS
            )
            await pg.execute(
                "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users))"
            )
        await pg.execute("ANALYZE users, user_roles, sessions, roles")


async def seed(url: str, users: int, *, log: bool = True) -> bool:
    """Make url's database hold exactly this seed; return whether rows were (re)loaded."""

    def say(message: str) -> None:
        if log:
            print(f"seed: {message}", flush=True)

    parsed = make_url(url)
    if await create_database(parsed):
        say(f"created database {parsed.database}")
    engine = create_engine(url, pool_size=2)
    try:
        await upgrade_to_head(engine)
        seeded, known, others = await _count_seeded(engine)
        if others:
            raise SystemExit(
                f"error: {parsed.database} holds {others:,} accounts the benchmark did not make; "
                "seeding empties the tables, so it refuses. Point DATABASE_URL at a database "
                "of its own (unset, it uses usergraph_bench on the local server)."
            )
        if seeded == users and known == 2:
            removed = await reset_bench_writes(engine)
            say(
                f"{parsed.database} already holds {users:,} seeded users; removed "
                f"{removed[0]} registered accounts and {removed[1]} login sessions of "
                "earlier runs"
            )
            return False
        started = time.perf_counter()
        say(f"seeding {users:,} users into {parsed.database} (found {seeded:,})")
        password_hash = await _password_hash()
        await _load(engine, users, password_hash)
        say(f"seeded in {time.perf_counter() - started:.1f} s")
        return True
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    args = parser.parse_args()
    if not 1 <= args.users <= 9_999_999:
        parser.error("--users must be between 1 and 9,999,999")
    asyncio.run(seed(database_url(args.users), args.users))


if __name__ == "__main__":
    main()
