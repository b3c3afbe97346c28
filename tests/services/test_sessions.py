"""Sessions against a real database: refresh rotation, logout by refresh token, logout everywhere,
revocation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.helpers import (
    CLIENT,
    codes_and_fields,
    disable,
    refreshed,
    sign_in,
    sign_up,
    stored_session,
)
from usergraph.auth.tokens import MAX_REFRESH_TOKEN_LENGTH, hash_token
from usergraph.db.models import ADMIN_ROLE, UserSession, utcnow
from usergraph.runtime import Runtime
from usergraph.services import sessions
from usergraph.services.access import Actor
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.sessions import SignedIn


async def is_open(runtime: Runtime, session_id: uuid.UUID) -> bool:
    async with runtime.db.read_sessionmaker() as s:
        user_session = await s.get(UserSession, session_id)
    assert user_session is not None
    return user_session.is_open(utcnow())


async def refresh_works(runtime: Runtime, signed_in: SignedIn) -> bool:
    try:
        await sessions.refresh(
            db=runtime.db,
            policy=runtime.policy,
            throttle=runtime.throttle,
            refresh_token=signed_in.refresh_token,
            client=CLIENT,
        )
    except Rejected as exc:
        assert codes_and_fields(exc) == [
            (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
        ]
        return False
    return True


# --- refresh -----------------------------------------------------------------------------


async def test_refresh_rotates_the_token_pair(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    second = await refreshed(runtime, first.refresh_token)
    assert second.session_id == first.session_id
    assert second.user.id == first.user.id
    assert second.refresh_token != first.refresh_token
    assert second.access.token != first.access.token
    claims = runtime.policy.tokens.decode_access_token(second.access.token)
    assert (claims.user_id, claims.session_id) == (first.user.id, first.session_id)
    # The new refresh token works in turn.
    third = await refreshed(runtime, second.refresh_token)
    assert third.session_id == first.session_id


async def test_reused_token_within_grace_is_only_refused(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    second = await refreshed(runtime, first.refresh_token)
    with pytest.raises(Rejected) as caught:
        await refreshed(runtime, first.refresh_token, grace=timedelta(minutes=5))
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]
    # The session lives on: the newest token still works.
    assert (await refreshed(runtime, second.refresh_token)).session_id == first.session_id
    assert (await stored_session(runtime, first.session_id)).revoked_at is None


async def test_reused_token_after_grace_ends_the_whole_session(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    other_device = await sign_in(runtime, "ann")
    second = await refreshed(runtime, first.refresh_token)
    third = await refreshed(runtime, second.refresh_token)

    with pytest.raises(Rejected) as caught:
        await refreshed(runtime, first.refresh_token, grace=timedelta(0))
    assert codes_and_fields(caught.value) == [
        (ProblemCode.REFRESH_TOKEN_REUSED, ("input", "refreshToken"))
    ]

    user_session = await stored_session(runtime, first.session_id)
    assert user_session.revoked_at is not None
    assert user_session.revoked_reason == "refresh_token_reused"
    # The thief's (or owner's) newest token of that session no longer works...
    with pytest.raises(Rejected) as caught:
        await refreshed(runtime, third.refresh_token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]
    # ...but the user's other sessions are untouched.
    assert (await refreshed(runtime, other_device.refresh_token)).session_id == (
        other_device.session_id
    )


async def test_concurrent_refreshes_of_one_token_rotate_once(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    results = await asyncio.gather(
        *(refreshed(runtime, first.refresh_token, grace=timedelta(minutes=5)) for _ in range(5)),
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
    assert (await refreshed(runtime, winners[0].refresh_token)).session_id == first.session_id


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
        await refreshed(runtime, token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]


async def test_refresh_with_the_stored_hash_instead_of_the_token(runtime: Runtime) -> None:
    signed_in = await sign_up(runtime, "ann")
    with pytest.raises(Rejected) as caught:
        await refreshed(runtime, hash_token(signed_in.refresh_token))
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]


async def test_refresh_for_a_disabled_account_is_refused(runtime: Runtime) -> None:
    signed_in = await sign_up(runtime, "ann")
    await disable(runtime, signed_in.user.id)
    with pytest.raises(Rejected) as caught:
        await refreshed(runtime, signed_in.refresh_token)
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
        await refreshed(runtime, signed_in.refresh_token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]


# --- logout by refresh token -------------------------------------------------------------


async def test_logout_by_refresh_token_ends_that_session(runtime: Runtime) -> None:
    phone = await sign_up(runtime, "ann")
    laptop = await sign_in(runtime, "ann")
    ended = await sessions.logout_by_refresh_token(db=runtime.db, refresh_token=phone.refresh_token)
    assert ended == 1
    assert not await is_open(runtime, phone.session_id)
    assert await is_open(runtime, laptop.session_id)
    assert not await refresh_works(runtime, phone)
    assert await refresh_works(runtime, laptop)
    # A second logout finds the session already ended.
    assert (
        await sessions.logout_by_refresh_token(db=runtime.db, refresh_token=phone.refresh_token)
        == 0
    )


async def test_logout_by_an_already_rotated_refresh_token(runtime: Runtime) -> None:
    phone = await sign_up(runtime, "ann")
    rotated = await sessions.refresh(
        db=runtime.db,
        policy=runtime.policy,
        throttle=runtime.throttle,
        refresh_token=phone.refresh_token,
        client=CLIENT,
    )
    # The old token still names its session, so logging out with it ends the session.
    ended = await sessions.logout_by_refresh_token(db=runtime.db, refresh_token=phone.refresh_token)
    assert ended == 1
    assert not await refresh_works(runtime, rotated)


@pytest.mark.parametrize("token", ["", "garbage", "ugr_" + "A" * 43])
async def test_logout_by_an_unknown_refresh_token(runtime: Runtime, token: str) -> None:
    phone = await sign_up(runtime, "ann")
    with pytest.raises(Rejected) as caught:
        await sessions.logout_by_refresh_token(db=runtime.db, refresh_token=token)
    assert codes_and_fields(caught.value) == [
        (ProblemCode.INVALID_REFRESH_TOKEN, ("input", "refreshToken"))
    ]
    assert await is_open(runtime, phone.session_id)


# --- logout_session and logout_all -------------------------------------------------------


async def test_logout_session_only_ends_the_users_own(runtime: Runtime) -> None:
    ann = await sign_up(runtime, "ann")
    bob = await sign_up(runtime, "bob")
    assert (
        await sessions.logout_session(db=runtime.db, user_id=ann.user.id, session_id=bob.session_id)
        == 0
    )
    assert await is_open(runtime, bob.session_id)
    assert (
        await sessions.logout_session(db=runtime.db, user_id=ann.user.id, session_id=ann.session_id)
        == 1
    )
    assert not await is_open(runtime, ann.session_id)
    assert (
        await sessions.logout_session(db=runtime.db, user_id=ann.user.id, session_id=ann.session_id)
        == 0
    )


async def test_logout_all_counts_the_open_sessions(runtime: Runtime) -> None:
    first = await sign_up(runtime, "ann")
    second = await sign_in(runtime, "ann")
    third = await sign_in(runtime, "ann")
    bob = await sign_up(runtime, "bob")
    # One already ended: it is not counted again.
    await sessions.logout_session(db=runtime.db, user_id=first.user.id, session_id=third.session_id)

    assert await sessions.logout_all(db=runtime.db, user_id=first.user.id) == 2
    for signed_in in (first, second, third):
        assert not await is_open(runtime, signed_in.session_id)
        assert not await refresh_works(runtime, signed_in)
    assert await is_open(runtime, bob.session_id)
    assert await sessions.logout_all(db=runtime.db, user_id=first.user.id) == 0
    assert await sessions.logout_all(db=runtime.db, user_id=bob.user.id) == 1


async def test_logout_all_for_a_user_without_sessions(runtime: Runtime) -> None:
    assert await sessions.logout_all(db=runtime.db, user_id=987_654) == 0


# --- revoke_session ----------------------------------------------------------------------


async def test_revoke_own_session(runtime: Runtime) -> None:
    ann = await sign_up(runtime, "ann")
    other = await sign_in(runtime, "ann")
    revoked = await sessions.revoke_session(
        db=runtime.db, actor=Actor(ann.user.id, frozenset()), session_id=other.session_id
    )
    assert revoked.id == other.session_id
    assert revoked.revoked_at is not None
    assert revoked.revoked_reason == "revoked"
    assert not await is_open(runtime, other.session_id)
    assert await is_open(runtime, ann.session_id)
    assert not await refresh_works(runtime, other)

    # Revoking again changes nothing and still answers with the session.
    again = await sessions.revoke_session(
        db=runtime.db, actor=Actor(ann.user.id, frozenset()), session_id=other.session_id
    )
    assert again.revoked_at == revoked.revoked_at


async def test_revoke_someone_elses_session_is_not_found(runtime: Runtime) -> None:
    ann = await sign_up(runtime, "ann")
    bob = await sign_up(runtime, "bob")
    with pytest.raises(Rejected) as someone_elses:
        await sessions.revoke_session(
            db=runtime.db, actor=Actor(ann.user.id, frozenset()), session_id=bob.session_id
        )
    assert codes_and_fields(someone_elses.value) == [(ProblemCode.NOT_FOUND, ("input", "id"))]
    assert await is_open(runtime, bob.session_id)
    assert await refresh_works(runtime, bob)

    # The same answer as for a session that does not exist.
    with pytest.raises(Rejected) as missing:
        await sessions.revoke_session(
            db=runtime.db, actor=Actor(ann.user.id, frozenset()), session_id=uuid.uuid4()
        )
    assert missing.value.problems == someone_elses.value.problems


async def test_admin_revokes_someone_elses_session(runtime: Runtime) -> None:
    admin = await sign_up(runtime, "root")
    bob = await sign_up(runtime, "bob")
    revoked = await sessions.revoke_session(
        db=runtime.db,
        actor=Actor(admin.user.id, frozenset({ADMIN_ROLE})),
        session_id=bob.session_id,
    )
    assert revoked.user_id == bob.user.id
    assert not await is_open(runtime, bob.session_id)
    assert await is_open(runtime, admin.session_id)
