"""Changing a password against a real database: checks, lockout, other sessions ended."""

from __future__ import annotations

import pytest

from tests.client import DEFAULT_PASSWORD
from tests.helpers import codes_and_fields, refreshed, sign_in, sign_up, stored_session
from usergraph.auth.throttle import Rule, Throttle
from usergraph.db.models import User
from usergraph.runtime import Runtime
from usergraph.services import passwords
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.sessions import SignedIn

NEW_PASSWORD = "a new and different passphrase"


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
        await refreshed(runtime, other.refresh_token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]
    assert (await stored_session(runtime, other.session_id)).revoked_reason == "password_changed"
    assert (await refreshed(runtime, current.refresh_token)).session_id == current.session_id
    assert (await refreshed(runtime, someone_else.refresh_token)).user.id == someone_else.user.id

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
