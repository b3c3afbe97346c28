"""Mail delivery with real `usergraph serve` processes and a real SMTP server (aiosmtpd).

(a) A server killed with SIGKILL while mail is pending, some of it claimed mid-send: after a new
    process starts on the same database, every message is sent exactly once.
(b) Two servers on one PostgreSQL database, requests spread over both: their senders share the
    outbox (SKIP LOCKED claims) and every message is sent exactly once.
(c) `usergraph send-mail --forever` sends as it runs and stops cleanly on SIGTERM.

Exactly once is counted at the SMTP server, by Message-ID (derived from the outbox row) and by
recipient, after the database says every row is sent and the servers have stopped.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.client import DEFAULT_PASSWORD
from tests.environment import TEST_DATABASE_URL, postgres_database
from tests.mail.smtp_server import SmtpServer
from tests.system.processes import CLI, migrate, run_server, run_servers, server_env
from usergraph.db.engine import Database
from usergraph.db.models import OutboxMessage
from usergraph.mail.messages import Messages
from usergraph.mail.outbox import Outbox

pytestmark = pytest.mark.slow

MESSAGE_ID = re.compile(r"<usergraph\.(\d+)\.\d+@localhost>")
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  user { username } userErrors { code } } }"""
RESET = """mutation($email: String!) { requestPasswordReset(input: {email: $email}) {
  userErrors { code } } }"""
GENEROUS = {
    "USERGRAPH_REGISTER_IP_LIMIT": "100000/minute",
    "USERGRAPH_EMAIL_IP_LIMIT": "100000/minute",
    "USERGRAPH_EMAIL_ADDRESS_LIMIT": "1000/minute",
}


def mail_env(database_url: str, smtp: SmtpServer, **variables: str) -> dict[str, str]:
    return server_env(
        database_url,
        USERGRAPH_MAILER="smtp",
        USERGRAPH_SMTP_HOST=smtp.host,
        USERGRAPH_SMTP_PORT=str(smtp.port),
        USERGRAPH_SMTP_SECURITY="none",
        USERGRAPH_SMTP_TIMEOUT_SECONDS="30",
        USERGRAPH_MAIL_POLL_SECONDS="0.2",
        USERGRAPH_MAIL_RETRY_BASE_SECONDS="0.2",
        USERGRAPH_MAIL_RETRY_MAX_SECONDS="1",
        USERGRAPH_MAIL_MAX_ATTEMPTS="100",  # the relay is down on purpose: never give up here
        **GENEROUS,
        **variables,
    )


@dataclass(frozen=True)
class Row:
    id: int
    status: str
    to_address: str
    attempts: int
    claimed: bool


def outbox_rows(database_url: str) -> list[Row]:
    async def read() -> list[Row]:
        db = Database.connect(database_url)
        try:
            async with db.read_sessionmaker() as s:
                found = await s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
                return [
                    Row(r.id, r.status, r.to_address, r.attempts, r.claimed_until is not None)
                    for r in found
                ]
        finally:
            await db.dispose()

    return asyncio.run(read())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@dataclass(frozen=True)
class Tally:
    expected: int
    received: int
    duplicates: int  # messages received more than once (by Message-ID), counted once each
    lost: int  # expected recipients that got nothing

    def __str__(self) -> str:
        return (
            f"expected {self.expected}, received {self.received}, "
            f"duplicated {self.duplicates}, lost {self.lost}"
        )


def tally(smtp: SmtpServer, recipients: list[str]) -> Tally:
    messages = smtp.messages
    ids = Counter(m["Message-ID"] for m in messages)
    to = Counter(m["To"] for m in messages)
    return Tally(
        expected=len(recipients),
        received=len(messages),
        duplicates=sum(1 for count in ids.values() if count > 1),
        lost=sum(1 for r in recipients if to[r] == 0),
    )


def assert_each_row_sent_once(smtp: SmtpServer, recipients: list[str], rows: list[Row]) -> None:
    """Each Message-ID names its outbox row: every row was sent once, under its own id, to its
    own recipient."""
    messages = smtp.messages
    row_ids = [int(MESSAGE_ID.fullmatch(m["Message-ID"]).group(1)) for m in messages]  # type: ignore[union-attr]
    assert sorted(row_ids) == [r.id for r in rows]
    by_row = {r.id: r.to_address for r in rows}
    assert [by_row[i] for i in row_ids] == [m["To"] for m in messages]
    assert sorted(m["To"] for m in messages) == sorted(recipients)


def post(client: httpx.Client, query: str, variables: dict[str, object]) -> dict[str, object]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    data: dict[str, object] = body["data"]
    return data


def register(client: httpx.Client, username: str) -> None:
    data = post(
        client,
        REGISTER,
        {
            "input": {
                "email": f"{username}@example.com",
                "username": username,
                "password": DEFAULT_PASSWORD,
            }
        },
    )
    assert data["register"] == {"user": {"username": username}, "userErrors": []}


