"""usergraph.mail.outbox and usergraph.db.outbox against a real database.

The retry policy (exponential, jittered, capped, limited); enqueue writes its row in the
caller's transaction, so a rollback leaves no row and nothing is sent; suppressed rows are
never claimed; claims respect due_at and the lease (claimed_until), and on PostgreSQL two
concurrent claims take different rows (SKIP LOCKED); settling a row clears its bodies; pruning
removes old settled rows only. Rows are written with chosen times, so every claim is exact.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from usergraph.db import email_tokens as token_queries
from usergraph.db import outbox as outbox_queries
from usergraph.db.models import EmailToken, OutboxMessage, utcnow
from usergraph.mail import outbox as outbox_module
from usergraph.mail.outbox import Outbox, RetryPolicy
from usergraph.mail.sender import Sender
from usergraph.runtime import Runtime
from usergraph.services import email_tokens

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class RecordingMailer:
    """A mailer that keeps what it is given (what the sender would have sent)."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.sent.append(message)


def sender_for(runtime: Runtime, mailer: RecordingMailer) -> Sender:
    return Sender(
        db=runtime.db,
        mailer=mailer,
        outbox=runtime.outbox,
        mail_from="usergraph <no-reply@id.example>",
        retry=RetryPolicy(max_attempts=3, base_seconds=0.01, max_seconds=0.02),
    )


async def add(
    runtime: Runtime,
    to: str,
    *,
    at: datetime = NOW,
    status: str = outbox_queries.PENDING,
    kind: str = "password_changed",
) -> int:
    """A row written at `at` (created and due then); its id."""
    async with runtime.db.sessionmaker() as s, s.begin():
        row = await outbox_queries.add_message(
            s,
            kind=kind,
            to_address=to,
            subject="Subject",
            text_body=f"text for {to}",
            html_body=f"<p>html for {to}</p>",
            status=status,
            now=at,
        )
        return row.id


async def rows(runtime: Runtime) -> list[OutboxMessage]:
    async with runtime.db.read_sessionmaker() as s:
        return list(await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def row(runtime: Runtime, message_id: int) -> OutboxMessage:
    async with runtime.db.read_sessionmaker() as s:
        found = await s.get(OutboxMessage, message_id)
        assert found is not None
        return found


async def claim(
    runtime: Runtime, *, now: datetime, lease: timedelta = MINUTE, limit: int = 10
) -> list[str]:
    """Claim in a transaction of its own; the claimed rows' addresses, in claim order."""
    async with runtime.db.sessionmaker() as s, s.begin():
        claimed = await outbox_queries.claim_due(s, now=now, claim_until=now + lease, limit=limit)
    return [r.to_address for r in claimed]


# --- RetryPolicy -------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["low", "high"])
def test_retry_backs_off_exponentially_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    asked: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        asked.append((a, b))
        return a if end == "low" else b

    monkeypatch.setattr(outbox_module.random, "uniform", uniform)
    policy = RetryPolicy(max_attempts=6, base_seconds=10, max_seconds=60)
    factor = 0.5 if end == "low" else 1.0
    delays = [
        (policy.next_attempt(attempts, NOW) - NOW).total_seconds()  # type: ignore[operator]
        for attempts in range(1, 6)
    ]
    assert delays == [10 * factor, 20 * factor, 40 * factor, 60 * factor, 60 * factor]
    assert asked == [(0.5, 1.0)] * 5


def test_retry_jitter_stays_within_half_and_all_of_the_step() -> None:
    random.seed(1234)
    policy = RetryPolicy(max_attempts=10, base_seconds=4, max_seconds=100)
    for attempts, step in ((1, 4), (3, 16), (6, 100), (9, 100)):
        delays = {
            (policy.next_attempt(attempts, NOW) - NOW).total_seconds()  # type: ignore[operator]
            for _ in range(300)
        }
        assert min(delays) >= step * 0.5
        assert max(delays) <= step * 1.0
        assert len(delays) > 250  # jittered, not one fixed delay
        assert max(delays) - min(delays) > step * 0.4  # spread over most of the range


def test_retry_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=1, max_seconds=10)
    assert policy.next_attempt(2, NOW) is not None
    assert policy.next_attempt(3, NOW) is None
    assert policy.next_attempt(4, NOW) is None
    assert RetryPolicy(max_attempts=1).next_attempt(1, NOW) is None


