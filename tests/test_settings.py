"""Settings: environment parsing and the production safety checks; what USERGRAPH_ENV=production
turns off (GraphiQL, introspection, field suggestions, internal error messages) and on (Secure
cookies), each overridable by its own setting, and each the other way round in development."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from pydantic import ValidationError

from tests.client import GraphQL, serving
from tests.environment import TEST_DATA_KEY, make_settings
from tests.helpers import error_codes
from usergraph.auth.keys import KeyDirectory, new_private_key_pem
from usergraph.settings import Settings

STRONG_KEY = "k" * 32


def test_development_needs_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "USERGRAPH_ENV", "USERGRAPH_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite+aiosqlite:///usergraph.db"
    assert settings.graphiql_enabled and settings.introspection_enabled
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_token_ttl_seconds == 30 * 24 * 3600
    assert settings.refresh_reuse_grace_seconds == 10


def test_production_refuses_to_start_without_a_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", TEST_DATA_KEY)
    monkeypatch.setenv("USERGRAPH_MAILER", "log")
    monkeypatch.delenv("USERGRAPH_SIGNING_KEY", raising=False)
    keys = tmp_path / "keys"
    monkeypatch.setenv("USERGRAPH_JWT_KEYS_DIR", str(keys))
    # ES256 (or EdDSA) with no key anywhere: the settings load, so that `usergraph keys
    # generate` can run with them and make the first key; serving (`usergraph serve`,
    # create_app) is what refuses, with this message.
    for alg in ("ES256", "EdDSA"):
        monkeypatch.setenv("USERGRAPH_JWT_ALGORITHM", alg)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.signing_algorithm == alg
        assert settings.missing_signing_key() == (
            f"USERGRAPH_ENV=production with {alg} needs a signing key: "
            "USERGRAPH_JWT_PRIVATE_KEY(_FILE), or one made with `usergraph keys generate` in "
            "USERGRAPH_JWT_KEYS_DIR"
        )
    monkeypatch.delenv("USERGRAPH_JWT_ALGORITHM")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    problem = settings.missing_signing_key()
    assert problem is not None and "with ES256 needs a signing key" in problem
    # A key in the directory, or a configured private key, is enough.
    KeyDirectory(keys).generate("ES256")
    assert Settings(_env_file=None).missing_signing_key() is None  # type: ignore[call-arg]
    for file in keys.glob("*.json"):
        file.unlink()
    key_file = tmp_path / "signing.pem"
    key_file.write_text(new_private_key_pem("ES256"))
    monkeypatch.setenv("USERGRAPH_JWT_PRIVATE_KEY_FILE", str(key_file))
    assert Settings(_env_file=None).missing_signing_key() is None  # type: ignore[call-arg]
    monkeypatch.delenv("USERGRAPH_JWT_PRIVATE_KEY_FILE")
    # Development makes its own key when it starts: nothing is missing.
    monkeypatch.setenv("USERGRAPH_ENV", "development")
    assert Settings(_env_file=None).missing_signing_key() is None  # type: ignore[call-arg]
    # HS256 in production still needs its secret in the settings themselves.
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_JWT_ALGORITHM", "HS256")
    with pytest.raises(ValidationError, match="USERGRAPH_SIGNING_KEY is required"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_production_refuses_to_start_without_a_data_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", STRONG_KEY)
    monkeypatch.setenv("USERGRAPH_MAILER", "smtp")
    monkeypatch.delenv("USERGRAPH_DATA_KEYS", raising=False)
    with pytest.raises(ValidationError, match="USERGRAPH_DATA_KEYS is required"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", TEST_DATA_KEY)
    assert Settings(_env_file=None).is_production  # type: ignore[call-arg]


def test_short_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", "short")
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", STRONG_KEY)
    monkeypatch.setenv("USERGRAPH_PREVIOUS_SIGNING_KEYS", f"{STRONG_KEY},tooshort")
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_production_turns_off_graphiql_and_introspection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", STRONG_KEY)
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", TEST_DATA_KEY)
    monkeypatch.setenv("USERGRAPH_MAILER", "smtp")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not settings.graphiql_enabled and not settings.introspection_enabled
    monkeypatch.setenv("USERGRAPH_INTROSPECTION", "true")
    assert Settings(_env_file=None).introspection_enabled  # type: ignore[call-arg]


def test_production_refuses_to_guess_a_mailer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", STRONG_KEY)
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", TEST_DATA_KEY)
    with pytest.raises(ValidationError, match="USERGRAPH_MAILER is required"):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("USERGRAPH_MAILER", "log")  # chosen explicitly: allowed
    assert Settings(_env_file=None).mailer_kind == "log"  # type: ignore[call-arg]
    monkeypatch.setenv("USERGRAPH_ENV", "development")
    monkeypatch.delenv("USERGRAPH_MAILER")
    assert Settings(_env_file=None).mailer_kind == "log"  # type: ignore[call-arg]


def test_lists_and_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://db/app")
    monkeypatch.setenv("USERGRAPH_PREVIOUS_SIGNING_KEYS", f"{STRONG_KEY},{'p' * 40}")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.database_url == "postgresql+asyncpg://db/app"
    assert [k.get_secret_value() for k in settings.previous_signing_keys] == [STRONG_KEY, "p" * 40]


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", STRONG_KEY)
    assert STRONG_KEY not in repr(Settings(_env_file=None))  # type: ignore[call-arg]


def test_argon2_memory_must_cover_every_lane() -> None:
    with pytest.raises(ValidationError, match="at least 8 x USERGRAPH_ARGON2_PARALLELISM"):
        Settings(_env_file=None, argon2_memory_cost_kib=16, argon2_parallelism=4)  # type: ignore[call-arg]
    fits = Settings(_env_file=None, argon2_memory_cost_kib=32, argon2_parallelism=4)  # type: ignore[call-arg]
    assert fits.argon2_memory_cost_kib == 32


# --- trusted proxies --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["not-an-ip", "10.0.0.1, not-an-ip", "10.0.0.0/33"], ids=str)
def test_settings_refuse_a_bad_trusted_proxy(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings("sqlite+aiosqlite://", tmp_path, trusted_proxies=value)
    bad = value.split(",")[-1].strip()
    assert f"{bad!r} is not an ip address or network" in str(refused.value)

    monkeypatch.setenv("USERGRAPH_TRUSTED_PROXIES", value)
    with pytest.raises(ValidationError, match="is not an ip address or network"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_settings_read_trusted_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USERGRAPH_TRUSTED_PROXIES", " 10.0.0.1 , 203.0.113.0/24,")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.trusted_proxies == ["10.0.0.1", "203.0.113.0/24"]


# --- production mode, over HTTP ---------------------------------------------------------------


SECRET = "secret-detail-of-the-fault"
INTROSPECTION = "{ __schema { types { name } } }"
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { code }
} }"""