def test_a_killed_server_loses_and_duplicates_no_mail(tmp_path: Path) -> None:
    smtp = SmtpServer()  # not started: the relay is down while the accounts register
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
    env = mail_env(database_url, smtp, USERGRAPH_MAIL_CLAIM_SECONDS="2")
    migrate(tmp_path, env)
    names = [f"crash{i}" for i in range(12)]
    recipients = [f"{name}@example.com" for name in names]
    try:
        with run_server(tmp_path, env, "first") as (base_url, first):
            with httpx.Client(base_url=base_url, timeout=30) as client:
                for name in names:
                    register(client, name)
            # The first process tried each one and is waiting to retry.
            wait_until(
                lambda: [r.attempts >= 1 for r in outbox_rows(database_url)] == [True] * 12,
                "every message was tried once",
            )
            # The relay comes back but holds each session at RCPT: the sender is caught
            # mid-send, with a batch claimed, when it is killed.
            smtp.stall()
            smtp.start()
            wait_until(lambda: smtp.stalled >= 1, "a send is under way")
            at_kill = outbox_rows(database_url)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL
        assert smtp.messages == []
        assert [r.status for r in at_kill] == ["pending"] * 12
        claimed_at_kill = sum(r.claimed for r in at_kill)
        assert claimed_at_kill >= 1, at_kill
        smtp.stop()  # ends the held session; the relay then restarts on the same port
        smtp.start()
        with run_server(tmp_path, env, "second"):
            smtp.wait_for_blocking(12, within=30)
            wait_until(
                lambda: [r.status for r in outbox_rows(database_url)] == ["sent"] * 12,
                "every row is marked sent",
            )
        result = tally(smtp, recipients)
        print(f"\nkilled server: {result} ({claimed_at_kill} claimed mid-send at the kill)")
        assert (result.received, result.duplicates, result.lost) == (12, 0, 0), str(result)
        assert_each_row_sent_once(smtp, recipients, outbox_rows(database_url))
        assert {m["Subject"] for m in smtp.messages} == {"Verify your email address for usergraph"}
    finally:
        smtp.stop()


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (PostgreSQL)")
def test_two_servers_share_the_outbox_without_duplicates(tmp_path: Path) -> None:
    accounts = 40
    names = [f"pair{i}" for i in range(accounts)]
    recipients = [f"{name}@example.com" for name in names]
    with postgres_database() as database_url, SmtpServer() as smtp:
        env = mail_env(database_url, smtp, USERGRAPH_EMAIL_VERIFICATION="off")
        with run_servers(tmp_path, env, ["a", "b"]) as urls:
            clients = [httpx.Client(base_url=url, timeout=30) for url in urls]
            try:
                for i, name in enumerate(names):  # verification off: no mail yet
                    register(clients[i % 2], name)
                assert outbox_rows(database_url) == []

                def ask(i: int) -> None:
                    data = post(clients[i % 2], RESET, {"email": recipients[i]})
                    assert data["requestPasswordReset"] == {"userErrors": []}

                # Concurrently, alternating servers: both senders are woken at once, often.
                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(pool.map(ask, range(accounts)))
                smtp.wait_for_blocking(accounts, within=30)
                wait_until(
                    lambda: [r.status for r in outbox_rows(database_url)] == ["sent"] * accounts,
                    "every row is marked sent",
                )
            finally:
                for client in clients:
                    client.close()
        rows = outbox_rows(database_url)
    result = tally(smtp, recipients)
    sent_by = {
        name: (tmp_path / f"{name}.log").read_text(errors="replace").count("mail sent id=")
        for name in ("a", "b")
    }
    print(f"\ntwo servers: {result}; sent by a: {sent_by['a']}, by b: {sent_by['b']}")
    assert (result.received, result.duplicates, result.lost) == (accounts, 0, 0), (
        f"{result}; sent by {sent_by}"
    )
    assert_each_row_sent_once(smtp, recipients, rows)
    assert sum(sent_by.values()) == accounts, sent_by
    assert {m["Subject"] for m in smtp.messages} == {"Reset your usergraph password"}


def test_send_mail_forever_sends_and_stops_on_sigterm(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
    with SmtpServer() as smtp:
        env = mail_env(database_url, smtp)
        migrate(tmp_path, env)
        _enqueue(database_url, ["first@example.com"])
        process = subprocess.Popen(
            [*CLI, "send-mail", "--forever"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            smtp.wait_for_blocking(1, within=20)
            # Mail written later is found by the next poll (no wake across processes).
            _enqueue(database_url, ["second@example.com"])
            smtp.wait_for_blocking(2, within=10)
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, output.decode(errors="replace")
        assert [m["To"] for m in smtp.messages] == ["first@example.com", "second@example.com"]
        assert [r.status for r in outbox_rows(database_url)] == ["sent", "sent"]


def _enqueue(database_url: str, addresses: list[str]) -> None:
    async def write() -> None:
        db = Database.connect(database_url)
        outbox = Outbox(Messages(public_url="http://127.0.0.1:8000", links={}))
        try:
            async with db.sessionmaker() as s, s.begin():
                for address in addresses:
                    await outbox.enqueue(
                        s, kind="password_changed", to_address=address, username="x"
                    )
        finally:
            await db.dispose()

    asyncio.run(write())
