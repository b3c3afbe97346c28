"""Every setting, read once from the environment (and an optional .env file).

Names: DATABASE_URL and REDIS_URL as most platforms set them; USERGRAPH_* for the rest.
The README's configuration table lists the same settings and defaults.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Literal

import limits
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
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
        # A refused value may be a key or a password: errors name the setting, never echo it.
        hide_input_in_errors=True,
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
        description="Optional; rate-limit counters shared by every worker and host. "
        "Without it each process counts on its own, in memory.",
    )
    redis_key_prefix: str = Field(
        default="usergraph", description="Prefix of every Redis key, to share one database."
    )
    database_pool_size: int = Field(
        default=32,
        ge=1,
        description="PostgreSQL connections kept per worker; a quarter as many more may open "
        "under load (and close after).",
    )
    database_pre_ping: bool = Field(
        default=False,
        description="Test each pooled connection before use (3 round trips on asyncpg). Off: "
        "after a database restart the first request on a dead connection fails, and the pool "
        "drops all its connections.",
    )

    # Access tokens (JWT) and their keys.
    jwt_algorithm: Literal["HS256", "ES256", "EdDSA"] | None = Field(
        default=None,
        description="Default: HS256 when USERGRAPH_SIGNING_KEY is set, else ES256 (a key pair "
        "whose public half /.well-known/jwks.json publishes).",
    )
    jwt_private_key: SecretStr | None = Field(
        default=None, description="ES256/EdDSA: the signing key (PKCS#8 PEM)."
    )
    jwt_private_key_file: Path | None = Field(
        default=None, description="ES256/EdDSA: a file holding the signing key (PEM)."
    )
    jwt_keys_dir: Path = Field(
        default=Path(".usergraph-keys"),
        description="ES256/EdDSA without a private key: the keys `usergraph keys` manages "
        "(in development the first is made at start).",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="HS256 key, at least 32 bytes. Required in production with HS256.",
    )
    previous_signing_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated old keys still accepted for verification (key rotation).",
    )
    signing_key_file: Path = Field(
        default=Path(".usergraph-signing-key"),
        description="Development only: where a generated key is kept so restarts agree.",
    )
    jwt_hasura_claims: bool = Field(
        default=False, description="Add Hasura's https://hasura.io/jwt/claims to access tokens."
    )
    jwt_role_claim: bool = Field(
        default=False,
        description="Add a `role` claim (PostgREST, PostGraphile): the strongest role.",
    )
    jwt_role_prefix: str = Field(
        default="", pattern=r"^[a-z0-9_]*$", description="Put before the `role` claim's value."
    )
    jwt_issuer: str = "usergraph"
    jwt_audience: str = "usergraph"
    jwt_leeway_seconds: int = Field(default=10, ge=0, le=300)
    access_token_ttl_seconds: int = Field(default=15 * 60, ge=30)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0)

    # Second factors (TOTP) and encryption at rest of their secrets.
    data_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated Fernet keys that encrypt TOTP secrets: the first encrypts, "
        "all decrypt (rotation). Required in production.",
    )
    data_keys_file: Path = Field(
        default=Path(".usergraph-data-key"),
        description="Development only: where a generated data key is kept so restarts agree.",
    )
    totp_issuer: str = Field(
        default="usergraph", min_length=1, max_length=64, pattern=r"^[^:]+$",
        description="The issuer authenticator apps show beside the account name.",
    )  # fmt: skip

    # Password hashing (argon2id). Lower costs only for tests.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    password_hash_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    password_hash_queue: int = Field(
        default=32,
        ge=0,
        description="Hashes that may wait for a free slot; beyond it a login or registration "
        "answers RATE_LIMITED at once instead of queueing without bound.",
    )

    # Throttling (the `limits` library's notation: "5/15 minutes", "20/minute").
    login_account_limit: str = Field(
        default="5/15 minutes",
        description="Failed logins per account; then ACCOUNT_LOCKED until the window passes.",
    )
    login_ip_limit: str = Field(default="20/minute", description="Failed logins per client ip.")
    register_ip_limit: str = Field(default="10/hour", description="Registrations per client ip.")
    refresh_ip_limit: str = Field(default="60/minute", description="Refreshes per client ip.")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated ips or networks of reverse proxies whose X-Forwarded-For "
        "is believed; the client is the right-most hop not in this list.",
    )

    # Email: verification, password reset, email change; the outbox and its sender.
    email_verification: Literal["off", "optional", "required"] = Field(
        default="optional",
        description="required: no tokens until the address is verified (login answers "
        "EMAIL_NOT_VERIFIED); optional: a verification email, sign-in as usual; off: no email.",
    )
    verification_token_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    reset_token_ttl_seconds: int = Field(default=3600, ge=60)
    email_change_token_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    email_address_limit: str = Field(
        default="5/hour", description="Emails asked for one address (verification, reset)."
    )
    email_ip_limit: str = Field(default="30/hour", description="Emails asked for per client ip.")
    mailer: Literal["log", "smtp"] | None = Field(
        default=None, description="Default: log in development; production must choose."
    )
    mail_from: str = "usergraph <no-reply@localhost>"
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    smtp_ca_file: Path | None = Field(
        default=None, description="CA certificates to trust for the relay (default: system's)."
    )
    smtp_timeout_seconds: float = Field(default=30, gt=0)
    public_url: str = Field(
        default="http://127.0.0.1:8000", description="Where links in emails point by default."
    )
    verify_email_url: str | None = Field(default=None, description="URL template with {token}.")
    reset_password_url: str | None = Field(default=None, description="URL template with {token}.")
    confirm_email_change_url: str | None = Field(
        default=None, description="URL template with {token}."
    )
    email_templates_dir: Path | None = Field(
        default=None, description="Templates here override the built-in ones, by file name."
    )
    mail_sender: bool = Field(default=True, description="Run the sender in every worker.")
    mail_poll_seconds: float = Field(default=2.0, gt=0)
    mail_max_attempts: int = Field(default=8, ge=1)
    mail_retry_base_seconds: float = Field(default=30, gt=0)
    mail_retry_max_seconds: float = Field(default=3600, gt=0)
    mail_claim_seconds: float = Field(
        default=120, gt=0, description="A claimed row comes back after this (a crashed worker)."
    )
    mail_retention_seconds: int = Field(default=7 * 24 * 3600, ge=0)

    # Query limits: a document over any of them is refused before it runs.
    max_query_depth: int = Field(default=10, ge=1)
    max_query_aliases: int = Field(default=15, ge=0)
    max_query_tokens: int = Field(default=2000, ge=1)
    max_query_directives: int = Field(default=50, ge=0)
    max_query_cost: int = Field(
        default=10_000, ge=1, description="Nodes a query may ask for: first/last multiply."
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    fast_execution: bool = Field(
        default=True,
        description="Complete plain fields of known values without graphql-core's per-field "
        "machinery (usergraph.schema.execution); false: graphql-core executes every field.",
    )
    persisted_queries: bool = Field(
        default=True,
        description="Automatic persisted queries (Apollo's protocol): a client may send a "
        "document's SHA-256 instead of its text once the server has seen it.",
    )
    persisted_queries_cache_chars: int = Field(
        default=4_000_000,
        ge=0,
        description="Characters of documents each process keeps for automatic persisted "
        "queries; the least recently used go first.",
    )
    trusted_documents: Path | None = Field(
        default=None,
        description="A JSON file of the only documents this server runs (Apollo's persisted "
        "query manifest, or an object of SHA-256 -> document).",
    )

    # HTTP.
    graceful_shutdown_seconds: int = Field(
        default=30,
        ge=0,
        description="On SIGTERM: stop accepting connections, give requests in flight this long "
        "to finish, then close them.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    graphiql: bool | None = Field(default=None, description="Default: on in development only.")
    introspection: bool | None = Field(default=None, description="Default: on in development only.")
    field_suggestions: bool | None = Field(
        default=None, description='"Did you mean ...?" in errors. Default: development only.'
    )
    expose_internal_errors: bool | None = Field(
        default=None,
        description="Show an internal error's message instead of masking it. "
        "Default: development only.",
    )
    secure_cookies: bool | None = Field(
        default=None, description="Secure flag on cookies, HSTS header. Default: production only."
    )
    refresh_cookie: bool = Field(
        default=False,
        description="Also hand the refresh token over as an HttpOnly cookie on the GraphQL path.",
    )
    refresh_cookie_name: str = Field(default="usergraph_refresh", pattern=r"^[A-Za-z0-9_-]+$")
    metrics: bool | None = Field(
        default=None, description="GET /metrics for Prometheus. Default: development only."
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="If set, /metrics wants `Authorization: Bearer <token>`."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve the metrics on this port of their own (from the supervising "
        "process) instead of /metrics.",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="Where worker processes keep their figures (emptied at start). Default: a "
        "new temporary directory.",
    )
    federation: bool = Field(
        default=False,
        description='Serve an Apollo Federation 2 subgraph (User @key(fields: "id"), '
        "_service, _entities) instead of the plain schema.",
    )
    tracing: bool = Field(
        default=False,
        description="OpenTelemetry traces (needs the otel extra); the OTEL_* variables say "
        "where they go.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line (for log shippers)."
    )
    gc_freeze: bool = Field(
        default=True,
        description="After start-up, move every object into the collector's permanent "
        "generation, so full collections skip the schema, models and libraries.",
    )

    @model_validator(mode="before")
    @classmethod
    def _parse_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("cors_origins", "previous_signing_keys", "trusted_proxies", "data_keys"):
                if key in data:
                    data[key] = _split_csv(data[key])
        return data

    @field_validator(
        "login_account_limit",
        "login_ip_limit",
        "register_ip_limit",
        "refresh_ip_limit",
        "email_address_limit",
        "email_ip_limit",
    )
    @classmethod
    def _check_rate(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate; write it like '5/15 minutes' or '20/minute'"
            ) from None
        return value

    @field_validator("data_keys")
    @classmethod
    def _check_data_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            text = key.get_secret_value()
            try:
                raw = base64.urlsafe_b64decode(text.encode())
            except (binascii.Error, ValueError):
                raw = b""
            # Exactly the encoding of 32 bytes: base64's decoder skips stray characters.
            if len(raw) != 32 or base64.urlsafe_b64encode(raw).decode() != text:
                raise ValueError(
                    "a data key is 32 random bytes in url-safe base64 (44 characters); make one "
                    "with `usergraph new-data-key`"
                )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        return [_ip_or_network(item) for item in value]

    @model_validator(mode="after")
    def _check_argon2_memory(self) -> Settings:
        # argon2 needs at least 8 KiB per lane.
        if self.argon2_memory_cost_kib < 8 * self.argon2_parallelism:
            raise ValueError(
                "USERGRAPH_ARGON2_MEMORY_COST_KIB must be at least 8 x USERGRAPH_ARGON2_PARALLELISM"
            )
        return self

    @model_validator(mode="after")
    def _refuse_weak_production_keys(self) -> Settings:
        keys = [self.signing_key, *self.previous_signing_keys]
        for key in keys:
            if key is not None and len(key.get_secret_value().encode()) < MIN_SIGNING_KEY_BYTES:
                raise ValueError(
                    f"signing keys must be at least {MIN_SIGNING_KEY_BYTES} bytes long"
                )
        if self.jwt_private_key is not None and self.jwt_private_key_file is not None:
            raise ValueError("set USERGRAPH_JWT_PRIVATE_KEY or USERGRAPH_JWT_PRIVATE_KEY_FILE")
        if self.is_production and self.signing_algorithm == "HS256" and self.signing_key is None:
            raise ValueError("USERGRAPH_SIGNING_KEY is required when USERGRAPH_ENV=production")
        if self.is_production and not self.data_keys:
            raise ValueError("USERGRAPH_DATA_KEYS is required when USERGRAPH_ENV=production")
        return self

    @model_validator(mode="after")
    def _choose_a_mailer_in_production(self) -> Settings:
        if self.is_production and self.mailer is None:
            raise ValueError(
                "USERGRAPH_MAILER is required when USERGRAPH_ENV=production: smtp, or log to "
                "write emails (with their links) to the log instead of sending them"
            )
        return self

    def missing_signing_key(self) -> str | None:
        """Why production cannot sign tokens, if it cannot: ES256/EdDSA with no private key
        and no key in the directory. (Not a validator: `usergraph keys generate` runs with
        these settings to make the first key.)"""
        if (
            self.is_production
            and self.signing_algorithm != "HS256"
            and self.jwt_private_key is None
            and self.jwt_private_key_file is None
            and not self._live_key_in_directory()
        ):
            return (
                f"USERGRAPH_ENV=production with {self.signing_algorithm} needs a signing key: "
                "USERGRAPH_JWT_PRIVATE_KEY(_FILE), or one made with `usergraph keys generate` "
                "in USERGRAPH_JWT_KEYS_DIR"
            )
        return None

    def _live_key_in_directory(self) -> bool:
        """Whether USERGRAPH_JWT_KEYS_DIR holds a key that is not retired (auth/keys.py)."""
        for file in self.jwt_keys_dir.glob("*.json"):
            try:
                if not json.loads(file.read_text()).get("retired_at"):
                    return True
            except (OSError, ValueError):
                continue
        return False

    @property
    def signing_algorithm(self) -> Literal["HS256", "ES256", "EdDSA"]:
        if self.jwt_algorithm is not None:
            return self.jwt_algorithm
        return "HS256" if self.signing_key is not None else "ES256"

    @property
    def mailer_kind(self) -> Literal["log", "smtp"]:
        return self.mailer or "log"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def graphiql_enabled(self) -> bool:
        return _unless_production(self, self.graphiql)

    @property
    def metrics_enabled(self) -> bool:
        return _unless_production(self, self.metrics)

    @property
    def introspection_enabled(self) -> bool:
        return _unless_production(self, self.introspection)

    @property
    def field_suggestions_enabled(self) -> bool:
        return _unless_production(self, self.field_suggestions)

    @property
    def internal_errors_exposed(self) -> bool:
        return _unless_production(self, self.expose_internal_errors)

    @property
    def cookies_secure(self) -> bool:
        return self.is_production if self.secure_cookies is None else self.secure_cookies


def _ip_or_network(item: str) -> str:
    """item normalized: "10.0.0.1/8" becomes "10.0.0.0/8", as uvicorn reads networks strictly."""
    try:
        if "/" in item:
            return str(ipaddress.ip_network(item, strict=False))
        return str(ipaddress.ip_address(item))
    except ValueError:
        raise ValueError(f"{item!r} is not an ip address or network") from None


def _unless_production(settings: Settings, value: bool | None) -> bool:
    """An explicit setting, else on in development and off in production."""
    return not settings.is_production if value is None else value
