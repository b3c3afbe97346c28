"""Asymmetric signing keys (auth/keys.py): ES256 and EdDSA keys, their kid and public JWK, which
keys sign, verify and are published, the key directory, the ring that reloads it, and the
TokenCodec signing and verifying with them.

Thumbprints are computed here from the key's numbers (RFC 7638 spelled out), and checked against
the Ed25519 example of RFC 8037, not with the code under test. A kid is the thumbprint's SHA-256
digest in lowercase hex (RFC 7638 spells it in base64url, which can start with "-").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tests.environment import make_settings
from usergraph.auth import keys as keys_module
from usergraph.auth.keys import (
    Algorithm,
    KeyDirectory,
    KeyRing,
    KeySet,
    SigningKey,
    new_private_key_pem,
)
from usergraph.auth.tokens import ACCESS_TOKEN_TYPE, InvalidAccessToken, TokenCodec
from usergraph.runtime import token_codec
from usergraph.settings import Settings

ALGORITHMS: list[Algorithm] = ["ES256", "EdDSA"]
TTL = timedelta(minutes=15)
LEEWAY = timedelta(seconds=10)
OVERLAP = TTL + LEEWAY
SESSION_ID = uuid.UUID("0f5a3c1e-2b7d-4e8a-9c61-7d2e4b9a1f03")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HS_KEY = SigningKey.from_secret("an-hs256-secret-that-is-long-enough-" + "0123456789" * 3)

# RFC 8037, appendix A.1 and A.3: an Ed25519 key and its RFC 7638 thumbprint (base64url, as
# the RFC prints it).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
HEX_KID = re.compile(r"[0-9a-f]{64}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pem(private: Any) -> str:
    data: bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data.decode()


def rfc7638(jwk: dict[str, str]) -> str:
    """The thumbprint as RFC 7638 section 3 spells it: the required members in lexicographic
    order, no whitespace, hashed with SHA-256; the digest in lowercase hex (usergraph's kid)."""
    if jwk["kty"] == "EC":
        text = f'{{"crv":"{jwk["crv"]}","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    else:
        text = f'{{"crv":"{jwk["crv"]}","kty":"OKP","x":"{jwk["x"]}"}}'
    return hashlib.sha256(text.encode()).hexdigest()


def p256_jwk(private: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The public JWK of a P-256 key from its numbers (RFC 7518 6.2.1: 32-byte coordinates)."""
    numbers = private.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def ed25519_jwk(private: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def new_key(alg: Algorithm, **dates: datetime | None) -> SigningKey:
    return SigningKey.from_pem(new_private_key_pem(alg), **dates)


def codec_for(ring: KeyRing, *, ttl: timedelta = TTL, leeway: timedelta = LEEWAY) -> TokenCodec:
    return TokenCodec(
        ring=ring, issuer="usergraph", audience="usergraph", access_ttl=ttl, leeway=leeway
    )


def issue(codec: TokenCodec, at: datetime | None = None) -> str:
    return codec.issue_access_token(
        user_id=7, session_id=SESSION_ID, roles=["user"], now=at or datetime.now(UTC)
    ).token


def claims_now(**overrides: Any) -> dict[str, Any]:
    issued = int(datetime.now(UTC).timestamp())
    return {
        "iss": "usergraph",
        "aud": "usergraph",
        "sub": "7",
        "iat": issued,
        "nbf": issued,
        "exp": issued + 600,
        "jti": uuid.uuid4().hex,
        "sid": str(SESSION_ID),
        "roles": ["user"],
        "typ": ACCESS_TOKEN_TYPE,
        **overrides,
    }


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token PyJWT would refuse to make (it will not HMAC with a public key)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


class FakeMonotonic:
    """time.monotonic for the ring, moved by the test (time.sleep stays real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def signing_kid(keys: KeySet, now: datetime | None = None) -> str:
    key = keys.signing(now)
    assert key is not None, "no key signs"
    return key.kid


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(keys_module, "time", fake)
    return fake


# --- Keys from PEM ---------------------------------------------------------------------------


def test_an_es256_key_from_pem_has_its_thumbprint_as_kid() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key = SigningKey.from_pem(pem(private))
    assert key.alg == "ES256" and key.asymmetric
    expected = p256_jwk(private)
    assert key.kid == rfc7638(expected)
    # bytes work as well as str, and the same key always has the same kid.
    assert SigningKey.from_pem(pem(private).encode()).kid == key.kid


def test_an_eddsa_key_from_pem_has_the_thumbprint_of_rfc_8037() -> None:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D))
    key = SigningKey.from_pem(pem(private))
    assert key.alg == "EdDSA" and key.asymmetric
    assert key.public_jwk()["x"] == RFC8037_X
    assert key.kid == rfc7638(ed25519_jwk(private))
    # The RFC's thumbprint, the same digest in hex.
    assert key.kid == b64url_decode(RFC8037_THUMBPRINT).hex()
    assert key.kid == "90facafea9b1556698540f70c0117a22ea37bd5cf3ed3c47093c1707282b4b89"


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_kids_are_64_lowercase_hex_characters(alg: Algorithm) -> None:
    # In base64url, 1 thumbprint in 64 started with "-", which a command line takes for an
    # option (`usergraph keys retire <kid>`); in hex none does.
    kids = [new_key(alg).kid for _ in range(500)]
    for kid in kids:
        assert HEX_KID.fullmatch(kid), kid
    assert len(set(kids)) == len(kids)


def test_keys_from_pem_keep_their_dates() -> None:
    key = new_key(
        "ES256",
        created_at=T0,
        signs_from=T0 + timedelta(minutes=5),
        retired_at=T0 + timedelta(days=1),
    )
    assert (key.created_at, key.signs_from, key.retired_at) == (
        T0,
        T0 + timedelta(minutes=5),
        T0 + timedelta(days=1),
    )
    assert new_key("ES256").signs_from is None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="RSA"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="P-384"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), id="secp256k1"),
        pytest.param(ed448.Ed448PrivateKey.generate, id="Ed448"),
    ],
)
def test_other_kinds_of_key_are_refused_with_a_clear_error(make: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match=r"EC P-256 \(ES256\) or Ed25519 \(EdDSA\)"):
        SigningKey.from_pem(pem(make()))


