"""Engine settings: database errors never carry their parameters (they may be hashes); what an
attempt did to the database (usergraph.http retries on a dead connection); what is an outage."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import exc, text
from sqlalchemy.exc import IntegrityError

from usergraph.db.engine import Attempt, Database, attempt, overflow_of, unreachable


async def test_database_errors_hide_their_parameters(database_url: str) -> None:
    db = Database.connect(database_url)
    secret_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0$bm90LWEtcmVhbC1oYXNo"
    try:
        with pytest.raises(IntegrityError) as caught:
            async with db.sessionmaker() as s, s.begin():
                # Role 1 exists (seeded): the insert fails, with our value among its parameters.
                await s.execute(
                    text("INSERT INTO roles (id, name, description) VALUES (:i, :n, :d)"),
                    [{"i": 1, "n": "dup", "d": secret_hash}],
                )
    finally:
        await db.dispose()
    assert secret_hash not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)


async def test_an_attempt_knows_whether_a_write_transaction_reached_the_database(
    database_url: str,
) -> None:
    db = Database.connect(database_url)
    try:
        with attempt() as reads_only:
            async with db.read_sessionmaker() as s:
                await s.execute(text("SELECT 1"))
        assert not reads_only.wrote and not reads_only.disconnected
        with attempt() as writes:
            async with db.sessionmaker() as s, s.begin():
                await s.execute(text("SELECT 1"))  # inside a transaction that may write
        assert writes.wrote
        # Outside an attempt nothing is recorded (and nothing fails).
        async with db.sessionmaker() as s, s.begin():
            await s.execute(text("SELECT 1"))
    finally:
        await db.dispose()


def test_only_a_dead_connection_before_any_write_is_worth_retrying() -> None:
    assert Attempt(disconnected=True).worth_retrying
    assert not Attempt(disconnected=True, wrote=True).worth_retrying
    assert not Attempt().worth_retrying
    assert not Attempt(wrote=True).worth_retrying


@pytest.mark.parametrize(
    ("error", "down"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (TimeoutError(), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (exc.TimeoutError("QueuePool limit reached"), True),
        (exc.DBAPIError("SELECT 1", {}, OSError("reset"), connection_invalidated=False), True),
        (exc.DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True), True),
        (exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ValueError("a bug"), False),
    ],
)
def test_unreachable_tells_an_outage_from_a_fault(error: BaseException, down: bool) -> None:
    assert unreachable(error) is down


@pytest.mark.parametrize(("pre_ping", "retried"), [(False, True), (True, False)])
def test_a_failed_pre_ping_is_no_reason_to_retry(pre_ping: bool, retried: bool) -> None:
    # With USERGRAPH_DATABASE_PRE_PING the pool replaces a dead connection by itself; only a
    # statement that met one makes the request worth running again.
    from types import SimpleNamespace

    from usergraph.db import engine

    with attempt() as current:
        engine._note_error(SimpleNamespace(is_disconnect=True, is_pre_ping=pre_ping))  # type: ignore[arg-type]
    assert current.worth_retrying is retried


def test_a_pool_may_grow_by_a_quarter_under_load() -> None:
    assert [overflow_of(size) for size in (1, 3, 4, 10, 32)] == [0, 0, 1, 2, 8]


async def test_the_postgresql_pool_keeps_its_size_and_a_quarter_more(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no connection pool to size")
    db = Database.connect(database_url, pool_size=12)
    try:
        pool: Any = db.engine.pool
        assert (pool.size(), pool._max_overflow) == (12, 3)
    finally:
        await db.dispose()