def test_retry_defaults() -> None:
    assert RetryPolicy() == RetryPolicy(max_attempts=8, base_seconds=30, max_seconds=3600)


# --- enqueue -----------------------------------------------------------------------------


async def test_enqueue_writes_a_pending_row_in_the_callers_transaction(runtime: Runtime) -> None:
    before = utcnow()
    async with runtime.db.sessionmaker() as s, s.begin():
        await runtime.outbox.enqueue(
            s, kind="password_changed", to_address="ann@example.com", username="ann"
        )
        mine = (await s.scalars(select(OutboxMessage))).all()
        assert [(r.status, r.to_address) for r in mine] == [("pending", "ann@example.com")]
        # Not committed yet: nobody else sees it (nor could a sender claim it).
        assert await rows(runtime) == []
    after = utcnow()
    (written,) = await rows(runtime)
    assert written.kind == "password_changed"
    assert written.status == "pending"
    assert written.subject == "Your usergraph password was changed"
    assert written.text_body.startswith("Hello ann,\n")
    assert written.html_body.startswith("<!doctype html>")
    assert before <= written.created_at <= after
    assert written.due_at == written.created_at
    assert written.attempts == 0
    assert written.claimed_until is None
    assert written.sent_at is None
    assert written.last_error is None


async def test_a_rolled_back_transaction_leaves_no_row_and_sends_nothing(
    runtime: Runtime,
) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with runtime.db.sessionmaker() as s, s.begin():
            await email_tokens.issue(
                s,
                outbox=runtime.outbox,
                policy=runtime.email,
                purpose=email_tokens.RESET_PASSWORD,
                user=None,
                to_address="ann@example.com",
            )
            await runtime.outbox.enqueue(
                s, kind="password_changed", to_address="ann@example.com", username="ann"
            )
            assert len((await s.scalars(select(OutboxMessage))).all()) == 2
            raise Boom
    assert await rows(runtime) == []
    async with runtime.db.read_sessionmaker() as s:
        assert (await s.scalars(select(EmailToken))).all() == []
    mailer = RecordingMailer()
    assert await sender_for(runtime, mailer).send_due() == 0
    assert mailer.sent == []


async def test_a_committed_row_is_sent_once(runtime: Runtime) -> None:
    # The control for the rollback test: the same sender does send a committed row.
    async with runtime.db.sessionmaker() as s, s.begin():
        await runtime.outbox.enqueue(
            s, kind="password_changed", to_address="ann@example.com", username="ann"
        )
    mailer = RecordingMailer()
    sender = sender_for(runtime, mailer)
    assert await sender.send_due() == 1
    assert await sender.send_due() == 0
    assert [m["To"] for m in mailer.sent] == ["ann@example.com"]


async def test_suppressed_rows_are_never_claimed_nor_sent(runtime: Runtime) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await runtime.outbox.enqueue(
            s,
            kind="reset_password",
            to_address="nobody@example.com",
            suppressed=True,
            username="",
            link="https://id.example/reset-password#token=x",
            hours=1,
        )
    (written,) = await rows(runtime)
    assert written.status == "suppressed"
    assert written.sent_at == written.created_at
    # The same rendering work as a real request, so the bodies are there until pruned.
    assert "#token=x" in written.text_body
    later = utcnow() + timedelta(days=1)
    async with runtime.db.read_sessionmaker() as s:
        assert await outbox_queries.any_due(s, now=later) is False
    assert await claim(runtime, now=later) == []
    mailer = RecordingMailer()
    assert await sender_for(runtime, mailer).send_due() == 0
    assert mailer.sent == []
    assert (await row(runtime, written.id)).status == "suppressed"


