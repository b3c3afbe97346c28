"""Settings: environment parsing and the production safety checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

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


def test_production_refuses_to_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.delenv("USERGRAPH_SIGNING_KEY", raising=False)
    with pytest.raises(ValidationError, match="USERGRAPH_SIGNING_KEY is required"):
        Settings(_env_file=None)  # type: ignore[call-arg]


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
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert not settings.graphiql_enabled and not settings.introspection_enabled
    monkeypatch.setenv("USERGRAPH_INTROSPECTION", "true")
    assert Settings(_env_file=None).introspection_enabled  # type: ignore[call-arg]


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
