"""One-time tokens sent by email: issuing one (with its message, in the caller's
transaction) and redeeming one.

A token is 256 random bits, shown only in the email; the table keeps its SHA-256. Issuing a
token retires the older open ones of the same purpose and user. A used, retired, unknown or
wrong-purpose token is INVALID_TOKEN; an expired one EXPIRED_TOKEN.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.auth.tokens import MAX_EMAIL_TOKEN_LENGTH, hash_token, new_email_token
from usergraph.db import email_tokens as token_queries
from usergraph.db.models import EmailToken, User, utcnow
from usergraph.mail.outbox import Outbox
from usergraph.services.errors import ProblemCode, Rejected
from usergraph.services.validation import email_key

VERIFY_EMAIL, RESET_PASSWORD, CHANGE_EMAIL = "verify_email", "reset_password", "change_email"
Verification = Literal["off", "optional", "required"]


@dataclass(frozen=True, slots=True)
class EmailPolicy:
    verification: Verification = "optional"
    verify_ttl: timedelta = timedelta(hours=24)
    reset_ttl: timedelta = timedelta(hours=1)
    change_ttl: timedelta = timedelta(hours=24)

    @property
    def verification_required(self) -> bool:
        """No sign-in until the address is verified."""
        return self.verification == "required"

    def ttl(self, purpose: str) -> timedelta:
        return {
            VERIFY_EMAIL: self.verify_ttl,
            RESET_PASSWORD: self.reset_ttl,
            CHANGE_EMAIL: self.change_ttl,
        }[purpose]


async def issue(
    s: AsyncSession,
    *,
    outbox: Outbox,
    policy: EmailPolicy,
    purpose: str,
    user: User | None,
    to_address: str,
) -> None:
    """Retire the user's open tokens of purpose, add a new one and write its email.

    user None (an address no account has): the same rows are written, the token matches no
    account and the message is never sent.
    """
    now = utcnow()
    ttl = policy.ttl(purpose)
    user_id = user.id if user is not None else None
    await token_queries.retire_tokens(s, user_id=user_id, purpose=purpose, now=now)
    token = new_email_token()
    await token_queries.add_token(
        s,
        user_id=user_id,
        purpose=purpose,
        token_hash=hash_token(token),
        email=to_address,
        now=now,
        expires_at=now + ttl,
    )
    await outbox.enqueue(
        s,
        kind=purpose,
        to_address=to_address,
        suppressed=user is None,
        username=user.username if user is not None else "",
        link=outbox.messages.link(purpose, token),
        hours=max(1, int(ttl.total_seconds() // 3600)),  # never more than the truth
    )


def invalid_token(message: str = "This link is not valid (used, replaced or unknown).") -> Rejected:
    return Rejected.one(ProblemCode.INVALID_TOKEN, message, "input", "token")


async def redeem(s: AsyncSession, *, token: str, purpose: str) -> tuple[EmailToken, User]:
    """Mark the token used (in s's transaction) and return it with its user."""
    row, user = await check(s, token=token, purpose=purpose, lock=True)
    row.used_at = utcnow()
    return row, user


async def check(
    s: AsyncSession, *, token: str, purpose: str, lock: bool = False
) -> tuple[EmailToken, User]:
    """The token and its user, or Rejected (INVALID_TOKEN, EXPIRED_TOKEN); lock: until the
    transaction ends."""
    if not token or len(token) > MAX_EMAIL_TOKEN_LENGTH:
        raise invalid_token()
    row = await token_queries.get_token(s, hash_token(token), lock=lock)
    if row is None or row.purpose != purpose or row.used_at is not None or row.user_id is None:
        raise invalid_token()
    now = utcnow()
    if row.expires_at <= now:
        raise Rejected.one(
            ProblemCode.EXPIRED_TOKEN, "This link has expired; ask for a new one.", "input", "token"
        )
    user = await s.get(User, row.user_id)
    if user is None:
        raise invalid_token()
    return row, user


def sent_to_current_address(row: EmailToken, user: User) -> bool:
    """Whether the token went to the address the account has now (not one it changed from)."""
    return email_key(row.email) == user.email_key


async def retire(s: AsyncSession, *, user_id: int, purpose: str) -> int:
    return await token_queries.retire_tokens(s, user_id=user_id, purpose=purpose, now=utcnow())