async def test_an_unknown_address_writes_a_suppressed_row(runtime: Runtime) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await email_tokens.issue(
            s,
            outbox=runtime.outbox,
            policy=runtime.email,
            purpose=email_tokens.RESET_PASSWORD,
            user=None,
            to_address="nobody@example.com",
        )
    (written,) = await rows(runtime)
    assert (written.kind, written.status, written.to_address) == (
        "reset_password",
        "suppressed",
        "nobody@example.com",
    )
    assert "#token=" in written.text_body


async def test_retiring_for_an_unknown_address_matches_nothing(runtime: Runtime) -> None:
    # Found as a bug: `user_id == None` rendered IS NULL, every unknown address's tokens.
    for address in ("nobody@example.com", "nobody-else@example.com"):
        async with runtime.db.sessionmaker() as s, s.begin():
            await email_tokens.issue(
                s,
                outbox=runtime.outbox,
                policy=runtime.email,
                purpose=email_tokens.RESET_PASSWORD,
                user=None,
                to_address=address,
            )
    async with runtime.db.sessionmaker() as s, s.begin():
        retired = await token_queries.retire_tokens(
            s, user_id=None, purpose=email_tokens.RESET_PASSWORD, now=utcnow()
        )
        tokens = (await s.scalars(select(EmailToken).order_by(EmailToken.id))).all()
        used = [token.used_at is not None for token in tokens]
    assert (retired, used) == (0, [False, False])


# --- claim_due ---------------------------------------------------------------------------


async def test_claim_takes_only_due_rows_oldest_first(runtime: Runtime) -> None:
    await add(runtime, "later@example.com", at=NOW + MINUTE)
    await add(runtime, "now@example.com", at=NOW)
    await add(runtime, "earlier@example.com", at=NOW - MINUTE)
    await add(runtime, "sent@example.com", at=NOW - MINUTE, status=outbox_queries.SENT)
    await add(runtime, "failed@example.com", at=NOW - MINUTE, status=outbox_queries.FAILED)
    async with runtime.db.read_sessionmaker() as s:
        assert await outbox_queries.any_due(s, now=NOW - 2 * MINUTE) is False
        assert await outbox_queries.any_due(s, now=NOW - MINUTE) is True
    assert await claim(runtime, now=NOW) == ["earlier@example.com", "now@example.com"]
    assert await claim(runtime, now=NOW + MINUTE / 2) == []
    # "later" is due at NOW + 1 min; the first two are still leased (until NOW + 1 min).
    assert await claim(runtime, now=NOW + MINUTE - timedelta(microseconds=1)) == []


async def test_claim_sets_a_lease_that_expires(runtime: Runtime) -> None:
    message_id = await add(runtime, "ann@example.com", at=NOW)
    assert await claim(runtime, now=NOW, lease=2 * MINUTE) == ["ann@example.com"]
    assert (await row(runtime, message_id)).claimed_until == NOW + 2 * MINUTE
    async with runtime.db.read_sessionmaker() as s:
        # A leased row is not due for anyone else: their poll opens no claim transaction.
        assert await outbox_queries.any_due(s, now=NOW + MINUTE) is False
        assert await outbox_queries.any_due(s, now=NOW + 2 * MINUTE) is True
    assert await claim(runtime, now=NOW + MINUTE) == []
    assert await claim(runtime, now=NOW + 2 * MINUTE - timedelta(microseconds=1)) == []
    # The sender that claimed it died: at the lease's end the row is due again.
    assert await claim(runtime, now=NOW + 2 * MINUTE, lease=MINUTE) == ["ann@example.com"]
    assert (await row(runtime, message_id)).claimed_until == NOW + 3 * MINUTE


async def test_claim_respects_the_limit_and_order(runtime: Runtime) -> None:
    names = [f"u{i}@example.com" for i in range(5)]
    for name in names:
        await add(runtime, name, at=NOW)  # same due_at: the id decides
    assert await claim(runtime, now=NOW, limit=2) == names[:2]
    assert await claim(runtime, now=NOW, limit=2) == names[2:4]
    assert await claim(runtime, now=NOW, limit=2) == names[4:]
    assert await claim(runtime, now=NOW, limit=2) == []