def test_no_key_pair_for_hs256() -> None:
    with pytest.raises(ValueError, match="HS256 has no key pair"):
        new_private_key_pem("HS256")


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_generated_keys_are_pkcs8_pem_of_their_algorithm(alg: Algorithm) -> None:
    text = new_private_key_pem(alg)
    assert text.startswith("-----BEGIN PRIVATE KEY-----\n")
    private = serialization.load_pem_private_key(text.encode(), password=None)
    if alg == "ES256":
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp256r1"
    else:
        assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert SigningKey.from_pem(text).alg == alg


# --- The public JWK ----------------------------------------------------------------------------


def test_the_es256_public_jwk_has_the_public_members_only() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key = SigningKey.from_pem(pem(private))
    jwk = key.public_jwk()
    assert jwk == {**p256_jwk(private), "kid": key.kid, "alg": "ES256", "use": "sig"}
    assert "d" not in jwk
    d = b64url(private.private_numbers().private_value.to_bytes(32, "big"))
    assert d not in json.dumps(jwk)
    # Another implementation reads the same public key back from it.
    public = jwt.PyJWK(jwk).key
    assert public.public_numbers() == private.public_key().public_numbers()


def test_the_eddsa_public_jwk_has_the_public_members_only() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    key = SigningKey.from_pem(pem(private))
    jwk = key.public_jwk()
    assert jwk == {**ed25519_jwk(private), "kid": key.kid, "alg": "EdDSA", "use": "sig"}
    assert "d" not in jwk and "y" not in jwk
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert b64url(raw_private) not in json.dumps(jwk)
    public = jwt.PyJWK(jwk).key
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert public.public_bytes(*raw) == private.public_key().public_bytes(*raw)


def test_es256_coordinates_keep_their_leading_zero_bytes() -> None:
    # RFC 7518 6.2.1.2: x and y are always 32 bytes. About 1 key in 128 has a coordinate with a
    # leading zero byte: dropping it changes both the JWK (jose refuses it) and the kid.
    for _ in range(10_000):
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.public_key().public_numbers()
        if numbers.x < 2**248 or numbers.y < 2**248:
            break
    else:
        pytest.fail("no P-256 key with a short coordinate in 10,000")
    key = SigningKey.from_pem(pem(private))
    jwk = key.public_jwk()
    assert len(b64url_decode(jwk["x"])) == len(b64url_decode(jwk["y"])) == 32
    assert key.kid == rfc7638(p256_jwk(private))


def test_an_hs256_key_has_no_public_half() -> None:
    assert not HS_KEY.asymmetric
    with pytest.raises(ValueError, match="no public half"):
        HS_KEY.public_jwk()
    with pytest.raises(ValueError, match="no shared secret"):
        _ = new_key("ES256").secret


def test_repr_shows_no_key_material() -> None:
    text = new_private_key_pem("ES256")
    key = SigningKey.from_pem(text)
    assert repr(key) == f"SigningKey(kid={key.kid!r}, alg='ES256')"
    assert "PRIVATE" not in repr(key) and "secret" not in repr(HS_KEY)


# --- Which keys sign, verify and are published ------------------------------------------------


