"""usergraph.auth.totp against tests/totp.py, which computes RFC 6238 from hmac directly.

tests/totp.py is checked first against the RFCs' own test vectors (RFC 4226 Appendix D, RFC 6238
Appendix B), so every other test here compares the code under test with a reference that is
itself known to be right.
"""

from __future__ import annotations

import base64
import hashlib
import re
import string
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

import pytest

from tests.totp import STEP, hotp, secret_key, totp_at
from usergraph.auth import totp

RFC_KEY = b"12345678901234567890"  # the key of both RFCs' SHA-1 vectors
# RFC 4226 Appendix D: HOTP of RFC_KEY for counters 0 to 9.
HOTP_VECTORS = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip
# RFC 6238 Appendix B, the SHA-1 rows: time -> 8-digit TOTP.
TOTP_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
# A fixed secret for the window tests, so a failure can be replayed.
SECRET = base64.b32encode(bytes(range(1, 21))).decode()
BASE32 = set("abcdefghijklmnopqrstuvwxyz234567")
RECOVERY_FORMAT = re.compile(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}")
SVG = "{http://www.w3.org/2000/svg}"


def reference(secret: str, step: int) -> str:
    """The 6-digit code of a step, as tests/totp.py computes it."""
    return hotp(secret_key(secret), step)


def distinct_window(secret: str, step: int) -> dict[int, str]:
    """The codes of steps step-2 .. step+2, asserted to differ (a shared code would make a
    refused neighbour look accepted)."""
    codes = {s: reference(secret, s) for s in range(step - 2, step + 3)}
    assert len(set(codes.values())) == len(codes), codes
    return codes


# --- the reference itself --------------------------------------------------------------------


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(HOTP_VECTORS)))
def test_reference_hotp_matches_rfc_4226(counter: int, expected: str) -> None:
    assert hotp(RFC_KEY, counter) == expected


@pytest.mark.parametrize(("unix_time", "expected"), TOTP_VECTORS)
def test_reference_totp_matches_rfc_6238(unix_time: int, expected: str) -> None:
    assert totp_at(RFC_KEY, unix_time, digits=8, digest=hashlib.sha1) == expected


def test_reference_secret_key_reads_base32_with_or_without_padding() -> None:
    assert secret_key(base64.b32encode(RFC_KEY).decode()) == RFC_KEY
    assert secret_key(base64.b32encode(b"abc").decode().rstrip("=")) == b"abc"
    assert secret_key(base64.b32encode(RFC_KEY).decode().lower()) == RFC_KEY


# --- secrets ---------------------------------------------------------------------------------


def test_new_secret_is_160_bits_of_base32() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32
    assert set(secret) <= set(string.ascii_uppercase + "234567")
    assert len(base64.b32decode(secret)) == 20


def test_new_secrets_differ() -> None:
    secrets = {totp.new_secret() for _ in range(50)}
    assert len(secrets) == 50


# --- codes -----------------------------------------------------------------------------------


def test_code_at_step_is_rfc_6238() -> None:
    # The RFC's key, through the base32 form the app stores.
    rfc_secret = base64.b32encode(RFC_KEY).decode()
    for counter, expected in enumerate(HOTP_VECTORS):
        assert totp.code_at_step(rfc_secret, counter) == expected
    for secret in (SECRET, totp.new_secret(), totp.new_secret()):
        steps = [*range(300), 37037036, 56666666, 666666666, 2**31 - 1, 2**32 + 5]
        for step in steps:
            assert totp.code_at_step(secret, step) == reference(secret, step), (secret, step)


def test_step_at() -> None:
    assert totp.STEP_SECONDS == STEP == 30
    assert [totp.step_at(t) for t in (0, 29.999, 30, 59, 60, 1111111109)] == [
        0, 0, 1, 1, 2, 37037036,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "unix_time",
    [
        pytest.param(1_000_000 * STEP, id="at-a-step-boundary"),
        pytest.param(1_000_000 * STEP + 15.5, id="mid-step"),
        pytest.param(1_000_000 * STEP + STEP - 0.001, id="last-moment-of-a-step"),
        pytest.param(1_000_000 * STEP + STEP - 1, id="last-second-of-a-step"),
    ],
)
def test_the_window_is_one_step_either_way(unix_time: float) -> None:
    step = 1_000_000
    assert totp.step_at(unix_time) == step
    codes = distinct_window(SECRET, step)
    for accepted in (step - 1, step, step + 1):
        assert totp.matching_step(SECRET, codes[accepted], unix_time=unix_time) == accepted
    for refused in (step - 2, step + 2):
        assert totp.matching_step(SECRET, codes[refused], unix_time=unix_time) is None