async def register(gql: GraphQL) -> httpx.Response:
    """Register a fresh account (apps built here share the database, unemptied)."""
    username = f"u{uuid.uuid4().hex[:12]}"
    response = await gql.post(
        REGISTER,
        {
            "input": {
                "email": f"{username}@example.com",
                "username": username,
                "password": "correct horse battery staple",
            }
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["register"]["userErrors"] == [], response.text
    return response


async def explode(**_kwargs: Any) -> NoReturn:
    raise RuntimeError(SECRET)


# --- probes: is the feature on in this app? ---------------------------------------------------


async def graphiql_served(gql: GraphQL, monkeypatch: pytest.MonkeyPatch) -> bool:
    response = await gql.client.get("/graphql", headers={"accept": "text/html"})
    is_ide = str(response.headers.get("content-type", "")).startswith("text/html")
    if not is_ide:
        # Not the IDE, and not a bare 404 either: a GraphQL request error.
        assert response.status_code in (400, 406), response.text
        assert error_codes(response.json()) == ["BAD_REQUEST"]
        assert "graphiql" not in response.text.lower()
    else:
        assert response.status_code == 200
        assert "graphiql" in response.text.lower()
    return is_ide


async def introspection_answered(gql: GraphQL, monkeypatch: pytest.MonkeyPatch) -> bool:
    body = await gql(INTROSPECTION)
    if "errors" in body:
        assert "data" not in body  # refused at validation, before execution
        assert set(error_codes(body)) == {"GRAPHQL_VALIDATION_FAILED"}, body
        return False
    assert {"name": "User"} in body["data"]["__schema"]["types"]
    return True


async def fields_suggested(gql: GraphQL, monkeypatch: pytest.MonkeyPatch) -> bool:
    body = await gql("{ mee { id } }")
    [error] = body["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "mee" in error["message"]
    suggested = "Did you mean" in error["message"]
    assert suggested == ("'me'" in error["message"]), error["message"]
    return suggested


async def internal_errors_exposed(gql: GraphQL, monkeypatch: pytest.MonkeyPatch) -> bool:
    token = (await register(gql)).json()["data"]["register"]["accessToken"]
    # The resolver calls through its module reference to the service: patch it there.
    monkeypatch.setattr("usergraph.resolvers.users.user_service.get_user_by_username", explode)
    response = await gql.post('{ user(username: "ann") { id } }', token=token)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"user": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert error["message"].startswith("Internal server error")
    if SECRET not in response.text:
        assert error["message"] == "Internal server error"
        assert "RuntimeError" not in response.text
        assert "Traceback" not in response.text
        return False
    return True


async def cookie_secure(gql: GraphQL, monkeypatch: pytest.MonkeyPatch) -> bool:
    [cookie] = (await register(gql)).headers.get_list("set-cookie")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert attributes[0].startswith("usergraph_refresh=")
    assert "httponly" in attributes
    return "secure" in attributes


Probe = Callable[[GraphQL, pytest.MonkeyPatch], Awaitable[bool]]
FEATURES: dict[str, tuple[Probe, str, dict[str, Any]]] = {
    # name: (probe, its setting, other settings the probe needs)
    "graphiql": (graphiql_served, "graphiql", {}),
    "introspection": (introspection_answered, "introspection", {}),
    "field-suggestions": (fields_suggested, "field_suggestions", {}),
    # conftest's make_settings masks internal errors everywhere; None is the env's default.
    "internal-errors": (internal_errors_exposed, "expose_internal_errors", {}),
    "secure-cookie": (cookie_secure, "secure_cookies", {"refresh_cookie": True}),
}
# Whether each feature is on by default in production.
ON_IN_PRODUCTION = {"secure-cookie"}


def cases() -> list[Any]:
    params = []
    for name in FEATURES:
        production = name in ON_IN_PRODUCTION
        params += [
            pytest.param(name, "production", None, production, id=f"{name}-production"),
            pytest.param(
                name, "production", not production, not production, id=f"{name}-production-set"
            ),
            pytest.param(name, "development", None, not production, id=f"{name}-development"),
            pytest.param(name, "development", production, production, id=f"{name}-development-set"),
        ]
    return params


@pytest.mark.parametrize(("feature", "env", "setting", "expected"), cases())
async def test_production_defaults_and_their_settings(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    feature: str,
    env: str,
    setting: bool | None,
    expected: bool,
) -> None:
    probe, setting_name, needs = FEATURES[feature]
    overrides = {"env": env, setting_name: setting, **needs}
    async with serving(database_url, tmp_path, **overrides) as gql:
        assert await probe(gql, monkeypatch) is expected


async def test_production_answers_typename_without_introspection(
    database_url: str, tmp_path: Path
) -> None:
    """Clients add __typename to their queries; only the schema itself is hidden."""
    async with serving(database_url, tmp_path, env="production") as gql:
        assert await gql.ok("{ __typename me { id } }") == {"__typename": "Query", "me": None}
        hidden = await gql('{ __type(name: "User") { name fields { name } } }')
    assert set(error_codes(hidden)) == {"GRAPHQL_VALIDATION_FAILED"}, hidden
    assert "User" not in str(hidden.get("data"))


async def test_production_still_explains_request_errors(database_url: str, tmp_path: Path) -> None:
    """Masking hides internal faults, not the client's own mistakes."""
    async with serving(
        database_url, tmp_path, env="production", expose_internal_errors=None
    ) as gql:
        syntax = await gql("{ me { id ")
        unauthenticated = await gql("{ users { totalCount } }")
    assert error_codes(syntax) == ["GRAPHQL_PARSE_FAILED"]
    assert syntax["errors"][0]["message"].startswith("Syntax Error")
    assert error_codes(unauthenticated) == ["UNAUTHENTICATED"]
    assert unauthenticated["errors"][0]["message"] != "Internal server error"


def test_production_wants_a_key_that_is_not_retired(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from usergraph.auth.keys import KeyDirectory

    directory = KeyDirectory(tmp_path / "keys")
    key = directory.generate("ES256")
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_MAILER", "smtp")
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", TEST_DATA_KEY)
    monkeypatch.delenv("USERGRAPH_SIGNING_KEY", raising=False)
    monkeypatch.setenv("USERGRAPH_JWT_KEYS_DIR", str(directory.path))
    assert Settings(_env_file=None).missing_signing_key() is None  # type: ignore[call-arg]
    directory.retire(key.kid)  # every key retired: nothing could sign
    problem = Settings(_env_file=None).missing_signing_key()  # type: ignore[call-arg]
    assert problem is not None and "needs a signing key" in problem
