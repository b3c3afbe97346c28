"""GET /.well-known/jwks.json and /.well-known/openid-configuration of in-process apps: the public
keys other services verify usergraph's tokens with (checked here with PyJWT), and a discovery
document that claims only what is true.

Apps built with `serving` share the test's database without emptying it: names are fresh.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.client import GraphQL, serving
from usergraph.auth.keys import KeyDirectory, SigningKey, new_private_key_pem
from usergraph.runtime import Runtime
from usergraph.wellknown import CACHE_SECONDS, DISCOVERY_PATH, JWKS_PATH

ME = "{ me { id username } }"
DISCOVERY_FIELDS = {"issuer", "jwks_uri", "access_token_signing_alg_values_supported"}


@asynccontextmanager
async def app_signing_with(
    database_url: str, tmp_path: Path, alg: str, **overrides: Any
) -> AsyncIterator[GraphQL]:
    """An app with a key pair (no HS256 secret): its first key made in tmp_path/keys."""
    async with serving(
        database_url, tmp_path, signing_key=None, jwt_algorithm=alg, **overrides
    ) as gql:
        yield gql


def fresh_name() -> str:
    return f"wk{uuid.uuid4().hex[:10]}"


def assert_public_and_cached(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == f"public, max-age={CACHE_SECONDS}"
    assert CACHE_SECONDS == 300


def verify(token: str, jwks: dict[str, Any], *, issuer: str = "usergraph") -> dict[str, Any]:
    """What another service does: the JWK named by the token's kid, its own algorithm only."""
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [jwk for jwk in jwks["keys"] if jwk["kid"] == kid]
    key = jwt.PyJWK(jwk)
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=[jwk["alg"]],
        audience="usergraph",
        issuer=issuer,
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )
    return claims


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_the_jwks_of_a_key_pair_app_verifies_its_tokens(
    database_url: str, tmp_path: Path, alg: str
) -> None:
    async with app_signing_with(database_url, tmp_path, alg) as gql:
        response = await gql.client.get(JWKS_PATH)
        assert_public_and_cached(response)
        jwks = response.json()
        assert list(jwks) == ["keys"]
        [jwk] = jwks["keys"]
        [key_file] = (tmp_path / "keys").glob("*.json")
        assert jwk["kid"] == key_file.stem
        expected = {"kty", "crv", "x", "kid", "alg", "use"} | ({"y"} if alg == "ES256" else set())
        assert set(jwk) == expected
        assert (jwk["alg"], jwk["use"]) == (alg, "sig")
        assert jwk["crv"] == ("P-256" if alg == "ES256" else "Ed25519")

        name = fresh_name()
        account = await gql.register(name)
        logged_in = await gql.login(name)
        assert logged_in["userErrors"] == []
        for token in (account.access_token, logged_in["accessToken"]):
            header = jwt.get_unverified_header(token)
            assert (header["alg"], header["kid"]) == (alg, jwk["kid"])
            claims = verify(token, jwks)
            assert claims["typ"] == "access" and claims["sid"]
            me = await gql.ok(ME, token=token)
            assert me["me"]["username"] == name
        # A token changed in transit does not verify with the published key.
        head, _payload, signature = account.access_token.split(".")
        _h, other_payload, _s = logged_in["accessToken"].split(".")
        with pytest.raises(jwt.InvalidSignatureError):
            verify(f"{head}.{other_payload}.{signature}", jwks)


async def test_an_hs256_app_publishes_no_keys(gql: GraphQL) -> None:
    response = await gql.client.get(JWKS_PATH)
    assert_public_and_cached(response)
    assert response.json() == {"keys": []}
    account = await gql.register(fresh_name())
    assert jwt.get_unverified_header(account.access_token)["alg"] == "HS256"
    discovery = (await gql.client.get(DISCOVERY_PATH)).json()
    assert discovery["access_token_signing_alg_values_supported"] == ["HS256"]


async def test_a_shared_secret_beside_a_key_pair_is_not_published(
    database_url: str, tmp_path: Path
) -> None:
    # Moving from HS256: the old secret still verifies, but only the pair is published.
    async with serving(database_url, tmp_path, jwt_algorithm="ES256") as gql:
        runtime: Runtime = gql.app.state.runtime
        ring = runtime.policy.tokens.ring.current
        assert {key.alg for key in ring.keys} == {"HS256", "ES256"}
        jwks = (await gql.client.get(JWKS_PATH)).json()
        assert [jwk["alg"] for jwk in jwks["keys"]] == ["ES256"]
        # Nor is its algorithm in the discovery document: no one else can verify HS256 tokens.
        discovery = (await gql.client.get(DISCOVERY_PATH)).json()
        assert discovery["access_token_signing_alg_values_supported"] == ["ES256"]
        account = await gql.register(fresh_name())
        assert jwt.get_unverified_header(account.access_token)["alg"] == "ES256"
        verify(account.access_token, jwks)


