"""usergraph.runtime: build_runtime wires the settings into each resource; token_codec's keys."""

from __future__ import annotations

import asyncio
import stat
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import event, text

from tests.environment import (
    LIMIT_STORAGES,
    TEST_DATA_KEY,
    TEST_REDIS_URL,
    TEST_SIGNING_KEY,
    make_settings,
)
from usergraph.auth.data_keys import DataCipher, new_data_key
from usergraph.auth.passwords import HasherBusy
from usergraph.auth.throttle import Rule
from usergraph.auth.tokens import InvalidAccessToken, SigningKey, TokenCodec
from usergraph.db.models import utcnow
from usergraph.runtime import Runtime, build_runtime, data_cipher, token_codec
from usergraph.settings import Settings

OLD_KEY = "an-old-signing-key-that-is-long-enough-0123456789"
OTHER_KEY = "some-other-signing-key-that-is-long-enough-012345"
SESSION = uuid.UUID(int=1)


def unused_db(tmp_path: Path) -> str:
    """A database URL for settings whose database is never opened."""
    return f"sqlite+aiosqlite:///{tmp_path}/unused.db"


def issue(codec: TokenCodec, **overrides: Any) -> str:
    values: dict[str, Any] = {"user_id": 5, "session_id": SESSION, "roles": ["user"]}
    values["now"] = overrides.pop("now", utcnow())
    return codec.issue_access_token(**values, **overrides).token


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


# --- build_runtime ------------------------------------------------------------------------


async def test_build_runtime_wires_the_hasher_costs_and_limits(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        argon2_time_cost=2,
        argon2_memory_cost_kib=2048,
        argon2_parallelism=2,
        password_hash_concurrency=1,
        password_hash_queue=1,
    )
    runtime = build_runtime(settings)
    try:
        assert runtime.settings is settings
        stored = await runtime.passwords.hash("a passphrase")
        assert stored.startswith("$argon2id$v=19$m=2048,t=2,p=2$")
        # concurrency + queue places: a third hash at once is refused, not queued.
        release = asyncio.Event()
        inside = [asyncio.Event(), asyncio.Event()]

        async def hold(entered: asyncio.Event) -> None:
            with runtime.passwords.place():
                entered.set()
                await release.wait()

        holders = [asyncio.create_task(hold(entered)) for entered in inside]
        for entered in inside:
            await entered.wait()
        with pytest.raises(HasherBusy):
            await runtime.passwords.hash("one too many")
        release.set()
        await asyncio.gather(*holders)
        assert (await runtime.passwords.verify("a passphrase", stored)).ok is True
    finally:
        await runtime.close()


async def test_build_runtime_wires_the_session_policy(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        access_token_ttl_seconds=120,
        refresh_token_ttl_seconds=3600,
        refresh_reuse_grace_seconds=7,
        jwt_issuer="issuer-x",
        jwt_audience="audience-y",
    )
    runtime = build_runtime(settings)
    try:
        policy = runtime.policy
        assert policy.refresh_ttl == timedelta(hours=1)
        assert policy.reuse_grace == timedelta(seconds=7)
        assert policy.tokens.access_ttl == timedelta(seconds=120)
        now = utcnow()
        issued = policy.tokens.issue_access_token(
            user_id=5, session_id=SESSION, roles=["user"], now=now
        )
        assert issued.expires_at == (now + timedelta(seconds=120)).replace(microsecond=0)
        claims = jwt.decode(issued.token, options={"verify_signature": False})
        assert (claims["iss"], claims["aud"]) == ("issuer-x", "audience-y")
        assert kid_of(issued.token) == SigningKey.from_secret(TEST_SIGNING_KEY).kid
    finally:
        await runtime.close()


async def test_build_runtime_connects_to_the_configured_database(
    database_url: str, tmp_path: Path
) -> None:
    runtime = build_runtime(make_settings(database_url, tmp_path, database_pool_size=3))
    try:
        assert runtime.db.engine.url.render_as_string(hide_password=False) == database_url
        async with runtime.db.sessionmaker() as s:
            assert await s.scalar(text("SELECT count(*) FROM roles WHERE name = 'admin'")) == 1
        if runtime.db.engine.dialect.name == "postgresql":
            assert runtime.db.engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        await runtime.close()


