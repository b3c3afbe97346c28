"""Signing in against a real database: register, login, refresh rotation, password change."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta

import anyio
import pytest
from passlib.hash import bcrypt
from sqlalchemy import func, select, update

from tests.client import DEFAULT_PASSWORD
from tests.helpers import CLIENT, codes_and_fields, sign_in, sign_up
from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.auth.tokens import MAX_REFRESH_TOKEN_LENGTH, hash_refresh_token
from usergraph.db.models import RefreshToken, User, UserSession
from usergraph.runtime import Runtime
from usergraph.services import passwords, sessions
from usergraph.services.errors import ProblemCode, Rejected, Throttled
from usergraph.services.sessions import SignedIn
from usergraph.services.users import create_user

NEW_PASSWORD = "a new and different passphrase"


async def refresh(runtime: Runtime, token: str, *, grace: timedelta | None = None) -> SignedIn:
    policy = runtime.policy
    if grace is not None:
        policy = dataclasses.replace(policy, reuse_grace=grace)
    return await sessions.refresh(
        db=runtime.db, policy=policy, throttle=runtime.throttle, refresh_token=token, client=CLIENT
    )


async def stored_user(runtime: Runtime, user_id: int) -> User:
    async with runtime.db.sessionmaker() as s:
        user = await s.get(User, user_id)
    assert user is not None
    return user


async def stored_session(runtime: Runtime, session_id: uuid.UUID) -> UserSession:
    async with runtime.db.sessionmaker() as s:
        user_session = await s.get(UserSession, session_id)
    assert user_session is not None
    return user_session


async def set_password_hash(runtime: Runtime, user_id: int, password_hash: str) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))


# --- register ----------------------------------------------------------------------------


async def test_register_signs_the_new_account_in(runtime: Runtime) -> None:
    signed_in = await sign_up(runtime, "Ann", email="Ann@Example.COM", display_name=" Ann  Lee ")
    user = signed_in.user
    assert user.username == "ann"
    assert user.email == "Ann@example.com"
    assert user.email_key == "ann@example.com"
    assert user.display_name == "Ann Lee"
    assert user.is_active
    assert user.last_login_at is not None

    claims = runtime.policy.tokens.decode_access_token(signed_in.access.token)
    assert claims.user_id == user.id
    assert claims.session_id == signed_in.session_id
    assert claims.roles == ("user",)
    assert signed_in.refresh_token.startswith("ugr_")

    stored = await stored_user(runtime, user.id)
    assert stored.password_hash.startswith("$argon2id$")
    assert (await runtime.passwords.verify(DEFAULT_PASSWORD, stored.password_hash)).ok
    user_session = await stored_session(runtime, signed_in.session_id)
    assert user_session.user_id == user.id
    assert user_session.ip_address == "203.0.113.7"
    assert user_session.user_agent == "pytest"
    async with runtime.db.sessionmaker() as s:
        hashes = list(await s.scalars(select(RefreshToken.token_hash)))
    # Only the hash of the refresh token is stored.
    assert hashes == [hash_refresh_token(signed_in.refresh_token)]


async def test_register_email_taken_in_another_case(runtime: Runtime) -> None:
    await sign_up(runtime, "ann", email="ann@example.com")
    with pytest.raises(Rejected) as caught:
        await sign_up(runtime, "ann2", email="ANN@Example.com")
    assert codes_and_fields(caught.value) == [(ProblemCode.EMAIL_TAKEN, ("input", "email"))]


async def test_register_username_taken(runtime: Runtime) -> None:
    await sign_up(runtime, "ann", email="ann@example.com")
    with pytest.raises(Rejected) as caught:
        await sign_up(runtime, "ANN", email="other@example.com")
    assert codes_and_fields(caught.value) == [(ProblemCode.USERNAME_TAKEN, ("input", "username"))]


async def test_register_email_and_username_taken_together(runtime: Runtime) -> None:
    await sign_up(runtime, "ann", email="ann@example.com")
    with pytest.raises(Rejected) as caught:
        await sign_up(runtime, "ann", email="ann@example.com")
    assert codes_and_fields(caught.value) == [
        (ProblemCode.EMAIL_TAKEN, ("input", "email")),
        (ProblemCode.USERNAME_TAKEN, ("input", "username")),
    ]


async def test_register_reports_every_problem_at_once(runtime: Runtime) -> None:
    with pytest.raises(Rejected) as caught:
        await sign_up(
            runtime, "9lives", email="not-an-email", password="password123", display_name="a\x00"
        )
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_EMAIL, ("input", "email")),
        (ProblemCode.INVALID_USERNAME, ("input", "username")),
        (ProblemCode.WEAK_PASSWORD, ("input", "password")),
        (ProblemCode.INVALID_INPUT, ("input", "displayName")),
    ]
    async with runtime.db.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(User)) == 0


async def test_register_refuses_password_equal_to_username(runtime: Runtime) -> None:
    with pytest.raises(Rejected) as caught:
        await sign_up(runtime, "longusername", password="LongUsername")
    assert codes_and_fields(caught.value) == [(ProblemCode.WEAK_PASSWORD, ("input", "password"))]


async def test_concurrent_registrations_with_one_email_make_one_account(
    runtime: Runtime,
) -> None:
    results = await asyncio.gather(
        *(
            sign_up(runtime, f"racer{i}", email="Same@Example.com" if i % 2 else "same@example.com")
            for i in range(50)
        ),
        return_exceptions=True,
    )
    winners = [result for result in results if isinstance(result, SignedIn)]
    losers = [result for result in results if not isinstance(result, SignedIn)]
    assert len(winners) == 1
    assert len(losers) == 49
    for loser in losers:
        assert isinstance(loser, Rejected), repr(loser)
        assert codes_and_fields(loser) == [(ProblemCode.EMAIL_TAKEN, ("input", "email"))]
    async with runtime.db.sessionmaker() as s:
        users = list(await s.scalars(select(User)))
        sessions = await s.scalar(select(func.count()).select_from(UserSession))
    assert [user.username for user in users] == [winners[0].user.username]
    assert sessions == 1


async def test_concurrent_registrations_with_one_username_make_one_account(
    runtime: Runtime,
) -> None:
    results = await asyncio.gather(
        *(sign_up(runtime, "same", email=f"racer{i}@example.com") for i in range(20)),
        return_exceptions=True,
    )
    winners = [result for result in results if isinstance(result, SignedIn)]
    losers = [result for result in results if not isinstance(result, SignedIn)]
    assert len(winners) == 1
    for loser in losers:
        assert isinstance(loser, Rejected), repr(loser)
        assert codes_and_fields(loser) == [(ProblemCode.USERNAME_TAKEN, ("input", "username"))]


# --- login -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "login_as", ["ann.lee@example.com", "ANN.LEE@EXAMPLE.COM", "Ann.Lee@example.com", "ann", "ANN"]
)
async def test_login_by_email_in_any_case_or_by_username(runtime: Runtime, login_as: str) -> None:
    registered = await sign_up(runtime, "ann", email="Ann.Lee@Example.com")
    signed_in = await sign_in(runtime, login_as)
    assert signed_in.user.id == registered.user.id
    assert signed_in.session_id != registered.session_id
    claims = runtime.policy.tokens.decode_access_token(signed_in.access.token)
    assert (claims.user_id, claims.session_id) == (registered.user.id, signed_in.session_id)
    # Each login opens its own session; the first still works.
    assert (await refresh(runtime, registered.refresh_token)).session_id == registered.session_id


async def test_login_carries_the_users_roles(runtime: Runtime) -> None:
    await create_user(
        db=runtime.db,
        passwords=runtime.passwords,
        email="root@example.com",
        username="root",
        password=DEFAULT_PASSWORD,
        admin=True,
    )
    signed_in = await sign_in(runtime, "root")
    assert runtime.policy.tokens.decode_access_token(signed_in.access.token).roles == (
        "admin",
        "user",
    )


async def test_wrong_password_and_unknown_login_answer_alike(runtime: Runtime) -> None:
    await sign_up(runtime, "ann")
    answers: list[Rejected] = []
    for login_as, password in [
        ("ann", "not the right password"),
        ("ann@example.com", "not the right password"),
        ("nobody", DEFAULT_PASSWORD),
        ("nobody@example.com", DEFAULT_PASSWORD),
    ]:
        with pytest.raises(Rejected) as caught:
            await sign_in(runtime, login_as, password)
        answers.append(caught.value)
    assert {answer.problems for answer in answers} == {answers[0].problems}
    (problem,) = answers[0].problems
    assert problem.code == ProblemCode.INVALID_CREDENTIALS
    assert problem.field == ()
    assert "ann" not in problem.message.lower()


async def test_unknown_login_still_verifies_a_password(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []
    original = PasswordHasher.verify

    async def recording(self: PasswordHasher, password: str, stored_hash: str) -> object:
        verified.append(password)
        return await original(self, password, stored_hash)

    monkeypatch.setattr(PasswordHasher, "verify", recording)
    with pytest.raises(Rejected):
        await sign_in(runtime, "nobody", "some guess")
    assert verified == ["some guess"]


@pytest.mark.parametrize(
    ("login_as", "password"),
    [("a" * 300 + "@example.com", DEFAULT_PASSWORD), ("ann", "x" * 5000)],
    ids=["login", "password"],
)
async def test_overlong_credentials_are_refused(
    runtime: Runtime, login_as: str, password: str
) -> None:
    await sign_up(runtime, "ann")
    with pytest.raises(Rejected) as caught:
        await sign_in(runtime, login_as, password)
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_CREDENTIALS, ())]


async def _disable(runtime: Runtime, user_id: int) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == user_id).values(is_active=False))


async def test_disabled_account_with_correct_password(runtime: Runtime) -> None:
    registered = await sign_up(runtime, "ann")
    await _disable(runtime, registered.user.id)
    with pytest.raises(Rejected) as caught:
        await sign_in(runtime, "ann")
    assert codes_and_fields(caught.value) == [(ProblemCode.ACCOUNT_DISABLED, ())]


async def test_disabled_account_with_wrong_password_reveals_nothing(runtime: Runtime) -> None:
    registered = await sign_up(runtime, "ann")
    await _disable(runtime, registered.user.id)
    with pytest.raises(Rejected) as caught:
        await sign_in(runtime, "ann", "not the right password")
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_CREDENTIALS, ())]


async def test_login_rehashes_a_hash_with_other_argon2_costs(runtime: Runtime) -> None:
    registered = await sign_up(runtime, "ann")
    old_hasher = PasswordHasher(time_cost=2, memory_cost_kib=2048, parallelism=1)
    old_hash = await old_hasher.hash(DEFAULT_PASSWORD)
    await set_password_hash(runtime, registered.user.id, old_hash)

    await sign_in(runtime, "ann")
    new_hash = (await stored_user(runtime, registered.user.id)).password_hash
    assert new_hash != old_hash
    verification = await runtime.passwords.verify(DEFAULT_PASSWORD, new_hash)
    assert verification.ok
    assert verification.new_hash is None  # now made with the current costs
    # The rehashed password still signs in, and is not rehashed again.
    await sign_in(runtime, "ann")
    assert (await stored_user(runtime, registered.user.id)).password_hash == new_hash


async def test_login_rehashes_a_bcrypt_hash(runtime: Runtime) -> None:
    registered = await sign_up(runtime, "ann")
    old_hash = bcrypt.using(rounds=4).hash(DEFAULT_PASSWORD)
    await set_password_hash(runtime, registered.user.id, old_hash)
    await sign_in(runtime, "ann")
    new_hash = (await stored_user(runtime, registered.user.id)).password_hash
    assert new_hash.startswith("$argon2id$")
    assert (await runtime.passwords.verify(DEFAULT_PASSWORD, new_hash)).ok


async def test_concurrent_logins_with_an_outdated_hash_all_succeed(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two devices signing in at once, right after a cost upgrade: both know the password."""
    registered = await sign_up(runtime, "ann")
    old_hash = bcrypt.using(rounds=4).hash(DEFAULT_PASSWORD)
    await set_password_hash(runtime, registered.user.id, old_hash)

    # Hold every verification until both logins have verified against the old hash, so both
    # read it before either stores its upgrade: the order no longer depends on luck.
    logins = 2
    verified = 0
    all_verified = asyncio.Event()
    original = PasswordHasher.verify

    async def verify_together(self: PasswordHasher, password: str, stored_hash: str) -> object:
        nonlocal verified
        result = await original(self, password, stored_hash)
        if stored_hash == old_hash:
            verified += 1
            if verified == logins:
                all_verified.set()
            await all_verified.wait()
        return result

    monkeypatch.setattr(PasswordHasher, "verify", verify_together)
    with anyio.fail_after(60):  # a guard against a hang, not a timing assertion
        results = await asyncio.gather(
            *(sign_in(runtime, "ann") for _ in range(logins)), return_exceptions=True
        )
    assert [type(result) for result in results] == [SignedIn] * logins, results
    stored = (await stored_user(runtime, registered.user.id)).password_hash
    assert stored.startswith("$argon2id$")
    assert (await runtime.passwords.verify(DEFAULT_PASSWORD, stored)).ok


