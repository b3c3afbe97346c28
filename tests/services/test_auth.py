"""Signing in against a real database: register and login."""

from __future__ import annotations

import asyncio
import uuid

import anyio
import pytest
from passlib.hash import bcrypt
from sqlalchemy import func, select, update

from tests.client import DEFAULT_PASSWORD
from tests.helpers import (
    CLIENT,
    codes_and_fields,
    disable,
    refreshed,
    sign_in,
    sign_up,
    stored_session,
)
from usergraph.auth.passwords import PasswordHasher
from usergraph.auth.throttle import Rule, Throttle
from usergraph.auth.tokens import hash_token
from usergraph.db.models import RefreshToken, User, UserSession
from usergraph.runtime import Runtime
from usergraph.services.errors import ProblemCode, Rejected, Throttled
from usergraph.services.sessions import SignedIn
from usergraph.services.users import create_user


async def stored_user(runtime: Runtime, user_id: int) -> User:
    async with runtime.db.sessionmaker() as s:
        user = await s.get(User, user_id)
    assert user is not None
    return user


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
    assert hashes == [hash_token(signed_in.refresh_token)]


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
    assert (await refreshed(runtime, registered.refresh_token)).session_id == registered.session_id


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


async def test_disabled_account_with_correct_password(runtime: Runtime) -> None:
    registered = await sign_up(runtime, "ann")
    await disable(runtime, registered.user.id)
    with pytest.raises(Rejected) as caught:
        await sign_in(runtime, "ann")
    assert codes_and_fields(caught.value) == [(ProblemCode.ACCOUNT_DISABLED, ())]


async def test_disabled_account_with_wrong_password_reveals_nothing(runtime: Runtime) -> None:
    registered = await sign_up(runtime, "ann")
    await disable(runtime, registered.user.id)
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


# --- busy hasher -------------------------------------------------------------------------


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