@pytest.mark.parametrize("public_url", ["https://id.example.com", "https://id.example.com/"])
async def test_the_discovery_document_says_only_what_is_true(
    database_url: str, tmp_path: Path, public_url: str
) -> None:
    async with app_signing_with(
        database_url, tmp_path, "ES256", public_url=public_url, jwt_issuer="https://id.example.com"
    ) as gql:
        response = await gql.client.get(DISCOVERY_PATH)
        assert_public_and_cached(response)
        document = response.json()
        assert document == {
            "issuer": "https://id.example.com",
            "jwks_uri": "https://id.example.com" + JWKS_PATH,
            "access_token_signing_alg_values_supported": ["ES256"],
        }
        # The issuer is the tokens' iss, and the JWKS it points to verifies them.
        account = await gql.register(fresh_name())
        claims = jwt.decode(account.access_token, options={"verify_signature": False})
        assert claims["iss"] == document["issuer"]
        jwks = (await gql.client.get(JWKS_PATH)).json()
        verify(account.access_token, jwks, issuer=document["issuer"])
        # No OpenID provider fields: usergraph has no authorization endpoint, no ID tokens.
        for absent in (
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
            "response_types_supported",
            "id_token_signing_alg_values_supported",
            "subject_types_supported",
        ):
            assert absent not in document
        assert set(document) == DISCOVERY_FIELDS


async def test_the_discovery_document_of_the_default_settings(
    database_url: str, tmp_path: Path
) -> None:
    async with app_signing_with(database_url, tmp_path, "EdDSA") as gql:
        document = (await gql.client.get(DISCOVERY_PATH)).json()
        assert document == {
            "issuer": "usergraph",
            "jwks_uri": "http://127.0.0.1:8000" + JWKS_PATH,
            "access_token_signing_alg_values_supported": ["EdDSA"],
        }


async def test_the_well_known_documents_are_read_only(gql: GraphQL) -> None:
    for path in (JWKS_PATH, DISCOVERY_PATH):
        assert (await gql.client.post(path, json={})).status_code == 405
        assert (await gql.client.head(path)).status_code == 200


async def test_a_configured_private_key_is_the_one_published_in_production(
    database_url: str, tmp_path: Path
) -> None:
    pem = new_private_key_pem("EdDSA")
    key_file = tmp_path / "signing.pem"
    key_file.write_text(pem)
    expected = SigningKey.from_pem(pem).public_jwk()
    async with serving(
        database_url,
        tmp_path,
        env="production",
        signing_key=None,
        jwt_algorithm="EdDSA",
        jwt_private_key_file=key_file,
    ) as gql:
        jwks = (await gql.client.get(JWKS_PATH)).json()
        assert jwks == {"keys": [expected]}
        account = await gql.register(fresh_name())
        assert jwt.get_unverified_header(account.access_token)["kid"] == expected["kid"]
        verify(account.access_token, jwks)
    # Production made no key of its own.
    assert not (tmp_path / "keys").exists()


async def test_the_jwks_follows_a_rotation(database_url: str, tmp_path: Path) -> None:
    async with app_signing_with(database_url, tmp_path, "ES256") as gql:
        ring = gql.app.state.runtime.policy.tokens.ring
        directory = KeyDirectory(tmp_path / "keys")
        [old] = directory.load()
        before = await gql.register(fresh_name())

        new = directory.generate("EdDSA")
        ring.reload()
        jwks = (await gql.client.get(JWKS_PATH)).json()
        assert [jwk["kid"] for jwk in jwks["keys"]] == [new.kid, old.kid]
        after = await gql.register(fresh_name())
        assert jwt.get_unverified_header(after.access_token)["kid"] == new.kid
        for account in (before, after):
            verify(account.access_token, jwks)
        document = (await gql.client.get(DISCOVERY_PATH)).json()
        assert document["access_token_signing_alg_values_supported"] == ["ES256", "EdDSA"]

        directory.retire(old.kid, now=datetime.now(UTC))
        ring.reload()
        jwks = (await gql.client.get(JWKS_PATH)).json()
        assert [jwk["kid"] for jwk in jwks["keys"]] == [new.kid, old.kid]  # until it expires
        verify(before.access_token, jwks)
        assert (await gql.ok(ME, token=before.access_token))["me"]["username"] == before.username


async def test_a_key_not_yet_signing_is_published_and_in_discovery(
    database_url: str, tmp_path: Path
) -> None:
    # What `usergraph keys generate` makes beside a live key: published at once, signing only
    # once verifiers' cached JWKS (CACHE_SECONDS) have it.
    async with app_signing_with(database_url, tmp_path, "ES256") as gql:
        ring = gql.app.state.runtime.policy.tokens.ring
        directory = KeyDirectory(tmp_path / "keys")
        [old] = directory.load()
        new = directory.generate("EdDSA", delay=timedelta(seconds=CACHE_SECONDS))
        ring.reload()
        jwks = (await gql.client.get(JWKS_PATH)).json()
        assert [jwk["kid"] for jwk in jwks["keys"]] == [new.kid, old.kid]
        document = (await gql.client.get(DISCOVERY_PATH)).json()
        assert document["access_token_signing_alg_values_supported"] == ["ES256", "EdDSA"]
        account = await gql.register(fresh_name())
        assert jwt.get_unverified_header(account.access_token)["kid"] == old.kid
        verify(account.access_token, jwks)
        # From signs_from on, the new key signs: a verifier holding this JWKS already has it.
        assert new.signs_from is not None
        signer = ring.current.signing(new.signs_from)
        assert signer is not None and signer.kid == new.kid
