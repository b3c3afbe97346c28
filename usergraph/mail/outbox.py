"""The transactional outbox: an email is a row written in the transaction that asks for it.

So no email is lost when the process dies or the mail server is down (the row waits), and none
is sent for a transaction that rolled back (the row never existed). The sender (sender.py)
claims due rows, sends them and settles them: at least once, with retries that back off.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from usergraph.db import outbox as outbox_queries
from usergraph.db.models import utcnow
from usergraph.mail.messages import Messages


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 30
    max_seconds: float = 3600

    def next_attempt(self, attempts: int, now: datetime) -> datetime | None:
        """When to try again after `attempts` failures; None once they are used up.

        Exponential backoff with full jitter between half and all of the step, so senders that
        failed together do not retry together.
        """
        if attempts >= self.max_attempts:
            return None
        step = min(self.base_seconds * 2 ** (attempts - 1), self.max_seconds)
        return now + timedelta(seconds=step * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)


@dataclass
class Outbox:
    """What services use to send mail; the sender waits on `wake`."""

    messages: Messages
    _wake: asyncio.Event | None = field(default=None, init=False)

    async def enqueue(
        self,
        s: AsyncSession,
        *,
        kind: str,
        to_address: str,
        suppressed: bool = False,
        **context: Any,
    ) -> None:
        """Render the message and write it in s's transaction.

        suppressed: write the row but never send it (a request about an address no account
        has does the same work as one about a real account).
        """
        rendered = self.messages.render(kind, **context)
        await outbox_queries.add_message(
            s,
            kind=kind,
            to_address=to_address,
            subject=rendered.subject,
            text_body=rendered.text,
            html_body=rendered.html,
            status=outbox_queries.SUPPRESSED if suppressed else outbox_queries.PENDING,
            now=utcnow(),
        )

    def wake(self) -> None:
        """Tell this process's sender that mail was committed (else it finds it on its next
        poll)."""
        if self._wake is not None:
            self._wake.set()

    def wake_event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake
