"""Signing keys for access tokens: HS256 secrets, or ES256 / EdDSA key pairs whose public
halves anyone can fetch as a JWKS (RFC 7517) to verify usergraph's tokens.

Asymmetric keys come from USERGRAPH_JWT_PRIVATE_KEY (PEM; one key, no rotation) or from a key
directory that `usergraph keys generate|list|retire` manages (USERGRAPH_JWT_KEYS_DIR): one JSON
file per key, mode 0600, written atomically. The newest key that is not retired signs. A retired
key stops signing at once but stays published, and keeps verifying, until every token it
signed has expired (the access-token lifetime plus the leeway); then it is gone from both.
Workers and hosts that share the directory read it again when it changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

Algorithm = Literal["HS256", "ES256", "EdDSA"]
ASYMMETRIC: tuple[Algorithm, ...] = ("ES256", "EdDSA")
# How often a worker looks at the key directory for keys made or retired elsewhere.
RELOAD_SECONDS = 5.0
# At most this often, a token with a kid the worker does not know makes it look at once.
UNKNOWN_KID_RELOAD_SECONDS = 1.0
# Making a key takes milliseconds: a lock file older than this was left by a dead process.
STALE_LOCK_SECONDS = 10.0


def overlap(access_ttl: timedelta, leeway: timedelta) -> timedelta:
    """How long a retired key must still verify: the longest a token it signed can live,
    signed by a worker that noticed the retirement as late as it may."""
    return access_ttl + leeway + timedelta(seconds=RELOAD_SECONDS)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key that signs (and verifies) tokens: `signer` for jwt.encode, `verifier` for decode."""

    kid: str
    alg: Algorithm
    signer: Any = field(repr=False)
    verifier: Any = field(repr=False)
    created_at: datetime | None = None
    retired_at: datetime | None = None
    # Published from creation, signing only from here: verifiers holding a cached JWKS have
    # fetched the new key before the first token it signs reaches them.
    signs_from: datetime | None = None

    @classmethod
    def from_secret(cls, secret: str) -> SigningKey:
        """An HS256 key. Its kid identifies it without revealing anything usable about it."""
        raw = secret.encode()
        kid = hashlib.sha256(b"usergraph-kid\x00" + raw).hexdigest()[:16]
        return cls(kid=kid, alg="HS256", signer=raw, verifier=raw)

    @classmethod
    def from_pem(
        cls,
        pem: str | bytes,
        *,
        created_at: datetime | None = None,
        retired_at: datetime | None = None,
        signs_from: datetime | None = None,
    ) -> SigningKey:
        """An ES256 (P-256) or EdDSA (Ed25519) key from its PKCS#8 PEM private key."""
        data = pem.encode() if isinstance(pem, str) else pem
        private = serialization.load_pem_private_key(data, password=None)
        alg: Algorithm
        if isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1":
            alg = "ES256"
        elif isinstance(private, ed25519.Ed25519PrivateKey):
            alg = "EdDSA"
        else:
            raise ValueError("a signing key must be an EC P-256 (ES256) or Ed25519 (EdDSA) key")
        public = private.public_key()
        return cls(
            kid=_thumbprint(_public_jwk(alg, public)),
            alg=alg,
            signer=private,
            verifier=public,
            created_at=created_at,
            retired_at=retired_at,
            signs_from=signs_from,
        )

    @property
    def secret(self) -> bytes:
        """An HS256 key's secret."""
        if self.asymmetric:
            raise ValueError("an asymmetric key has no shared secret")
        secret: bytes = self.signer
        return secret

    @property
    def asymmetric(self) -> bool:
        return self.alg in ASYMMETRIC

    def public_jwk(self) -> dict[str, str]:
        """The key as a JWKS member: public half only, with kid, alg and use."""
        if not self.asymmetric:
            raise ValueError("an HS256 key has no public half")
        return {**_public_jwk(self.alg, self.verifier), "kid": self.kid, "alg": self.alg,
                "use": "sig"}  # fmt: skip

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"


def new_private_key_pem(alg: Algorithm) -> str:
    if alg == "ES256":
        private: Any = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"{alg} has no key pair")
    pem: bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


def _public_jwk(alg: Algorithm, public: Any) -> dict[str, str]:
    jwk: Mapping[str, Any] = (
        ECAlgorithm.to_jwk(public, as_dict=True)
        if alg == "ES256"
        else OKPAlgorithm.to_jwk(public, as_dict=True)
    )
    return {name: str(jwk[name]) for name in ("kty", "crv", "x", "y") if name in jwk}


def _thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638's SHA-256 of the required members (sorted, no whitespace), in hex rather than
    base64url: a kid then never starts with "-", which a command line would take for an
    option (`usergraph keys retire <kid>`)."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y") if name in jwk}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return digest.hexdigest()


