"""usergraph.mail.sender against a real SMTP server (aiosmtpd, tests/mail/smtp_server.py).

What arrives (headers, the text and html parts, the link); a relay that is down, or answers
451, is retried with backoff until the mail arrives, exactly once; a 5xx is a permanent failure;
retries end after max_attempts; the log mailer; STARTTLS and TLS with a certificate trusted
only through smtp_ca_file; the app's lifespan runs a sender that is woken by each request; and
`usergraph send-mail --once` and `usergraph mail-status`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from tests.client import DEFAULT_PASSWORD, serving
from tests.environment import TEST_SIGNING_KEY, make_settings
from tests.mail.smtp_server import SmtpServer, TestCertificate
from usergraph import cli
from usergraph.db.engine import Database
from usergraph.db.models import OutboxMessage, User, utcnow
from usergraph.mail.messages import Messages
from usergraph.mail.outbox import Outbox, RetryPolicy
from usergraph.mail.sender import LogMailer, Mailer, Sender, SmtpMailer
from usergraph.runtime import Runtime, build_sender
from usergraph.runtime import mailer as runtime_mailer
from usergraph.services import email_tokens
from usergraph.services.users import create_user

MAIL_FROM = "Usergraph <no-reply@id.example>"
FAST_RETRY = RetryPolicy(max_attempts=5, base_seconds=0.05, max_seconds=0.2)
# The runtime fixture's links point at the default public_url.
LINK = re.compile(r"http://127\.0\.0\.1:8000/reset-password#token=(uge_[A-Za-z0-9_-]{43})\b")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def smtp_mailer(
    server: SmtpServer, *, security: str = "none", ca_file: Path | None = None
) -> SmtpMailer:
    return SmtpMailer(
        host=server.host, port=server.port, security=security, ca_file=ca_file, timeout=5
    )


def sender(runtime: Runtime, mailer: Mailer, retry: RetryPolicy = FAST_RETRY) -> Sender:
    return Sender(
        db=runtime.db,
        mailer=mailer,
        outbox=runtime.outbox,
        mail_from=MAIL_FROM,
        retry=retry,
        poll_seconds=0.02,
    )


async def the_row(runtime: Runtime) -> OutboxMessage:
    async with runtime.db.read_sessionmaker() as s:
        (row,) = (await s.scalars(select(OutboxMessage))).all()
        return row


async def user(runtime: Runtime, username: str = "ann") -> User:
    return await create_user(
        db=runtime.db,
        passwords=runtime.passwords,
        email=f"{username}@example.com",
        username=username,
        password=DEFAULT_PASSWORD,
    )


async def ask_reset(runtime: Runtime, account: User) -> None:
    """What requestPasswordReset writes: a token and its email, in one transaction."""
    async with runtime.db.sessionmaker() as s, s.begin():
        await email_tokens.issue(
            s,
            outbox=runtime.outbox,
            policy=runtime.email,
            purpose=email_tokens.RESET_PASSWORD,
            user=account,
            to_address=account.email,
        )


async def notice(runtime: Runtime, to: str = "ann@example.com") -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await runtime.outbox.enqueue(s, kind="password_changed", to_address=to, username="ann")


@asynccontextmanager
async def running(the_sender: Sender) -> AsyncIterator[None]:
    """The sender's loop (as in the app's lifespan) for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(the_sender.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def until(condition: Callable[[], Awaitable[bool]], within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def status_is(runtime: Runtime, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await the_row(runtime)).status == status

    return check


def body(message: EmailMessage, subtype: str) -> str:
    """A part's text as written (SMTP carries it with CRLF line ends)."""
    part = message.get_body((subtype,))
    assert part is not None, subtype
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


def mail_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "usergraph.mail" and r.levelno == level
    ]


# --- what arrives ------------------------------------------------------------------------


async def test_a_message_arrives_with_its_headers_parts_and_link(
    runtime: Runtime, smtp: SmtpServer
) -> None:
    ann = await user(runtime)
    await ask_reset(runtime, ann)
    row = await the_row(runtime)
    assert await sender(runtime, smtp_mailer(smtp)).send_due() == 1
    (message,) = smtp.messages
    assert message["From"] == MAIL_FROM
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == "Reset your usergraph password"
    assert parsedate_to_datetime(message["Date"]) == row.created_at.replace(microsecond=0)
    assert message["Message-ID"] == (
        f"<usergraph.{row.id}.{int(row.created_at.timestamp())}@id.example>"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text, html = body(message, "plain"), body(message, "html")
    (token,) = LINK.findall(text)
    assert LINK.findall(html) == [token]
    assert f'<a href="http://127.0.0.1:8000/reset-password#token={token}">' in html
    assert text.startswith("Hello ann,\n")
    (envelope,) = smtp.envelopes
    assert (envelope.mail_from, envelope.rcpt_tos, envelope.tls) == (
        "no-reply@id.example",
        ("ann@example.com",),
        False,
    )
    # The link's token is the one the database knows.
    async with runtime.db.read_sessionmaker() as s:
        _row, owner = await email_tokens.check(s, token=token, purpose=email_tokens.RESET_PASSWORD)
    assert owner.id == ann.id
    sent = await the_row(runtime)
    # A sent row's attempts counts the failed ones only (mark_sent leaves it); the log line
    # "mail sent ... attempts=N" counts the one that succeeded too.
    assert (sent.status, sent.attempts, sent.text_body, sent.html_body) == ("sent", 0, "", "")
    assert sent.sent_at is not None
    assert await sender(runtime, smtp_mailer(smtp)).send_due() == 0
    assert smtp.sessions == 1


async def test_a_non_ascii_name_and_subject_arrive_intact(
    runtime: Runtime, smtp: SmtpServer
) -> None:
    async with runtime.db.sessionmaker() as s, s.begin():
        await runtime.outbox.enqueue(
            s, kind="password_changed", to_address="zoe@example.com", username="Zoë Łukasz"
        )
    assert await sender(runtime, smtp_mailer(smtp)).send_due() == 1
    (message,) = smtp.messages
    assert body(message, "plain").startswith("Hello Zoë Łukasz,\n")
    assert "<p>Hello Zoë Łukasz,</p>" in body(message, "html")


# --- failures ----------------------------------------------------------------------------


async def test_smtp_down_then_up_sends_once(
    runtime: Runtime, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="usergraph.mail")
    smtp.stop()
    await notice(runtime)
    the_sender = sender(runtime, smtp_mailer(smtp))
    before = utcnow()
    assert await the_sender.send_due() == 0
    waiting = await the_row(runtime)
    assert (waiting.status, waiting.attempts) == ("pending", 1)
    assert waiting.last_error is not None
    assert waiting.last_error.startswith("SMTPConnectError: Error connecting to 127.0.0.1")
    assert waiting.claimed_until is None
    # Due again after half to all of the first step (0.05 s).
    delay = (waiting.due_at - before).total_seconds()
    assert 0.025 <= delay < 0.5
    assert waiting.text_body != ""  # kept for the next attempt
    (warning,) = mail_records(caplog, logging.WARNING)
    assert warning.startswith(f"mail attempt failed id={waiting.id} kind=password_changed ")
    assert " attempts=1 retry_at=" in warning
    smtp.start()
    async with running(the_sender):
        await smtp.wait_for(1)
        await until(status_is(runtime, "sent"))
        await asyncio.sleep(0.1)  # a few more passes of the loop: nothing more is sent
    assert [m["To"] for m in smtp.messages] == ["ann@example.com"]
    sent = await the_row(runtime)
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 1, None)  # one failure
    assert mail_records(caplog, logging.INFO)[-1] == (
        f"mail sent id={sent.id} kind=password_changed attempts=2"
    )
    assert mail_records(caplog, logging.ERROR) == []


async def test_a_temporary_refusal_is_retried_until_accepted(
    runtime: Runtime, smtp: SmtpServer
) -> None:
    smtp.refuse("451 4.3.0 Mailbox busy, try later", times=2)
    await notice(runtime)
    async with running(sender(runtime, smtp_mailer(smtp))):
        await smtp.wait_for(1)
        await until(status_is(runtime, "sent"))
        await asyncio.sleep(0.1)
    assert len(smtp.messages) == 1
    assert (smtp.refusals, smtp.sessions) == (2, 3)
    assert (await the_row(runtime)).attempts == 2  # the failed ones


@pytest.mark.parametrize(
    ("reply", "at", "error"),
    [
        (
            "550 5.1.1 No such user",
            "RCPT",
            "PermanentFailure: [SMTPRecipientRefused(550, '5.1.1 No such user', "
            "'ann@example.com')]",
        ),
        ("554 5.7.1 Message rejected as spam", "DATA", "PermanentFailure: 554 5.7.1 Message"),
    ],
)
async def test_a_5xx_answer_fails_for_good(
    runtime: Runtime,
    smtp: SmtpServer,
    caplog: pytest.LogCaptureFixture,
    reply: str,
    at: str,
    error: str,
) -> None:
    smtp.refuse(reply, at=at)  # type: ignore[arg-type]
    await notice(runtime)
    the_sender = sender(runtime, smtp_mailer(smtp))
    assert await the_sender.send_due() == 0
    failed = await the_row(runtime)
    assert (failed.status, failed.attempts, failed.text_body, failed.html_body) == (
        "failed",
        1,
        "",
        "",
    )
    assert failed.last_error is not None
    assert failed.last_error.startswith(error)
    (logged,) = mail_records(caplog, logging.ERROR)
    assert logged.startswith(
        f"mail failed for good id={failed.id} kind=password_changed attempts=1 error={error}"
    )
    assert mail_records(caplog, logging.WARNING) == []
    # Not retried, even once the relay would accept it.
    smtp.accept()
    async with running(the_sender):
        await asyncio.sleep(0.2)
    assert (smtp.sessions, smtp.messages) == (1, [])
    assert (await the_row(runtime)).attempts == 1


@pytest.mark.parametrize(
    "reply", ["530 5.7.0 Must issue a STARTTLS command first", "553 5.7.1 Sender refused"]
)
async def test_a_5xx_before_the_message_is_the_relays_settings_and_retried(
    runtime: Runtime, smtp: SmtpServer, reply: str
) -> None:
    # A relay that wants STARTTLS or refuses our sender refuses every message: dropping them
    # would lose mail until the operator fixes the settings. They wait and are retried.
    smtp.refuse(reply, at="MAIL", times=1)
    await notice(runtime)
    async with running(sender(runtime, smtp_mailer(smtp))):
        await smtp.wait_for(1)
        await until(status_is(runtime, "sent"))
    assert len(smtp.messages) == 1
    assert (smtp.refusals, smtp.sessions) == (1, 2)
    assert (await the_row(runtime)).attempts == 1


async def test_retries_end_after_max_attempts(
    runtime: Runtime, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    smtp.refuse("421 4.3.2 Service shutting down")
    await notice(runtime)
    retry = RetryPolicy(max_attempts=3, base_seconds=0.02, max_seconds=0.05)
    async with running(sender(runtime, smtp_mailer(smtp), retry)):
        await until(status_is(runtime, "failed"))
        await asyncio.sleep(0.1)
    failed = await the_row(runtime)
    assert (failed.status, failed.attempts, failed.text_body) == ("failed", 3, "")
    assert smtp.refusals == 3
    assert len(mail_records(caplog, logging.WARNING)) == 2
    (logged,) = mail_records(caplog, logging.ERROR)
    assert logged.startswith(
        f"mail failed for good id={failed.id} kind=password_changed attempts=3"
    )
    smtp.accept()
    assert await sender(runtime, smtp_mailer(smtp)).send_due() == 0
    assert smtp.messages == []


# --- the log mailer ----------------------------------------------------------------------


async def test_the_log_mailer_writes_the_message_and_its_link(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="usergraph.mail")
    ann = await user(runtime)
    await ask_reset(runtime, ann)
    row = await the_row(runtime)
    assert await sender(runtime, LogMailer()).send_due() == 1
    logged = [r for r in caplog.records if r.name == "usergraph.mail"]
    assert [r.levelno for r in logged] == [logging.INFO, logging.INFO]
    first = logged[0].getMessage()
    assert first.startswith(
        "mail to=ann@example.com subject='Reset your usergraph password' "
        f"message_id=<usergraph.{row.id}.{int(row.created_at.timestamp())}@id.example>\n"
        "Hello ann,\n"
    )
    assert len(LINK.findall(first)) == 1
    assert logged[1].getMessage() == f"mail sent id={row.id} kind=reset_password attempts=1"


def test_the_settings_choose_the_mailer(tmp_path: Path) -> None:
    log = make_settings("sqlite+aiosqlite://", tmp_path)
    assert isinstance(runtime_mailer(log), LogMailer)
    smtp = make_settings(
        "sqlite+aiosqlite://",
        tmp_path,
        mailer="smtp",
        smtp_host="relay.example",
        smtp_port=2525,
        smtp_security="tls",
        smtp_username="app",
        smtp_password="s3cret",
        smtp_ca_file=tmp_path / "ca.pem",
        smtp_timeout_seconds=7,
    )
    assert runtime_mailer(smtp) == SmtpMailer(
        host="relay.example",
        port=2525,
        security="tls",
        username="app",
        password="s3cret",
        ca_file=tmp_path / "ca.pem",
        timeout=7,
    )


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate() -> TestCertificate:
    return TestCertificate()


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_with_a_trusted_ca_file(
    runtime: Runtime, certificate: TestCertificate, tmp_path: Path, security: str
) -> None:
    ca_file = certificate.write_ca(tmp_path / "ca.pem")
    with SmtpServer(
        certificate=certificate, require_starttls=True, implicit_tls=security == "tls"
    ) as server:
        await notice(runtime)
        mailer = smtp_mailer(server, security=security, ca_file=ca_file)
        assert await sender(runtime, mailer).send_due() == 1
        assert [e.tls for e in server.envelopes] == [True]
        assert server.messages[0]["To"] == "ann@example.com"
    assert (await the_row(runtime)).status == "sent"


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_with_an_untrusted_certificate_is_retried_not_sent(
    runtime: Runtime, certificate: TestCertificate, security: str
) -> None:
    with SmtpServer(
        certificate=certificate, require_starttls=True, implicit_tls=security == "tls"
    ) as server:
        await notice(runtime)
        the_sender = sender(runtime, smtp_mailer(server, security=security))  # system CAs
        assert await the_sender.send_due() == 0
        await asyncio.sleep(0.06)  # past the first retry's due time
        assert await the_sender.send_due() == 0
        assert server.messages == []
        assert server.sessions == 0  # no MAIL FROM over an unverified connection
    waiting = await the_row(runtime)
    assert (waiting.status, waiting.attempts) == ("pending", 2)
    assert waiting.last_error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in waiting.last_error


# --- the app's sender --------------------------------------------------------------------

REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { code } } }"""
VERIFY = """mutation($token: String!) { verifyEmail(input: {token: $token}) {
  user { username } userErrors { code } } }"""


async def test_the_apps_sender_is_woken_by_each_request(
    runtime: Runtime, smtp: SmtpServer, database_url: str, tmp_path: Path
) -> None:
    # A poll of 60 s: the mail arrives at once only because the request wakes the sender.
    async with serving(
        database_url,
        tmp_path,
        mailer="smtp",
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_security="none",
        mail_from=MAIL_FROM,
        public_url="https://id.example",
        mail_sender=True,
        mail_poll_seconds=60,
    ) as gql:
        await asyncio.sleep(0.1)  # the sender's first pass: an empty outbox
        data = await gql.ok(
            REGISTER,
            {
                "input": {
                    "email": "ann@example.com",
                    "username": "ann",
                    "password": DEFAULT_PASSWORD,
                }
            },
        )
        assert data["register"]["userErrors"] == []
        access_token = data["register"]["accessToken"]
        (message,) = await smtp.wait_for(1, within=5)
        assert message["Subject"] == "Verify your email address for usergraph"
        text = body(message, "plain")
        (token,) = re.findall(r"https://id\.example/verify-email#token=(\S+)", text)
        data = await gql.ok(VERIFY, {"token": token})
        assert data["verifyEmail"] == {"user": {"username": "ann"}, "userErrors": []}
        me = await gql.ok("{ me { emailVerified } }", token=access_token)
        assert me == {"me": {"emailVerified": True}}
    assert len(smtp.messages) == 1
    assert (await the_row(runtime)).status == "sent"


async def test_build_sender_takes_the_settings(runtime: Runtime) -> None:
    built = build_sender(runtime)
    settings = runtime.settings
    assert isinstance(built.mailer, LogMailer)
    assert built.retry == RetryPolicy(
        max_attempts=settings.mail_max_attempts,
        base_seconds=settings.mail_retry_base_seconds,
        max_seconds=settings.mail_retry_max_seconds,
    )
    assert (built.mail_from, built.claim_seconds, built.poll_seconds) == (
        settings.mail_from,
        settings.mail_claim_seconds,
        settings.mail_poll_seconds,
    )
    assert built.outbox is runtime.outbox


# --- the command line --------------------------------------------------------------------


async def _reset_outbox(database_url: str, to: list[str]) -> None:
    """Empty the outbox, then write one notice per address."""
    db = Database.connect(database_url)
    outbox = Outbox(Messages(public_url="https://id.example", links={}))
    try:
        async with db.sessionmaker() as s, s.begin():
            await s.execute(delete(OutboxMessage))
            for address in to:
                await outbox.enqueue(s, kind="password_changed", to_address=address, username="x")
    finally:
        await db.dispose()


async def _ids(database_url: str) -> list[int]:
    db = Database.connect(database_url)
    try:
        async with db.read_sessionmaker() as s:
            return list(await s.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)))
    finally:
        await db.dispose()


@pytest.fixture
def cli_env(
    database_url: str, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    for name, value in {
        "DATABASE_URL": database_url,
        "USERGRAPH_SIGNING_KEY": TEST_SIGNING_KEY,
        "USERGRAPH_MAILER": "smtp",
        "USERGRAPH_SMTP_HOST": smtp.host,
        "USERGRAPH_SMTP_PORT": str(smtp.port),
        "USERGRAPH_SMTP_SECURITY": "none",
        "USERGRAPH_MAIL_FROM": MAIL_FROM,
    }.items():
        monkeypatch.setenv(name, value)
    return database_url


def test_send_mail_once_and_mail_status(
    cli_env: str, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_reset_outbox(cli_env, ["ann@example.com", "bob@example.com"]))
    assert cli.main(["mail-status"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        r"pending: 2\nsent: 0\nfailed: 0\noldest pending since: \d{4}-\d\d-\d\dT[\d:.]+\+00:00\n",
        out,
    ), out

    assert cli.main(["send-mail", "--once"]) == 0
    assert capsys.readouterr().out == "sent 2 message(s)\n"
    assert sorted(m["To"] for m in smtp.messages) == ["ann@example.com", "bob@example.com"]
    assert cli.main(["mail-status"]) == 0
    assert capsys.readouterr().out == "pending: 0\nsent: 2\nfailed: 0\n"

    assert cli.main(["send-mail", "--once"]) == 0
    assert capsys.readouterr().out == "sent 0 message(s)\n"
    assert len(smtp.messages) == 2


def test_mail_status_exits_1_when_a_message_failed(
    cli_env: str, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_reset_outbox(cli_env, ["gone@example.com"]))
    (message_id,) = asyncio.run(_ids(cli_env))
    smtp.refuse("550 5.1.1 No such user", at="RCPT")
    assert cli.main(["send-mail", "--once"]) == 0
    assert capsys.readouterr().out == "sent 0 message(s)\n"
    assert cli.main(["mail-status"]) == 1
    assert capsys.readouterr().out == (
        "pending: 0\nsent: 0\nfailed: 1\n"
        f"failed id={message_id} kind=password_changed attempts=1 error=PermanentFailure: "
        "[SMTPRecipientRefused(550, '5.1.1 No such user', 'gone@example.com')]\n"
    )


def test_send_mail_once_with_the_relay_down_keeps_the_mail(
    cli_env: str, smtp: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_reset_outbox(cli_env, ["ann@example.com"]))
    smtp.stop()
    assert cli.main(["send-mail", "--once"]) == 0
    assert capsys.readouterr().out == "sent 0 message(s)\n"
    assert cli.main(["mail-status"]) == 0  # waiting is not failing
    out = capsys.readouterr().out
    assert out.startswith("pending: 1\nsent: 0\nfailed: 0\noldest pending since: ")
