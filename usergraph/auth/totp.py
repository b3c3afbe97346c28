"""TOTP codes (RFC 6238: SHA-1, 6 digits, 30 s steps) and recovery codes: the only pyotp and
segno imports.

Nothing here knows the database: matching a code answers the time step it matched, and the
caller records that step so it is never accepted twice (services/second_factors.py).
"""

from __future__ import annotations

import hmac
import io
import re
import secrets

import pyotp
import segno

DIGITS = 6
STEP_SECONDS = 30
DRIFT_STEPS = 1  # one step either way: a phone's clock a little off, a code typed late
SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends for HMAC-SHA-1
RECOVERY_CODE_COUNT = 10
_RECOVERY_GROUPS, _RECOVERY_GROUP_LENGTH = 4, 4  # 16 characters of base32: 80 bits
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_CODE = re.compile(rf"[0-9]{{{DIGITS}}}")  # ASCII digits only: \d takes any script's
MAX_CODE_LENGTH = 64  # longer input is not a code of either kind


def new_secret() -> str:
    """A fresh base32 secret (160 bits, no padding), for an authenticator app."""
    return pyotp.random_base32(length=SECRET_BYTES * 8 // 5)


def otpauth_uri(secret: str, *, account_name: str, issuer: str) -> str:
    """The otpauth://totp/ URI that QR codes and password managers read."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account_name, issuer_name=issuer
    )


def qr_code_svg(uri: str) -> str:
    """The URI as a standalone SVG QR code (medium error correction, a quiet zone): an <svg>
    element with its namespace, fit for an <img> data URI or for inlining in a page. Its own
    white background keeps it readable on a dark page."""
    out = io.BytesIO()
    segno.make(uri, error="m").save(
        out, kind="svg", xmldecl=False, svgns=True, nl=False, scale=4, light="#fff",
        title="TOTP enrollment",
    )  # fmt: skip
    return out.getvalue().decode()


def step_at(unix_time: float) -> int:
    """The time step (RFC 6238's T) a moment falls in."""
    return int(unix_time // STEP_SECONDS)


def code_at_step(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def normalized_code(code: str) -> str:
    """What the user typed, without the spaces and dashes apps and people put in ("" for input
    too long to be a code of either kind)."""
    if len(code) > MAX_CODE_LENGTH:
        return ""
    return re.sub(r"[\s-]", "", code).lower()


def looks_like_totp(code: str) -> bool:
    return _CODE.fullmatch(normalized_code(code)) is not None


def matching_step(secret: str, code: str, *, unix_time: float) -> int | None:
    """The step within the drift window whose code is `code`, or None.

    Every step of the window is compared in constant time, whether or not an earlier one
    matched, so the time taken says nothing about which step (if any) did.
    """
    typed = normalized_code(code)
    if _CODE.fullmatch(typed) is None:
        return None
    now = step_at(unix_time)
    found = None
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at_step(secret, step), typed) and found is None:
            found = step
    return found


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """Fresh recovery codes, grouped for reading: `k7qm-2xfa-...` (80 random bits each)."""
    return [_recovery_code() for _ in range(count)]


def _recovery_code() -> str:
    groups = (
        "".join(secrets.choice(_BASE32) for _ in range(_RECOVERY_GROUP_LENGTH))
        for _ in range(_RECOVERY_GROUPS)
    )
    return "-".join(groups)


def recovery_code_key(code: str) -> str | None:
    """The form a recovery code is hashed in (no dashes, lower case), or None when the input
    cannot be one."""
    typed = normalized_code(code)
    length = _RECOVERY_GROUPS * _RECOVERY_GROUP_LENGTH
    if len(typed) != length or any(char not in _BASE32 for char in typed):
        return None
    return typed
