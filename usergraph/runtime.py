"""What lives as long as the process: settings, database, hasher, token policy, throttles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.auth.tokens import SigningKey, TokenCodec, read_or_create_key_file
from usergraph.db.engine import Database
from usergraph.services.sessions import SessionPolicy
from usergraph.settings import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    """What lives as long as the process: settings, database, hasher, token policy, throttle."""

    settings: Settings
    db: Database
    passwords: PasswordHasher
    policy: SessionPolicy
    throttle: Throttle

    async def close(self) -> None:
        await self.throttle.close()
        await self.db.dispose()


def token_codec(settings: Settings) -> TokenCodec:
    if settings.signing_key is not None:
        secret = settings.signing_key.get_secret_value()
    else:  # development only: Settings refuses a missing key in production
        secret = read_or_create_key_file(settings.signing_key_file)
    return TokenCodec(
        current_key=SigningKey.from_secret(secret),
        previous_keys=[
            SigningKey.from_secret(key.get_secret_value()) for key in settings.previous_signing_keys
        ],
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        leeway=timedelta(seconds=settings.jwt_leeway_seconds),
    )


def build_runtime(settings: Settings) -> Runtime:
    return Runtime(
        settings=settings,
        db=Database.connect(
            settings.database_url,
            pool_size=settings.database_pool_size,
            pre_ping=settings.database_pre_ping,
        ),
        passwords=PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
            concurrency=settings.password_hash_concurrency,
            queue=settings.password_hash_queue,
        ),
        policy=SessionPolicy(
            tokens=token_codec(settings),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
            reuse_grace=timedelta(seconds=settings.refresh_reuse_grace_seconds),
        ),
        throttle=Throttle(
            {
                Rule.LOGIN_ACCOUNT: settings.login_account_limit,
                Rule.LOGIN_IP: settings.login_ip_limit,
                Rule.REGISTER_IP: settings.register_ip_limit,
                Rule.REFRESH_IP: settings.refresh_ip_limit,
            },
            redis_url=settings.redis_url,
            key_prefix=settings.redis_key_prefix,
        ),
    )
