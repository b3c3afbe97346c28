"""usergraph.db.keyset: PageRequest, the SQL paginate() adds, and to_page()'s trimming and flags.

Pure: the statements are compiled, or run on an in-memory SQLite table of this module's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Integer, Select, String, create_engine, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from usergraph.db.keyset import (
    Key,
    Page,
    PageRequest,
    bound_paginate,
    bound_values,
    paginate,
    to_page,
)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(10))


COLUMNS = [Item.name, Item.id]
# Ties on name are broken by id.
ROWS = [(1, "b"), (2, "a"), (3, "c"), (4, "b"), (5, "d"), (6, "a"), (7, "e")]
ASCENDING = sorted(ROWS, key=lambda row: (row[1], row[0]))


POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def compiled(query: Select[Any]) -> str:
    """The statement as PostgreSQL gets it, values inline, on one line."""
    text = str(query.compile(dialect=POSTGRESQL, compile_kwargs={"literal_binds": True}))
    return " ".join(text.split())


def sql(request: PageRequest, *, descending: bool = False) -> str:
    return compiled(paginate(select(Item.id), COLUMNS, request, descending=descending))


# --- PageRequest --------------------------------------------------------------------------


def test_page_request_size_and_direction() -> None:
    assert (PageRequest(first=5).size, PageRequest(first=5).backwards) == (5, False)
    assert (PageRequest(last=3).size, PageRequest(last=3).backwards) == (3, True)
    assert (PageRequest(first=0).size, PageRequest(last=0).backwards) == (0, True)
    # last wins when both are set (relay.page_request refuses that combination earlier).
    both = PageRequest(first=5, last=3)
    assert (both.size, both.backwards) == (3, True)


def test_page_request_without_a_size_has_none() -> None:
    with pytest.raises(AssertionError):
        _ = PageRequest().size
    assert PageRequest().backwards is False


# --- paginate: the SQL --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "descending", "expected"),
    [
        (
            PageRequest(first=2),
            False,
            "SELECT items.id FROM items ORDER BY items.name ASC, items.id ASC LIMIT 3",
        ),
        (
            PageRequest(first=3, after=("b", 4)),
            False,
            "SELECT items.id FROM items WHERE (items.name, items.id) > ('b', 4) "
            "ORDER BY items.name ASC, items.id ASC LIMIT 4",
        ),
        (
            PageRequest(first=3, after=("b", 4)),
            True,
            "SELECT items.id FROM items WHERE (items.name, items.id) < ('b', 4) "
            "ORDER BY items.name DESC, items.id DESC LIMIT 4",
        ),
        (
            PageRequest(last=2, before=("c", 3)),
            False,
            "SELECT items.id FROM items WHERE (items.name, items.id) < ('c', 3) "
            "ORDER BY items.name DESC, items.id DESC LIMIT 3",
        ),
        (
            PageRequest(last=2, before=("c", 3)),
            True,
            "SELECT items.id FROM items WHERE (items.name, items.id) > ('c', 3) "
            "ORDER BY items.name ASC, items.id ASC LIMIT 3",
        ),
        (
            PageRequest(last=5, after=("a", 2), before=("d", 5)),
            False,
            "SELECT items.id FROM items WHERE (items.name, items.id) > ('a', 2) "
            "AND (items.name, items.id) < ('d', 5) "
            "ORDER BY items.name DESC, items.id DESC LIMIT 6",
        ),
        (
            PageRequest(first=0),
            True,
            "SELECT items.id FROM items ORDER BY items.name DESC, items.id DESC LIMIT 1",
        ),
    ],
    ids=[
        "first",
        "after",
        "after-descending",
        "before",
        "before-descending",
        "between",
        "zero",
    ],
)
def test_paginate_adds_bounds_order_and_one_more_row(
    request_: PageRequest, descending: bool, expected: str
) -> None:
    statement = sql(request_, descending=descending)
    assert statement == expected
    assert "OFFSET" not in statement


def test_paginate_keeps_the_querys_own_conditions() -> None:
    query = paginate(
        select(Item.id).where(Item.name != "x"), COLUMNS, PageRequest(first=1, after=("a", 1))
    )
    assert "WHERE items.name != 'x' AND (items.name, items.id) > ('a', 1)" in compiled(query)


# --- paginate + to_page on a real table ---------------------------------------------------


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all(Item(id=id_, name=name) for id_, name in ROWS)
        s.commit()
        yield s
    engine.dispose()


def fetch(s: Session, request: PageRequest, *, descending: bool = False) -> Page[Item]:
    rows = s.scalars(paginate(select(Item), COLUMNS, request, descending=descending)).all()
    return to_page(rows, request)


def key(item: Item) -> Key:
    return (item.name, item.id)


def pairs(page: Page[Item]) -> list[tuple[int, str]]:
    return [(item.id, item.name) for item in page.items]


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_forward_pages_walk_every_row_once(session: Session, descending: bool) -> None:
    expected = ASCENDING[::-1] if descending else ASCENDING
    seen: list[tuple[int, str]] = []
    flags: list[tuple[bool, bool]] = []
    after: Key | None = None
    while True:
        page = fetch(session, PageRequest(first=3, after=after), descending=descending)
        seen += pairs(page)
        flags.append((page.has_next_page, page.has_previous_page))
        if not page.has_next_page:
            break
        after = key(page.items[-1])
    assert seen == expected
    assert flags == [(True, False), (True, True), (False, True)]


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_backward_pages_walk_every_row_once_in_order(session: Session, descending: bool) -> None:
    expected = ASCENDING[::-1] if descending else ASCENDING
    pages: list[list[tuple[int, str]]] = []
    flags: list[tuple[bool, bool]] = []
    before: Key | None = None
    while True:
        page = fetch(session, PageRequest(last=3, before=before), descending=descending)
        pages.insert(0, pairs(page))
        flags.append((page.has_next_page, page.has_previous_page))
        if not page.has_previous_page:
            break
        before = key(page.items[0])
    # Each page is in the asked order, and the pages end where the forward walk does.
    assert pages == [expected[0:1], expected[1:4], expected[4:7]]
    assert flags == [(False, True), (True, True), (True, False)]


def test_a_page_between_two_cursors(session: Session) -> None:
    # ASCENDING: a2 a6 b1 b4 c3 d5 e7
    page = fetch(session, PageRequest(first=10, after=("a", 6), before=("d", 5)))
    assert pairs(page) == [(1, "b"), (4, "b"), (3, "c")]
    page = fetch(session, PageRequest(last=2, after=("a", 6), before=("d", 5)))
    assert pairs(page) == [(4, "b"), (3, "c")]
    assert (page.has_next_page, page.has_previous_page) == (True, True)


# --- to_page alone ------------------------------------------------------------------------


def test_to_page_forward() -> None:
    full = to_page([1, 2, 3], PageRequest(first=2))
    assert full == Page(items=[1, 2], has_next_page=True, has_previous_page=False)
    last = to_page([4, 5], PageRequest(first=2, after=(3,)))
    assert last == Page(items=[4, 5], has_next_page=False, has_previous_page=True)
    short = to_page([4], PageRequest(first=2, after=(3,)))
    assert short == Page(items=[4], has_next_page=False, has_previous_page=True)
    assert to_page([], PageRequest(first=2)) == Page(
        [], has_next_page=False, has_previous_page=False
    )


def test_to_page_backward_reverses_the_rows() -> None:
    # paginate() reads a backward page in reverse order; to_page turns it back.
    rows = [9, 8, 7]
    page = to_page(rows, PageRequest(last=2))
    assert page == Page(items=[8, 9], has_next_page=False, has_previous_page=True)
    assert rows == [9, 8, 7]  # the caller's rows are not reversed in place
    first = to_page([2, 1], PageRequest(last=2, before=(3,)))
    assert first == Page(items=[1, 2], has_next_page=True, has_previous_page=False)


def test_to_page_of_size_zero_tells_whether_rows_exist() -> None:
    assert to_page([1], PageRequest(first=0)) == Page(
        [], has_next_page=True, has_previous_page=False
    )
    assert to_page([], PageRequest(first=0)) == Page(
        [], has_next_page=False, has_previous_page=False
    )
    assert to_page([1], PageRequest(last=0)) == Page(
        [], has_next_page=False, has_previous_page=True
    )


# --- bound_paginate: the same rows from one statement per shape -----------------------------

BOUND_REQUESTS = [
    PageRequest(first=3),
    PageRequest(first=2, after=("b", 1)),
    PageRequest(last=2),
    PageRequest(last=3, before=("c", 3)),
    PageRequest(first=4, after=("a", 2), before=("d", 5)),
    PageRequest(first=0, after=("e", 7)),
]


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("request_", BOUND_REQUESTS, ids=repr)
def test_bound_paginate_reads_what_paginate_reads(
    session: Session, request_: PageRequest, descending: bool
) -> None:
    bound = bound_paginate(select(Item), COLUMNS, request_, descending=descending)
    rows = session.scalars(bound, bound_values(request_)).all()
    assert pairs(to_page(rows, request_)) == pairs(fetch(session, request_, descending=descending))


def test_bound_paginate_serves_every_page_of_its_shape() -> None:
    """Its statement holds no value of the request: pages of one shape share it."""
    one = bound_paginate(select(Item.id), COLUMNS, PageRequest(first=3, after=("a", 1)))
    other = bound_paginate(select(Item.id), COLUMNS, PageRequest(first=9, after=("z", 8)))
    assert str(one.compile(dialect=POSTGRESQL)) == str(other.compile(dialect=POSTGRESQL))
    assert bound_values(PageRequest(first=9, after=("z", 8))) == {
        "page_limit": 10,
        "after_0": "z",
        "after_1": 8,
    }
