"""A real SMTP server for the mail tests: aiosmtpd in its own thread, on 127.0.0.1.

`SmtpServer` records every message it accepts (parsed with the default email policy) and can
be told to misbehave the ways a relay does: be down (`stop()`, then `start()` on the same port
again), answer a reply code instead of accepting (`refuse("451 ...")`: a temporary failure,
`refuse("550 ...", at="RCPT")`: a permanent one), or hold every session at RCPT (`stall()`) so
a sender is caught in the middle of sending. With a `TestCertificate` it offers STARTTLS (or
implicit TLS) with a certificate from a throwaway CA (trustme) that clients trust only when
given the CA's PEM.

It runs in a thread with its own event loop, so a sender on the test's loop and a sender in
another process both reach it; `wait_for` (async) and `wait_for_blocking` (sync tests) poll
with short intervals until enough messages arrived.
"""

from __future__ import annotations

import asyncio
import email
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on now (aiosmtpd's Controller does not take port 0)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class TestCertificate:
    """A throwaway CA and a server certificate it issued for 127.0.0.1 and localhost."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert(HOST, "localhost")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def write_ca(self, path: Path) -> Path:
        """Write the CA's certificate (PEM) to path: what a client must trust."""
        self.ca.cert_pem.write_to_path(str(path))
        return path


@dataclass(frozen=True)
class Envelope:
    """What the SMTP conversation said around a message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)


class _Handler:
    """aiosmtpd's handler hooks; they run on the server's thread."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        self._server._count_session()
        reply = self._server._take_refusal("MAIL")
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        while self._server._stalling.is_set():
            self._server._note_stalled(session)
            await asyncio.sleep(0.02)
        reply = self._server._take_refusal("RCPT")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self._server._take_refusal("DATA")
        if reply is not None:
            return reply
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self._server._record(
            message,
            Envelope(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                # STARTTLS sets session.ssl; implicit TLS only shows in the transport.
                tls=session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
            ),
        )
        return "250 OK: queued"


class SmtpServer:
    """A recording SMTP server on 127.0.0.1; `start()` it (or use it as a context manager)."""

    def __init__(
        self,
        *,
        port: int | None = None,
        certificate: TestCertificate | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
    ) -> None:
        self.host = HOST
        self.port = port or free_port()
        self.certificate = certificate
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self._lock = threading.Lock()
        self._messages: list[EmailMessage] = []
        self._envelopes: list[Envelope] = []
        self._sessions = 0
        self._refusals = 0
        self._refusal: tuple[str, str, int | None] | None = None  # reply, stage, times left
        self._stalling = threading.Event()
        self._stalled: set[int] = set()
        self._controller: Controller | None = None

    # Life cycle -------------------------------------------------------------------------

    def start(self) -> SmtpServer:
        """Listen (again) on self.port; a stopped server keeps what it recorded."""
        assert self._controller is None, "already running"
        options: dict[str, Any] = {}
        if self.certificate is not None and not self.implicit_tls:
            options.update(
                tls_context=self.certificate.server_context(),
                require_starttls=self.require_starttls,
            )
        if self.certificate is not None and self.implicit_tls:
            options["ssl_context"] = self.certificate.server_context()
        # A new Controller each time: a stopped one has closed its event loop.
        controller = Controller(_Handler(self), hostname=self.host, port=self.port, **options)
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until start() again."""
        if self._controller is not None:
            self._stalling.clear()  # let held sessions end so the thread can stop
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Misbehaving ------------------------------------------------------------------------

    def refuse(
        self,
        reply: str = "451 4.3.0 Try again later",
        *,
        at: Literal["MAIL", "RCPT", "DATA"] = "DATA",
        times: int | None = None,
    ) -> None:
        """Answer reply at MAIL, RCPT or DATA instead of accepting: the next `times` messages, or
        until accept()."""
        with self._lock:
            self._refusal = (reply, at, times)

    def accept(self) -> None:
        """Accept messages again (after refuse())."""
        with self._lock:
            self._refusal = None

    def stall(self) -> None:
        """Hold every session at RCPT until release(): a sender is caught mid-send."""
        with self._lock:
            self._stalled.clear()
        self._stalling.set()

    def release(self) -> None:
        self._stalling.clear()

    # What arrived -----------------------------------------------------------------------

    @property
    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    @property
    def sessions(self) -> int:
        """How many MAIL FROM commands arrived: attempts to send, accepted or not."""
        with self._lock:
            return self._sessions

    @property
    def refusals(self) -> int:
        with self._lock:
            return self._refusals

    @property
    def stalled(self) -> int:
        """How many sessions stall() has held (since it was called)."""
        with self._lock:
            return len(self._stalled)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._envelopes.clear()
            self._sessions = self._refusals = 0

    async def wait_for(self, count: int, within: float = 10) -> list[EmailMessage]:
        """Wait (without blocking the event loop) until at least count messages arrived;
        fail after `within` seconds."""
        deadline = time.monotonic() + within
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(self._timed_out(count, within))
            await asyncio.sleep(0.02)
        return self.messages

    def wait_for_blocking(self, count: int, within: float = 10) -> list[EmailMessage]:
        """wait_for for sync tests (the senders run in other processes)."""
        deadline = time.monotonic() + within
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(self._timed_out(count, within))
            time.sleep(0.02)
        return self.messages

    def _timed_out(self, count: int, within: float) -> str:
        return (
            f"{len(self.messages)} of {count} messages arrived in {within} s "
            f"({self.sessions} sessions, {self.refusals} refused)"
        )

    # Called by the handler, on the server's thread -------------------------------------

    def _count_session(self) -> None:
        with self._lock:
            self._sessions += 1

    def _note_stalled(self, session: Any) -> None:
        with self._lock:
            self._stalled.add(id(session))

    def _take_refusal(self, stage: str) -> str | None:
        with self._lock:
            if self._refusal is None or self._refusal[1] != stage:
                return None
            reply, at, times = self._refusal
            if times is not None:
                self._refusal = (reply, at, times - 1) if times > 1 else None
            self._refusals += 1
            return reply

    def _record(self, message: EmailMessage, envelope: Envelope) -> None:
        with self._lock:
            self._messages.append(message)
            self._envelopes.append(envelope)