def test_the_newest_live_key_signs() -> None:
    oldest = new_key("ES256", created_at=T0)
    newer = new_key("EdDSA", created_at=T0 + timedelta(days=1))
    newest_retired = new_key(
        "ES256", created_at=T0 + timedelta(days=2), retired_at=T0 + timedelta(days=3)
    )
    # The order of the list does not matter: the dates do.
    for order in ([oldest, newer, newest_retired], [newest_retired, newer, oldest]):
        assert KeySet(tuple(order), OVERLAP).signing() is newer
    assert KeySet((oldest,), OVERLAP).signing() is oldest
    assert KeySet((newest_retired,), OVERLAP).signing() is None
    assert KeySet((), OVERLAP).signing() is None


def test_a_key_with_a_date_signs_before_keys_without_one() -> None:
    # HS256 secrets have no date: beside a dated key pair (a move from HS256) the pair signs.
    dated = new_key("ES256", created_at=T0)
    assert KeySet((HS_KEY, dated), OVERLAP).signing() is dated
    assert KeySet((dated, HS_KEY), OVERLAP).signing() is dated
    # Of keys without a date, the last listed signs (the current one, after the previous).
    other = SigningKey.from_secret("another-hs256-secret-long-enough-" + "0123456789" * 3)
    assert KeySet((other, HS_KEY), OVERLAP).signing() is HS_KEY


def test_a_new_key_signs_only_from_its_signs_from() -> None:
    # Published at once, signing later: until then the newest key that may sign does.
    old = new_key("ES256", created_at=T0, signs_from=T0)
    ready = T0 + timedelta(days=1, minutes=5)
    new = new_key("EdDSA", created_at=T0 + timedelta(days=1), signs_from=ready)
    for order in ((old, new), (new, old)):
        keys = KeySet(order, OVERLAP)
        assert keys.signing(T0 + timedelta(days=1)) is old
        assert keys.signing(ready - timedelta(microseconds=1)) is old
        assert keys.signing(ready) is new
        assert keys.signing(ready + timedelta(days=30)) is new
        # Published (and verifying) from the start, while the old key still signs.
        moment = T0 + timedelta(days=1)
        assert keys.verifying(moment) == {old.kid: old, new.kid: new}
        assert keys.jwks(moment) == {"keys": [new.public_jwk(), old.public_jwk()]}
    # A key without signs_from (one from USERGRAPH_JWT_PRIVATE_KEY, an HS256 secret) may sign.
    undated = new_key("ES256", created_at=T0 + timedelta(days=2))
    assert KeySet((old, new, undated), OVERLAP).signing(T0 + timedelta(days=1)) is undated


def test_signing_uses_the_current_time_when_none_is_given() -> None:
    now = datetime.now(UTC)
    old = new_key("ES256", created_at=now - timedelta(days=1), signs_from=now - timedelta(days=1))
    soon = new_key("ES256", created_at=now, signs_from=now + timedelta(minutes=5))
    past = new_key("ES256", created_at=now, signs_from=now - timedelta(seconds=1))
    assert KeySet((old, soon), OVERLAP).signing() is old
    assert KeySet((old, past), OVERLAP).signing() is past


def test_if_no_live_key_may_sign_yet_the_newest_live_one_signs() -> None:
    retired = new_key("ES256", created_at=T0, signs_from=T0, retired_at=T0 + timedelta(hours=1))
    later = T0 + timedelta(hours=1)
    first = new_key("ES256", created_at=later, signs_from=later + timedelta(minutes=5))
    second = new_key(
        "EdDSA", created_at=later + timedelta(minutes=1), signs_from=T0 + timedelta(days=1)
    )
    keys = KeySet((retired, first, second), OVERLAP)
    # Nothing else could sign: not the retired key, the newest live one.
    assert keys.signing(later) is second
    # Once one may sign, it does.
    assert keys.signing(later + timedelta(minutes=5)) is first
    assert keys.signing(T0 + timedelta(days=1)) is second
    assert KeySet((retired,), OVERLAP).signing(later) is None


def test_a_retired_key_verifies_and_is_published_until_its_tokens_expired() -> None:
    retired_at = T0 + timedelta(days=1)
    old = new_key("ES256", created_at=T0, retired_at=retired_at)
    new = new_key("ES256", created_at=retired_at - timedelta(minutes=1))
    keys = KeySet((old, new), OVERLAP)
    assert keys.signing() is new
    end = retired_at + OVERLAP
    for moment in (retired_at - timedelta(hours=1), retired_at, end - timedelta(microseconds=1)):
        assert keys.verifying(moment) == {old.kid: old, new.kid: new}, moment
        assert keys.in_use(old, moment)
        assert keys.jwks(moment) == {"keys": [new.public_jwk(), old.public_jwk()]}
    for moment in (end, end + timedelta(days=365)):
        assert keys.verifying(moment) == {new.kid: new}, moment
        assert not keys.in_use(old, moment)
        assert keys.jwks(moment) == {"keys": [new.public_jwk()]}