def test_the_window_moves_at_the_boundary() -> None:
    step = 2_000_000
    codes = distinct_window(SECRET, step)
    boundary = step * STEP
    # Just before the boundary it is still step-1: step+1 is two ahead.
    assert totp.matching_step(SECRET, codes[step + 1], unix_time=boundary - 0.001) is None
    assert totp.matching_step(SECRET, codes[step - 2], unix_time=boundary - 0.001) == step - 2
    # At the boundary: step-2 falls out, step+1 comes in.
    assert totp.matching_step(SECRET, codes[step + 1], unix_time=boundary) == step + 1
    assert totp.matching_step(SECRET, codes[step - 2], unix_time=boundary) is None


def test_a_code_of_another_secret_is_refused() -> None:
    other = base64.b32encode(bytes(range(100, 120))).decode()
    unix_time = 3_000_000 * STEP + 10
    theirs = reference(other, 3_000_000)
    assert theirs not in {reference(SECRET, s) for s in range(2_999_999, 3_000_002)}
    assert totp.matching_step(other, theirs, unix_time=unix_time) == 3_000_000
    assert totp.matching_step(SECRET, theirs, unix_time=unix_time) is None


@pytest.mark.parametrize(
    "typed",
    [
        "{c}",
        "{a} {b}",
        "{a}-{b}",
        " {c} ",
        "\t{c}\n",
        "{a}  -  {b}",
        "{c[0]} {c[1]} {c[2]} {c[3]} {c[4]} {c[5]}",
    ],
)
def test_spaces_and_dashes_are_ignored(typed: str) -> None:
    unix_time = 4_000_000 * STEP + 3
    code = reference(SECRET, 4_000_000)
    value = typed.format(c=code, a=code[:3], b=code[3:])
    assert totp.looks_like_totp(value)
    assert totp.matching_step(SECRET, value, unix_time=unix_time) == 4_000_000


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda c: c[:5], id="5-digits"),
        pytest.param(lambda c: c + "0", id="7-digits"),
        pytest.param(lambda c: "0" + c, id="7-digits-leading"),
        pytest.param(lambda c: c + c, id="12-digits"),
        pytest.param(lambda c: c[:5] + "a", id="a-letter"),
        pytest.param(lambda c: c + "a", id="a-letter-after"),
        pytest.param(lambda c: c[:3] + "." + c[3:], id="a-dot"),
        pytest.param(lambda c: c[:3] + "_" + c[3:], id="an-underscore"),
        pytest.param(lambda c: "+" + c, id="a-sign"),
        pytest.param(lambda c: c + "9" * 100, id="too-long"),
        pytest.param(lambda c: "", id="empty"),
        pytest.param(lambda c: " - ", id="only-separators"),
    ],
)
def test_what_is_not_six_digits_is_refused(mangle: Callable[[str], str]) -> None:
    unix_time = 5_000_000 * STEP + 3
    value = mangle(reference(SECRET, 5_000_000))
    assert not totp.looks_like_totp(value)
    assert totp.matching_step(SECRET, value, unix_time=unix_time) is None


@pytest.mark.parametrize(
    "digits", ["\u0661\u0662\u0663\u0664\u0665\u0666", "\uff11\uff12\uff13\uff14\uff15\uff16"]
)
def test_non_ascii_digits_are_not_a_code(digits: str) -> None:
    assert totp.matching_step(SECRET, digits, unix_time=6_000_000 * STEP) is None
    assert not totp.looks_like_totp(digits)


def test_input_longer_than_the_limit_is_no_code() -> None:
    unix_time = 7_000_000 * STEP + 3
    code = reference(SECRET, 7_000_000)
    padded = code + " " * totp.MAX_CODE_LENGTH + "999"
    assert len(padded) > totp.MAX_CODE_LENGTH
    recovery = "abcd-efgh-ijkl-mnop" + " " * totp.MAX_CODE_LENGTH + "zz"
    assert totp.matching_step(SECRET, padded, unix_time=unix_time) is None
    assert totp.recovery_code_key(recovery) is None


# --- enrollment: the URI and its QR code -----------------------------------------------------


def parsed_uri(uri: str) -> tuple[str, str, str, dict[str, list[str]]]:
    """(scheme, host, label, query) of an otpauth URI, the way an authenticator app reads it."""
    parts = urlsplit(uri)
    return parts.scheme, parts.netloc, unquote(parts.path[1:]), parse_qs(parts.query)


def test_otpauth_uri() -> None:
    secret = totp.new_secret()
    uri = totp.otpauth_uri(secret, account_name="ann", issuer="usergraph")
    scheme, host, label, query = parsed_uri(uri)
    assert (scheme, host, label) == ("otpauth", "totp", "usergraph:ann")
    assert query["secret"] == [secret]
    assert query["issuer"] == ["usergraph"]
    # The defaults (SHA-1, 6 digits, 30 s) may be left out; if present they must be right.
    assert query.get("algorithm", ["SHA1"]) == ["SHA1"]
    assert query.get("digits", ["6"]) == ["6"]
    assert query.get("period", ["30"]) == ["30"]
    assert set(query) <= {"secret", "issuer", "algorithm", "digits", "period"}
    assert uri == f"otpauth://totp/usergraph:ann?secret={secret}&issuer=usergraph"


