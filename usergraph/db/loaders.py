"""Dataloaders: one batch query per relation per tick instead of one query per item.

Created fresh for every request (get_context); each batch opens its own short read session,
because sibling fields resolve concurrently and a session must not be shared between tasks.
Each batch returns its results in key order: `[by_key.get(k) for k in keys]`.

Answering without awaiting
--------------------------
graphql-core starts a coroutine for every field whose resolver returns an awaitable, and on a
page of users that per-field cost dominates. So a field that is already known answers
synchronously. The fast paths, and where each lives:

- KnownValuesLoader keeps what it loaded or was primed with in `known`; a resolver calls
  `known_or_load(key)`, which returns the value itself when known and the loader's future only
  otherwise (User.roles in schema/types.py, with RolesByUserIdLoader).
- Prefetching by lookahead: a list resolver that sees a relation selected for every item
  (schema/lookahead.py `selects`) loads it for the whole page in one batch first
  (`Loaders.prefetch_roles` in resolvers/users.py), so every item then finds it known.
- The viewer: `Loaders.viewer` reads the user, the session and the roles in one read session
  and primes them here; once loaded, `Context.known_viewer()` gives it without awaiting, and
  SelfOrAdminOrNull (schema/permissions.py) decides private fields synchronously with it.

A new type that needs the same trick makes its loader a KnownValuesLoader and resolves with
`known_or_load`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from aiodataloader import DataLoader

from usergraph.db import second_factors as factor_queries
from usergraph.db import sessions as session_queries
from usergraph.db import users as user_queries
from usergraph.db.engine import Database
from usergraph.db.keyset import Key, Page
from usergraph.db.models import UserSession, utcnow
from usergraph.db.records import AnySession, AnyUser, RoleRecord, SessionRecord, UserRecord

MAX_BATCH_SIZE = 1000


class _Loader(DataLoader):  # type: ignore[type-arg]
    def __init__(self, db: Database) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE)
        self.sessionmaker = db.read_sessionmaker
        self.reader = db.reader


class UserByIdLoader(_Loader):
    async def batch_load_fn(self, keys: Sequence[int]) -> list[AnyUser | None]:
        async with self.reader.connect() as conn:
            found = await user_queries.get_users_by_ids(conn, keys)
        by_key: dict[int, AnyUser] = {user.id: user for user in found}
        return [by_key.get(key) for key in keys]


class KnownValuesLoader(_Loader):
    """A loader that keeps what it loaded or was primed with, so a resolver can answer without
    awaiting once a value is known (see "Answering without awaiting" above)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.known: dict[Any, Any] = {}

    async def batch_load_fn(self, keys: Sequence[Any]) -> list[Any]:
        found = await self.load_batch(keys)
        self.known.update(zip(keys, found, strict=True))
        return found

    async def load_batch(self, keys: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def known_or_load(self, key: Any) -> Any:
        """The value when known, else the loader's future (which the executor awaits)."""
        known = self.known.get(key, _UNKNOWN)
        return self.load(key) if known is _UNKNOWN else known

    def prime(self, key: Any, value: Any) -> KnownValuesLoader:
        super().prime(key, value)
        self.known.setdefault(key, value)  # as the cache: an entry already there stays
        return self

    def clear(self, key: Any) -> KnownValuesLoader:
        self.known.pop(key, None)
        super().clear(key)
        return self

    def clear_all(self) -> KnownValuesLoader:
        self.known.clear()
        super().clear_all()
        return self


_UNKNOWN = object()


class RolesByUserIdLoader(KnownValuesLoader):
    async def load_batch(self, keys: Sequence[int]) -> list[list[RoleRecord]]:
        async with self.reader.connect() as conn:
            by_key = await user_queries.roles_by_user_ids(conn, keys)
        return [by_key.get(key, []) for key in keys]


class SessionByIdLoader(_Loader):
    async def batch_load_fn(self, keys: Sequence[uuid.UUID]) -> list[AnySession | None]:
        async with self.sessionmaker() as session:
            found = await session_queries.get_sessions_by_ids(session, keys)
        by_key: dict[uuid.UUID, AnySession] = {row.id: row for row in found}
        return [by_key.get(key) for key in keys]


@dataclass(frozen=True, slots=True)
class SessionsPageKey:
    user_id: int
    first: int
    after: Key | None = None


class OpenSessionsByUserIdLoader(_Loader):
    """Keys are SessionsPageKey; users asked with the same page size share one query."""

    def __init__(self, db: Database, now: datetime) -> None:
        super().__init__(db)
        self.now = now

    async def batch_load_fn(self, keys: Sequence[SessionsPageKey]) -> list[Page[UserSession]]:
        groups: dict[tuple[int, Key | None], list[int]] = {}
        for key in keys:
            groups.setdefault((key.first, key.after), []).append(key.user_id)
        pages: dict[SessionsPageKey, Page[UserSession]] = {}
        async with self.sessionmaker() as session:
            for (first, after), user_ids in groups.items():
                found = await session_queries.open_sessions_by_user_ids(
                    session, user_ids=user_ids, first=first, after=after, now=self.now
                )
                for user_id in user_ids:
                    pages[SessionsPageKey(user_id, first, after)] = found.get(
                        user_id, Page([], has_next_page=False, has_previous_page=after is not None)
                    )
        return [pages[key] for key in keys]


class OpenSessionCountByUserIdLoader(_Loader):
    def __init__(self, db: Database, now: datetime) -> None:
        super().__init__(db)
        self.now = now

    async def batch_load_fn(self, keys: Sequence[int]) -> list[int]:
        async with self.sessionmaker() as session:
            counts = await session_queries.count_open_sessions(session, user_ids=keys, now=self.now)
        return [counts.get(key, 0) for key in keys]


class SecondFactorsByUserIdLoader(_Loader):
    async def batch_load_fn(self, keys: Sequence[int]) -> list[factor_queries.FactorState]:
        async with self.sessionmaker() as session:
            states = await factor_queries.factor_states(session, keys)
        return [states.get(key, factor_queries.FactorState()) for key in keys]


class Loaders:
    """The request's loaders, each made when first asked for: most requests need one or two of
    them (`{ __typename }` none), and making all six cost more than the rest of a small one."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.now = utcnow()  # "open" sessions are open as of the request's start

    @classmethod
    def create(cls, db: Database) -> Loaders:
        return cls(db)

    @cached_property
    def user_by_id(self) -> UserByIdLoader:
        return UserByIdLoader(self.db)

    @cached_property
    def roles_by_user_id(self) -> RolesByUserIdLoader:
        return RolesByUserIdLoader(self.db)

    @cached_property
    def session_by_id(self) -> SessionByIdLoader:
        return SessionByIdLoader(self.db)

    @cached_property
    def open_sessions_by_user_id(self) -> OpenSessionsByUserIdLoader:
        return OpenSessionsByUserIdLoader(self.db, self.now)

    @cached_property
    def open_session_count_by_user_id(self) -> OpenSessionCountByUserIdLoader:
        return OpenSessionCountByUserIdLoader(self.db, self.now)

    @cached_property
    def second_factors_by_user_id(self) -> SecondFactorsByUserIdLoader:
        return SecondFactorsByUserIdLoader(self.db)

    def _made(self, *names: str) -> list[Any]:
        """The loaders of these names that this request made (the others hold nothing)."""
        return [self.__dict__[name] for name in names if name in self.__dict__]

    async def viewer(
        self, user_id: int, session_id: uuid.UUID
    ) -> tuple[UserRecord, SessionRecord, list[RoleRecord]] | None:
        """The user and their session (only if the session is theirs), and the user's roles.

        The hottest read (every signed-in request): one Core connection, a joined query and the
        roles, instead of three loader batches. What it read is primed into the loaders.
        """
        async with self.db.reader.connect() as conn:
            found = await user_queries.user_with_session(
                conn, user_id=user_id, session_id=session_id
            )
            if found is None:
                return None
            roles = (await user_queries.roles_by_user_ids(conn, [user_id])).get(user_id, [])
        user, user_session = found
        self.user_by_id.prime(user.id, user)
        self.session_by_id.prime(user_session.id, user_session)
        self.roles_by_user_id.prime(user.id, roles)
        return user, user_session, roles

    async def prefetch_roles(self, user_ids: Sequence[int]) -> None:
        """Load the roles of a page of users in one batch, so each then resolves without
        awaiting."""
        await self.roles_by_user_id.load_many(user_ids)

    def forget_user(self, user_id: int) -> None:
        """Drop what this request cached about a user after a write touched it."""
        for loader in self._made(
            "user_by_id",
            "roles_by_user_id",
            "open_session_count_by_user_id",
            "second_factors_by_user_id",
        ):
            loader.clear(user_id)
        for loader in self._made("open_sessions_by_user_id"):
            loader.clear_all()

    def forget_sessions(self) -> None:
        for loader in self._made(
            "session_by_id", "open_sessions_by_user_id", "open_session_count_by_user_id"
        ):
            loader.clear_all()

    def replace_user(self, user: AnyUser) -> None:
        """After a write changed the user's roles or activity: forget, then prime the new row."""
        self.forget_user(user.id)
        self.prime_user(user)

    def prime_user(self, user: AnyUser) -> None:
        self.user_by_id.clear(user.id).prime(user.id, user)