async def test_a_retried_row_is_due_at_its_retry_time(runtime: Runtime) -> None:
    message_id = await add(runtime, "ann@example.com", at=NOW)
    assert await claim(runtime, now=NOW) == ["ann@example.com"]
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_attempt_failed(
            s, message_id=message_id, attempts=1, error="E: down", retry_at=NOW + 5 * MINUTE
        )
    retried = await row(runtime, message_id)
    assert (retried.status, retried.attempts, retried.last_error) == ("pending", 1, "E: down")
    assert retried.due_at == NOW + 5 * MINUTE
    assert retried.claimed_until is None
    assert retried.text_body == "text for ann@example.com"  # kept for the next attempt
    assert await claim(runtime, now=NOW + 5 * MINUTE - timedelta(microseconds=1)) == []
    assert await claim(runtime, now=NOW + 5 * MINUTE) == ["ann@example.com"]


async def test_concurrent_claims_take_different_rows(runtime: Runtime) -> None:
    if runtime.db.engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; on SQLite the write lock serializes claims")
    names = [f"u{i}@example.com" for i in range(3)]
    for name in names:
        await add(runtime, name, at=NOW)
    async with runtime.db.sessionmaker() as first, first.begin():
        held = await outbox_queries.claim_due(first, now=NOW, claim_until=NOW + MINUTE, limit=2)
        assert [r.to_address for r in held] == names[:2]
        # The first claim is not committed: its rows are locked, not yet leased. A second
        # sender skips them instead of waiting for them (or taking them too).
        other = await asyncio.wait_for(claim(runtime, now=NOW), timeout=5)
        assert other == names[2:]
    assert await claim(runtime, now=NOW) == []


# --- settling ----------------------------------------------------------------------------


async def test_mark_sent_clears_the_bodies(runtime: Runtime) -> None:
    message_id = await add(runtime, "ann@example.com", at=NOW)
    await claim(runtime, now=NOW)
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_attempt_failed(
            s, message_id=message_id, attempts=1, error="E: down", retry_at=NOW
        )
    await claim(runtime, now=NOW)
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_sent(s, message_id=message_id, now=NOW + MINUTE)
    sent = await row(runtime, message_id)
    assert (sent.status, sent.text_body, sent.html_body) == ("sent", "", "")
    assert sent.sent_at == NOW + MINUTE
    assert sent.claimed_until is None
    assert sent.last_error is None
    assert sent.subject == "Subject"  # the headers stay, for mail-status and support
    assert sent.to_address == "ann@example.com"
    assert await claim(runtime, now=NOW + 10 * MINUTE) == []


async def test_giving_up_marks_failed_and_clears_the_bodies(runtime: Runtime) -> None:
    message_id = await add(runtime, "ann@example.com", at=NOW)
    await claim(runtime, now=NOW)
    async with runtime.db.sessionmaker() as s, s.begin():
        await outbox_queries.mark_attempt_failed(
            s, message_id=message_id, attempts=8, error="PermanentFailure: 550", retry_at=None
        )
    failed = await row(runtime, message_id)
    assert (failed.status, failed.attempts, failed.text_body, failed.html_body) == (
        "failed",
        8,
        "",
        "",
    )
    assert failed.last_error == "PermanentFailure: 550"
    assert failed.sent_at is None
    assert await claim(runtime, now=NOW + 10 * MINUTE) == []


