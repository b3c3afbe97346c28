"""Sending the outbox: claim due rows, send each, settle it; retry failures with backoff.

Mailers: `log` (development: the message, link included, goes to the log at INFO) and `smtp`
(aiosmtplib; none, STARTTLS or TLS; optional login). Delivery is at least once: a message whose
sending succeeded but whose row could not be marked sent is sent again, with the same
Message-ID (derived from the row), so a reader's mail client can recognise the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from usergraph.db import outbox as outbox_queries
from usergraph.db.engine import Database, unreachable
from usergraph.db.models import OutboxMessage, utcnow
from usergraph.logs import outages
from usergraph.mail.outbox import Outbox, RetryPolicy

log = logging.getLogger("usergraph.mail")

CLAIM_BATCH = 20
PRUNE_EVERY_SECONDS = 600


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class PermanentFailure(Exception):
    """The server refused the message for good (a 5xx): retrying would not help."""


class LogMailer:
    """Development: every message goes to the log, so each flow can be followed."""

    async def send(self, message: EmailMessage) -> None:
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        log.info(
            "mail to=%s subject=%r message_id=%s\n%s",
            message["To"],
            message["Subject"],
            message["Message-ID"],
            text,
        )


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    security: str  # none | starttls | tls
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    timeout: float = 30

    @functools.cached_property
    def _tls_context(self) -> ssl.SSLContext:
        # Made at the first send, then kept: loading the CAs for every message is wasted work.
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    async def send(self, message: EmailMessage) -> None:
        context = self._tls_context
        try:
            await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                tls_context=context,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure(str(exc)) from exc
        except aiosmtplib.SMTPDataError as exc:
            # The message itself refused for good. A 5xx before it (530 "STARTTLS first", 535
            # a bad login, a refused sender) is the relay's settings: retried, never dropped.
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"{exc.code} {exc.message}") from exc
            raise


def message_id(row: OutboxMessage, mail_from: str) -> str:
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    return f"<usergraph.{row.id}.{int(row.created_at.timestamp())}@{domain}>"


def build_message(row: OutboxMessage, mail_from: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = row.to_address
    message["Subject"] = row.subject
    message["Date"] = formatdate(row.created_at.timestamp(), usegmt=True)
    message["Message-ID"] = message_id(row, mail_from)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(row.text_body)
    message.add_alternative(row.html_body, subtype="html")
    return message


@dataclass
class Sender:
    db: Database
    mailer: Mailer
    outbox: Outbox
    mail_from: str
    retry: RetryPolicy
    claim_seconds: float = 120
    poll_seconds: float = 2.0
    retention: timedelta = timedelta(days=7)

    async def send_due(self) -> int:
        """Send what is due now; return how many were sent."""
        sent = 0
        while True:
            now = utcnow()
            async with self.db.read_sessionmaker() as s:
                if not await outbox_queries.any_due(s, now=now):
                    return sent
            async with self.db.sessionmaker() as s, s.begin():
                claimed = await outbox_queries.claim_due(
                    s,
                    now=now,
                    claim_until=now + timedelta(seconds=self.claim_seconds),
                    limit=CLAIM_BATCH,
                )
            for row in claimed:
                sent += await self._send_one(row)
            if len(claimed) < CLAIM_BATCH:
                return sent

    async def _send_one(self, row: OutboxMessage) -> int:
        attempts = row.attempts + 1
        try:
            await self.mailer.send(build_message(row, self.mail_from))
        except Exception as exc:  # any failure of the relay or the network: retry or give up
            permanent = isinstance(exc, PermanentFailure)
            retry_at = None if permanent else self.retry.next_attempt(attempts, utcnow())
            error = f"{type(exc).__name__}: {exc}"[:500]
            async with self.db.sessionmaker() as s, s.begin():
                await outbox_queries.mark_attempt_failed(
                    s, message_id=row.id, attempts=attempts, error=error, retry_at=retry_at
                )
            if retry_at is None:
                log.error(
                    "mail failed for good id=%s kind=%s attempts=%s error=%s",
                    row.id,
                    row.kind,
                    attempts,
                    error,
                )
            else:
                log.warning(
                    "mail attempt failed id=%s kind=%s attempts=%s retry_at=%s error=%s",
                    row.id,
                    row.kind,
                    attempts,
                    retry_at.isoformat(),
                    error,
                )
            return 0
        async with self.db.sessionmaker() as s, s.begin():
            await outbox_queries.mark_sent(s, message_id=row.id, now=utcnow())
        log.info("mail sent id=%s kind=%s attempts=%s", row.id, row.kind, attempts)
        return 1

    async def prune(self) -> int:
        async with self.db.sessionmaker() as s, s.begin():
            return await outbox_queries.prune(s, before=utcnow() - self.retention)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until stop is set: at once when woken, else every poll_seconds."""
        wake = self.outbox.wake_event()
        pruned_at = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            wake.clear()
            try:
                await self.send_due()
                if loop.time() - pruned_at > PRUNE_EVERY_SECONDS:
                    pruned_at = loop.time()
                    await self.prune()
            except Exception as error:  # the database may be down a while: keep the task alive
                if unreachable(error):
                    outages.report("database", error)  # once per outage, not every poll
                else:
                    log.exception("mail sender pass failed; trying again")
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED),
                    timeout=self.poll_seconds,
                )
            for waiter in waiters:
                waiter.cancel()
