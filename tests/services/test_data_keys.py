"""services/data_keys.py and `usergraph rotate-data-key` against a real database: TOTP secrets
are stored encrypted, rotation re-encrypts every one with the first data key (batch by batch),
reports and keeps the ones no key decrypts, and TOTP sign-in works with the new key alone.

Accounts enroll through the services (or the API) with key A; the rotation then runs with
"B,A", as an operator adding key B would. Codes come from tests/totp.py.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import event, text
from starlette.applications import Starlette

from tests.client import DEFAULT_PASSWORD, GraphQL, serving
from tests.environment import TEST_SIGNING_KEY
from tests.helpers import CLIENT, create_account
from tests.totp import START_TOTP, STEP, Clock, challenge, code, enroll, secret_key, verify
from usergraph import cli
from usergraph.auth.data_keys import DataCipher, UndecryptableValue, new_data_key
from usergraph.runtime import Runtime, data_cipher
from usergraph.services import auth, challenges, data_keys, second_factors
from usergraph.services.challenges import SecondFactorRequired
from usergraph.services.second_factors import SecondFactorPolicy
from usergraph.services.sessions import SignedIn

KEY_A = new_data_key()
KEY_B = new_data_key()
KEY_C = new_data_key()


@dataclass
class Enrolled:
    user_id: int
    username: str
    secret: str


@pytest.fixture
def totp_clock() -> Clock:
    """The clock the services count TOTP steps on (it starts mid-step)."""
    return Clock()


def factors(runtime: Runtime, totp_clock: Clock, *keys: str) -> SecondFactorPolicy:
    """The runtime's second-factor policy with these data keys and this clock."""
    return dataclasses.replace(runtime.factors, cipher=DataCipher(list(keys)), clock=totp_clock)


async def enroll_user(
    runtime: Runtime, totp_clock: Clock, username: str, *keys: str, confirm: bool = True
) -> Enrolled:
    """An account with TOTP on (or pending, without confirm), its secret under keys[0]."""
    policy = factors(runtime, totp_clock, *keys)
    user = await create_account(runtime, username)
    enrollment = await second_factors.start_enrollment(
        db=runtime.db, passwords=runtime.passwords, throttle=runtime.throttle, policy=policy,
        user_id=user.id, password=DEFAULT_PASSWORD,
    )  # fmt: skip
    if confirm:
        await second_factors.confirm_enrollment(
            db=runtime.db, outbox=runtime.outbox, throttle=runtime.throttle, policy=policy,
            user_id=user.id, code=code(enrollment.secret, totp_clock()),
        )  # fmt: skip
    return Enrolled(user.id, user.username, enrollment.secret)


async def stored(runtime: Runtime) -> dict[int, tuple[str, Any, Any]]:
    """user id -> (secret_ciphertext, enabled_at, last_used_step), read with plain SQL."""
    async with runtime.db.read_sessionmaker() as s:
        rows = await s.execute(
            text("SELECT user_id, secret_ciphertext, enabled_at, last_used_step FROM totp_factors")
        )
        return {row[0]: (row[1], row[2], row[3]) for row in rows}


async def ciphertexts(runtime: Runtime) -> dict[int, str]:
    return {user_id: row[0] for user_id, row in (await stored(runtime)).items()}


def assert_hidden(secret: str, ciphertext: str) -> None:
    """The stored value shows nothing of the secret."""
    assert secret not in ciphertext
    assert secret.lower() not in ciphertext.lower()
    assert secret_key(secret) not in base64.urlsafe_b64decode(ciphertext)


