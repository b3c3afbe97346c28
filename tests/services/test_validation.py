"""Input rules for email, username, password and display name."""

from __future__ import annotations

import pytest

from usergraph.services.errors import Problem, ProblemCode, Rejected
from usergraph.services.validation import (
    MAX_DISPLAY_NAME_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    check_password,
    clean_display_name,
    clean_email,
    clean_username,
    email_key,
    password_problems,
)

FIELD = ("input", "x")
STRONG = "correct horse battery staple"


def codes_and_fields(exc: Rejected) -> list[tuple[ProblemCode, tuple[str, ...]]]:
    return [(problem.code, problem.field) for problem in exc.problems]


# --- email -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ann@example.com", "ann@example.com"),
        ("ann@EXAMPLE.Com", "ann@example.com"),
        # The local part keeps its case; email_key folds it for uniqueness.
        ("Ann.Lee@Example.COM", "Ann.Lee@example.com"),
        ("  ann@example.com \n", "ann@example.com"),
        ("ann+tag@sub.example.org", "ann+tag@sub.example.org"),
    ],
)
def test_clean_email_normalizes(given: str, expected: str) -> None:
    assert clean_email(given, *FIELD) == expected


def test_email_key_ignores_case() -> None:
    assert email_key(clean_email("Ann@Example.com")) == email_key(clean_email("ANN@example.COM"))


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "   ",
        "ann",
        "ann@",
        "@example.com",
        "ann@@example.com",
        "ann@example",
        "ann example@example.com",
        "ann@exa mple.com",
        "<script>@example.com",
    ],
)
def test_clean_email_rejects_junk(junk: str) -> None:
    with pytest.raises(Rejected) as caught:
        clean_email(junk, *FIELD)
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_EMAIL, FIELD)]


def test_clean_email_rejects_too_long() -> None:
    domain = ".".join(["d" * 60] * 4) + ".com"  # labels within limits, whole address too long
    address = "a" * 20 + "@" + domain
    assert len(address) > MAX_EMAIL_LENGTH
    with pytest.raises(Rejected) as caught:
        clean_email(address, *FIELD)
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_EMAIL, FIELD)]
    assert "too long" in caught.value.problems[0].message


def test_clean_email_rejects_huge_input_quickly() -> None:
    with pytest.raises(Rejected) as caught:
        clean_email("a" * 100_000 + "@example.com", *FIELD)
    assert "too long" in caught.value.problems[0].message


def test_clean_email_accepts_the_longest_valid_address() -> None:
    domain = ".".join(["d" * 60] * 3) + ".com"  # 187 characters
    address = "a" * (MAX_EMAIL_LENGTH - len(domain) - 1) + "@" + domain
    assert len(address) == MAX_EMAIL_LENGTH
    assert clean_email(address) == address


# --- username ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ann", "ann"),
        ("Ann_Lee", "ann_lee"),
        ("ANN42", "ann42"),
        ("a_1", "a_1"),
        ("a" * 30, "a" * 30),
        ("  bob  ", "bob"),
    ],
)
def test_clean_username_accepts_and_lower_cases(given: str, expected: str) -> None:
    assert clean_username(given, *FIELD) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ab",  # too short
        "a" * 31,  # too long
        "1ann",  # starts with a digit
        "_ann",  # starts with an underscore
        "ann_",  # ends with an underscore
        "ab_",
        "ann-lee",
        "ann.lee",
        "ann lee",
        "anné",
        "an\nn",
        "a\u0131b",  # dotless i: not a-z
    ],
)
def test_clean_username_rejects_what_breaks_the_rules(bad: str) -> None:
    with pytest.raises(Rejected) as caught:
        clean_username(bad, *FIELD)
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_USERNAME, FIELD)]


# --- password ----------------------------------------------------------------------------


def weak(
    password: str, *, email: str | None = None, username: str | None = None
) -> list[ProblemCode]:
    problems = password_problems(password, email=email, username=username, field=FIELD)
    assert all(problem.field == FIELD for problem in problems)
    return [problem.code for problem in problems]


def test_strong_password_passes() -> None:
    assert weak(STRONG, email="ann@example.com", username="ann") == []
    check_password(STRONG, *FIELD, email="ann@example.com", username="ann")


def test_too_short_password_is_weak() -> None:
    unusual = "x7#Kq9!zT4%w"
    assert weak(unusual[: MIN_PASSWORD_LENGTH - 1]) == [ProblemCode.WEAK_PASSWORD]
    assert weak(unusual[:MIN_PASSWORD_LENGTH]) == []


def test_too_long_password_is_weak() -> None:
    assert weak("Zq8#" * (MAX_PASSWORD_LENGTH // 4)) == []
    assert weak("Zq8#" * (MAX_PASSWORD_LENGTH // 4) + "x") == [ProblemCode.WEAK_PASSWORD]


@pytest.mark.parametrize(
    ("password", "email", "username"),
    [
        ("Ann@Example.com", "ann@example.com", "ann_lee"),
        ("ann@example.com", "ANN@EXAMPLE.COM", "ann_lee"),
        ("Ann_Lee42", "ann@example.com", "ann_lee42"),
        ("ann_lee42", "ann@example.com", "ANN_LEE42"),
    ],
)
def test_password_equal_to_email_or_username_is_weak(
    password: str, email: str, username: str
) -> None:
    assert weak(password, email=email, username=username) == [ProblemCode.WEAK_PASSWORD]
    # The same password is fine for someone else.
    assert weak(password, email="zed@example.org", username="zed") == []


@pytest.mark.parametrize(
    "common", ["password123", "qwertyuiop", "PASSWORD123", "QwertyUIOP", "iloveyou1"]
)
def test_common_password_is_weak(common: str) -> None:
    assert weak(common) == [ProblemCode.WEAK_PASSWORD]


def test_password_problems_reports_one_problem_with_a_message() -> None:
    problems = password_problems("short", email=None, username=None, field=FIELD)
    assert problems == [
        Problem(code=ProblemCode.WEAK_PASSWORD, message=problems[0].message, field=FIELD)
    ]
    assert str(MIN_PASSWORD_LENGTH) in problems[0].message


def test_check_password_raises_with_the_field() -> None:
    with pytest.raises(Rejected) as caught:
        check_password("password123", "input", "newPassword")
    assert codes_and_fields(caught.value) == [(ProblemCode.WEAK_PASSWORD, ("input", "newPassword"))]


# --- display name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        ("   \t ", None),
        ("Ann Lee", "Ann Lee"),
        ("  Ann \t  Lee\n", "Ann Lee"),
        ("Zoë 🙂", "Zoë 🙂"),
        ("x" * MAX_DISPLAY_NAME_LENGTH, "x" * MAX_DISPLAY_NAME_LENGTH),
    ],
)
def test_clean_display_name_trims(given: str | None, expected: str | None) -> None:
    assert clean_display_name(given, *FIELD) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "x" * (MAX_DISPLAY_NAME_LENGTH + 1),
        "Ann\x00Lee",
        "Ann\x07",
        "Ann\u202eLee",  # right-to-left override
    ],
)
def test_clean_display_name_rejects(bad: str) -> None:
    with pytest.raises(Rejected) as caught:
        clean_display_name(bad, *FIELD)
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_INPUT, FIELD)]