async def test_failed_login_does_not_rehash(runtime: Runtime) -> None:
    registered = await sign_up(runtime, "ann")
    old_hash = bcrypt.using(rounds=4).hash(DEFAULT_PASSWORD)
    await set_password_hash(runtime, registered.user.id, old_hash)
    with pytest.raises(Rejected):
        await sign_in(runtime, "ann", "not the right password")
    assert (await stored_user(runtime, registered.user.id)).password_hash == old_hash


# --- refresh -----------------------------------------------------------------------------


async def test_refresh_rotates_the_token_pair(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    second = await refresh(runtime, first.refresh_token)
    assert second.session_id == first.session_id
    assert second.user.id == first.user.id
    assert second.refresh_token != first.refresh_token
    assert second.access.token != first.access.token
    claims = runtime.policy.tokens.decode_access_token(second.access.token)
    assert (claims.user_id, claims.session_id) == (first.user.id, first.session_id)
    # The new refresh token works in turn.
    third = await refresh(runtime, second.refresh_token)
    assert third.session_id == first.session_id


async def test_reused_token_within_grace_is_only_refused(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    second = await refresh(runtime, first.refresh_token)
    with pytest.raises(Rejected) as caught:
        await refresh(runtime, first.refresh_token, grace=timedelta(minutes=5))
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]
    # The session lives on: the newest token still works.
    assert (await refresh(runtime, second.refresh_token)).session_id == first.session_id
    assert (await stored_session(runtime, first.session_id)).revoked_at is None


async def test_reused_token_after_grace_ends_the_whole_session(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    other_device = await sign_in(runtime, "ann")
    second = await refresh(runtime, first.refresh_token)
    third = await refresh(runtime, second.refresh_token)

    with pytest.raises(Rejected) as caught:
        await refresh(runtime, first.refresh_token, grace=timedelta(0))
    assert codes_and_fields(caught.value) == [
        (ProblemCode.REFRESH_TOKEN_REUSED, ("input", "refreshToken"))
    ]

    user_session = await stored_session(runtime, first.session_id)
    assert user_session.revoked_at is not None
    assert user_session.revoked_reason == "refresh_token_reused"
    # The thief's (or owner's) newest token of that session no longer works...
    with pytest.raises(Rejected) as caught:
        await refresh(runtime, third.refresh_token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]
    # ...but the user's other sessions are untouched.
    assert (await refresh(runtime, other_device.refresh_token)).session_id == (
        other_device.session_id
    )


async def test_concurrent_refreshes_of_one_token_rotate_once(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    results = await asyncio.gather(
        *(refresh(runtime, first.refresh_token, grace=timedelta(minutes=5)) for _ in range(5)),
        return_exceptions=True,
    )
    winners = [result for result in results if isinstance(result, SignedIn)]
    assert len(winners) == 1
    for result in results:
        if not isinstance(result, SignedIn):
            assert isinstance(result, Rejected), repr(result)
            assert codes_and_fields(result) == [
                (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
            ]
    assert (await refresh(runtime, winners[0].refresh_token)).session_id == first.session_id


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "ugr_" + "A" * 43,
        "ugr_" + "A" * MAX_REFRESH_TOKEN_LENGTH,
        "x" * 100_000,
    ],
    ids=["empty", "garbage", "well-formed-unknown", "overlong", "huge"],
)
async def test_refresh_with_a_bad_token(runtime: Runtime, token: str) -> None:
    await sign_up(runtime, "ann")
    with pytest.raises(Rejected) as caught:
        await refresh(runtime, token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]


async def test_refresh_with_the_stored_hash_instead_of_the_token(runtime: Runtime) -> None:
    signed_in = await sign_up(runtime, "ann")
    with pytest.raises(Rejected) as caught:
        await refresh(runtime, hash_refresh_token(signed_in.refresh_token))
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]


async def test_refresh_for_a_disabled_account_is_refused(runtime: Runtime) -> None:
    signed_in = await sign_up(runtime, "ann")
    await _disable(runtime, signed_in.user.id)
    with pytest.raises(Rejected) as caught:
        await refresh(runtime, signed_in.refresh_token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]


async def test_expired_refresh_token_is_refused(runtime: Runtime) -> None:
    signed_in = await sign_up(runtime, "ann")
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(
            update(UserSession)
            .where(UserSession.id == signed_in.session_id)
            .values(expires_at=signed_in.user.created_at - timedelta(seconds=1))
        )
    with pytest.raises(Rejected) as caught:
        await refresh(runtime, signed_in.refresh_token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]


# --- change password ---------------------------------------------------------------------


async def change_password(
    runtime: Runtime,
    signed_in: SignedIn,
    *,
    current: str = DEFAULT_PASSWORD,
    new: str = NEW_PASSWORD,
    throttle: Throttle | None = None,
) -> User:
    return await passwords.change_password(
        db=runtime.db,
        passwords=runtime.passwords,
        throttle=throttle or runtime.throttle,
        user_id=signed_in.user.id,
        current_session_id=signed_in.session_id,
        current_password=current,
        new_password=new,
    )


async def test_change_password_with_the_wrong_current_password(runtime: Runtime) -> None:
    signed_in = await sign_up(runtime, "ann")
    with pytest.raises(Rejected) as caught:
        await change_password(runtime, signed_in, current="not the right password")
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_CREDENTIALS, ("input", "currentPassword"))
    ]
    # Nothing changed.
    await sign_in(runtime, "ann", DEFAULT_PASSWORD)


