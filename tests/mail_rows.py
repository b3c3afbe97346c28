"""Reading the emails the app wrote: its mail_outbox rows, and the token in a link.

The tests run with mail_sender=False, so every email stays in the outbox (status "pending", or
"suppressed" for a request about an address no account has) with its bodies, and the link in
its text body holds the one-time token (".../verify-email#token=uge_...").
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import select, update

from tests.client import GraphQL
from usergraph.db.engine import Database
from usergraph.db.models import EmailToken, OutboxMessage, utcnow

# The token in a link: uge_ and 43 characters of URL-safe base64 (256 random bits).
TOKEN_IN_LINK = re.compile(r"#token=(uge_[A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])")
# Any email token anywhere (in an answer, a log line).
ANY_TOKEN = re.compile(r"uge_[A-Za-z0-9_-]{20,}")


def db_of(gql: GraphQL) -> Database:
    """The database of the app gql talks to."""
    db: Database = gql.app.state.runtime.db
    return db


async def messages(db: Database) -> list[OutboxMessage]:
    """Every outbox row, oldest first."""
    async with db.read_sessionmaker() as s:
        return list((await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def messages_to(db: Database, address: str, kind: str | None = None) -> list[OutboxMessage]:
    """The outbox rows to an address (exactly as written), oldest first; of one kind if given."""
    query = select(OutboxMessage).where(OutboxMessage.to_address == address)
    if kind is not None:
        query = query.where(OutboxMessage.kind == kind)
    async with db.read_sessionmaker() as s:
        return list((await s.scalars(query.order_by(OutboxMessage.id))).all())


def kinds(rows: list[OutboxMessage]) -> list[tuple[str, str, str]]:
    """(kind, to_address, status) of each row."""
    return [(row.kind, row.to_address, row.status) for row in rows]


def token_in(message: OutboxMessage) -> str:
    """The one token in a message's link (the same in its text and HTML parts)."""
    found: list[str] = TOKEN_IN_LINK.findall(message.text_body)
    [token] = found
    assert TOKEN_IN_LINK.findall(message.html_body) == [token], message.html_body
    return token


async def latest_token(db: Database, address: str, kind: str) -> str:
    """The token in the latest message of kind to address."""
    rows = await messages_to(db, address, kind)
    assert rows, f"no {kind} message to {address}"
    return token_in(rows[-1])


async def token_rows(db: Database, purpose: str | None = None) -> list[EmailToken]:
    """Every email_tokens row (of one purpose if given), oldest first."""
    query = select(EmailToken)
    if purpose is not None:
        query = query.where(EmailToken.purpose == purpose)
    async with db.read_sessionmaker() as s:
        return list((await s.scalars(query.order_by(EmailToken.id))).all())


async def expire_tokens(
    db: Database, purpose: str, *, ago: timedelta = timedelta(seconds=1)
) -> datetime:
    """Move the expiry of every token of purpose into the past; return the new expiry."""
    expired = utcnow() - ago
    async with db.sessionmaker() as s, s.begin():
        await s.execute(
            update(EmailToken).where(EmailToken.purpose == purpose).values(expires_at=expired)
        )
    return expired
