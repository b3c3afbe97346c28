"""Relay plumbing: opaque global ids, cursors, PageInfo and page-size rules."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from datetime import datetime
from typing import Any

import strawberry
from strawberry import Info
from strawberry.types.nodes import SelectedField

from usergraph.db.keyset import Key, Page, PageRequest
from usergraph.schema.errors import bad_user_input

MAX_PAGE_SIZE = 100
# What `first` is when a client gives neither first nor last.
DEFAULT_PAGE_SIZE = 20
_DIGITS = re.compile(r"[0-9]{1,18}")  # str.isdigit() also accepts "²", which int() refuses


def _b64encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _b64decode(value: str) -> str:
    padded = value + "=" * (-len(value) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii")).decode()


def to_global_id(type_name: str, local_id: object) -> strawberry.ID:
    return strawberry.ID(_b64encode(f"{type_name}:{local_id}"))


def from_global_id(global_id: str) -> tuple[str, str]:
    """Return (type name, local id) or raise BAD_USER_INPUT."""
    try:
        if len(global_id) > 200:
            raise ValueError
        type_name, _, local_id = _b64decode(global_id).partition(":")
        if not type_name or not local_id:
            raise ValueError
    except (ValueError, UnicodeError, binascii.Error):
        raise bad_user_input("Malformed id.") from None
    return type_name, local_id


def user_pk(global_id: str) -> int:
    """The users.id behind a User global id, or BAD_USER_INPUT."""
    type_name, local_id = from_global_id(global_id)
    if type_name != "User" or not _DIGITS.fullmatch(local_id):
        raise bad_user_input("Not a User id.")
    return int(local_id)


def session_pk(global_id: str) -> uuid.UUID:
    type_name, local_id = from_global_id(global_id)
    try:
        if type_name != "Session":
            raise ValueError
        return uuid.UUID(local_id)
    except ValueError:
        raise bad_user_input("Not a Session id.") from None


def encode_cursor(tag: str, key: Key) -> str:
    return _b64encode(json.dumps([tag, *(_encode_value(value) for value in key)]))


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def decode_cursor(cursor: str, tag: str, kinds: tuple[type, ...]) -> Key:
    """Decode a cursor made by encode_cursor(tag, ...) whose values have types kinds."""
    try:
        if len(cursor) > 500:
            raise ValueError
        raw = json.loads(_b64decode(cursor))
        if not isinstance(raw, list) or len(raw) != len(kinds) + 1 or raw[0] != tag:
            raise ValueError
        return tuple(_decode_value(value, kind) for value, kind in zip(raw[1:], kinds, strict=True))
    except (ValueError, UnicodeError, binascii.Error, TypeError):
        raise bad_user_input("Malformed or foreign cursor.") from None


def _decode_value(value: Any, kind: type) -> Any:
    if kind in (datetime, uuid.UUID) and not isinstance(value, str):
        raise ValueError  # uuid.UUID(5) would raise AttributeError, an internal error
    if kind is datetime:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError
        return parsed
    if kind is uuid.UUID:
        return uuid.UUID(value)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError
    if kind is str and not isinstance(value, str):
        raise ValueError
    return value


def page_size_problem(name: str, size: int | None) -> str | None:
    """Why `first` or `last` (name) cannot be size, or None when it can (or is not given)."""
    if size is not None and not 0 <= size <= MAX_PAGE_SIZE:
        return f"{name} must be between 0 and {MAX_PAGE_SIZE}."
    return None


def page_request(
    info: Info[Any, Any],
    *,
    first: int | None,
    after: Key | None,
    last: int | None = None,
    before: Key | None = None,
) -> PageRequest:
    """Check the page arguments: sizes 0..100, and not both first and last."""
    if last is not None:
        # `first` has a default in the schema; it only conflicts when the client wrote it.
        this_field = info.selected_fields[0]
        written = this_field.arguments if isinstance(this_field, SelectedField) else {}
        if written.get("first") is not None and first is not None:
            raise bad_user_input("Give either first or last, not both.")
        first = None
    for name, size in (("first", first), ("last", last)):
        problem = page_size_problem(name, size)
        if problem:
            raise bad_user_input(problem)
    if first is None and last is None:
        raise bad_user_input("Give first or last.")
    return PageRequest(first=first, after=after, last=last, before=before)


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def of(cls, page: Page[Any], cursors: list[str]) -> PageInfo:
        return cls(
            has_next_page=page.has_next_page,
            has_previous_page=page.has_previous_page,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        )