@pytest.fixture
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """The SQL statements the runtime's engine runs from here on."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# --- the service ---------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "selects"), [(1, 6), (2, 3), (4, 2), (5, 2), (500, 1)])
async def test_rotate_re_encrypts_every_secret_batch_by_batch(
    runtime: Runtime, totp_clock: Clock, statements: list[str], batch: int, selects: int
) -> None:
    users = [await enroll_user(runtime, totp_clock, f"user_{n}", KEY_A) for n in range(4)]
    users.append(await enroll_user(runtime, totp_clock, "pending", KEY_A, confirm=False))
    before = await stored(runtime)
    statements.clear()
    rotation = await data_keys.rotate(db=runtime.db, cipher=DataCipher([KEY_B, KEY_A]), batch=batch)
    assert rotation == data_keys.Rotation(rotated=5, undecryptable=())
    # Batches of `batch` rows: a short (or empty) one ends it.
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == selects, reads
    after = await stored(runtime)
    assert set(after) == {user.user_id for user in users}
    only_b, only_a = DataCipher([KEY_B]), DataCipher([KEY_A])
    for user in users:
        ciphertext, enabled_at, last_used_step = after[user.user_id]
        assert ciphertext != before[user.user_id][0]
        assert only_b.decrypt(ciphertext) == user.secret
        with pytest.raises(UndecryptableValue):
            only_a.decrypt(ciphertext)
        assert_hidden(user.secret, ciphertext)
        # Only the ciphertext changes.
        assert (enabled_at, last_used_step) == before[user.user_id][1:]


async def test_rotate_with_nothing_stored(runtime: Runtime) -> None:
    assert await data_keys.rotate(db=runtime.db, cipher=DataCipher([KEY_B])) == (
        data_keys.Rotation(rotated=0, undecryptable=())
    )


async def test_after_rotating_the_old_key_can_be_dropped(
    runtime: Runtime, totp_clock: Clock
) -> None:
    users = [await enroll_user(runtime, totp_clock, f"user_{n}", KEY_A) for n in range(3)]
    assert (await data_keys.rotate(db=runtime.db, cipher=DataCipher([KEY_B, KEY_A]))).rotated == 3
    # With B alone every secret is readable, and rotating again finds nothing it cannot read.
    again = await data_keys.rotate(db=runtime.db, cipher=DataCipher([KEY_B]), batch=2)
    assert again == data_keys.Rotation(rotated=3, undecryptable=())
    stored_now = await ciphertexts(runtime)
    assert [DataCipher([KEY_B]).decrypt(stored_now[u.user_id]) for u in users] == [
        u.secret for u in users
    ]


async def test_a_secret_no_key_decrypts_is_reported_and_left_as_it_is(
    runtime: Runtime, totp_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="usergraph.security")
    first = [await enroll_user(runtime, totp_clock, f"first_{n}", KEY_A) for n in range(2)]
    lost = await enroll_user(runtime, totp_clock, "lost", KEY_C)  # a key that was dropped
    rest = [await enroll_user(runtime, totp_clock, f"rest_{n}", KEY_A) for n in range(2)]
    before = await ciphertexts(runtime)
    rotation = await data_keys.rotate(db=runtime.db, cipher=DataCipher([KEY_B, KEY_A]), batch=2)
    assert rotation == data_keys.Rotation(rotated=4, undecryptable=(lost.user_id,))
    after = await ciphertexts(runtime)
    assert after[lost.user_id] == before[lost.user_id]
    assert DataCipher([KEY_C]).decrypt(after[lost.user_id]) == lost.secret
    for user in first + rest:  # the batches after the bad row are rotated too
        assert DataCipher([KEY_B]).decrypt(after[user.user_id]) == user.secret
    [line] = [r.getMessage() for r in caplog.records if "data_key_rotated" in r.getMessage()]
    assert "rotated=4" in line and "undecryptable=1" in line
    for user in (*first, lost, *rest):
        assert user.secret not in caplog.text


async def test_sign_in_with_totp_works_after_rotation(runtime: Runtime, totp_clock: Clock) -> None:
    ann = await enroll_user(runtime, totp_clock, "ann", KEY_A)
    bob = await enroll_user(runtime, totp_clock, "bob", KEY_A)
    await data_keys.rotate(db=runtime.db, cipher=DataCipher([KEY_B, KEY_A]))
    only_b = factors(runtime, totp_clock, KEY_B)
    totp_clock.advance(STEP)  # the confirming code's step is used up
    for user in (ann, bob):
        required = await auth.login(
            db=runtime.db, passwords=runtime.passwords, policy=runtime.policy, factors=only_b,
            throttle=runtime.throttle, login=user.username, password=DEFAULT_PASSWORD,
            client=CLIENT,
        )  # fmt: skip
        assert isinstance(required, SecondFactorRequired)
        signed_in = await challenges.verify(
            db=runtime.db, policy=runtime.policy, factors=only_b, throttle=runtime.throttle,
            outbox=runtime.outbox, challenge_token=required.token,
            code=code(user.secret, totp_clock()), client=CLIENT,
        )  # fmt: skip
        assert isinstance(signed_in, SignedIn)
        assert signed_in.user.id == user.user_id


async def test_a_pending_enrollment_can_be_confirmed_after_rotation(
    runtime: Runtime, totp_clock: Clock
) -> None:
    ann = await enroll_user(runtime, totp_clock, "ann", KEY_A, confirm=False)
    await data_keys.rotate(db=runtime.db, cipher=DataCipher([KEY_B, KEY_A]))
    user, codes = await second_factors.confirm_enrollment(
        db=runtime.db, outbox=runtime.outbox, throttle=runtime.throttle,
        policy=factors(runtime, totp_clock, KEY_B), user_id=ann.user_id,
        code=code(ann.secret, totp_clock()),
    )  # fmt: skip
    assert user.id == ann.user_id and len(codes) == 10


# --- at rest -------------------------------------------------------------------------------


async def test_secrets_are_unreadable_in_the_database_without_the_key(
    gql: GraphQL, app: Starlette, clock: Clock
) -> None:
    runtime: Runtime = app.state.runtime
    pending_account = await gql.register("pending")
    started = await gql.ok(
        START_TOTP,
        {"input": {"password": DEFAULT_PASSWORD}},
        token=pending_account.access_token,
    )
    pending_secret = started["startTotpEnrollment"]["secret"]
    enrolled = await enroll(gql, await gql.register("ann"), unix_time=clock)
    rows = await ciphertexts(runtime)
    assert len(rows) == 2
    others = (DataCipher([new_data_key()]), DataCipher([KEY_A, KEY_B]))
    for secret in (pending_secret, enrolled.secret):
        for ciphertext in rows.values():
            assert_hidden(secret, ciphertext)
    for ciphertext in rows.values():
        for other in others:
            with pytest.raises(UndecryptableValue):
                other.decrypt(ciphertext)
    # The app's own key does read them (so the checks above are not about garbage).
    readable = {data_cipher(runtime.settings).decrypt(value) for value in rows.values()}
    assert readable == {pending_secret, enrolled.secret}


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def cli_env(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> str:
    """The environment `usergraph` runs in (as in tests/test_cli.py), on the test's database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", TEST_SIGNING_KEY)
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", f"{KEY_B},{KEY_A}")
    return database_url


