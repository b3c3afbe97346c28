"""Keyset pagination: `WHERE (key, id) > cursor ORDER BY key, id LIMIT n + 1`, never OFFSET."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Integer, Select, bindparam, tuple_
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


def bound_paginate(
    query: Select[Any],
    columns: Sequence[InstrumentedAttribute[Any]],
    request: PageRequest,
    *,
    descending: bool = False,
) -> Select[Any]:
    """paginate() for request's shape (which bounds, which direction), with bound parameters
    where its values go (bound_values gives them): one statement serves every page of that
    shape, so it can be built once and SQLAlchemy finds its compiled form by identity instead
    of computing a cache key for a new statement on every request."""
    placeholder = PageRequest(
        first=None if request.backwards else 0,
        after=_bounds("after", columns) if request.after is not None else None,
        last=0 if request.backwards else None,
        before=_bounds("before", columns) if request.before is not None else None,
    )
    paged = paginate(query, columns, placeholder, descending=descending)
    return paged.limit(bindparam("page_limit", type_=Integer()))


def bound_values(request: PageRequest) -> dict[str, Any]:
    """The parameters of bound_paginate's statement for request."""
    values: dict[str, Any] = {"page_limit": request.size + 1}
    for name, key in (("after", request.after), ("before", request.before)):
        for index, value in enumerate(key or ()):
            values[f"{name}_{index}"] = value
    return values


def _bounds(name: str, columns: Sequence[InstrumentedAttribute[Any]]) -> Any:
    """A row value of bound parameters, typed as the columns (a plain tuple of them would be
    taken for one value)."""
    return tuple_(
        *(bindparam(f"{name}_{index}", type_=column.type) for index, column in enumerate(columns))
    )


def to_page(rows: Sequence[T], request: PageRequest) -> Page[T]:
    """Trim the extra row that paginate() asked for and tell whether more pages exist."""
    items = list(rows[: request.size])
    has_more = len(rows) > request.size
    if request.backwards:
        items.reverse()
        return Page(items, has_next_page=request.before is not None, has_previous_page=has_more)
    return Page(items, has_next_page=has_more, has_previous_page=request.after is not None)
