"""usergraph's access tokens verified by independent implementations that fetch its JWKS over
HTTP from a real `usergraph serve`: Node's `jose` (createRemoteJWKSet + jwtVerify, pinned by
tests/system/jwks/package-lock.json, installed there with `npm ci` when node_modules is missing)
and PyJWT's PyJWKClient.

(a, b) ES256 (the default with no USERGRAPH_SIGNING_KEY) and EdDSA: tokens from register and
       login verify with both; tampered ones, and HS256 ones "signed" with the public key, do not.
(c) A new key: `usergraph keys generate` beside two workers publishes it on every worker
    within the reload interval while the old key keeps signing until its signs_from (the JWKS
    cache time later); a token made with it meanwhile already verifies everywhere.
(d) Rotation, with the key directory shared by two workers (SQLite) or by two servers
    (PostgreSQL): `usergraph keys generate --now` run beside them; within the reload interval
    new tokens carry the new kid and both keys are published; `usergraph keys retire` the old one:
    a token it signed keeps verifying (and `me` works) until it expires, and once the overlap
    that `usergraph keys list` states is over (the access-token lifetime, 30 s, + leeway 0, +
    at most the reload interval) the old key is gone from the JWKS and a token it signs is
    refused by usergraph too. The rotations of both backends run side by side (about 45 s).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.client import DEFAULT_PASSWORD
from tests.environment import TEST_DATABASE_URL, migrate, postgres_database
from tests.system.processes import CLI, _free_port, _ready, _stop, server_env
from usergraph.auth.keys import RELOAD_SECONDS
from usergraph.wellknown import CACHE_SECONDS, DISCOVERY_PATH, JWKS_PATH

pytestmark = pytest.mark.slow

JWKS_DIR = Path(__file__).with_name("jwks")
KEYS_DIR = ".usergraph-keys"  # the default, in the servers' working directory
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { code } } }"""
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken userErrors { code } } }"""
ME = "{ me { username } }"
GENEROUS = {
    "USERGRAPH_REGISTER_IP_LIMIT": "100000/minute",
    "USERGRAPH_LOGIN_IP_LIMIT": "100000/minute",
    "USERGRAPH_LOGIN_ACCOUNT_LIMIT": "1000/minute",
}
TTL_SECONDS = 30  # the shortest access-token lifetime the settings allow


# --- The JavaScript and Python verifiers ------------------------------------------------------


@pytest.fixture(scope="module")
def jose() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not on PATH (jose runs on Node.js)")
    if not (JWKS_DIR / "node_modules" / "jose").is_dir():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=JWKS_DIR, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    return JWKS_DIR / "verify.mjs"


def jose_verify(
    script: Path, jwks_url: str, tokens: list[str], *, audience: str = "usergraph"
) -> list[dict[str, Any]]:
    """Each token as jose's jwtVerify judged it with a fresh createRemoteJWKSet(jwks_url)."""
    request = {"jwksUrl": jwks_url, "issuer": "usergraph", "audience": audience, "tokens": tokens}
    done = subprocess.run(
        ["node", str(script)],
        input=json.dumps(request), capture_output=True, text=True, timeout=60, cwd=JWKS_DIR,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == len(tokens)
    return results


def pyjwt_verify(
    jwks_url: str, token: str, client: jwt.PyJWKClient | None = None
) -> dict[str, Any]:
    """PyJWT's way: the JWKS client finds the key by kid, decode checks with its algorithm."""
    client = client or jwt.PyJWKClient(jwks_url, cache_jwk_set=False)
    key = client.get_signing_key_from_jwt(token)
    alg = key.algorithm_name
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[alg], audience="usergraph", issuer="usergraph"
    )
    return claims


def both_verify(script: Path, jwks_url: str, tokens: list[str]) -> None:
    for token, result in zip(tokens, jose_verify(script, jwks_url, tokens), strict=True):
        assert result["ok"], result
        kid = jwt.get_unverified_header(token)["kid"]
        assert result["header"]["kid"] == kid
        assert pyjwt_verify(jwks_url, token)["jti"] == result["payload"]["jti"]


# --- Servers ---------------------------------------------------------------------------------


