"""TokenCodec (access JWTs with rotating keys), refresh tokens and the development key file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from usergraph.auth.tokens import (
    ACCESS_TOKEN_TYPE,
    MAX_REFRESH_TOKEN_LENGTH,
    REFRESH_TOKEN_PREFIX,
    InvalidAccessToken,
    SigningKey,
    TokenCodec,
    hash_token,
    new_refresh_token,
    read_or_create_key_file,
)

# 64 bytes and more, so even HS512 signs without PyJWT's short-key warning.
KEY = SigningKey.from_secret("current-signing-key-" + "0123456789abcdef" * 4)
OLD_KEY = SigningKey.from_secret("previous-signing-key-" + "0123456789abcdef" * 4)
OTHER_KEY = SigningKey.from_secret("unrelated-signing-key-" + "0123456789abcdef" * 4)
TTL = timedelta(minutes=15)
LEEWAY = timedelta(seconds=10)
SESSION_ID = uuid.UUID("4b1e1c2a-5d0f-4c8e-9a57-2f7f3b0b9d11")


def make_codec(
    key: SigningKey = KEY,
    previous: tuple[SigningKey, ...] = (),
    *,
    issuer: str = "usergraph",
    audience: str = "usergraph",
) -> TokenCodec:
    return TokenCodec(
        current_key=key,
        previous_keys=previous,
        issuer=issuer,
        audience=audience,
        access_ttl=TTL,
        leeway=LEEWAY,
    )


def now() -> datetime:
    return datetime.now(UTC)


def issue(codec: TokenCodec, *, at: datetime | None = None) -> str:
    return codec.issue_access_token(
        user_id=42, session_id=SESSION_ID, roles=["user", "admin"], now=at or now()
    ).token


def valid_claims(**overrides: Any) -> dict[str, Any]:
    """Claims like the codec's own, for hand-made tokens that differ in one way."""
    issued = int(now().timestamp())
    return {
        "iss": "usergraph",
        "aud": "usergraph",
        "sub": "42",
        "iat": issued,
        "nbf": issued,
        "exp": issued + 600,
        "jti": uuid.uuid4().hex,
        "sid": str(SESSION_ID),
        "roles": ["user"],
        "typ": ACCESS_TOKEN_TYPE,
        **overrides,
    }


