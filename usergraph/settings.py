"""Every setting, read once from the environment (and an optional .env file).

Names: DATABASE_URL and REDIS_URL as most platforms set them; USERGRAPH_* for the rest.
The README's configuration table lists the same settings and defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SIGNING_KEY_BYTES = 32


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="USERGRAPH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    env: Literal["development", "production"] = "development"
    database_url: str = Field(
        default="sqlite+aiosqlite:///usergraph.db",
        validation_alias=AliasChoices("DATABASE_URL", "USERGRAPH_DATABASE_URL"),
        description="SQLAlchemy async URL; a SQLite file in the working directory by default.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "USERGRAPH_REDIS_URL"),
        description="Optional; shared state for several workers (used by later features).",
    )
    database_pool_size: int = Field(default=10, ge=1)

    # Access tokens (JWT, HS256) and their keys.
    signing_key: SecretStr | None = Field(
        default=None,
        description="HS256 key, at least 32 bytes. Required in production.",
    )
    previous_signing_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated old keys still accepted for verification (key rotation).",
    )
    signing_key_file: Path = Field(
        default=Path(".usergraph-signing-key"),
        description="Development only: where a generated key is kept so restarts agree.",
    )
    jwt_issuer: str = "usergraph"
    jwt_audience: str = "usergraph"
    jwt_leeway_seconds: int = Field(default=10, ge=0, le=300)
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=30)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0)

    # Password hashing (argon2id). Lower costs only for tests.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    password_hash_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)

    # HTTP.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    graphiql: bool | None = Field(default=None, description="Default: on in development only.")
    introspection: bool | None = Field(default=None, description="Default: on in development only.")
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _parse_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("cors_origins", "previous_signing_keys"):
                if key in data:
                    data[key] = _split_csv(data[key])
        return data

    @model_validator(mode="after")
    def _refuse_weak_production_keys(self) -> Settings:
        keys = [self.signing_key, *self.previous_signing_keys]
        for key in keys:
            if key is not None and len(key.get_secret_value().encode()) < MIN_SIGNING_KEY_BYTES:
                raise ValueError(
                    f"signing keys must be at least {MIN_SIGNING_KEY_BYTES} bytes long"
                )
        if self.is_production and self.signing_key is None:
            raise ValueError("USERGRAPH_SIGNING_KEY is required when USERGRAPH_ENV=production")
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def graphiql_enabled(self) -> bool:
        return not self.is_production if self.graphiql is None else self.graphiql

    @property
    def introspection_enabled(self) -> bool:
        return not self.is_production if self.introspection is None else self.introspection