def test_the_jwks_lists_the_newest_key_first() -> None:
    keys = [new_key(alg, created_at=T0 + timedelta(hours=i)) for i, alg in enumerate(ALGORITHMS)]
    jwks = KeySet(tuple(keys), OVERLAP).jwks(T0 + timedelta(days=1))
    assert [jwk["kid"] for jwk in jwks["keys"]] == [keys[1].kid, keys[0].kid]
    assert [jwk["alg"] for jwk in jwks["keys"]] == ["EdDSA", "ES256"]


def test_hs256_keys_are_never_published() -> None:
    pair = new_key("ES256", created_at=T0)
    now = T0 + timedelta(hours=1)
    assert KeySet((HS_KEY,), OVERLAP).jwks(now) == {"keys": []}
    mixed = KeySet((HS_KEY, pair), OVERLAP)
    assert HS_KEY.kid in mixed.verifying(now)  # it verifies...
    assert mixed.jwks(now) == {"keys": [pair.public_jwk()]}  # ...but is no one's to see
    assert HS_KEY.secret.decode() not in json.dumps(mixed.jwks(now))


# --- The key directory -------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_key_directory_round_trip(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "deep" / "keys")
    assert directory.load() == []  # no directory yet: no keys
    es = directory.generate("ES256", now=T0)
    ed = directory.generate("EdDSA", now=T0 + timedelta(hours=1))
    assert mode(directory.path) == 0o700
    files = sorted(directory.path.iterdir())
    assert [file.name for file in files] == sorted([f"{es.kid}.json", f"{ed.kid}.json"])
    for file in files:
        assert mode(file) == 0o600, file
    record = json.loads((directory.path / f"{es.kid}.json").read_text())
    assert record["kid"] == es.kid and record["alg"] == "ES256"
    assert record["created_at"] == T0.isoformat() and record["retired_at"] is None
    # Without a delay, a key signs from when it was made.
    assert record["signs_from"] == T0.isoformat() and es.signs_from == T0
    assert SigningKey.from_pem(record["private_key"]).kid == es.kid

    loaded = {key.kid: key for key in directory.load()}
    assert set(loaded) == {es.kid, ed.kid}
    assert (loaded[es.kid].alg, loaded[es.kid].created_at) == ("ES256", T0)
    assert (loaded[ed.kid].alg, loaded[ed.kid].created_at) == ("EdDSA", T0 + timedelta(hours=1))
    assert loaded[es.kid].signs_from == T0
    assert loaded[ed.kid].signs_from == T0 + timedelta(hours=1)
    assert all(key.retired_at is None for key in loaded.values())
    assert signing_kid(KeySet(tuple(loaded.values()), OVERLAP)) == ed.kid

    retired = directory.retire(es.kid, now=T0 + timedelta(days=1))
    assert retired.kid == es.kid and retired.retired_at == T0 + timedelta(days=1)
    # Retiring again keeps the first date.
    assert directory.retire(es.kid, now=T0 + timedelta(days=9)).retired_at == retired.retired_at
    again = {key.kid: key for key in directory.load()}
    assert again[es.kid].retired_at == T0 + timedelta(days=1)
    assert again[ed.kid].retired_at is None
    assert mode(directory.path / f"{es.kid}.json") == 0o600
    # Nothing but the key files is left behind: no temporary file, no lock.
    assert sorted(file.name for file in directory.path.iterdir()) == [f.name for f in files]


