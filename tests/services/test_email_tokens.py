"""services/email_tokens.py against a real database: the lifetimes, issuing (with its message,
in the caller's transaction), checking and redeeming, and every refusal."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import delete, update

from tests.helpers import codes_and_fields, create_account
from tests.mail_rows import kinds, messages, token_in, token_rows
from usergraph.db.models import EmailToken, User, utcnow
from usergraph.runtime import Runtime
from usergraph.services import email_tokens
from usergraph.services.email_tokens import (
    CHANGE_EMAIL,
    RESET_PASSWORD,
    VERIFY_EMAIL,
    EmailPolicy,
)
from usergraph.services.errors import ProblemCode, Rejected

INVALID = [(ProblemCode.INVALID_TOKEN, ("input", "token"))]
EXPIRED = [(ProblemCode.EXPIRED_TOKEN, ("input", "token"))]


def test_policy_lifetimes_by_default() -> None:
    policy = EmailPolicy()
    assert policy.verification == "optional"
    assert policy.ttl(VERIFY_EMAIL) == timedelta(hours=24)
    assert policy.ttl(RESET_PASSWORD) == timedelta(hours=1)
    assert policy.ttl(CHANGE_EMAIL) == timedelta(hours=24)


def test_policy_lifetimes_are_per_purpose() -> None:
    policy = EmailPolicy(
        verify_ttl=timedelta(minutes=1),
        reset_ttl=timedelta(minutes=2),
        change_ttl=timedelta(minutes=3),
    )
    assert [policy.ttl(p) for p in (VERIFY_EMAIL, RESET_PASSWORD, CHANGE_EMAIL)] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=3),
    ]
    with pytest.raises(KeyError):
        policy.ttl("login")


async def test_the_runtime_policy_comes_from_the_settings(runtime: Runtime) -> None:
    # tests.environment.make_settings leaves the defaults.
    assert runtime.email == EmailPolicy()


async def issue(
    runtime: Runtime,
    user: User | None,
    purpose: str = VERIFY_EMAIL,
    *,
    to_address: str | None = None,
    policy: EmailPolicy | None = None,
) -> str:
    """Issue a token; return it (read from its message)."""
    async with runtime.db.sessionmaker() as s, s.begin():
        await email_tokens.issue(
            s,
            outbox=runtime.outbox,
            policy=policy or runtime.email,
            purpose=purpose,
            user=user,
            to_address=to_address or (user.email if user else "nobody@example.com"),
        )
    return token_in((await messages(runtime.db))[-1])


async def check(runtime: Runtime, token: str, purpose: str = VERIFY_EMAIL) -> EmailToken:
    async with runtime.db.sessionmaker() as s:
        row, _user = await email_tokens.check(s, token=token, purpose=purpose)
    return row


async def refusal(runtime: Runtime, token: str, purpose: str = VERIFY_EMAIL) -> Rejected:
    async with runtime.db.sessionmaker() as s:
        with pytest.raises(Rejected) as caught:
            await email_tokens.check(s, token=token, purpose=purpose)
    return caught.value


async def test_issue_writes_the_token_and_its_message(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    policy = EmailPolicy(reset_ttl=timedelta(hours=3))
    before = utcnow()
    token = await issue(runtime, ann, RESET_PASSWORD, policy=policy)
    after = utcnow()
    assert token.startswith("uge_") and len(token) == 4 + 43
    [row] = await token_rows(runtime.db)
    assert (row.purpose, row.user_id, row.email, row.used_at) == (
        RESET_PASSWORD,
        ann.id,
        "ann@example.com",
        None,
    )
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert before <= row.created_at <= after
    assert row.expires_at - row.created_at == timedelta(hours=3)
    [message] = await messages(runtime.db)
    assert kinds([message]) == [(RESET_PASSWORD, "ann@example.com", "pending")]
    assert "Hello ann," in message.text_body
    assert "expires in 3 hours" in message.text_body
    assert f"/reset-password#token={token}" in message.text_body


async def test_issue_rounds_the_hours_in_the_message(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await issue(runtime, ann, policy=EmailPolicy(verify_ttl=timedelta(minutes=10)))
    await issue(runtime, ann, policy=EmailPolicy(verify_ttl=timedelta(minutes=150)))
    short, long = await messages(runtime.db)
    assert "expires in 1 hour." in short.text_body  # at least 1, and singular
    assert "expires in 2 hours" in long.text_body  # 2.5 rounds to even


async def test_issue_to_another_address(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await issue(runtime, ann, CHANGE_EMAIL, to_address="ann.new@example.com")
    [row] = await token_rows(runtime.db)
    assert (row.user_id, row.email) == (ann.id, "ann.new@example.com")
    assert kinds(await messages(runtime.db)) == [(CHANGE_EMAIL, "ann.new@example.com", "pending")]


async def test_issue_retires_older_tokens_of_the_same_purpose_and_user_only(
    runtime: Runtime,
) -> None:
    ann = await create_account(runtime, "ann")
    bob = await create_account(runtime, "bob")
    ann_verify = await issue(runtime, ann, VERIFY_EMAIL)
    ann_reset = await issue(runtime, ann, RESET_PASSWORD)
    bob_verify = await issue(runtime, bob, VERIFY_EMAIL)
    ann_verify_again = await issue(runtime, ann, VERIFY_EMAIL)

    rows = await token_rows(runtime.db)
    assert [(r.purpose, r.user_id, r.used_at is not None) for r in rows] == [
        (VERIFY_EMAIL, ann.id, True),
        (RESET_PASSWORD, ann.id, False),
        (VERIFY_EMAIL, bob.id, False),
        (VERIFY_EMAIL, ann.id, False),
    ]
    assert rows[0].used_at is not None and rows[0].used_at >= rows[3].created_at
    assert codes_and_fields(await refusal(runtime, ann_verify)) == INVALID
    assert (await check(runtime, ann_reset, RESET_PASSWORD)).user_id == ann.id
    assert (await check(runtime, bob_verify)).user_id == bob.id
    assert (await check(runtime, ann_verify_again)).user_id == ann.id


async def test_issue_for_no_account_writes_the_same_rows_suppressed(runtime: Runtime) -> None:
    token = await issue(runtime, None, RESET_PASSWORD, to_address="nobody@example.com")
    [row] = await token_rows(runtime.db)
    assert (row.purpose, row.user_id, row.email, row.used_at) == (
        RESET_PASSWORD,
        None,
        "nobody@example.com",
        None,
    )
    assert row.expires_at - row.created_at == timedelta(hours=1)
    [message] = await messages(runtime.db)
    assert kinds([message]) == [(RESET_PASSWORD, "nobody@example.com", "suppressed")]
    assert message.sent_at is not None  # never to be claimed
    assert "Hello ," in message.text_body
    # Its token matches no account.
    assert codes_and_fields(await refusal(runtime, token, RESET_PASSWORD)) == INVALID


async def test_issue_for_no_account_touches_no_other_token(runtime: Runtime) -> None:
    # Each unknown address's row is left alone by the next request (user_id None must not
    # mean "every token without a user").
    await issue(runtime, None, RESET_PASSWORD, to_address="nobody@example.com")
    await issue(runtime, None, RESET_PASSWORD, to_address="someone.else@example.com")
    rows = await token_rows(runtime.db)
    assert [(r.email, r.used_at) for r in rows] == [
        ("nobody@example.com", None),
        ("someone.else@example.com", None),
    ]


async def test_issue_is_part_of_the_callers_transaction(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    old = await issue(runtime, ann)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with runtime.db.sessionmaker() as s, s.begin():
            await email_tokens.issue(
                s,
                outbox=runtime.outbox,
                policy=runtime.email,
                purpose=VERIFY_EMAIL,
                user=ann,
                to_address=ann.email,
            )
            raise Boom
    # Rolled back: no new token, no message, and the old token was not retired.
    assert len(await token_rows(runtime.db)) == 1
    assert len(await messages(runtime.db)) == 1
    assert (await check(runtime, old)).used_at is None


async def test_check_returns_the_token_and_its_user_without_using_it(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    token = await issue(runtime, ann)
    async with runtime.db.sessionmaker() as s:
        row, user = await email_tokens.check(s, token=token, purpose=VERIFY_EMAIL)
        assert (row.user_id, user.id, user.username) == (ann.id, ann.id, "ann")
    [stored] = await token_rows(runtime.db)
    assert stored.used_at is None
    assert (await check(runtime, token)).id == stored.id


async def test_redeem_uses_the_token_once(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    token = await issue(runtime, ann)
    before = utcnow()
    async with runtime.db.sessionmaker() as s, s.begin():
        row, user = await email_tokens.redeem(s, token=token, purpose=VERIFY_EMAIL)
        assert (row.user_id, user.id) == (ann.id, ann.id)
    [stored] = await token_rows(runtime.db)
    assert stored.used_at is not None and stored.used_at >= before
    async with runtime.db.sessionmaker() as s, s.begin():
        with pytest.raises(Rejected) as caught:
            await email_tokens.redeem(s, token=token, purpose=VERIFY_EMAIL)
    assert codes_and_fields(caught.value) == INVALID


async def test_a_redeem_that_rolls_back_leaves_the_token_open(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    token = await issue(runtime, ann)
    with pytest.raises(RuntimeError):
        async with runtime.db.sessionmaker() as s, s.begin():
            await email_tokens.redeem(s, token=token, purpose=VERIFY_EMAIL)
            raise RuntimeError
    assert (await check(runtime, token)).used_at is None


async def test_every_refusal(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    token = await issue(runtime, ann, VERIFY_EMAIL)
    refusals = {
        "wrong purpose": await refusal(runtime, token, RESET_PASSWORD),
        "unknown": await refusal(runtime, "uge_" + "A" * 43),
        "empty": await refusal(runtime, ""),
        "too long": await refusal(runtime, token + "x" * (129 - len(token))),
    }
    for name, rejected in refusals.items():
        assert codes_and_fields(rejected) == INVALID, name
        assert rejected.problems[0].message == (
            "This link is not valid (used, replaced or unknown)."
        )
    # 128 characters is still looked up (and unknown).
    assert codes_and_fields(await refusal(runtime, "u" * 128)) == INVALID


async def test_an_expired_token(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    token = await issue(runtime, ann)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(EmailToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    rejected = await refusal(runtime, token)
    assert codes_and_fields(rejected) == EXPIRED
    assert rejected.problems[0].message == "This link has expired; ask for a new one."
    # Expiry is checked after use: a used and expired token is INVALID_TOKEN.
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(EmailToken).values(used_at=utcnow()))
    assert codes_and_fields(await refusal(runtime, token)) == INVALID


async def test_a_token_just_before_its_expiry_is_good(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    token = await issue(runtime, ann)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(update(EmailToken).values(expires_at=utcnow() + timedelta(seconds=30)))
    assert (await check(runtime, token)).user_id == ann.id


async def test_a_deleted_accounts_token(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    token = await issue(runtime, ann)
    async with runtime.db.sessionmaker() as s, s.begin():
        await s.execute(delete(User).where(User.id == ann.id))
    assert codes_and_fields(await refusal(runtime, token)) == INVALID


async def test_retire_counts_the_open_tokens_it_retires(runtime: Runtime) -> None:
    ann = await create_account(runtime, "ann")
    await issue(runtime, ann, RESET_PASSWORD)
    await issue(runtime, ann, VERIFY_EMAIL)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await email_tokens.retire(s, user_id=ann.id, purpose=RESET_PASSWORD) == 1
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await email_tokens.retire(s, user_id=ann.id, purpose=RESET_PASSWORD) == 0
    reset, verify = await token_rows(runtime.db)
    assert reset.used_at is not None
    assert verify.used_at is None
