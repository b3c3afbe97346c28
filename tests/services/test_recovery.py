"""services/recovery.py against a real database: verification, password reset and email
change, with the rows each writes, their refusals and their throttling."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.client import DEFAULT_PASSWORD
from tests.helpers import (
    CLIENT,
    codes_and_fields,
    create_account,
    disable,
    open_session_count,
    sign_in,
    sign_up,
    stored_user,
)
from tests.mail_rows import kinds, latest_token, messages, token_rows
from usergraph.auth.throttle import Rule, Throttle
from usergraph.db.models import User, utcnow
from usergraph.runtime import Runtime
from usergraph.services import recovery
from usergraph.services.email_tokens import CHANGE_EMAIL, RESET_PASSWORD, VERIFY_EMAIL
from usergraph.services.errors import ProblemCode, Rejected, Throttled
from usergraph.services.throttling import account_key

NEW_PASSWORD = "a brand new passphrase 42"
INVALID = [(ProblemCode.INVALID_TOKEN, ("input", "token"))]
IP = "203.0.113.7"  # CLIENT's
assert CLIENT.ip_address == IP


def throttle(
    *, address: str = "100/hour", ip: str = "100/hour", login: str = "100/minute"
) -> Throttle:
    """A throttle with these email and login-account limits (the rest generous)."""
    return Throttle(
        {
            Rule.LOGIN_ACCOUNT: login,
            Rule.LOGIN_IP: "1000/minute",
            Rule.REGISTER_IP: "1000/minute",
            Rule.REFRESH_IP: "1000/minute",
            Rule.EMAIL_ADDRESS: address,
            Rule.EMAIL_IP: ip,
        }
    )


async def send_verification(
    runtime: Runtime,
    *,
    user_id: int | None = None,
    email: str | None = None,
    limits: Throttle | None = None,
    ip_address: str | None = IP,
) -> None:
    await recovery.send_verification(
        db=runtime.db,
        outbox=runtime.outbox,
        policy=runtime.email,
        throttle=limits or runtime.throttle,
        user_id=user_id,
        email=email,
        ip_address=ip_address,
    )


async def request_reset(
    runtime: Runtime, email: str, *, limits: Throttle | None = None, ip_address: str | None = IP
) -> None:
    await recovery.request_password_reset(
        db=runtime.db,
        outbox=runtime.outbox,
        policy=runtime.email,
        throttle=limits or runtime.throttle,
        email=email,
        ip_address=ip_address,
    )


async def reset(
    runtime: Runtime,
    token: str,
    new_password: str = NEW_PASSWORD,
    *,
    limits: Throttle | None = None,
) -> User:
    return await recovery.reset_password(
        db=runtime.db,
        passwords=runtime.passwords,
        outbox=runtime.outbox,
        throttle=limits or runtime.throttle,
        token=token,
        new_password=new_password,
    )


async def request_change(
    runtime: Runtime,
    user_id: int,
    new_email: str,
    password: str = DEFAULT_PASSWORD,
    *,
    limits: Throttle | None = None,
) -> None:
    await recovery.request_email_change(
        db=runtime.db,
        passwords=runtime.passwords,
        outbox=runtime.outbox,
        policy=runtime.email,
        throttle=limits or runtime.throttle,
        user_id=user_id,
        new_email=new_email,
        password=password,
        ip_address=IP,
    )


async def confirm_change(runtime: Runtime, token: str) -> User:
    return await recovery.confirm_email_change(db=runtime.db, outbox=runtime.outbox, token=token)


async def verify(runtime: Runtime, token: str) -> User:
    return await recovery.verify_email(db=runtime.db, token=token)


async def set_verified(runtime: Runtime, user_id: int) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == user_id).values(email_verified_at=utcnow()))


# --- send_verification -------------------------------------------------------------------------


async def test_send_verification_to_the_signed_in_user(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await send_verification(runtime, user_id=ann.id, email="ignored@example.com")
    assert kinds(await messages(runtime.db)) == [(VERIFY_EMAIL, "ann@example.com", "pending")]
    [row] = await token_rows(runtime.db)
    assert (row.user_id, row.purpose, row.email) == (ann.id, VERIFY_EMAIL, "ann@example.com")


async def test_send_verification_to_a_verified_user(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await set_verified(runtime, ann.id)
    limits = throttle(address="1/hour")
    with pytest.raises(Rejected) as caught:
        await send_verification(runtime, user_id=ann.id, limits=limits)
    assert codes_and_fields(caught.value) == [(ProblemCode.EMAIL_ALREADY_VERIFIED, ())]
    assert await messages(runtime.db) == []
    # Not counted against the address.
    assert (await limits.check(Rule.EMAIL_ADDRESS, "ann@example.com")).allowed


async def test_send_verification_signed_out_needs_an_email(runtime: Runtime) -> None:
    for email in (None, ""):
        with pytest.raises(Rejected) as caught:
            await send_verification(runtime, email=email)
        assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_INPUT, ("input", "email"))]
    with pytest.raises(Rejected) as invalid:
        await send_verification(runtime, email="nope")
    assert codes_and_fields(invalid.value) == [(ProblemCode.INVALID_EMAIL, ("input", "email"))]
    assert await messages(runtime.db) == []


async def test_send_verification_by_address(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")  # unverified, active: sent
    vic = await create_account(runtime, "vic")
    dan = await create_account(runtime, "dan")
    await set_verified(runtime, vic.id)
    await disable(runtime, dan.id)
    for address in ("ANN@example.com", "vic@example.com", "dan@example.com", "no@example.com"):
        await send_verification(runtime, email=address)
    assert kinds(await messages(runtime.db)) == [
        (VERIFY_EMAIL, "ann@example.com", "pending"),
        (VERIFY_EMAIL, "vic@example.com", "suppressed"),
        (VERIFY_EMAIL, "dan@example.com", "suppressed"),
        (VERIFY_EMAIL, "no@example.com", "suppressed"),
    ]
    assert [r.user_id for r in await token_rows(runtime.db)] == [ann.id, None, None, None]


async def test_send_verification_counts_the_ip_then_the_address(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    limits = throttle(address="1/hour", ip="2/hour")
    await send_verification(runtime, user_id=ann.id, limits=limits)
    with pytest.raises(Throttled) as by_address:
        await send_verification(runtime, email="Ann@Example.com", limits=limits)
    assert by_address.value.reason == Rule.EMAIL_ADDRESS.value
    assert 0 < by_address.value.retry_after <= 3600
    # The ip's window is full now (both attempts counted there): refused before the address.
    with pytest.raises(Throttled) as by_ip:
        await send_verification(runtime, email="other@example.com", limits=limits)
    assert by_ip.value.reason == Rule.EMAIL_IP.value
    assert (await limits.check(Rule.EMAIL_ADDRESS, "other@example.com")).allowed
    # Another client has its own ip window.
    await send_verification(runtime, email="other@example.com", limits=limits, ip_address="::1")
    assert len(await messages(runtime.db)) == 2


async def test_send_verification_logs_a_request_by_address(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await create_account(runtime, "ann")
    caplog.set_level(logging.INFO, logger="usergraph.security")
    await send_verification(runtime, email="ann@example.com")
    await send_verification(runtime, email="no@example.com")
    security = [r.getMessage() for r in caplog.records if r.name == "usergraph.security"]
    assert security == [
        f"event=verify_email_requested user_id={ann.id}",
        "event=verify_email_requested user_id=-",
    ]


# --- request_password_reset --------------------------------------------------------------------


async def test_request_password_reset_rows(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")  # unverified: still sent
    dan = await create_account(runtime, "dan")
    await disable(runtime, dan.id)
    for address in ("ann@example.com", "dan@example.com", "no@example.com"):
        await request_reset(runtime, address)
    assert kinds(await messages(runtime.db)) == [
        (RESET_PASSWORD, "ann@example.com", "pending"),
        (RESET_PASSWORD, "dan@example.com", "suppressed"),
        (RESET_PASSWORD, "no@example.com", "suppressed"),
    ]
    rows = await token_rows(runtime.db)
    assert [(r.user_id, r.email, r.used_at) for r in rows] == [
        (ann.id, "ann@example.com", None),
        (None, "dan@example.com", None),
        (None, "no@example.com", None),
    ]


async def test_request_password_reset_does_not_count_an_invalid_address(runtime: Runtime) -> None:
    limits = throttle(ip="1/hour")
    with pytest.raises(Rejected) as caught:
        await request_reset(runtime, "not an address", limits=limits)
    assert codes_and_fields(caught.value) == [(ProblemCode.INVALID_EMAIL, ("input", "email"))]
    assert (await limits.check(Rule.EMAIL_IP, IP)).allowed


async def test_request_password_reset_throttled_writes_nothing(runtime: Runtime) -> None:
    await create_account(runtime, "ann")
    limits = throttle(address="1/hour")
    await request_reset(runtime, "ann@example.com", limits=limits)
    with pytest.raises(Throttled):
        await request_reset(runtime, "ann@example.com", limits=limits)
    assert len(await messages(runtime.db)) == 1
    assert len(await token_rows(runtime.db)) == 1


# --- verify_email ------------------------------------------------------------------------------


async def test_verify_email(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    ann = await create_account(runtime, "ann")
    await send_verification(runtime, user_id=ann.id)
    token = await latest_token(runtime.db, "ann@example.com", VERIFY_EMAIL)
    caplog.set_level(logging.INFO, logger="usergraph.security")
    before = utcnow()
    user = await verify(runtime, token)
    assert user.id == ann.id
    stored = await stored_user(runtime, ann.id)
    assert stored.email_verified_at is not None and stored.email_verified_at >= before
    assert [r.getMessage() for r in caplog.records if r.name == "usergraph.security"] == [
        f"event=email_verified user_id={ann.id}"
    ]
    with pytest.raises(Rejected) as caught:
        await verify(runtime, token)
    assert codes_and_fields(caught.value) == INVALID


async def test_verify_email_keeps_an_earlier_verification_time(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await send_verification(runtime, user_id=ann.id)
    token = await latest_token(runtime.db, "ann@example.com", VERIFY_EMAIL)
    earlier = utcnow() - timedelta(days=3)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == ann.id).values(email_verified_at=earlier))
    await verify(runtime, token)
    assert (await stored_user(runtime, ann.id)).email_verified_at == earlier


async def test_verify_email_for_an_address_the_account_no_longer_has(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await send_verification(runtime, user_id=ann.id)
    token = await latest_token(runtime.db, "ann@example.com", VERIFY_EMAIL)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(
            update(User)
            .where(User.id == ann.id)
            .values(email="ann2@example.com", email_key="ann2@example.com")
        )
    with pytest.raises(Rejected) as caught:
        await verify(runtime, token)
    assert codes_and_fields(caught.value) == INVALID
    assert (await stored_user(runtime, ann.id)).email_verified_at is None
    # Refused in the transaction: the token was not used up either.
    [row] = await token_rows(runtime.db)
    assert row.used_at is None


async def test_verify_email_in_another_case_is_the_same_address(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await send_verification(runtime, user_id=ann.id)
    token = await latest_token(runtime.db, "ann@example.com", VERIFY_EMAIL)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(User).where(User.id == ann.id).values(email="Ann@example.com"))
    assert (await verify(runtime, token)).id == ann.id


# --- reset_password ----------------------------------------------------------------------------


async def test_reset_password(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    signed_in = await sign_up(runtime, "ann")
    await sign_in(runtime, "ann")
    user_id = signed_in.user.id
    assert await open_session_count(runtime, user_id) == 2
    await request_reset(runtime, "ann@example.com")
    token = await latest_token(runtime.db, "ann@example.com", RESET_PASSWORD)
    caplog.set_level(logging.INFO, logger="usergraph.security")

    user = await reset(runtime, token)
    assert user.id == user_id
    assert await open_session_count(runtime, user_id) == 0
    stored = await stored_user(runtime, user_id)
    assert stored.email_verified_at is not None
    assert kinds(await messages(runtime.db))[-1] == (
        "password_changed",
        "ann@example.com",
        "pending",
    )
    assert [r.getMessage() for r in caplog.records if r.name == "usergraph.security"] == [
        f"event=password_reset user_id={user_id} sessions_ended=2"
    ]
    await sign_in(runtime, "ann", NEW_PASSWORD)
    with pytest.raises(Rejected) as old:
        await sign_in(runtime, "ann", DEFAULT_PASSWORD)
    assert codes_and_fields(old.value) == [(ProblemCode.INVALID_CREDENTIALS, ())]


async def test_reset_password_refusals_use_nothing_up(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await request_reset(runtime, "ann@example.com")
    token = await latest_token(runtime.db, "ann@example.com", RESET_PASSWORD)
    with pytest.raises(Rejected) as weak:
        await reset(runtime, token, "ann")
    assert codes_and_fields(weak.value) == [(ProblemCode.WEAK_PASSWORD, ("input", "newPassword"))]
    with pytest.raises(Rejected) as wrong_purpose:
        await verify(runtime, token)
    assert codes_and_fields(wrong_purpose.value) == INVALID
    [row] = await token_rows(runtime.db)
    assert row.used_at is None
    assert (await stored_user(runtime, ann.id)).email_verified_at is None
    assert len(await messages(runtime.db)) == 1
    await reset(runtime, token)


async def test_reset_password_clears_the_accounts_lockout(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    limits = throttle(login="2/minute")
    for _ in range(2):
        await limits.hit(Rule.LOGIN_ACCOUNT, account_key(ann.id))
    assert not (await limits.check(Rule.LOGIN_ACCOUNT, account_key(ann.id))).allowed
    await request_reset(runtime, "ann@example.com")
    await reset(
        runtime, await latest_token(runtime.db, "ann@example.com", RESET_PASSWORD), limits=limits
    )
    assert (await limits.check(Rule.LOGIN_ACCOUNT, account_key(ann.id))).allowed


async def test_reset_password_retires_the_other_reset_links(runtime: Runtime) -> None:
    await create_account(runtime, "ann")
    await request_reset(runtime, "ann@example.com")
    token = await latest_token(runtime.db, "ann@example.com", RESET_PASSWORD)
    await reset(runtime, token)
    [row] = await token_rows(runtime.db, RESET_PASSWORD)
    assert row.used_at is not None
    with pytest.raises(Rejected) as caught:
        await reset(runtime, token, "yet another passphrase 7")
    assert codes_and_fields(caught.value) == INVALID


async def test_reset_password_does_not_verify_an_address_the_link_was_not_sent_to(
    runtime: Runtime,
) -> None:
    ann = await create_account(runtime, "ann")
    await request_reset(runtime, "ann@example.com")
    token = await latest_token(runtime.db, "ann@example.com", RESET_PASSWORD)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(
            update(User)
            .where(User.id == ann.id)
            .values(email="ann2@example.com", email_key="ann2@example.com")
        )
    await reset(runtime, token)
    assert (await stored_user(runtime, ann.id)).email_verified_at is None
    # The notice goes to the current address.
    assert kinds(await messages(runtime.db))[-1] == (
        "password_changed",
        "ann2@example.com",
        "pending",
    )


# --- request_email_change / confirm_email_change ------------------------------------------------


async def test_request_email_change_rows(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    ann = await create_account(runtime, "ann")
    caplog.set_level(logging.INFO, logger="usergraph.security")
    await request_change(runtime, ann.id, "Ann.New@Example.com")
    assert kinds(await messages(runtime.db)) == [
        (CHANGE_EMAIL, "Ann.New@example.com", "pending"),
        ("email_change_requested", "ann@example.com", "pending"),
    ]
    [row] = await token_rows(runtime.db)
    assert (row.user_id, row.purpose, row.email) == (ann.id, CHANGE_EMAIL, "Ann.New@example.com")
    assert (await stored_user(runtime, ann.id)).email == "ann@example.com"
    assert [r.getMessage() for r in caplog.records if r.name == "usergraph.security"] == [
        f"event=email_change_requested user_id={ann.id}"
    ]


async def test_request_email_change_refusals_in_order(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await create_account(runtime, "bob")
    limits = throttle(login="3/minute")

    async def refused(new_email: str, password: str = DEFAULT_PASSWORD) -> list[object]:
        with pytest.raises(Rejected) as caught:
            await request_change(runtime, ann.id, new_email, password, limits=limits)
        return list(codes_and_fields(caught.value))

    # Address problems first, without a password check (nothing counted).
    assert await refused("nope", "wrong") == [(ProblemCode.INVALID_EMAIL, ("input", "newEmail"))]
    assert await refused("ANN@example.com", "wrong") == [
        (ProblemCode.INVALID_INPUT, ("input", "newEmail"))
    ]
    assert (await limits.check(Rule.LOGIN_ACCOUNT, "ann")).allowed
    # Then the password, before telling whether the address is taken.
    assert await refused("bob@example.com", "wrong") == [
        (ProblemCode.INVALID_CREDENTIALS, ("input", "password"))
    ]
    assert await refused("bob@example.com") == [(ProblemCode.EMAIL_TAKEN, ("input", "newEmail"))]
    assert await messages(runtime.db) == []
    assert await token_rows(runtime.db) == []


async def test_request_email_change_wrong_passwords_lock_the_account(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    limits = throttle(login="2/minute")
    for _ in range(2):
        with pytest.raises(Rejected):
            await request_change(runtime, ann.id, "new@example.com", "wrong", limits=limits)
    with pytest.raises(Rejected) as caught:
        await request_change(runtime, ann.id, "new@example.com", limits=limits)
    [problem] = caught.value.problems
    assert (problem.code, problem.field) == (ProblemCode.ACCOUNT_LOCKED, ("input", "password"))
    assert problem.retry_after is not None and 0 < problem.retry_after <= 60
    assert not (await limits.check(Rule.LOGIN_ACCOUNT, account_key(ann.id))).allowed


async def test_confirm_email_change(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    ann = await create_account(runtime, "ann")
    await send_verification(runtime, user_id=ann.id)
    verification = await latest_token(runtime.db, "ann@example.com", VERIFY_EMAIL)
    await request_change(runtime, ann.id, "Ann.New@example.com")
    token = await latest_token(runtime.db, "Ann.New@example.com", CHANGE_EMAIL)
    caplog.set_level(logging.INFO, logger="usergraph.security")
    before = utcnow()

    user = await confirm_change(runtime, token)
    stored = await stored_user(runtime, ann.id)
    assert (user.id, stored.email, stored.email_key) == (
        ann.id,
        "Ann.New@example.com",
        "ann.new@example.com",
    )
    assert stored.email_verified_at is not None and stored.email_verified_at >= before
    assert stored.updated_at >= before
    assert kinds(await messages(runtime.db))[-1] == ("email_changed", "ann@example.com", "pending")
    assert "Ann.New@example.com" in (await messages(runtime.db))[-1].text_body
    assert [r.getMessage() for r in caplog.records if r.name == "usergraph.security"] == [
        f"event=email_changed user_id={ann.id}"
    ]
    # The old address's verification link is retired; the change link is used.
    with pytest.raises(Rejected) as old_link:
        await verify(runtime, verification)
    assert codes_and_fields(old_link.value) == INVALID
    with pytest.raises(Rejected) as again:
        await confirm_change(runtime, token)
    assert codes_and_fields(again.value) == INVALID
    await sign_in(runtime, "ann.new@example.com")


async def test_confirm_email_change_to_an_address_taken_meanwhile(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await request_change(runtime, ann.id, "new@example.com")
    token = await latest_token(runtime.db, "new@example.com", CHANGE_EMAIL)
    await sign_up(runtime, "bob", email="NEW@example.com")
    count = len(await messages(runtime.db))
    with pytest.raises(Rejected) as caught:
        await confirm_change(runtime, token)
    assert codes_and_fields(caught.value) == [(ProblemCode.EMAIL_TAKEN, ("input", "token"))]
    assert (await stored_user(runtime, ann.id)).email == "ann@example.com"
    assert len(await messages(runtime.db)) == count
    [row] = await token_rows(runtime.db, CHANGE_EMAIL)
    assert row.used_at is None