def test_a_key_generated_with_a_delay_signs_from_later(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    old = directory.generate("ES256", now=T0)
    created = T0 + timedelta(days=1)
    new = directory.generate("EdDSA", now=created, delay=timedelta(minutes=5))
    assert (new.created_at, new.signs_from) == (created, created + timedelta(minutes=5))
    record = json.loads((directory.path / f"{new.kid}.json").read_text())
    assert record["created_at"] == created.isoformat()
    assert record["signs_from"] == (created + timedelta(minutes=5)).isoformat()
    [loaded] = [key for key in directory.load() if key.kid == new.kid]
    assert loaded.signs_from == created + timedelta(minutes=5)
    keys = KeySet(tuple(directory.load()), OVERLAP)
    assert signing_kid(keys, created) == old.kid
    assert signing_kid(keys, created + timedelta(minutes=5)) == new.kid
    assert keys.jwks(created)["keys"][0]["kid"] == new.kid


def test_key_files_without_signs_from_still_load(tmp_path: Path) -> None:
    # Files written before signs_from existed: such a key signs as soon as it is the newest.
    directory = KeyDirectory(tmp_path / "keys")
    key = directory.generate("ES256", now=T0)
    file = directory.path / f"{key.kid}.json"
    record = json.loads(file.read_text())
    del record["signs_from"]
    file.write_text(json.dumps(record))
    [loaded] = directory.load()
    assert (loaded.kid, loaded.created_at, loaded.signs_from) == (key.kid, T0, None)
    assert KeySet((loaded,), OVERLAP).signing(T0) is loaded


def test_retiring_an_unknown_key_raises_key_error(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    with pytest.raises(KeyError):
        directory.retire("no-such-kid")
    directory.generate("ES256")
    with pytest.raises(KeyError):
        directory.retire("no-such-kid")


def test_key_files_are_replaced_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # At the moment a file is renamed into place, the temporary file is complete and private,
    # and the file under the key's name is still the old one (or absent): a reader sees one or
    # the other, never half.
    directory = KeyDirectory(tmp_path / "keys")
    seen: list[tuple[str, dict[str, Any], int, dict[str, Any] | None]] = []
    replace = os.replace

    def watching(source: Any, destination: Any) -> None:
        source, destination = Path(source), Path(destination)
        before = json.loads(destination.read_text()) if destination.exists() else None
        seen.append((source.name, json.loads(source.read_text()), mode(source), before))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", watching)
    key = directory.generate("ES256", now=T0)
    directory.retire(key.kid, now=T0 + timedelta(days=1))
    monkeypatch.undo()

    [(made_name, made, made_mode, made_before), (retired_name, retired, _, retired_before)] = seen
    assert made_name != f"{key.kid}.json" and not made_name.endswith(".json")
    assert made["kid"] == key.kid and made_mode == 0o600 and made_before is None
    assert retired["retired_at"] == (T0 + timedelta(days=1)).isoformat()
    assert retired_before is not None and retired_before["retired_at"] is None
    assert not retired_name.endswith(".json")
    assert [file.name for file in directory.path.iterdir()] == [f"{key.kid}.json"]


def test_ensure_signing_key_makes_one_only_when_none_is_live(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    [first] = directory.ensure_signing_key("EdDSA")
    assert first.alg == "EdDSA" and first.retired_at is None
    assert [key.kid for key in directory.ensure_signing_key("EdDSA")] == [first.kid]
    directory.retire(first.kid)
    keys = directory.ensure_signing_key("ES256")
    live = [key for key in keys if key.retired_at is None]
    assert len(keys) == 2 and len(live) == 1 and live[0].alg == "ES256"
    assert not (directory.path / ".generating").exists()


@pytest.mark.parametrize("round_", range(5))
def test_ensure_signing_key_makes_one_key_among_concurrent_callers(
    tmp_path: Path, round_: int
) -> None:
    directory_path = tmp_path / "keys"
    threads = 8
    start = threading.Barrier(threads)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def first_start() -> None:
        try:
            start.wait()
            keys = KeyDirectory(directory_path).ensure_signing_key("ES256")
            results.append([key.kid for key in keys])
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=first_start) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert errors == []
    assert len(results) == threads
    [kid] = {kid for kids in results for kid in kids}
    assert all(kids == [kid] for kids in results), results
    assert [file.name for file in directory_path.iterdir()] == [f"{kid}.json"]


# --- The ring, reloading the directory -----------------------------------------------------------


def settle() -> None:
    """Let the clock move on before changing the directory: the ring compares its mtime, which
    some file systems and kernels keep with a granularity of a few milliseconds."""
    time.sleep(0.02)


def directory_with_key(tmp_path: Path, alg: Algorithm = "ES256") -> tuple[KeyDirectory, SigningKey]:
    directory = KeyDirectory(tmp_path / "keys")
    key = directory.generate(alg, now=datetime.now(UTC) - timedelta(hours=1))
    settle()
    return directory, key


def test_the_ring_reloads_after_the_directory_changed(
    tmp_path: Path, clock: FakeMonotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, first = directory_with_key(tmp_path)
    ring = KeyRing(directory.load(), overlap=OVERLAP, directory=directory)
    operator = KeyDirectory(directory.path)  # `usergraph keys` in another process
    loads = 0
    load = directory.load

    def counting() -> list[SigningKey]:
        nonlocal loads
        loads += 1
        return load()

    monkeypatch.setattr(directory, "load", counting)
    assert signing_kid(ring.current) == first.kid

    settle()
    second = operator.generate("ES256")
    clock.now += keys_module.RELOAD_SECONDS - 0.5
    assert signing_kid(ring.current) == first.kid and loads == 0  # not before the interval
    clock.now += 1
    assert signing_kid(ring.current) == second.kid and loads == 1
    assert set(ring.current.verifying(datetime.now(UTC))) == {first.kid, second.kid}

    # Nothing changed: the directory is looked at, not read.
    clock.now += keys_module.RELOAD_SECONDS + 1
    assert signing_kid(ring.current) == second.kid and loads == 1

    settle()
    operator.retire(second.kid)
    assert signing_kid(ring.current) == second.kid  # the last look was just now
    clock.now += keys_module.RELOAD_SECONDS + 1
    assert signing_kid(ring.current) == first.kid and loads == 2
    retired = {key.kid: key.retired_at for key in ring.current.keys}
    assert retired[first.kid] is None and retired[second.kid] is not None


def test_the_reload_interval_is_read_when_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_module, "RELOAD_SECONDS", 0.0)
    directory, first = directory_with_key(tmp_path)
    ring = KeyRing(directory.load(), overlap=OVERLAP, directory=directory)
    second = directory.generate("EdDSA")
    assert signing_kid(ring.current) == second.kid
    assert first.kid in ring.current.verifying(datetime.now(UTC))


def test_a_ring_reloads_now_when_asked(tmp_path: Path, clock: FakeMonotonic) -> None:
    directory, first = directory_with_key(tmp_path)
    ring = KeyRing(directory.load(), overlap=OVERLAP, directory=directory)
    second = directory.generate("ES256")
    assert signing_kid(ring.current) == first.kid
    ring.reload()
    assert signing_kid(ring.current) == second.kid


def test_a_ring_without_a_directory_never_reloads(tmp_path: Path, clock: FakeMonotonic) -> None:
    key = new_key("ES256", created_at=T0)
    ring = KeyRing([key], overlap=OVERLAP)
    clock.now += 3600
    ring.reload()
    assert ring.current.keys == (key,)


def test_a_worker_that_meets_a_new_kid_reads_the_directory(
    tmp_path: Path, clock: FakeMonotonic
) -> None:
    # After `usergraph keys generate`, one worker (or host) may sign with the new key before
    # another has looked at the directory: the other one looks as soon as it meets the kid.
    directory, _first = directory_with_key(tmp_path)
    worker_a = codec_for(KeyRing(directory.load(), overlap=OVERLAP, directory=directory))
    worker_b = codec_for(KeyRing(directory.load(), overlap=OVERLAP, directory=directory))
    second = directory.generate("ES256")
    worker_a.ring.reload()  # worker A looked at the directory first
    token = issue(worker_a)
    assert jwt.get_unverified_header(token)["kid"] == second.kid
    assert worker_b.decode_access_token(token).user_id == 7
    assert signing_kid(worker_b.ring.current) == second.kid


def test_made_up_kids_do_not_make_a_worker_read_the_directory_at_will(
    tmp_path: Path, clock: FakeMonotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, first = directory_with_key(tmp_path)
    codec = codec_for(KeyRing(directory.load(), overlap=OVERLAP, directory=directory))
    looks = 0
    changed_at = directory.changed_at

    def counting() -> float:
        nonlocal looks
        looks += 1
        return changed_at()

    monkeypatch.setattr(directory, "changed_at", counting)
    stranger = new_key("ES256", created_at=datetime.now(UTC))
    for _ in range(50):
        token = jwt.encode(claims_now(), stranger.signer, algorithm="ES256",
                           headers={"kid": uuid.uuid4().hex})  # fmt: skip
        with pytest.raises(InvalidAccessToken, match="unknown signing key"):
            codec.decode_access_token(token)
    assert looks == 1
    # Known kids cost nothing either.
    assert codec.decode_access_token(issue(codec)).user_id == 7
    assert looks == 1
    clock.now += 10
    with pytest.raises(InvalidAccessToken, match="unknown signing key"):
        codec.decode_access_token(token)
    assert 1 < looks <= 3
    assert signing_kid(codec.ring.current) == first.kid


def runtime_settings(tmp_path: Path, ttl: int, leeway: int) -> Settings:
    """A deployment's settings with a key directory in tmp_path (development: the first key is
    made when the codec is built)."""
    return make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        tmp_path,
        signing_key=None,
        jwt_algorithm="ES256",
        access_token_ttl_seconds=ttl,
        jwt_leeway_seconds=leeway,
    )


@pytest.mark.parametrize("leeway", [0, 2, 10])
def test_tokens_a_lagging_worker_signed_with_a_retired_key_verify_until_they_expire(
    tmp_path: Path, clock: FakeMonotonic, leeway: int
) -> None:
    # A worker notices a retirement up to RELOAD_SECONDS late, and signs with the retired key
    # meanwhile: those tokens must verify everywhere until they expire, whatever the leeway.
    settings = runtime_settings(tmp_path, ttl=30, leeway=leeway)
    lagging = token_codec(settings)
    old = lagging.signing_key
    directory = KeyDirectory(settings.jwt_keys_dir)
    now = datetime.now(UTC)
    directory.generate("ES256", now=now - timedelta(minutes=5))
    retired_at = now - timedelta(seconds=30 + leeway + 1)
    directory.retire(old.kid, now=retired_at)
    reloaded = token_codec(settings)
    assert reloaded.signing_key.kid != old.kid
    # Signed just under RELOAD_SECONDS after the retirement (the worker had not looked yet):
    # it expires RELOAD_SECONDS - 2 s from now.
    token = issue(lagging, at=retired_at + timedelta(seconds=keys_module.RELOAD_SECONDS - 1))
    assert jwt.get_unverified_header(token)["kid"] == old.kid
    assert lagging.decode_access_token(token).user_id == 7
    assert reloaded.decode_access_token(token).user_id == 7


def test_a_retired_key_is_gone_once_a_lagging_worker_tokens_expired(
    tmp_path: Path, clock: FakeMonotonic
) -> None:
    settings = runtime_settings(tmp_path, ttl=30, leeway=0)
    lagging = token_codec(settings)
    old = lagging.signing_key
    directory = KeyDirectory(settings.jwt_keys_dir)
    now = datetime.now(UTC)
    directory.generate("ES256", now=now - timedelta(minutes=5))
    retired_at = now - timedelta(seconds=30 + keys_module.RELOAD_SECONDS + 1)
    directory.retire(old.kid, now=retired_at)
    reloaded = token_codec(settings)
    # Whatever it signs now (no worker signs with it so long after), it is no key of ours.
    with pytest.raises(InvalidAccessToken, match="unknown signing key"):
        reloaded.decode_access_token(issue(lagging))
    assert old.kid not in reloaded.ring.current.verifying(now)
    assert [jwk["kid"] for jwk in reloaded.ring.current.jwks(now)["keys"]] == [
        reloaded.signing_key.kid
    ]


# --- TokenCodec with key pairs -------------------------------------------------------------------


def ring_of(*keys: SigningKey) -> KeyRing:
    return KeyRing(list(keys), overlap=OVERLAP)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_tokens_of_a_key_pair_verify(alg: Algorithm) -> None:
    key = new_key(alg, created_at=datetime.now(UTC))
    codec = codec_for(ring_of(key))
    token = issue(codec)
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == (alg, key.kid)
    claims = codec.decode_access_token(token)
    assert (claims.user_id, claims.session_id, claims.roles) == (7, SESSION_ID, ("user",))
    # Anyone with the public JWK verifies it too.
    public = jwt.PyJWK(key.public_jwk())
    decoded = jwt.decode(token, public, algorithms=[alg], audience="usergraph", issuer="usergraph")
    assert decoded["sub"] == "7"


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_tampered_token_is_refused(alg: Algorithm) -> None:
    codec = codec_for(ring_of(new_key(alg, created_at=datetime.now(UTC))))
    head, payload, signature = issue(codec).split(".")
    forged = b64url(json.dumps(claims_now(sub="1", roles=["admin"])).encode())
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(f"{head}.{forged}.{signature}")
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B")
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(f"{head}.{payload}.{flipped}{signature[middle + 1 :]}")


def public_secrets(key: SigningKey) -> list[bytes]:
    """Every form of a public key an attacker might try as an HMAC secret."""
    public = key.verifier
    pems = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk = key.public_jwk()
    return [pems, der, json.dumps(jwk).encode(), jwk["x"].encode(), b64url_decode(jwk["x"])]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_hs256_signed_with_the_public_key_is_refused(alg: Algorithm) -> None:
    # Algorithm confusion: the header names HS256 and the pair's kid, the "secret" is public.
    key = new_key(alg, created_at=datetime.now(UTC))
    codec = codec_for(ring_of(key))
    for secret in public_secrets(key):
        token = hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims_now(), secret)
        with pytest.raises(InvalidAccessToken):
            codec.decode_access_token(token)


def test_a_key_verifies_only_with_its_own_algorithm() -> None:
    es, ed = new_key("ES256", created_at=T0), new_key("EdDSA", created_at=T0)
    codec = codec_for(ring_of(es, ed, HS_KEY))
    # An EdDSA signature under the ES256 key's kid, and the other way round.
    for signer, kid in ((ed, es.kid), (es, ed.kid)):
        token = jwt.encode(claims_now(), signer.signer, algorithm=signer.alg, headers={"kid": kid})
        with pytest.raises(InvalidAccessToken):
            codec.decode_access_token(token)
    # An ES256 signature under the HS256 key's kid; HS256 with its secret under ES256's kid.
    token = jwt.encode(claims_now(), es.signer, algorithm="ES256", headers={"kid": HS_KEY.kid})
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(token)
    token = hs256_by_hand({"alg": "HS256", "kid": es.kid}, claims_now(), HS_KEY.secret)
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(token)
    # No signature at all.
    unsigned = jwt.encode(claims_now(), None, algorithm="none", headers={"kid": es.kid})  # type: ignore[arg-type]
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(unsigned)
    # Each still verifies its own.
    for key in (es, ed, HS_KEY):
        token = jwt.encode(claims_now(), key.signer, algorithm=key.alg, headers={"kid": key.kid})
        assert codec.decode_access_token(token).user_id == 7


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_token_of_a_key_not_in_the_ring_is_refused(alg: Algorithm) -> None:
    ours = new_key(alg, created_at=datetime.now(UTC))
    theirs = new_key(alg, created_at=datetime.now(UTC))
    codec = codec_for(ring_of(ours))
    stranger = codec_for(ring_of(theirs))
    with pytest.raises(InvalidAccessToken, match="unknown signing key"):
        codec.decode_access_token(issue(stranger))
    # Under our kid, but signed by their key.
    token = jwt.encode(claims_now(), theirs.signer, algorithm=alg, headers={"kid": ours.kid})
    with pytest.raises(InvalidAccessToken):
        codec.decode_access_token(token)
    # No kid at all.
    token = jwt.encode(claims_now(), ours.signer, algorithm=alg)
    with pytest.raises(InvalidAccessToken, match="unknown signing key"):
        codec.decode_access_token(token)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_retired_key_verifies_during_the_overlap_and_not_after(alg: Algorithm) -> None:
    now = datetime.now(UTC)
    pem_text = new_private_key_pem(alg)
    new = new_key(alg, created_at=now - timedelta(days=1))

    def keys_retired_at(retired_at: datetime) -> TokenCodec:
        old = SigningKey.from_pem(
            pem_text, created_at=now - timedelta(days=2), retired_at=retired_at
        )
        return codec_for(ring_of(old, new))

    before = codec_for(ring_of(SigningKey.from_pem(pem_text, created_at=now - timedelta(days=2))))
    old_kid = before.signing_key.kid

    # Signed 2 minutes ago, retired a minute ago: it verifies, and new tokens have the new key.
    token = issue(before, at=now - timedelta(minutes=2))
    during = keys_retired_at(now - timedelta(minutes=1))
    assert during.decode_access_token(token).user_id == 7
    assert jwt.get_unverified_header(issue(during))["kid"] == new.kid != old_kid

    # Signed just before a retirement a whole overlap ago: the key is gone, not only the token.
    retired_at = now - OVERLAP - timedelta(seconds=1)
    late = issue(before, at=retired_at - timedelta(seconds=1))
    after = keys_retired_at(retired_at)
    with pytest.raises(InvalidAccessToken, match="unknown signing key"):
        after.decode_access_token(late)
    assert old_kid not in after.ring.current.verifying(now)
    assert [jwk["kid"] for jwk in after.ring.current.jwks(now)["keys"]] == [new.kid]


def test_a_ring_with_no_live_key_signs_nothing() -> None:
    key = new_key("ES256", created_at=T0, retired_at=T0 + timedelta(hours=1))
    codec = codec_for(ring_of(key))
    with pytest.raises(RuntimeError, match="usergraph keys generate"):
        issue(codec)


def test_keys_given_outright_survive_every_reload(tmp_path: Path) -> None:
    # An HS256 secret kept beside a key directory (moving off HS256) still verifies after
    # the directory changes: a reload must not drop it.
    directory, _first = directory_with_key(tmp_path)
    shared = SigningKey.from_secret("an old shared secret that is long enough!!")
    ring = KeyRing(directory.load(), overlap=OVERLAP, directory=directory, static=[shared])
    settle()
    directory.generate("ES256", delay=timedelta(0))
    ring.reload()
    kinds = sorted(key.alg for key in ring.current.keys)
    assert kinds == ["ES256", "ES256", "HS256"]
    assert shared.kid in ring.current.verifying(datetime.now(UTC))


def test_a_directory_that_cannot_be_read_keeps_the_keys_in_use(tmp_path: Path) -> None:
    directory, first = directory_with_key(tmp_path)
    ring = KeyRing(directory.load(), overlap=OVERLAP, directory=directory)
    settle()
    (directory.path / "half-copied.json").write_text('{"kid": ')  # not JSON yet
    ring.reload()
    assert [key.kid for key in ring.current.keys] == [first.kid]
    (directory.path / "half-copied.json").unlink()
    settle()
    directory.generate("ES256", delay=timedelta(0))
    ring.reload()  # read again once it can be
    assert len(ring.current.keys) == 2


def test_a_stale_lock_does_not_stop_the_first_key(tmp_path: Path) -> None:
    directory = KeyDirectory(tmp_path / "keys")
    directory.path.mkdir()
    lock = directory.path / ".generating"
    lock.write_text("")
    old = time.time() - keys_module.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))  # left by a process that died while making a key
    keys = directory.ensure_signing_key("ES256")
    assert len(keys) == 1 and keys[0].retired_at is None