@pytest.mark.parametrize("storage", LIMIT_STORAGES)
async def test_build_runtime_gives_each_rule_its_limit(
    database_url: str, tmp_path: Path, storage: str
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        login_account_limit="1/minute",
        login_ip_limit="2/minute",
        register_ip_limit="3/minute",
        refresh_ip_limit="4/minute",
        email_address_limit="5/minute",
        email_ip_limit="1/hour",
        redis_url=TEST_REDIS_URL if storage == "redis" else None,
        redis_key_prefix=f"usergraph-test-{uuid.uuid4().hex}",
    )
    runtime = build_runtime(settings)
    try:
        allowed = {}
        for rule in Rule:
            verdicts = [await runtime.throttle.hit(rule, "203.0.113.7") for _ in range(6)]
            allowed[rule] = sum(verdict.allowed for verdict in verdicts)
        assert allowed == {
            Rule.LOGIN_ACCOUNT: 1,
            Rule.LOGIN_IP: 2,
            Rule.REGISTER_IP: 3,
            Rule.REFRESH_IP: 4,
            Rule.EMAIL_ADDRESS: 5,
            Rule.EMAIL_IP: 1,
        }
        assert await runtime.throttle.reachable() is True
    finally:
        await runtime.close()


# --- Runtime.close ------------------------------------------------------------------------


async def test_close_disposes_the_database_and_stops_the_throttle(
    database_url: str, tmp_path: Path
) -> None:
    runtime: Runtime = build_runtime(make_settings(database_url, tmp_path))
    closed: list[object] = []
    event.listen(runtime.db.engine.sync_engine, "close", lambda conn, _record: closed.append(conn))
    async with runtime.db.sessionmaker() as s:
        assert await s.scalar(text("SELECT 1")) == 1
    before = asyncio.all_tasks()
    await runtime.throttle.hit(Rule.LOGIN_IP, "203.0.113.7")
    started = asyncio.all_tasks() - before  # the memory counters' expiry task
    assert closed == []
    await runtime.close()
    assert len(closed) == 1  # the pooled connection is closed, not just returned
    assert runtime.db.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    assert started and all(task.done() for task in started)


# --- token_codec --------------------------------------------------------------------------


def test_token_codec_signs_with_the_signing_key(tmp_path: Path) -> None:
    codec = token_codec(make_settings(unused_db(tmp_path), tmp_path, jwt_leeway_seconds=0))
    token = issue(codec)
    assert kid_of(token) == SigningKey.from_secret(TEST_SIGNING_KEY).kid
    claims = codec.decode_access_token(token)
    assert (claims.user_id, claims.session_id, claims.roles) == (5, SESSION, ("user",))
    # Nothing was written: the key file is for development without a key.
    assert not (tmp_path / "signing-key").exists()


def test_token_codec_still_accepts_the_previous_signing_keys(tmp_path: Path) -> None:
    old = token_codec(make_settings(unused_db(tmp_path), tmp_path, signing_key=OLD_KEY))
    older = token_codec(make_settings(unused_db(tmp_path), tmp_path, signing_key=OTHER_KEY))
    rotated = token_codec(
        make_settings(
            unused_db(tmp_path),
            tmp_path,
            signing_key=TEST_SIGNING_KEY,
            previous_signing_keys=f"{OLD_KEY},{OTHER_KEY}",
        )
    )
    for previous in (old, older):
        assert rotated.decode_access_token(issue(previous)).user_id == 5
    # New tokens are signed with the current key only, which the old codec does not know.
    fresh = issue(rotated)
    assert kid_of(fresh) == SigningKey.from_secret(TEST_SIGNING_KEY).kid
    with pytest.raises(InvalidAccessToken):
        old.decode_access_token(fresh)
    # Without the previous keys, their tokens are refused.
    current_only = token_codec(make_settings(unused_db(tmp_path), tmp_path))
    with pytest.raises(InvalidAccessToken):
        current_only.decode_access_token(issue(old))