# --- Which keys sign, verify and are published ------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeySet:
    """Every key known; which of them sign, verify and are published, at a given time."""

    keys: tuple[SigningKey, ...]
    # How long a retired key must still verify: the longest a token it signed can live.
    overlap: timedelta

    def signing(self, now: datetime | None = None) -> SigningKey | None:
        """The newest key that is not retired and may sign by now (of keys without a date, the
        last listed); if none may sign yet, the newest live one."""
        live = [key for key in self.keys if key.retired_at is None]
        moment = now or datetime.now(UTC)
        ready = [key for key in live if key.signs_from is None or key.signs_from <= moment]
        return max(reversed(ready or live), key=_created, default=None)

    # Every key by its kid, made once per set (a token's check is one lookup, on every
    # signed-in request).
    _by_kid: dict[str, SigningKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_kid", {key.kid: key for key in self.keys})

    def verifying(self, now: datetime) -> dict[str, SigningKey]:
        return {key.kid: key for key in self.keys if self.in_use(key, now)}

    def verifier(self, kid: str, now: datetime) -> SigningKey | None:
        """The key that verifies tokens naming kid, if it is in use."""
        key = self._by_kid.get(kid)
        return key if key is not None and self.in_use(key, now) else None

    def in_use(self, key: SigningKey, now: datetime) -> bool:
        return key.retired_at is None or now < key.retired_at + self.overlap

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        published = sorted(
            (key for key in self.verifying(now).values() if key.asymmetric),
            key=_created,
            reverse=True,
        )
        return {"keys": [key.public_jwk() for key in published]}


def _created(key: SigningKey) -> datetime:
    return key.created_at or datetime.min.replace(tzinfo=UTC)


# --- The key directory ---------------------------------------------------------------------------


class KeyDirectory:
    """The key files `usergraph keys` manages: `<kid>.json` with the PEM and two dates."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[SigningKey]:
        keys = []
        for file in sorted(self.path.glob("*.json")) if self.path.is_dir() else []:
            record = json.loads(file.read_text())
            keys.append(
                SigningKey.from_pem(
                    record["private_key"],
                    created_at=datetime.fromisoformat(record["created_at"]),
                    retired_at=_moment(record.get("retired_at")),
                    signs_from=_moment(record.get("signs_from")),
                )
            )
        return keys

    def generate(
        self, alg: Algorithm, now: datetime | None = None, *, delay: timedelta = timedelta(0)
    ) -> SigningKey:
        """A new key: published at once, signing after delay."""
        created = now or datetime.now(UTC)
        pem = new_private_key_pem(alg)
        key = SigningKey.from_pem(pem, created_at=created, signs_from=created + delay)
        self._write(key, pem)
        return key

    def retire(self, kid: str, now: datetime | None = None) -> SigningKey:
        file = self.path / f"{kid}.json"
        if not file.is_file():
            raise KeyError(kid)
        record = json.loads(file.read_text())
        if not record.get("retired_at"):
            record["retired_at"] = (now or datetime.now(UTC)).isoformat()
            _write_atomically(file, record)
        return next(key for key in self.load() if key.kid == kid)

    def ensure_signing_key(self, alg: Algorithm) -> list[SigningKey]:
        """The keys, after making one if none is live (development's first start). Workers
        starting together make one key between them: the first to take the lock file."""
        lock = self.path / ".generating"
        for _ in range(250):
            keys = self.load()
            if any(key.retired_at is None for key in keys):
                return keys
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
                        lock.unlink()  # left by a process that died while making a key
                time.sleep(0.02)  # another worker is making it
                continue
            try:
                if not any(key.retired_at is None for key in self.load()):
                    self.generate(alg)
            finally:
                os.close(fd)
                lock.unlink()
        return self.load()

    def changed_at(self) -> float:
        """When a key was last added, retired or removed (the directory's mtime)."""
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return 0.0

    def _write(self, key: SigningKey, pem: str) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        assert key.created_at is not None
        record = {
            "kid": key.kid,
            "alg": key.alg,
            "created_at": key.created_at.isoformat(),
            "signs_from": key.signs_from.isoformat() if key.signs_from else None,
            "retired_at": None,
            "private_key": pem,
        }
        _write_atomically(self.path / f"{key.kid}.json", record)


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _write_atomically(file: Path, record: dict[str, Any]) -> None:
    """Write through a temporary file and rename it into place: a worker reading the directory
    never sees half a key, and the rename changes the directory's mtime, so workers reload."""
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out, indent=2)
        out.write("\n")
    os.replace(temporary, file)


class KeyRing:
    """The key set a process signs and verifies with; for a key directory, read again (at
    most every RELOAD_SECONDS) when the directory changed. Keys given outright (HS256
    secrets, a configured private key) stay whatever the directory holds."""

    def __init__(
        self,
        keys: Sequence[SigningKey],
        *,
        overlap: timedelta,
        directory: KeyDirectory | None = None,
        static: Sequence[SigningKey] = (),
    ) -> None:
        self._overlap = overlap
        self._directory = directory
        self._static = tuple(static)
        self._set = KeySet((*self._static, *keys), overlap)
        self._checked_at = time.monotonic()
        self._looked_for_kid_at = -math.inf
        self._seen = directory.changed_at() if directory else 0.0

    @property
    def current(self) -> KeySet:
        if self._directory is not None and time.monotonic() - self._checked_at > RELOAD_SECONDS:
            self._checked_at = time.monotonic()
            self._read_if_changed()
        return self._set

    def reload(self) -> None:
        """Read the directory now."""
        self._checked_at = time.monotonic()
        self._read_if_changed(force=True)

    def look_for_new_keys(self) -> None:
        """A token names a kid this worker does not know: perhaps another worker or host signs
        with a key made since the last look. Look now, at most every
        UNKNOWN_KID_RELOAD_SECONDS (tokens with made-up kids cannot make it read the
        directory more often)."""
        if time.monotonic() - self._looked_for_kid_at > UNKNOWN_KID_RELOAD_SECONDS:
            self._looked_for_kid_at = self._checked_at = time.monotonic()
            self._read_if_changed()

    def _read_if_changed(self, *, force: bool = False) -> None:
        if self._directory is None:
            return
        changed = self._directory.changed_at()
        if changed == self._seen and not force:
            return
        try:
            keys = self._directory.load()
        except (OSError, ValueError, KeyError) as error:  # a file half-copied, or no key
            # Keep the keys in use; look again at the next check, not only at the next change.
            logging.getLogger("usergraph.keys").error(
                "key directory %s not read: %s: %s", self._directory.path,
                type(error).__name__, error,
            )  # fmt: skip
            return
        self._seen = changed
        self._set = KeySet((*self._static, *keys), self._overlap)
