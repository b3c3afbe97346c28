"""Engine and sessionmaker for the configured database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event, exc
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SQLITE_BUSY_TIMEOUT_MS = 5000
READ_ONLY = "usergraph_read_only"


def overflow_of(pool_size: int) -> int:
    """Connections a pool may open beyond pool_size under load, closed again when returned:
    a quarter more. The pool itself is sized so a worker's usual load opens none (a new
    connection costs several round trips); the overflow absorbs peaks without holding
    PostgreSQL's connection slots (100 by default) for every worker."""
    return pool_size // 4


def create_engine(database_url: str, *, pool_size: int = 32, pre_ping: bool = False) -> AsyncEngine:
    """Return an async engine; SQLite gets foreign keys, WAL and a busy timeout.

    hide_parameters: database errors are logged, and their parameters may be password hashes.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            hide_parameters=True,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
    else:
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=overflow_of(pool_size),
            pool_pre_ping=pre_ping,
            hide_parameters=True,
        )
    event.listen(engine.sync_engine, "after_cursor_execute", _note_statement)
    event.listen(engine.sync_engine, "handle_error", _note_error)
    return engine


@dataclass(frozen=True, slots=True)
class Database:
    """The engine, its sessionmakers (one for transactions, one for reads that want the ORM),
    and `reader`: the engine with the read options, for the hot reads on Core connections
    (loaders, pages; db/records.py)."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    reader: AsyncEngine

    @classmethod
    def connect(cls, database_url: str, *, pool_size: int = 32, pre_ping: bool = False) -> Database:
        engine = create_engine(database_url, pool_size=pool_size, pre_ping=pre_ping)
        reader = engine.execution_options(**_read_options(engine))
        return cls(
            engine=engine,
            sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
            read_sessionmaker=async_sessionmaker(reader, expire_on_commit=False),
            reader=reader,
        )

    async def dispose(self) -> None:
        await self.engine.dispose()


# --- A dead pooled connection, and whether retrying the work is safe ---------------------------


@dataclass
class Attempt:
    """What one attempt at some work (a request) did to the database."""

    # A statement of a transaction that may write reached the database and completed.
    wrote: bool = False
    # A pooled connection turned out dead (the database restarted, or dropped it).
    disconnected: bool = False

    @property
    def worth_retrying(self) -> bool:
        """A dead connection failed it before any of its writes reached the database; the pool
        has dropped its old connections, so a new attempt gets fresh ones."""
        return self.disconnected and not self.wrote


_attempt: ContextVar[Attempt | None] = ContextVar("usergraph_db_attempt", default=None)


@contextmanager
def attempt() -> Iterator[Attempt]:
    """Record what the work inside (and the tasks it starts) does to the database."""
    current = Attempt()
    token = _attempt.set(current)
    try:
        yield current
    finally:
        _attempt.reset(token)


def _note_statement(conn: Any, *_args: Any) -> None:
    current = _attempt.get()
    if current is not None and not conn.get_execution_options().get(READ_ONLY):
        current.wrote = True


def _note_error(context: ExceptionContext) -> None:
    current = _attempt.get()
    # A failed pre-ping (USERGRAPH_DATABASE_PRE_PING) is recovered by the pool itself.
    if current is not None and context.is_disconnect and not context.is_pre_ping:
        current.disconnected = True


# asyncpg's own errors for a server that is starting, stopping or gone (raised at connect).
_DOWN = (
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def unreachable(error: BaseException) -> bool:
    """Whether error says the database cannot be reached now: refused, down, restarting, a
    connection dropped, or no pooled connection free in time."""
    if isinstance(error, exc.DBAPIError):
        return error.connection_invalidated or isinstance(error.orig, (OSError, *_DOWN))
    return isinstance(error, (OSError, exc.TimeoutError, *_DOWN))


def _read_options(engine: AsyncEngine) -> dict[str, Any]:
    """Reads (loaders, lookups) need no transaction: each is one statement. On PostgreSQL they
    run in autocommit, which saves the BEGIN and ROLLBACK round trips of every batch. SQLite
    reads begin a deferred transaction (_sqlite_begin_immediate), which costs no round trip."""
    if engine.dialect.name == "sqlite":
        return {READ_ONLY: True}
    return {READ_ONLY: True, "isolation_level": "AUTOCOMMIT"}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, issue BEGIN (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # SQLite's own lower() folds ASCII only; searches compare it with Python's str.lower().
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def _sqlite_begin_immediate(conn: Any) -> None:
    # Transactions that may write take the write lock up front (BEGIN IMMEDIATE): two concurrent
    # writers then wait on the busy timeout instead of one failing with "database is locked"
    # when its read lock cannot be upgraded. Loader reads begin deferred and never block.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
