"""SQL statements and database round trips per request, counted in-process.

The app (usergraph's create_app or the floor's) runs inside this process on the benchmark's
database, behind httpx's ASGITransport, with two counters:

- statements: a SQLAlchemy `before_cursor_execute` listener (as the N+1 tests count them);
- round trips: every asyncpg connection's protocol is wrapped, so each message exchange with
  PostgreSQL is seen: statements, BEGIN and ROLLBACK/COMMIT, pre-ping (`;`) and prepares.

Each request is sent once to warm the pool and the prepared-statement caches, then once more
to be counted. Prepares are per connection and once only, so they are listed apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

_current: dict[str, Any] | None = None


def _tally(kind: str, sql: str | None = None) -> None:
    if _current is not None:
        _current["counts"][kind] += 1
        if sql is not None:
            _current["statements"].append(" ".join(sql.split()))


class _CountingProtocol:
    """Forwards everything to asyncpg's protocol; counts the calls that talk to the server."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def query(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        words = sql.replace(";", " ").split()
        word = words[0].upper() if words else ""
        _tally("begin" if word == "BEGIN" else "end" if word in ("ROLLBACK", "COMMIT") else "query")
        return await self._inner.query(sql, *args, **kwargs)

    async def bind_execute(self, state: Any, *args: Any, **kwargs: Any) -> Any:
        _tally("ping" if getattr(state, "query", "").strip() == ";" else "execute")
        return await self._inner.bind_execute(state, *args, **kwargs)

    async def bind_execute_many(self, *args: Any, **kwargs: Any) -> Any:
        _tally("execute")
        return await self._inner.bind_execute_many(*args, **kwargs)

    async def prepare(self, *args: Any, **kwargs: Any) -> Any:
        _tally("prepare")
        return await self._inner.prepare(*args, **kwargs)


def _wrap_protocol(dbapi_connection: Any, _record: Any) -> None:
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and not isinstance(driver._protocol, _CountingProtocol):
        driver._protocol = _CountingProtocol(driver._protocol)


def _before_cursor_execute(
    conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
) -> None:
    _tally("statement", statement)


_installed = False


def install() -> None:
    global _installed
    if not _installed:
        event.listen(Pool, "connect", _wrap_protocol)
        event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
        _installed = True


@dataclass
class Request:
    name: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Count:
    statements: int
    round_trips: int
    detail: dict[str, int]
    sql: list[str]
    status: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "statements": self.statements,
            "round_trips": self.round_trips,
            "detail": self.detail,
            "sql": self.sql,
        }


async def count_requests(
    app: Any,
    lifespan: Callable[[], AbstractAsyncContextManager[Any]],
    requests: list[Request],
    *,
    repeat: Callable[[Request], Request] | None = None,
) -> dict[str, Count]:
    """Count each request's statements and round trips (its second sending).

    repeat gives the request to send the second time (a registration needs a new name).
    """
    global _current
    install()
    counts: dict[str, Count] = {}
    async with (
        lifespan(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=60
        ) as client,
    ):
        for request in requests:
            await _post(client, request)
            second = repeat(request) if repeat else request
            _current = {"counts": Counter(), "statements": []}
            try:
                response = await _post(client, second)
            finally:
                taken, _current = _current, None
            c: Counter[str] = taken["counts"]
            trips = c["execute"] + c["ping"] + c["begin"] + c["end"] + c["query"]
            counts[request.name] = Count(
                statements=c["statement"],
                round_trips=trips,
                detail={k: c[k] for k in ("execute", "begin", "end", "ping", "query", "prepare")},
                sql=taken["statements"],
                status=response.status_code,
            )
    return counts


def _post(client: httpx.AsyncClient, request: Request) -> Awaitable[httpx.Response]:
    return client.post("/graphql", json=request.body, headers=request.headers)
