"""What lives as long as the process: settings, database, hasher, token policy, throttles,
the mail outbox, the second factors' policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from usergraph import metrics
from usergraph.auth.data_keys import DataCipher, new_data_key
from usergraph.auth.keys import KeyDirectory, KeyRing, SigningKey, overlap
from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.auth.tokens import ClaimMappings, TokenCodec, read_or_create_key_file
from usergraph.db.engine import Database
from usergraph.db.models import ADMIN_ROLE, DEFAULT_ROLE
from usergraph.guards.documents import DocumentCache, Documents, TrustedDocuments
from usergraph.mail.messages import Messages
from usergraph.mail.outbox import Outbox, RetryPolicy
from usergraph.mail.sender import LogMailer, Mailer, Sender, SmtpMailer
from usergraph.services.email_tokens import EmailPolicy
from usergraph.services.second_factors import SecondFactorPolicy
from usergraph.services.sessions import SessionPolicy
from usergraph.settings import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    """What lives as long as the process: settings, database, hasher, token policy, throttle,
    outbox, email and second-factor policies."""

    settings: Settings
    db: Database
    passwords: PasswordHasher
    policy: SessionPolicy
    throttle: Throttle
    outbox: Outbox
    email: EmailPolicy
    factors: SecondFactorPolicy
    documents: Documents

    async def close(self) -> None:
        await self.throttle.close()
        await self.db.dispose()


def token_codec(settings: Settings) -> TokenCodec:
    access_ttl = timedelta(seconds=settings.access_token_ttl_seconds)
    leeway = timedelta(seconds=settings.jwt_leeway_seconds)
    return TokenCodec(
        ring=key_ring(settings, overlap=overlap(access_ttl, leeway)),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=access_ttl,
        leeway=leeway,
        mappings=ClaimMappings(
            hasura=settings.jwt_hasura_claims,
            role=settings.jwt_role_claim,
            role_prefix=settings.jwt_role_prefix,
            ranking=(ADMIN_ROLE, DEFAULT_ROLE),
        ),
    )


def key_ring(settings: Settings, *, overlap: timedelta) -> KeyRing:
    """The keys access tokens are signed and verified with (auth/keys.py).

    HS256 keys (USERGRAPH_SIGNING_KEY and the previous ones) always verify, also beside an
    asymmetric key: a deployment moving from HS256 keeps its old tokens valid meanwhile."""
    shared = [
        SigningKey.from_secret(key.get_secret_value()) for key in settings.previous_signing_keys
    ]
    algorithm = settings.signing_algorithm
    if algorithm == "HS256":
        if settings.signing_key is not None:
            secret = settings.signing_key.get_secret_value()
        else:  # development only: Settings refuses a missing key in production
            secret = read_or_create_key_file(settings.signing_key_file)
        return KeyRing([*shared, SigningKey.from_secret(secret)], overlap=overlap)
    if settings.signing_key is not None:
        shared.append(SigningKey.from_secret(settings.signing_key.get_secret_value()))
    pem = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key else None
    if settings.jwt_private_key_file is not None:
        pem = settings.jwt_private_key_file.read_text()
    if pem is not None:
        key = SigningKey.from_pem(pem, created_at=datetime.now(UTC))
        _same_algorithm(key, algorithm)
        return KeyRing([*shared, key], overlap=overlap)
    directory = KeyDirectory(settings.jwt_keys_dir)
    # Production: Settings made sure the directory holds keys; development makes the first.
    keys = directory.load() if settings.is_production else directory.ensure_signing_key(algorithm)
    return KeyRing(keys, overlap=overlap, directory=directory, static=shared)


def _same_algorithm(key: SigningKey, algorithm: str) -> None:
    if key.alg != algorithm:
        raise ValueError(
            f"USERGRAPH_JWT_PRIVATE_KEY is an {key.alg} key but USERGRAPH_JWT_ALGORITHM is "
            f"{algorithm}"
        )


def data_cipher(settings: Settings) -> DataCipher:
    keys = [key.get_secret_value() for key in settings.data_keys]
    if not keys:  # development only: Settings refuses missing keys in production
        keys = [read_or_create_key_file(settings.data_keys_file, new_data_key)]
    return DataCipher(keys)


def messages(settings: Settings) -> Messages:
    return Messages(
        public_url=settings.public_url,
        links={
            "verify_email": settings.verify_email_url,
            "reset_password": settings.reset_password_url,
            "change_email": settings.confirm_email_change_url,
        },
        templates_dir=settings.email_templates_dir,
    )


def mailer(settings: Settings) -> Mailer:
    if settings.mailer_kind == "log":
        return LogMailer()
    return SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        ca_file=settings.smtp_ca_file,
        timeout=settings.smtp_timeout_seconds,
    )


def build_sender(runtime: Runtime, mail: Mailer | None = None) -> Sender:
    """The outbox's sender for this runtime (the app's lifespan and `usergraph send-mail`)."""
    settings = runtime.settings
    return Sender(
        db=runtime.db,
        mailer=mail or mailer(settings),
        outbox=runtime.outbox,
        mail_from=settings.mail_from,
        retry=RetryPolicy(
            max_attempts=settings.mail_max_attempts,
            base_seconds=settings.mail_retry_base_seconds,
            max_seconds=settings.mail_retry_max_seconds,
        ),
        claim_seconds=settings.mail_claim_seconds,
        poll_seconds=settings.mail_poll_seconds,
        retention=timedelta(seconds=settings.mail_retention_seconds),
    )


def documents(settings: Settings) -> Documents:
    """Persisted queries and trusted documents; ValueError for a trusted file we cannot use."""
    cache = DocumentCache(settings.persisted_queries_cache_chars)
    trusted = None
    if settings.trusted_documents is not None:
        trusted = TrustedDocuments.read(settings.trusted_documents)
    return Documents(cache=cache if settings.persisted_queries else None, trusted=trusted)


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
            observer=metrics.HasherObserver() if settings.metrics_enabled else None,
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
                Rule.EMAIL_ADDRESS: settings.email_address_limit,
                Rule.EMAIL_IP: settings.email_ip_limit,
            },
            redis_url=settings.redis_url,
            key_prefix=settings.redis_key_prefix,
        ),
        outbox=Outbox(messages(settings)),
        email=EmailPolicy(
            verification=settings.email_verification,
            verify_ttl=timedelta(seconds=settings.verification_token_ttl_seconds),
            reset_ttl=timedelta(seconds=settings.reset_token_ttl_seconds),
            change_ttl=timedelta(seconds=settings.email_change_token_ttl_seconds),
        ),
        factors=SecondFactorPolicy(cipher=data_cipher(settings), issuer=settings.totp_issuer),
        documents=documents(settings),
    )