def sign(claims: dict[str, Any], key: SigningKey = KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key.secret, algorithm=algorithm, headers={"kid": key.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token PyJWT would refuse to make: any header; HS256-signed, or unsigned if no secret."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def test_issue_and_decode_round_trip() -> None:
    codec = make_codec()
    issued_at = now()
    issued = codec.issue_access_token(
        user_id=42, session_id=SESSION_ID, roles=["user", "admin"], now=issued_at
    )
    assert issued.expires_at == (issued_at + TTL).replace(microsecond=0)

    header = jwt.get_unverified_header(issued.token)
    assert header["kid"] == KEY.kid
    assert header["alg"] == "HS256"
    raw = jwt.decode(issued.token, options={"verify_signature": False})
    assert raw["sub"] == "42"  # a string: PyJWT rejects other subjects
    assert raw["sid"] == str(SESSION_ID)
    assert raw["roles"] == ["admin", "user"]
    assert raw["typ"] == "access"
    assert raw["iss"] == "usergraph" and raw["aud"] == "usergraph"
    assert raw["exp"] - raw["iat"] == TTL.total_seconds()

    claims = codec.decode_access_token(issued.token)
    assert claims.user_id == 42
    assert claims.session_id == SESSION_ID
    assert claims.roles == ("admin", "user")
    assert claims.expires_at == issued.expires_at


def test_each_token_has_its_own_jti() -> None:
    codec = make_codec()
    at = now()
    first, second = issue(codec, at=at), issue(codec, at=at)
    assert first != second
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in (first, second)}
    assert len(jtis) == 2


def test_expired_token_is_rejected() -> None:
    codec = make_codec()
    token = issue(codec, at=now() - TTL - LEEWAY - timedelta(minutes=1))
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(token)


def test_token_just_expired_within_leeway_is_accepted() -> None:
    codec = make_codec()
    token = issue(codec, at=now() - TTL - LEEWAY / 2)
    assert codec.decode_access_token(token).user_id == 42


def test_token_not_yet_valid_is_rejected() -> None:
    codec = make_codec()
    token = issue(codec, at=now() + timedelta(minutes=5))
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(token)


@pytest.mark.parametrize(
    ("issuer", "audience"),
    [("usergraph", "someone-else"), ("someone-else", "usergraph")],
    ids=["audience", "issuer"],
)
def test_wrong_audience_or_issuer_is_rejected(issuer: str, audience: str) -> None:
    token = issue(make_codec(issuer=issuer, audience=audience))
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(token)


def _flip_signature_character(token: str) -> str:
    head, payload, signature = token.split(".")
    # A middle character: the last one may only carry padding bits.
    middle = len(signature) // 2
    replacement = "A" if signature[middle] != "A" else "B"
    return ".".join([head, payload, signature[:middle] + replacement + signature[middle + 1 :]])


def test_tampered_signature_is_rejected() -> None:
    codec = make_codec()
    token = issue(codec)
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(_flip_signature_character(token))


def test_tampered_payload_is_rejected() -> None:
    codec = make_codec()
    head, _, signature = issue(codec).split(".")
    forged_claims = valid_claims(roles=["admin"], sub="1")
    forged = jwt.encode(forged_claims, OTHER_KEY.secret, algorithm="HS256").split(".")[1]
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(f"{head}.{forged}.{signature}")


def test_unknown_kid_is_rejected() -> None:
    token = issue(make_codec(OTHER_KEY))
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(token)


def test_known_kid_signed_with_another_secret_is_rejected() -> None:
    claims = valid_claims()
    token = jwt.encode(claims, OTHER_KEY.secret, algorithm="HS256", headers={"kid": KEY.kid})
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(token)


def test_hand_made_token_is_accepted_when_well_formed() -> None:
    # The control for the hand-made tokens below: only the one difference makes them fail.
    header = {"alg": "HS256", "typ": "JWT", "kid": KEY.kid}
    assert make_codec().decode_access_token(hand_made(header, valid_claims(), KEY.secret))


@pytest.mark.parametrize("kid", [None, 7, "", ["x"]])
def test_missing_or_malformed_kid_is_rejected(kid: Any) -> None:
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(hand_made(header, valid_claims(), KEY.secret))


def test_token_signed_with_a_previous_key_still_verifies() -> None:
    old_token = issue(make_codec(OLD_KEY))
    rotated = make_codec(KEY, previous=(OLD_KEY,))
    assert rotated.decode_access_token(old_token).user_id == 42
    # New tokens are signed with the current key.
    assert jwt.get_unverified_header(issue(rotated))["kid"] == KEY.kid
    # Once the old key is dropped, its tokens stop working.
    with pytest.raises(InvalidAccessToken):
        make_codec(KEY).decode_access_token(old_token)


@pytest.mark.parametrize("typ", ["refresh", "Access", ""])
def test_token_of_another_type_is_rejected(typ: str) -> None:
    codec = make_codec()
    assert codec.decode_access_token(sign(valid_claims())).user_id == 42
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(sign(valid_claims(typ=typ)))


@pytest.mark.parametrize("missing", ["sid", "typ", "exp", "sub", "jti", "aud", "iss"])
def test_token_missing_a_required_claim_is_rejected(missing: str) -> None:
    claims = valid_claims()
    del claims[missing]
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(sign(claims))


@pytest.mark.parametrize(
    "overrides", [{"sub": "not-a-number"}, {"sid": "not-a-uuid"}], ids=["sub", "sid"]
)
def test_malformed_claims_are_rejected(overrides: dict[str, str]) -> None:
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(sign(valid_claims(**overrides)))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_rejected(alg: str) -> None:
    header = {"alg": alg, "typ": "JWT", "kid": KEY.kid}
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(hand_made(header, valid_claims(), None))


def test_hs256_signature_under_alg_none_header_is_rejected() -> None:
    header = {"alg": "none", "typ": "JWT", "kid": KEY.kid}
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(hand_made(header, valid_claims(), KEY.secret))


def test_other_hmac_algorithm_with_the_right_key_is_rejected() -> None:
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(sign(valid_claims(), algorithm="HS512"))


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "...", "x" * 5000])
def test_garbage_is_rejected(garbage: str) -> None:
    with pytest.raises(InvalidAccessToken):
        make_codec().decode_access_token(garbage)


def test_signing_key_repr_hides_the_secret() -> None:
    assert "current-signing-key" not in repr(KEY)
    assert KEY.kid in repr(KEY)
    assert KEY.kid != OLD_KEY.kid
    assert SigningKey.from_secret(KEY.secret.decode()).kid == KEY.kid


def test_hash_refresh_token_is_sha256_hex() -> None:
    token = new_refresh_token()
    digest = hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    # The published SHA-256 test vector for "abc".
    assert hash_token("abc") == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_new_refresh_token_is_prefixed_and_has_256_random_bits() -> None:
    tokens = {new_refresh_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert token.startswith(REFRESH_TOKEN_PREFIX)
        assert REFRESH_TOKEN_PREFIX == "ugr_"
        assert len(token) <= MAX_REFRESH_TOKEN_LENGTH
        body = token.removeprefix(REFRESH_TOKEN_PREFIX)
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        assert len(raw) * 8 >= 256


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "signing-key"
    key = read_or_create_key_file(path)
    assert len(key.encode()) >= 32
    assert path.read_text().strip() == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    modified = path.stat().st_mtime_ns

    assert read_or_create_key_file(path) == key
    assert path.stat().st_mtime_ns == modified
    assert path.read_text().strip() == key


def test_key_file_keeps_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "signing-key"
    path.write_text("an-existing-key-that-someone-wrote-before\n")
    assert read_or_create_key_file(path) == "an-existing-key-that-someone-wrote-before"


def test_key_files_in_different_places_differ(tmp_path: Path) -> None:
    assert read_or_create_key_file(tmp_path / "a") != read_or_create_key_file(tmp_path / "b")
