"""usergraph.schema.relay: global ids, cursors, page-size rules and PageInfo, as pure functions.

page_request() is not tested here: it reads the written arguments from a Strawberry Info, and
tests/api/test_users.py (first and last together, as variables and as literals; neither;
out of range) and tests/api/test_user.py (sessions' page arguments) test it through the API.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from graphql import GraphQLError

from usergraph.db.keyset import Page
from usergraph.schema.relay import (
    MAX_PAGE_SIZE,
    PageInfo,
    decode_cursor,
    encode_cursor,
    from_global_id,
    page_size_problem,
    session_pk,
    to_global_id,
    user_pk,
)


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_of(raw: Any) -> str:
    return b64(json.dumps(raw))


def bad_user_input(call: Callable[[], object]) -> str:
    """The message of the BAD_USER_INPUT error that call raises."""
    with pytest.raises(GraphQLError) as caught:
        call()
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}
    return caught.value.message


# --- global ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "local_id", "expected"),
    [
        ("User", 42, ("User", "42")),
        ("Session", "6e0c3f4e-8a0a-4f6b-9d53-0b6f1f9c3a11", None),
        ("User", "a:b", ("User", "a:b")),  # only the first colon separates
        ("Typé", "ünïcode", ("Typé", "ünïcode")),
    ],
)
def test_global_id_round_trip(type_name: str, local_id: object, expected: Any) -> None:
    global_id = to_global_id(type_name, local_id)
    assert isinstance(global_id, str)
    assert "=" not in global_id  # padding is stripped
    assert from_global_id(global_id) == (expected or (type_name, str(local_id)))


def test_global_id_is_url_safe_base64_of_type_and_id() -> None:
    assert to_global_id("User", 1) == "VXNlcjox"
    assert from_global_id("VXNlcjox") == ("User", "1")
    # Padding may be sent back.
    assert from_global_id(b64("User:10") + "==") == ("User", "10")


@pytest.mark.parametrize(
    "global_id",
    [
        "",
        "A",  # not a whole byte
        b64("User"),  # no colon
        b64("User:"),  # no local id
        b64(":1"),  # no type name
        b64(b"\xff\xfe:1"),  # not UTF-8
        "é",  # not ASCII
        b64("User:" + "1" * 150),  # decodes, but longer than 200 characters
    ],
    ids=["empty", "one-char", "no-colon", "no-local", "no-type", "not-utf8", "non-ascii", "long"],
)
def test_malformed_global_ids_are_bad_user_input(global_id: str) -> None:
    assert bad_user_input(lambda: from_global_id(global_id)) == "Malformed id."


def test_user_pk() -> None:
    assert user_pk(to_global_id("User", 7)) == 7
    assert user_pk(to_global_id("User", "0012")) == 12
    assert user_pk(to_global_id("User", "9" * 18)) == 999_999_999_999_999_999


@pytest.mark.parametrize(
    "global_id",
    [
        to_global_id("User", "²"),  # str.isdigit() is true for it, int() refuses it
        to_global_id("User", "١٢"),  # Arabic-Indic digits: int() would accept them
        to_global_id("User", "-1"),
        to_global_id("User", "+1"),
        to_global_id("User", " 1"),
        to_global_id("User", "1.0"),
        to_global_id("User", "1_000"),
        to_global_id("User", "9" * 19),  # beyond a BIGINT
        to_global_id("Session", 1),
        to_global_id("user", 1),  # type names are exact
        to_global_id("UserX", 1),
    ],
    ids=[
        "superscript-two",
        "arabic-indic",
        "negative",
        "plus",
        "space",
        "decimal",
        "underscore",
        "19-digits",
        "session",
        "lower-case-type",
        "other-type",
    ],
)
def test_user_pk_refuses_other_ids(global_id: str) -> None:
    assert bad_user_input(lambda: user_pk(global_id)) == "Not a User id."


def test_user_pk_of_a_malformed_id() -> None:
    assert bad_user_input(lambda: user_pk("!!")) == "Malformed id."


def test_session_pk() -> None:
    session_id = uuid.uuid4()
    assert session_pk(to_global_id("Session", session_id)) == session_id
    assert session_pk(to_global_id("Session", session_id.hex)) == session_id


@pytest.mark.parametrize(
    "global_id",
    [
        to_global_id("Session", "not-a-uuid"),
        to_global_id("Session", 1),
        to_global_id("User", uuid.UUID(int=1)),
    ],
)
def test_session_pk_refuses_other_ids(global_id: str) -> None:
    assert bad_user_input(lambda: session_pk(global_id)) == "Not a Session id."


# --- cursors ------------------------------------------------------------------------------

WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
SESSION_KINDS = (datetime, uuid.UUID)


@pytest.mark.parametrize(
    ("key", "kinds"),
    [
        ((WHEN, uuid.UUID(int=5)), SESSION_KINDS),
        ((WHEN.astimezone(timezone(timedelta(hours=2))), 3), (datetime, int)),
        (("ann", 12), (str, int)),
        (("ünïcode", 0), (str, int)),
        ((), ()),
    ],
)
def test_cursor_round_trip(key: tuple[Any, ...], kinds: tuple[type, ...]) -> None:
    cursor = encode_cursor("t", key)
    assert "=" not in cursor
    decoded = decode_cursor(cursor, "t", kinds)
    assert decoded == key
    assert [type(value) for value in decoded] == list(kinds)


def test_cursor_keeps_the_time_zone_offset() -> None:
    plus_two = WHEN.astimezone(timezone(timedelta(hours=2)))
    [decoded] = decode_cursor(encode_cursor("t", (plus_two,)), "t", (datetime,))
    assert decoded.utcoffset() == timedelta(hours=2)
    assert decoded == WHEN


@pytest.mark.parametrize(
    ("cursor", "kinds"),
    [
        (encode_cursor("other", ("ann", 1)), (str, int)),  # a foreign tag
        (encode_cursor("t", ("ann",)), (str, int)),  # too few values
        (encode_cursor("t", ("ann", 1, 2)), (str, int)),  # too many
        (encode_cursor("t", (1, 1)), (str, int)),  # an int for a str
        (encode_cursor("t", ("1", 1)), (int, int)),  # a str for an int
        (encode_cursor("t", (True,)), (int,)),  # a bool is no int here
        (encode_cursor("t", (1.5,)), (int,)),
        (encode_cursor("t", (None,)), (str,)),
        (encode_cursor("t", ("2024-05-06T07:08:09",)), (datetime,)),  # no time zone
        (encode_cursor("t", ("yesterday",)), (datetime,)),
        (encode_cursor("t", (5,)), (datetime,)),
        (encode_cursor("t", ("not-a-uuid",)), (uuid.UUID,)),
        (encode_cursor("t", (None,)), (uuid.UUID,)),
        (cursor_of({"t": 1}), (int,)),  # not a list
        (cursor_of([]), ()),  # no tag
        (cursor_of("t"), ()),
        (b64("not json"), (int,)),
        (b64(b"\xff\xfe"), (int,)),
        ("A", (int,)),
        ("é", (int,)),
        (encode_cursor("t", ("x" * 400,)), (str,)),  # over 500 characters
    ],
    ids=[
        "foreign-tag",
        "too-few",
        "too-many",
        "int-for-str",
        "str-for-int",
        "bool-for-int",
        "float-for-int",
        "null-for-str",
        "naive-datetime",
        "not-a-datetime",
        "int-for-datetime",
        "not-a-uuid",
        "null-for-uuid",
        "object",
        "empty-list",
        "string",
        "not-json",
        "not-utf8",
        "one-char",
        "non-ascii",
        "too-long",
    ],
)
def test_bad_cursors_are_bad_user_input(cursor: str, kinds: tuple[type, ...]) -> None:
    message = bad_user_input(lambda: decode_cursor(cursor, "t", kinds))
    assert message == "Malformed or foreign cursor."


def test_a_cursor_of_just_under_the_limit_is_read() -> None:
    value = "x" * 300
    cursor = encode_cursor("t", (value,))
    assert len(cursor) <= 500
    assert decode_cursor(cursor, "t", (str,)) == (value,)


@pytest.mark.parametrize("value", [5, ["x"], {"a": 1}], ids=["int", "list", "object"])
def test_a_non_string_uuid_in_a_cursor_is_bad_user_input(value: object) -> None:
    cursor = cursor_of(["t", WHEN.isoformat(), value])
    bad_user_input(lambda: decode_cursor(cursor, "t", SESSION_KINDS))


# --- page sizes and PageInfo --------------------------------------------------------------


def test_page_size_problem() -> None:
    assert MAX_PAGE_SIZE == 100
    for size in (None, 0, 1, 100):
        assert page_size_problem("first", size) is None
    assert page_size_problem("first", 101) == "first must be between 0 and 100."
    assert page_size_problem("last", -1) == "last must be between 0 and 100."


def test_page_info_of_a_page() -> None:
    page = Page(items=[1, 2, 3], has_next_page=True, has_previous_page=False)
    info = PageInfo.of(page, ["c1", "c2", "c3"])
    assert (info.has_next_page, info.has_previous_page) == (True, False)
    assert (info.start_cursor, info.end_cursor) == ("c1", "c3")
    one = PageInfo.of(Page(items=[1], has_next_page=False, has_previous_page=True), ["c1"])
    assert (one.has_next_page, one.has_previous_page) == (False, True)
    assert (one.start_cursor, one.end_cursor) == ("c1", "c1")


def test_page_info_of_an_empty_page() -> None:
    info = PageInfo.of(Page(items=[], has_next_page=True, has_previous_page=True), [])
    assert (info.start_cursor, info.end_cursor) == (None, None)
    assert (info.has_next_page, info.has_previous_page) == (True, True)
