"""Input rules for accounts: email, username, password, display name.

Each check returns the cleaned value or raises Rejected with the field path at fault.
"""

from __future__ import annotations

import re
from functools import cache

from email_validator import EmailNotValidError, validate_email

from usergraph.services.errors import Problem, ProblemCode, Rejected

MAX_EMAIL_LENGTH = 254
EMAIL_TOO_LONG = "Email address is too long."
USERNAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,28}[a-z0-9]")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
MAX_DISPLAY_NAME_LENGTH = 100
MAX_LOGIN_LENGTH = MAX_EMAIL_LENGTH
# A password to check (not to set) may be longer than MAX_PASSWORD_LENGTH, for hashes made
# under older rules; longer inputs are refused before any hashing, so one request cannot buy
# unbounded work.
MAX_LOGIN_PASSWORD_LENGTH = 1024


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships Dropbox's list of the 30,000 most common passwords.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def clean_email(email: str, *field: str) -> str:
    """Return the normalized email (domain lower-cased, Unicode normalized)."""
    email = email.strip()
    if len(email) > MAX_EMAIL_LENGTH:
        raise Rejected.one(ProblemCode.INVALID_EMAIL, EMAIL_TOO_LONG, *field)
    try:
        normalized = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError:
        raise Rejected.one(
            ProblemCode.INVALID_EMAIL, "Enter a valid email address.", *field
        ) from None
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise Rejected.one(ProblemCode.INVALID_EMAIL, EMAIL_TOO_LONG, *field)
    return normalized


def email_key(email: str) -> str:
    """Return the key under which emails are unique: case does not matter."""
    return email.lower()


def login_key(login: str) -> str:
    """The form under which a login (email or username) is looked up, counted and logged."""
    return login.strip().lower()


def clean_username(username: str, *field: str) -> str:
    """Return the username lower-cased, if it follows the rules."""
    username = login_key(username)
    if not USERNAME_PATTERN.fullmatch(username) or username.endswith("_"):
        raise Rejected.one(
            ProblemCode.INVALID_USERNAME,
            "Usernames have 3 to 30 characters: a-z, 0-9 and underscore, starting with a "
            "letter and not ending with an underscore.",
            *field,
        )
    return username


def password_problems(
    password: str, *, email: str | None, username: str | None, field: tuple[str, ...]
) -> list[Problem]:
    """Return why password is too weak; empty when it is acceptable."""

    def weak(message: str) -> Problem:
        return Problem(code=ProblemCode.WEAK_PASSWORD, message=message, field=field)

    if len(password) < MIN_PASSWORD_LENGTH:
        return [weak(f"Use at least {MIN_PASSWORD_LENGTH} characters.")]
    if len(password) > MAX_PASSWORD_LENGTH:
        return [weak(f"Use at most {MAX_PASSWORD_LENGTH} characters.")]
    folded = password.casefold()
    if any(value and folded == value.casefold() for value in (email, username)):
        return [weak("The password must differ from your email and username.")]
    if folded in _common_passwords():
        return [weak("This password is too common; choose another.")]
    return []


def check_password(
    password: str, *field: str, email: str | None = None, username: str | None = None
) -> None:
    problems = password_problems(password, email=email, username=username, field=field)
    if problems:
        raise Rejected(problems)


def clean_display_name(display_name: str | None, *field: str) -> str | None:
    """Return the trimmed display name, None for blank."""
    if display_name is None:
        return None
    display_name = " ".join(display_name.split())
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise Rejected.one(
            ProblemCode.INVALID_INPUT,
            f"Display names have at most {MAX_DISPLAY_NAME_LENGTH} characters.",
            *field,
        )
    if any(not ch.isprintable() for ch in display_name):
        raise Rejected.one(ProblemCode.INVALID_INPUT, "Display names must be printable.", *field)
    return display_name or None