@pytest.mark.parametrize("weak", ["short", "password123", "ann@example.com", "ANN_LEE"])
async def test_change_password_to_a_weak_one(runtime: Runtime, weak: str) -> None:
    signed_in = await sign_up(runtime, "ann_lee", email="ann@example.com")
    with pytest.raises(Rejected) as caught:
        await change_password(runtime, signed_in, new=weak)
    assert codes_and_fields(caught.value) == [(ProblemCode.WEAK_PASSWORD, ("input", "newPassword"))]


async def test_change_password_ends_other_sessions_only(runtime: Runtime) -> None:
    current = await sign_up(runtime, "ann")
    other = await sign_in(runtime, "ann")
    someone_else = await sign_up(runtime, "bob")

    updated = await change_password(runtime, current)
    assert updated.id == current.user.id

    with pytest.raises(Rejected) as caught:
        await refresh(runtime, other.refresh_token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]
    assert (await stored_session(runtime, other.session_id)).revoked_reason == "password_changed"
    assert (await refresh(runtime, current.refresh_token)).session_id == current.session_id
    assert (await refresh(runtime, someone_else.refresh_token)).user.id == someone_else.user.id

    with pytest.raises(Rejected) as caught:
        await sign_in(runtime, "ann", DEFAULT_PASSWORD)
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_CREDENTIALS, ())]
    assert (await sign_in(runtime, "ann", NEW_PASSWORD)).user.id == current.user.id