async def run_cli(*args: str) -> int:
    """cli.main in a thread of its own (it runs its own event loop)."""
    status: int = await anyio.to_thread.run_sync(cli.main, list(args))
    return status


async def test_cli_rotates_with_the_first_key(
    cli_env: str, runtime: Runtime, totp_clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    users = [await enroll_user(runtime, totp_clock, f"user_{n}", KEY_A) for n in range(3)]
    assert await run_cli("rotate-data-key") == 0
    out, err = capsys.readouterr()
    assert "re-encrypted 3 TOTP secret(s) with the first data key" in out
    assert err == ""
    after = await ciphertexts(runtime)
    for user in users:
        assert DataCipher([KEY_B]).decrypt(after[user.user_id]) == user.secret
        assert user.secret not in out


async def test_cli_names_the_users_no_key_decrypts(
    cli_env: str, runtime: Runtime, totp_clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    fine = await enroll_user(runtime, totp_clock, "fine", KEY_A)
    lost = [await enroll_user(runtime, totp_clock, f"lost_{n}", KEY_C) for n in range(2)]
    before = await ciphertexts(runtime)
    assert await run_cli("rotate-data-key") == 1
    out, err = capsys.readouterr()
    assert "re-encrypted 1 TOTP secret(s)" in out
    named = re.search(r"user id\(s\) ([\d, ]+);", err)
    assert named is not None, err
    assert [int(n) for n in named.group(1).split(", ")] == [user.user_id for user in lost]
    assert "Traceback" not in err
    after = await ciphertexts(runtime)
    assert [after[user.user_id] for user in lost] == [before[user.user_id] for user in lost]
    assert DataCipher([KEY_B]).decrypt(after[fine.user_id]) == fine.secret


async def test_cli_refuses_an_invalid_key(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", f"{KEY_B},not-a-key")
    assert await run_cli("rotate-data-key") == 2
    err = capsys.readouterr().err
    assert "a data key is 32 random bytes" in err
    assert KEY_B not in err and "Traceback" not in err


async def test_cli_new_data_key_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["new-data-key"]) == 0
    key = capsys.readouterr().out.strip()
    cipher = DataCipher([key])
    assert cipher.decrypt(cipher.encrypt("x")) == "x"


# --- end to end: enroll over the API, rotate, sign in over the API with the new key ----------


def use_clock(gql: GraphQL, totp_clock: Clock) -> None:
    """Make a served app count TOTP steps on totp_clock (as the `clock` fixture does for `app`)."""
    app = gql.app
    current: Runtime = app.state.runtime
    app.state.runtime = dataclasses.replace(
        current, factors=dataclasses.replace(current.factors, clock=totp_clock)
    )


async def test_rotation_end_to_end_over_the_api(
    cli_env: str, runtime: Runtime, tmp_path: Path, totp_clock: Clock
) -> None:
    async with serving(cli_env, tmp_path / "a", data_keys=KEY_A) as gql:
        use_clock(gql, totp_clock)
        accounts = [await gql.register(f"api_{n}") for n in range(3)]
        enrolled = [await enroll(gql, account, unix_time=totp_clock) for account in accounts]
    assert await run_cli("rotate-data-key") == 0
    totp_clock.advance(STEP)
    async with serving(cli_env, tmp_path / "b", data_keys=KEY_B) as gql:
        use_clock(gql, totp_clock)
        for user in enrolled:
            login = await challenge(gql, user.account.username, DEFAULT_PASSWORD)
            assert login["accessToken"] is None, login
            token = login["secondFactorChallenge"]["token"]
            payload = await verify(gql, token, code(user.secret, totp_clock()))
            assert payload["userErrors"] == [], payload
            assert payload["accessToken"]
            assert payload["user"]["username"] == user.account.username
