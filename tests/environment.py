"""Where the tests run: the databases and Redis CI gives, and the settings every app gets.

With TEST_DATABASE_URL (and TEST_REDIS_URL) the tests run again on PostgreSQL (and Redis);
without, those runs skip with that reason.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from usergraph.db.engine import Database
from usergraph.db.migrate import upgrade_to_head
from usergraph.settings import Settings

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
# Parameters for rate-limit counters: in memory, and in Redis when CI gives one.
LIMIT_STORAGES = [
    "memory",
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(
            not TEST_REDIS_URL, reason="TEST_REDIS_URL is not set (Redis-backed limits)"
        ),
    ),
]
TEST_SIGNING_KEY = "test-signing-key-that-is-long-enough-0123456789"
# A Fernet key (32 bytes, url-safe base64) for the TOTP secrets of in-process apps.
TEST_DATA_KEY = "dGVzdC1kYXRhLWtleS10aGF0LWlzLTMyLWJ5dGVzISE="


async def _create_postgres_database(admin_url: str) -> str:
    """Create a throwaway database next to admin_url's and return its URL."""
    url = make_url(admin_url)
    name = f"usergraph_test_{uuid.uuid4().hex[:12]}"
    db = Database.connect(url.render_as_string(hide_password=False))
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await db.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    db = Database.connect(admin_url)
    async with db.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await db.dispose()


async def migrate(url: str) -> None:
    db = Database.connect(url)
    try:
        await upgrade_to_head(db.engine)
    finally:
        await db.dispose()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway, migrated database beside TEST_DATABASE_URL's, dropped afterwards."""
    assert TEST_DATABASE_URL is not None
    url = asyncio.run(_create_postgres_database(TEST_DATABASE_URL))
    try:
        asyncio.run(migrate(url))
        yield url
    finally:
        asyncio.run(_drop_postgres_database(TEST_DATABASE_URL, url))


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "signing_key": TEST_SIGNING_KEY,
        "signing_key_file": tmp_path / "signing-key",
        "jwt_keys_dir": tmp_path / "keys",
        "data_keys": [TEST_DATA_KEY],
        "data_keys_file": tmp_path / "data-key",
        # Cheap hashes: the tests check behaviour, the benchmark checks cost.
        "argon2_time_cost": 1,
        "argon2_memory_cost_kib": 1024,
        "argon2_parallelism": 1,
        "password_hash_concurrency": 2,
        "password_hash_queue": 1000,
        # Freezing would keep every test's garbage for the rest of the session.
        "gc_freeze": False,
        # Production refuses to guess a mailer; the tests of real SMTP set their own. The
        # sender's polling would add statements to every count: the mail tests turn it on.
        "mailer": "log",
        "mail_sender": False,
        # Masking is what clients see in production; tests of development's unmasked messages
        # ask for it.
        "expose_internal_errors": False,
        # The suite signs in hundreds of times from one address; the throttling tests set
        # their own limits.
        "login_account_limit": "1000/minute",
        "login_ip_limit": "100000/minute",
        "register_ip_limit": "100000/minute",
        "refresh_ip_limit": "100000/minute",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