def test_token_codec_without_a_key_keeps_one_in_the_key_file(tmp_path: Path) -> None:
    settings = make_settings(unused_db(tmp_path), tmp_path, signing_key=None, jwt_algorithm="HS256")
    key_file = tmp_path / "signing-key"
    assert settings.signing_key_file == key_file and not key_file.exists()
    first = token_codec(settings)
    key = key_file.read_text().strip()
    assert len(key) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = issue(first)
    assert kid_of(token) == SigningKey.from_secret(key).kid
    # A second start reads the same key: its tokens still decode.
    second = token_codec(settings)
    assert key_file.read_text().strip() == key
    assert second.decode_access_token(token).user_id == 5


def test_token_codec_without_a_key_reads_an_existing_key_file(tmp_path: Path) -> None:
    (tmp_path / "signing-key").write_text(OLD_KEY + "\n")
    codec = token_codec(
        make_settings(unused_db(tmp_path), tmp_path, signing_key=None, jwt_algorithm="HS256")
    )
    assert kid_of(issue(codec)) == SigningKey.from_secret(OLD_KEY).kid
    assert (tmp_path / "signing-key").read_text() == OLD_KEY + "\n"


def test_token_codec_uses_the_issuer_audience_and_leeway(tmp_path: Path) -> None:
    def codec(**overrides: Any) -> TokenCodec:
        settings: Settings = make_settings(
            unused_db(tmp_path), tmp_path, access_token_ttl_seconds=30, **overrides
        )
        return token_codec(settings)

    lenient = codec(jwt_leeway_seconds=20)
    strict = codec(jwt_leeway_seconds=0)
    # Expired 10 seconds ago: within 20 seconds of leeway, not within none.
    expired = issue(lenient, now=utcnow() - timedelta(seconds=40))
    assert lenient.decode_access_token(expired).user_id == 5
    with pytest.raises(InvalidAccessToken):
        strict.decode_access_token(expired)
    fresh = issue(strict)
    for other in (codec(jwt_issuer="someone-else"), codec(jwt_audience="someone-else")):
        with pytest.raises(InvalidAccessToken):
            other.decode_access_token(fresh)


@pytest.mark.parametrize("pre_ping", [False, True])
def test_pre_ping_follows_the_setting(database_url: str, tmp_path: Path, pre_ping: bool) -> None:
    runtime = build_runtime(make_settings(database_url, tmp_path, database_pre_ping=pre_ping))
    # SQLite connections are files: there is nothing to ping.
    expected = pre_ping and not database_url.startswith("sqlite")
    assert runtime.db.engine.pool._pre_ping is expected  # type: ignore[attr-defined]


def test_data_cipher_without_keys_keeps_one_in_the_key_file(tmp_path: Path) -> None:
    settings = make_settings(unused_db(tmp_path), tmp_path, data_keys=[])
    key_file = tmp_path / "data-key"
    assert settings.data_keys_file == key_file and not key_file.exists()
    ciphertext = data_cipher(settings).encrypt("JBSWY3DPEHPK3PXP")
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert DataCipher([key]).decrypt(ciphertext) == "JBSWY3DPEHPK3PXP"
    # A restart reads the same key, so what was encrypted stays readable.
    assert data_cipher(settings).decrypt(ciphertext) == "JBSWY3DPEHPK3PXP"
    assert key_file.read_text().strip() == key


def test_data_cipher_uses_the_configured_keys_first_to_encrypt(tmp_path: Path) -> None:
    old, new = new_data_key(), new_data_key()
    by_old = DataCipher([old]).encrypt("secret")
    settings = make_settings(unused_db(tmp_path), tmp_path, data_keys=f"{new},{old}")
    cipher = data_cipher(settings)
    assert cipher.decrypt(by_old) == "secret"  # every key decrypts
    assert DataCipher([new]).decrypt(cipher.encrypt("secret")) == "secret"  # the first encrypts
    assert not (tmp_path / "data-key").exists()  # no file when keys are configured


async def test_build_runtime_wires_the_second_factor_policy(
    database_url: str, tmp_path: Path
) -> None:
    runtime = build_runtime(make_settings(database_url, tmp_path, totp_issuer="Acme ID"))
    try:
        factors = runtime.factors
        assert factors.issuer == "Acme ID"
        assert factors.challenge_ttl == timedelta(minutes=5)
        assert factors.max_challenge_attempts == 5
        assert abs(factors.clock() - time.time()) < 5  # the real clock
        assert DataCipher([TEST_DATA_KEY]).decrypt(factors.cipher.encrypt("s")) == "s"
    finally:
        await runtime.close()
