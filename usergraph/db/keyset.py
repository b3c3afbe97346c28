"""Keyset pagination: `WHERE (key, id) > cursor ORDER BY key, id LIMIT n + 1`, never OFFSET."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute

T = TypeVar("T")
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class PageRequest:
    """What a client asked for: `first` after a cursor, or `last` before one."""

    first: int | None = None
    after: Key | None = None
    last: int | None = None
    before: Key | None = None

    @property
    def size(self) -> int:
        size = self.last if self.last is not None else self.first
        assert size is not None
        return size

    @property
    def backwards(self) -> bool:
        return self.last is not None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_next_page: bool
    has_previous_page: bool


def paginate(
    query: Select[Any],
    columns: Sequence[InstrumentedAttribute[Any]],
    request: PageRequest,
    *,
    descending: bool = False,
) -> Select[Any]:
    """Add the cursor bounds, order and limit of request to query (one row more than asked)."""
    key = tuple_(*columns)
    if request.after is not None:
        query = query.where(key < request.after if descending else key > request.after)
    if request.before is not None:
        query = query.where(key > request.before if descending else key < request.before)
    reverse = descending != request.backwards
    query = query.order_by(*(column.desc() if reverse else column.asc() for column in columns))
    return query.limit(request.size + 1)


def to_page(rows: Sequence[T], request: PageRequest) -> Page[T]:
    """Trim the extra row that paginate() asked for and tell whether more pages exist."""
    items = list(rows[: request.size])
    has_more = len(rows) > request.size
    if request.backwards:
        items.reverse()
        return Page(items, has_next_page=request.before is not None, has_previous_page=has_more)
    return Page(items, has_next_page=has_more, has_previous_page=request.after is not None)