async def test_wrong_current_passwords_lock_the_account(runtime: Runtime) -> None:
    """A stolen access token cannot guess the password at the hasher's speed."""
    throttle = Throttle({rule: "2/15 minutes" for rule in Rule})
    signed_in = await sign_up(runtime, "ann")
    for _ in range(2):
        with pytest.raises(Rejected) as caught:
            await change_password(runtime, signed_in, current="guess", throttle=throttle)
        assert [p.code for p in caught.value.problems] == [ProblemCode.INVALID_CREDENTIALS]
    with pytest.raises(Rejected) as caught:
        await change_password(runtime, signed_in, throttle=throttle)  # even the right one
    [problem] = caught.value.problems
    assert (problem.code, problem.field) == (
        ProblemCode.ACCOUNT_LOCKED,
        ("input", "currentPassword"),
    )
    assert problem.retry_after is not None and 0 < problem.retry_after <= 900
    # The same counter guards login by username.
    with pytest.raises(Rejected) as caught:
        await sign_in(runtime, "ann", throttle=throttle)
    assert [p.code for p in caught.value.problems] == [ProblemCode.ACCOUNT_LOCKED]
    await throttle.close()


async def test_change_password_of_an_unknown_user(runtime: Runtime) -> None:
    with pytest.raises(Rejected) as caught:
        await passwords.change_password(
            db=runtime.db,
            passwords=runtime.passwords,
            throttle=runtime.throttle,
            user_id=987_654,
            current_session_id=None,
            current_password=DEFAULT_PASSWORD,
            new_password=NEW_PASSWORD,
        )
    assert [problem.code for problem in caught.value.problems] == [ProblemCode.NOT_FOUND]


async def test_attempts_refused_as_busy_are_not_counted(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user retrying while the hasher is saturated must not lock themselves out."""
    rates = {rule: "2/15 minutes" for rule in Rule}
    throttle = Throttle(rates)
    await sign_up(runtime, "ann")
    monkeypatch.setattr(runtime.passwords, "_max_in_flight", 0)  # every place is taken
    for _ in range(4):
        with pytest.raises(Throttled) as refused:
            await sign_in(runtime, "ann", client=CLIENT, throttle=throttle)
        assert refused.value.retry_after == 1
        with pytest.raises(Throttled):
            await sign_up(runtime, f"new{uuid.uuid4().hex[:8]}", throttle=throttle)
    monkeypatch.undo()
    assert (await throttle.check(Rule.LOGIN_ACCOUNT, "ann")).allowed
    assert (await throttle.check(Rule.REGISTER_IP, CLIENT.ip_address or "")).allowed
    assert (await sign_in(runtime, "ann", throttle=throttle)).user.username == "ann"
    await throttle.close()