@dataclass
class Deployment:
    """usergraph servers sharing one working directory (so one key directory) and database."""

    cwd: Path
    urls: list[str]
    env: dict[str, str]  # the first server's: what `usergraph keys` runs with

    def post(self, url: str, query: str, variables: Any = None, token: str | None = None) -> Any:
        # A new connection each time, so the requests to one server spread over its workers.
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(
            f"{url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def register(self, username: str) -> str:
        account = {"username": username, "email": f"{username}@example.com"}
        payload = self.post(
            self.urls[0], REGISTER, {"input": {**account, "password": DEFAULT_PASSWORD}}
        )["register"]
        assert payload["userErrors"] == [], payload
        token: str = payload["accessToken"]
        return token

    def login(self, url: str, username: str) -> str:
        variables = {"input": {"login": username, "password": DEFAULT_PASSWORD}}
        payload = self.post(url, LOGIN, variables)["login"]
        assert payload["userErrors"] == [], payload
        token: str = payload["accessToken"]
        return token

    def me(self, url: str, token: str) -> str | None:
        me = self.post(url, ME, token=token)["me"]
        return me["username"] if me else None

    def me_everywhere(self, token: str, *, times: int = 4) -> set[str | None]:
        """What `me` answers with token on every server, a few times (several workers)."""
        return {self.me(url, token) for url in self.urls for _ in range(times)}

    def jwks(self, url: str) -> list[str]:
        response = httpx.get(url + JWKS_PATH, timeout=10)
        assert response.status_code == 200
        return [jwk["kid"] for jwk in response.json()["keys"]]

    def jwks_everywhere(self, *, times: int = 4) -> set[tuple[str, ...]]:
        return {tuple(self.jwks(url)) for url in self.urls for _ in range(times)}

    def jwks_url(self, url: str) -> str:
        document = httpx.get(url + DISCOVERY_PATH, timeout=10).json()
        assert document["jwks_uri"] == url + JWKS_PATH, document
        jwks_uri: str = document["jwks_uri"]
        return jwks_uri

    def keys(self, *args: str) -> str:
        done = subprocess.run(
            [*CLI, "keys", *args], cwd=self.cwd, env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def key_record(self, kid: str) -> dict[str, Any]:
        record: dict[str, Any] = json.loads((self.cwd / KEYS_DIR / f"{kid}.json").read_text())
        return record


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "postgresql":
        with postgres_database() as url:
            yield url
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
    asyncio.run(migrate(url))
    yield url


@contextmanager
def deployment(
    tmp_path: Path,
    database_url: str,
    variables: dict[str, str],
    *,
    servers: int = 1,
    workers: int = 1,
) -> Iterator[Deployment]:
    """`usergraph serve` processes started side by side in tmp_path, each with
    USERGRAPH_PUBLIC_URL its own address and no signing key in the environment; output in
    tmp_path/server<i>.log, quoted when one does not start."""
    with ExitStack() as stack:
        started = []
        for i in range(servers):
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            env = server_env(database_url, USERGRAPH_PUBLIC_URL=url, **GENEROUS, **variables)
            log = stack.enter_context((tmp_path / f"server{i}.log").open("wb"))
            process = subprocess.Popen(
                [*CLI, "serve", "--port", str(port), "--workers", str(workers)],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            stack.callback(_stop, process)
            started.append((f"server{i}", url, process, env))
        for name, url, process, _env in started:
            _ready(tmp_path, name, url, process)
        yield Deployment(tmp_path, [url for _n, url, _p, _e in started], started[0][3])


# --- Tokens an attacker makes ------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def with_payload(token: str, claims: dict[str, Any]) -> str:
    head, _payload, signature = token.split(".")
    return f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"


def with_flipped_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def hs256_with_the_public_key(token: str, jwks_url: str) -> str:
    """Algorithm confusion: the same claims and kid, HS256 with the public key as the secret."""
    kid = jwt.get_unverified_header(token)["kid"]
    public = jwt.PyJWKClient(jwks_url).get_signing_key(kid).key
    secret = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    signing_input = f"{header}.{b64url(json.dumps(claims_of(token)).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def unsigned(token: str) -> str:
    """The same claims and kid with alg "none" and no signature."""
    kid = jwt.get_unverified_header(token)["kid"]
    none: Any = None
    return jwt.encode(claims_of(token), none, algorithm="none", headers={"kid": kid})


def re_signed(token: str, record: dict[str, Any]) -> str:
    """token's claims, valid from now for TTL_SECONDS, signed with the key in record."""
    now = int(time.time())
    claims = {**claims_of(token), "iat": now, "nbf": now, "exp": now + TTL_SECONDS}
    claims["jti"] = uuid.uuid4().hex
    private = serialization.load_pem_private_key(record["private_key"].encode(), password=None)
    return jwt.encode(claims, private, algorithm=record["alg"], headers={"kid": record["kid"]})  # type: ignore[arg-type]


# --- (a, b) Verified by jose and PyJWT ----------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_jose_and_pyjwt_verify_the_tokens(jose: Path, tmp_path: Path, alg: str) -> None:
    variables = {} if alg == "ES256" else {"USERGRAPH_JWT_ALGORITHM": alg}
    with database("sqlite", tmp_path) as url, deployment(tmp_path, url, variables) as d:
        [server] = d.urls
        document = httpx.get(server + DISCOVERY_PATH, timeout=10).json()
        assert document == {
            "issuer": "usergraph",
            "jwks_uri": server + JWKS_PATH,
            "access_token_signing_alg_values_supported": [alg],
        }
        jwks_url = d.jwks_url(server)
        [kid] = d.jwks(server)
        [key_file] = (tmp_path / KEYS_DIR).glob("*.json")
        assert key_file.stem == kid and json.loads(key_file.read_text())["alg"] == alg

        registered = d.register("ada")
        logged_in = d.login(server, "ada")
        good = [registered, logged_in]
        results = jose_verify(jose, jwks_url, good)
        for token, result in zip(good, results, strict=True):
            assert result["ok"], result
            assert (result["header"]["alg"], result["header"]["kid"]) == (alg, kid)
            assert result["payload"] == claims_of(token)
            assert result["payload"]["typ"] == "access"
            claims = pyjwt_verify(jwks_url, token)
            assert claims == result["payload"]
            assert d.me(server, token) == "ada"
        assert claims_of(registered)["sid"] != claims_of(logged_in)["sid"]

        # Changed in transit, or made by someone without the private key: refused by all.
        someone_else = {**claims_of(registered), "sub": "1", "roles": ["admin", "user"]}
        bad = {
            "payload": with_payload(registered, someone_else),
            "signature": with_flipped_signature(registered),
            "hs256": hs256_with_the_public_key(registered, jwks_url),
            "none": unsigned(registered),
        }
        results = jose_verify(jose, jwks_url, list(bad.values()))
        for (how, token), result in zip(bad.items(), results, strict=True):
            assert not result["ok"], (how, result)
            with pytest.raises(jwt.PyJWTError):
                pyjwt_verify(jwks_url, token)
            assert d.me(server, token) is None, how
        codes = dict(zip(bad, (result["code"] for result in results), strict=True))
        assert codes["signature"] == codes["payload"] == "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"
        # And a verifier that expects another audience refuses a good token.
        [other] = jose_verify(jose, jwks_url, [registered], audience="billing")
        assert not other["ok"] and other["code"] == "ERR_JWT_CLAIM_VALIDATION_FAILED", other


# --- (c) A new key, published before it signs --------------------------------------------------


def test_a_new_key_is_published_at_once_and_signs_after_the_cache_time(
    jose: Path, tmp_path: Path
) -> None:
    with database("sqlite", tmp_path) as url, deployment(tmp_path, url, {}, workers=2) as d:
        [(old,)] = d.jwks_everywhere()
        jwks_url = d.jwks_url(d.urls[0])
        d.register("heidi")

        printed = d.keys("generate")
        generated_at = time.time()
        match = re.fullmatch(
            r"generated ES256 key ([0-9a-f]{64}): published now, signs new tokens from at (\S+)\n",
            printed,
        )
        assert match, printed
        new, signs_from = match.group(1), datetime.fromisoformat(match.group(2))
        assert new != old
        # The JWKS cache time after it was made.
        assert CACHE_SECONDS == 300
        delay = signs_from.timestamp() - generated_at
        assert CACHE_SECONDS - 5 <= delay <= CACHE_SECONDS, delay
        record = d.key_record(new)
        assert record["signs_from"] == signs_from.isoformat()
        listing = {line.split()[0]: line for line in d.keys("list").splitlines()}
        assert listing[old].endswith("  signing"), listing
        assert listing[new].endswith(f"  published, signs from {signs_from.isoformat()}"), listing

        # Once every worker has looked, all publish it, newest first...
        wait_until(generated_at + RELOAD_SECONDS + 0.5)
        assert d.jwks_everywhere() == {(new, old)}
        document = httpx.get(d.urls[0] + DISCOVERY_PATH, timeout=10).json()
        assert document["access_token_signing_alg_values_supported"] == ["ES256"]
        # ...and all still sign with the old key.
        tokens = [d.login(server, "heidi") for server in d.urls for _ in range(6)]
        assert {jwt.get_unverified_header(token)["kid"] for token in tokens} == {old}
        both_verify(jose, jwks_url, tokens[:2])
        # A token of the new key (made with its file: the servers sign none yet) verifies
        # already, with usergraph and with the JWKS a verifier fetches now and caches.
        early = re_signed(tokens[0], record)
        assert jwt.get_unverified_header(early)["kid"] == new
        assert d.me_everywhere(early) == {"heidi"}
        both_verify(jose, jwks_url, [early])
        assert time.time() < signs_from.timestamp()


# --- (d) Rotation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    backend: str
    servers: int
    workers: int
    alg: str


ROTATIONS = {
    # One server whose two workers share the key directory...
    "sqlite": Rotation("sqlite", servers=1, workers=2, alg="ES256"),
    # ...and two servers (hosts) sharing it and the database.
    "postgresql": Rotation("postgresql", servers=2, workers=1, alg="EdDSA"),
}


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def rotate(jose: Path, tmp_path: Path, rotation: Rotation) -> None:
    """The whole rotation on one deployment (about 45 s: most of it waiting for tokens and
    the retired key to expire)."""
    variables = {
        "USERGRAPH_JWT_ALGORITHM": rotation.alg,
        "USERGRAPH_ACCESS_TOKEN_TTL_SECONDS": str(TTL_SECONDS),
        "USERGRAPH_JWT_LEEWAY_SECONDS": "0",
    }
    with (
        database(rotation.backend, tmp_path) as url,
        deployment(
            tmp_path, url, variables, servers=rotation.servers, workers=rotation.workers
        ) as d,
    ):
        # The servers (or workers) started together and made one key between them.
        [(old,)] = d.jwks_everywhere()
        assert [path.stem for path in (tmp_path / KEYS_DIR).glob("*.json")] == [old]
        jwks_url = d.jwks_url(d.urls[0])
        # A verifier that keeps its JWKS client, fetched before the rotation (no cooldown:
        # it fetches again as soon as it meets an unknown kid).
        kept = jwt.PyJWKClient(jwks_url, cooldown_duration=0)

        token_a = d.register("grace")
        expires_a = claims_of(token_a)["exp"]
        assert jwt.get_unverified_header(token_a)["kid"] == old
        pyjwt_verify(jwks_url, token_a, kept)

        # --now: signing at once (without it, the old key would sign for CACHE_SECONDS more;
        # test_a_new_key_is_published_at_once_and_signs_after_the_cache_time).
        printed = d.keys("generate", "--now")
        generated_at = time.time()
        assert printed.startswith(f"generated {rotation.alg} key "), printed
        assert printed.endswith(": published now, signs new tokens from now\n"), printed
        new = printed.split()[3].rstrip(":")
        assert new != old
        record_new = d.key_record(new)
        assert record_new["signs_from"] == record_new["created_at"]

        # Within the reload interval, new tokens carry the new kid, and every server and worker
        # accepts them at once (one that has not looked yet does when it meets the kid).
        deadline = time.monotonic() + 10
        while True:
            token_b = d.login(d.urls[-1], "grace")
            if jwt.get_unverified_header(token_b)["kid"] == new:
                break
            assert time.monotonic() < deadline, "new logins still have the old kid after 10 s"
            time.sleep(0.25)
        assert d.me_everywhere(token_b) == {"grace"}
        # Once every worker has looked (at most RELOAD_SECONDS), all sign with the new key
        # and publish both.
        wait_until(generated_at + RELOAD_SECONDS + 0.5)
        kids = {
            jwt.get_unverified_header(d.login(server, "grace"))["kid"]
            for server in d.urls
            for _ in range(3)
        }
        assert kids == {new}
        assert d.jwks_everywhere() == {(new, old)}
        both_verify(jose, jwks_url, [token_a, token_b])
        assert pyjwt_verify(jwks_url, token_b, kept)["sub"] == claims_of(token_a)["sub"]
        assert d.me_everywhere(token_a) == {"grace"}

        # Retire the old key: it signs nothing more but stays published while its tokens live.
        d.keys("retire", old)
        record = d.key_record(old)
        retired_at = datetime.fromisoformat(record["retired_at"]).timestamp()
        listing = {line.split()[0]: line for line in d.keys("list").splitlines()}
        assert listing[new].endswith("  signing"), listing
        published, until_text = listing[old].split("  ")[-1].split(" until ")
        assert published == "retired, published", listing
        until = datetime.fromisoformat(until_text).timestamp()
        # At least as long as a token it signed lives (leeway 0), at most a reload later.
        assert retired_at + TTL_SECONDS <= until <= retired_at + TTL_SECONDS + RELOAD_SECONDS
        wait_until(retired_at + RELOAD_SECONDS + 0.5)
        assert d.jwks_everywhere() == {(new, old)}

        # Token A verifies until it expires (the leeway is 0)...
        wait_until(expires_a - 2)
        both_verify(jose, jwks_url, [token_a])
        assert d.me_everywhere(token_a) == {"grace"}
        wait_until(expires_a + 1)
        assert d.me_everywhere(token_a) == {None}
        [expired] = jose_verify(jose, jwks_url, [token_a])
        assert expired["code"] == "ERR_JWT_EXPIRED", expired
        with pytest.raises(jwt.ExpiredSignatureError):
            pyjwt_verify(jwks_url, token_a)
        # ...and the old key itself still verifies until `keys list` said: a token it signs
        # now (with the key file; usergraph signs none) is accepted a little longer...
        assert time.time() < until - 1
        late = re_signed(token_a, record)
        assert d.me_everywhere(late) == {"grace"}
        both_verify(jose, jwks_url, [late])

        # ...and not after: gone from the JWKS, refused by usergraph, jose and PyJWT alike.
        wait_until(until + 0.5)
        assert d.jwks_everywhere() == {(new,)}
        assert d.me_everywhere(late) == {None}
        [refused] = jose_verify(jose, jwks_url, [late])
        assert refused["code"] == "ERR_JWKS_NO_MATCHING_KEY", refused
        with pytest.raises(jwt.PyJWKClientError, match="Unable to find a signing key"):
            pyjwt_verify(jwks_url, late)
        # The new key's tokens are untouched.
        token_c = d.login(d.urls[0], "grace")
        both_verify(jose, jwks_url, [token_c])
        assert d.me_everywhere(token_c) == {"grace"}
        listing = {line.split()[0]: line for line in d.keys("list").splitlines()}
        assert listing[old].endswith("  retired, expired"), listing


@pytest.fixture(scope="module")
def rotations(
    jose: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[None]]]:
    """Each backend's rotation, all running at once in the background: each spends most of
    its 45 s waiting for tokens to expire, so side by side the file stays under a minute."""
    backends = ["sqlite", *(["postgresql"] if TEST_DATABASE_URL else [])]
    with ThreadPoolExecutor(max_workers=len(backends)) as pool:
        yield {
            backend: pool.submit(
                rotate, jose, tmp_path_factory.mktemp(f"rotation-{backend}"), ROTATIONS[backend]
            )
            for backend in backends
        }


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite", id="sqlite-one-server-two-workers-ES256"),
        pytest.param(
            "postgresql",
            id="postgresql-two-servers-EdDSA",
            marks=pytest.mark.skipif(
                not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL)"
            ),
        ),
    ],
)
def test_a_rotation_keeps_old_tokens_until_they_expire(
    rotations: dict[str, Future[None]], backend: str
) -> None:
    rotations[backend].result(timeout=180)