async def test_a_late_failure_does_not_undo_a_sent_row(runtime: Runtime) -> None:
    # Found as a bug (a race): the lease of sender A expired while it was still trying.
    message_id = await add(runtime, "ann@example.com", at=NOW)
    assert await claim(runtime, now=NOW, lease=MINUTE) == ["ann@example.com"]  # sender A
    assert await claim(runtime, now=NOW + MINUTE, lease=MINUTE) == ["ann@example.com"]  # B
    async with runtime.db.sessionmaker() as s, s.begin():  # B sent it
        await outbox_queries.mark_sent(s, message_id=message_id, now=NOW + MINUTE)
    async with runtime.db.sessionmaker() as s, s.begin():  # A gives up, late
        await outbox_queries.mark_attempt_failed(
            s, message_id=message_id, attempts=8, error="TimeoutError: ", retry_at=None
        )
        await outbox_queries.mark_attempt_failed(  # nor a late retry
            s, message_id=message_id, attempts=2, error="TimeoutError: ", retry_at=NOW
        )
    sent = await row(runtime, message_id)
    assert (sent.status, sent.attempts, sent.last_error, sent.due_at) == ("sent", 0, None, NOW)
    assert sent.sent_at == NOW + MINUTE


# --- prune and status --------------------------------------------------------------------


async def test_prune_removes_old_settled_rows_only(runtime: Runtime) -> None:
    old = NOW - timedelta(days=8)
    keep = [
        await add(runtime, "old-pending@example.com", at=old),
        await add(runtime, "new-sent@example.com", at=NOW, status=outbox_queries.SENT),
        await add(runtime, "new-failed@example.com", at=NOW, status=outbox_queries.FAILED),
        await add(runtime, "new-hidden@example.com", at=NOW, status=outbox_queries.SUPPRESSED),
    ]
    for status in (outbox_queries.SENT, outbox_queries.FAILED, outbox_queries.SUPPRESSED):
        await add(runtime, f"old-{status}@example.com", at=old, status=status)
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await outbox_queries.prune(s, before=NOW - timedelta(days=7)) == 3
    assert [r.id for r in await rows(runtime)] == keep
    async with runtime.db.sessionmaker() as s, s.begin():
        assert await outbox_queries.prune(s, before=NOW - timedelta(days=7)) == 0


async def test_the_sender_prunes_by_its_retention(runtime: Runtime) -> None:
    now = utcnow()
    await add(runtime, "old@example.com", at=now - timedelta(hours=2), status="sent")
    kept = await add(runtime, "new@example.com", at=now - timedelta(minutes=30), status="sent")
    sender = sender_for(runtime, RecordingMailer())
    sender.retention = timedelta(hours=1)
    assert await sender.prune() == 1
    assert [r.id for r in await rows(runtime)] == [kept]


async def test_status_counts_oldest_pending_and_recent_failures(runtime: Runtime) -> None:
    await add(runtime, "a@example.com", at=NOW)
    await add(runtime, "b@example.com", at=NOW - MINUTE)
    await add(runtime, "c@example.com", at=NOW, status=outbox_queries.SENT)
    failed = [await add(runtime, f"f{i}@example.com", at=NOW, status="failed") for i in range(3)]
    await add(runtime, "d@example.com", at=NOW - 2 * MINUTE, status=outbox_queries.SUPPRESSED)
    async with runtime.db.read_sessionmaker() as s:
        assert await outbox_queries.count_by_status(s) == {
            "pending": 2,
            "sent": 1,
            "failed": 3,
            "suppressed": 1,
        }
        assert await outbox_queries.oldest_pending(s) == NOW - MINUTE
        recent = await outbox_queries.recent_failures(s, limit=2)
    assert [r.id for r in recent] == failed[:0:-1]  # newest first, two of them


async def test_an_empty_outbox(runtime: Runtime) -> None:
    async with runtime.db.read_sessionmaker() as s:
        assert await outbox_queries.count_by_status(s) == {}
        assert await outbox_queries.oldest_pending(s) is None
        assert list(await outbox_queries.recent_failures(s, limit=10)) == []
        assert await outbox_queries.any_due(s, now=NOW) is False


# --- waking the sender -------------------------------------------------------------------


async def test_wake_sets_the_senders_event(runtime: Runtime) -> None:
    outbox = Outbox(runtime.outbox.messages)
    outbox.wake()  # no sender yet: nothing to wake, and no error
    event = outbox.wake_event()
    assert outbox.wake_event() is event
    assert not event.is_set()
    outbox.wake()
    assert event.is_set()