@pytest.mark.parametrize(
    ("account_name", "issuer"),
    [
        ("ann", "Acme & Co"),
        ("ann", "Ümlaut Ünïcode"),
        ("ann", "what?#now"),
        ("ann", "100% sure+"),
        ("ann", "Acme/Dev"),
        ("ann@example.com", "a=b&c=d"),
        ("ann o'neil", "usergraph"),
        ("ann:colon", "usergraph"),
    ],
)
def test_otpauth_uri_escapes_what_needs_it(account_name: str, issuer: str) -> None:
    secret = totp.new_secret()
    uri = totp.otpauth_uri(secret, account_name=account_name, issuer=issuer)
    assert " " not in uri and "#" not in uri
    assert uri.count("?") == 1
    scheme, host, label, query = parsed_uri(uri)
    assert (scheme, host) == ("otpauth", "totp")
    # The issuer prefix is everything before the first colon (issuers have none).
    assert label.split(":", 1) == [issuer, account_name]
    assert query == {"secret": [secret], "issuer": [issuer]}


def test_qr_code_svg_is_an_svg_document() -> None:
    uri = totp.otpauth_uri(SECRET, account_name="ann", issuer="usergraph")
    svg = totp.qr_code_svg(uri)
    assert svg.startswith("<svg")  # an element, for inlining or a data URI
    root = ElementTree.fromstring(svg)  # noqa: S314 (our own output, not untrusted input)
    assert root.tag == f"{SVG}svg"
    paths = root.findall(f".//{SVG}path")
    assert paths
    assert all(path.get("d") for path in paths)
    assert uri not in svg and SECRET not in svg  # the secret is drawn, not written


def test_qr_codes_of_different_uris_differ() -> None:
    first = totp.otpauth_uri(SECRET, account_name="ann", issuer="usergraph")
    second = totp.otpauth_uri(totp.new_secret(), account_name="ann", issuer="usergraph")
    third = totp.otpauth_uri(SECRET, account_name="bob", issuer="usergraph")
    svgs = {totp.qr_code_svg(uri) for uri in (first, second, third)}
    assert len(svgs) == 3
    assert totp.qr_code_svg(first) == totp.qr_code_svg(first)


# --- recovery codes --------------------------------------------------------------------------


def test_new_recovery_codes() -> None:
    codes = totp.new_recovery_codes()
    assert len(codes) == totp.RECOVERY_CODE_COUNT == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert RECOVERY_FORMAT.fullmatch(code), code
        assert set(code.replace("-", "")) <= BASE32
        assert totp.recovery_code_key(code) == code.replace("-", "")
        assert not totp.looks_like_totp(code)


def test_recovery_codes_use_the_whole_alphabet() -> None:
    """80 random bits each: over many codes every base32 character turns up, in every place."""
    codes = [code.replace("-", "") for code in totp.new_recovery_codes(400)]
    assert len(set(codes)) == 400
    assert set("".join(codes)) == BASE32
    for place in (0, 15):
        assert len({code[place] for code in codes}) >= 24


@pytest.mark.parametrize(
    "typed",
    [
        "k7qm-2xfa-b3cd-e4fg",
        "K7QM-2XFA-B3CD-E4FG",
        "k7qm2xfab3cde4fg",
        "K7qM 2xFa B3cD e4Fg",
        "  k7qm-2xfa-b3cd-e4fg\n",
        "k7-qm-2x-fa-b3-cd-e4-fg",
        "k7qm--2xfa--b3cd--e4fg",
    ],
)
def test_recovery_code_key_ignores_case_spaces_and_dashes(typed: str) -> None:
    assert totp.recovery_code_key(typed) == "k7qm2xfab3cde4fg"


@pytest.mark.parametrize(
    "typed",
    [
        "k7qm-2xfa-b3cd-e4f",  # 15 characters
        "k7qm-2xfa-b3cd-e4fgh",  # 17
        "k7qm-2xfa-b3cd",
        "",
        "k7qm-2xfa-b3cd-e4f0",  # 0, 1, 8 and 9 are not base32
        "k7qm-2xfa-b3cd-e4f1",
        "k7qm-2xfa-b3cd-e4f8",
        "k7qm-2xfa-b3cd-e4f9",
        "k7qm-2xfa-b3cd-e4f=",
        "k7qm_2xfa_b3cd_e4fg",
        "k7qm.2xfa.b3cd.e4fg",
        "k7qm-2xfa-b3cd-e4fé",
        "123456",
        "1234567890123456",
    ],
)
def test_recovery_code_key_refuses_what_cannot_be_one(typed: str) -> None:
    assert totp.recovery_code_key(typed) is None
