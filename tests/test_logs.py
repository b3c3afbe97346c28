"""usergraph.logs: every line names the request id and client ip of the request that wrote it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from pydantic import ValidationError

from usergraph import logs
from usergraph.logs import (
    FORMAT,
    RequestIdFilter,
    client_ip_var,
    configure_logging,
    logging_config,
    request_id_var,
)
from usergraph.services.audit import log_security_event
from usergraph.settings import Settings


def record(message: str = "hello", name: str = "usergraph.test") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


def formatted(message: str = "hello") -> str:
    line = record(message)
    assert RequestIdFilter().filter(line) is True
    return logging.Formatter(FORMAT).format(line)


def test_outside_a_request_the_ids_are_dashes() -> None:
    assert (request_id_var.get(), client_ip_var.get()) == ("-", "-")
    line = formatted()
    assert line.endswith(" WARNING usergraph.test request_id=- client_ip=- hello")


def test_a_record_carries_the_current_request_id_and_client_ip() -> None:
    request_token = request_id_var.set("req-123")
    ip_token = client_ip_var.set("203.0.113.7")
    try:
        line = record()
        RequestIdFilter().filter(line)
        assert (line.request_id, line.client_ip) == ("req-123", "203.0.113.7")  # type: ignore[attr-defined]
        text = logging.Formatter(FORMAT).format(line)
    finally:
        client_ip_var.reset(ip_token)
        request_id_var.reset(request_token)
    # "%(asctime)s %(levelname)s %(name)s request_id=... client_ip=... %(message)s"
    date, time, *rest = text.split(" ")
    assert len(date) == 10 and date[4] == "-" and time[2] == ":"
    assert rest == [
        "WARNING",
        "usergraph.test",
        "request_id=req-123",
        "client_ip=203.0.113.7",
        "hello",
    ]
    assert (request_id_var.get(), client_ip_var.get()) == ("-", "-")


async def test_concurrent_requests_keep_their_own_ids() -> None:
    async def request(request_id: str, ip: str) -> str:
        request_id_var.set(request_id)
        client_ip_var.set(ip)
        await asyncio.sleep(0)  # let the other request run in between
        return formatted(f"from {request_id}")

    first, second = await asyncio.gather(
        request("one", "198.51.100.1"), request("two", "198.51.100.2")
    )
    assert "request_id=one client_ip=198.51.100.1 from one" in first
    assert "request_id=two client_ip=198.51.100.2 from two" in second
    assert request_id_var.get() == "-"  # each task had its own copy of the context


def test_logging_config() -> None:
    config = logging_config("debug")
    assert config["version"] == 1
    assert config["disable_existing_loggers"] is False
    assert config["filters"] == {"request_id": {"()": RequestIdFilter}}
    assert config["formatters"] == {"text": {"format": FORMAT}}
    assert config["handlers"]["stderr"] == {
        "class": "logging.StreamHandler",
        "formatter": "text",
        "filters": ["request_id"],
    }
    assert config["root"] == {"handlers": ["stderr"], "level": "DEBUG"}
    assert config["loggers"] == {"alembic.runtime.plugins": {"level": "WARNING"}}
    assert logging_config()["root"]["level"] == "INFO"


@contextmanager
def restored_root_logger() -> Iterator[None]:
    """Put the root logger (pytest's capture handlers among them) back as it was.

    Used inside the test, not as a fixture: pytest adds and removes its handlers per phase.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    alembic = logging.getLogger("alembic.runtime.plugins")
    alembic_level = alembic.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        alembic.setLevel(alembic_level)


def test_configure_logging_writes_lines_with_ids_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = logging.getLogger().handlers[:]
    with restored_root_logger():
        _configure_and_log(capsys)
    assert logging.getLogger().handlers == before


def _configure_and_log(capsys: pytest.CaptureFixture[str]) -> None:
    earlier = logging.getLogger("usergraph.earlier")  # made before configuring
    configure_logging("warning")
    root = logging.getLogger()
    assert root.level == logging.WARNING
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    assert any(isinstance(f, RequestIdFilter) for f in handler.filters)
    assert logging.getLogger("alembic.runtime.plugins").level == logging.WARNING
    assert earlier.disabled is False

    request_token = request_id_var.set("req-9")
    ip_token = client_ip_var.set("192.0.2.1")
    try:
        earlier.warning("something happened")
        logging.getLogger("usergraph.quiet").info("below the level")
    finally:
        client_ip_var.reset(ip_token)
        request_id_var.reset(request_token)
    handler.flush()
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(
        " WARNING usergraph.earlier request_id=req-9 client_ip=192.0.2.1 something happened"
    )


def test_json_lines_carry_every_field_and_security_events_as_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with restored_root_logger():
        configure_logging("info", "json")
        [handler] = logging.getLogger().handlers
        request_token = request_id_var.set("req-7")
        ip_token = client_ip_var.set("198.51.100.4")
        try:
            log_security_event("login_failed", level=logging.WARNING, reason="credentials",
                               user_id=42, login='a "quoted"\nname')  # fmt: skip
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("usergraph.errors").exception("internal error path=%s", "me")
        finally:
            client_ip_var.reset(ip_token)
            request_id_var.reset(request_token)
        handler.flush()
    security, error = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert security["level"] == "WARNING" and security["logger"] == "usergraph.security"
    assert (security["request_id"], security["client_ip"]) == ("req-7", "198.51.100.4")
    assert datetime.fromisoformat(security["time"]).tzinfo is not None
    assert security["security_event"] == {
        "event": "login_failed",
        "user_id": 42,
        "reason": "credentials",
        "login": 'a "quoted"\nname',
    }
    assert error["message"] == "internal error path=me"
    assert "ValueError: boom" in error["exc_info"]


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, log_format="xml")  # type: ignore[call-arg, arg-type]


def test_an_outage_is_logged_once_then_reminded_then_logged_anew(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    outages = logs.OutageLog(quiet_seconds=30, remind_seconds=60)
    caplog.set_level(logging.WARNING, logger="usergraph.outages")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "usergraph.outages"]

    for _ in range(50):  # a burst of failing requests: one line
        outages.report("database", ConnectionRefusedError(111, "refused"))
        now[0] += 1
    assert lines() == ["database unavailable: ConnectionRefusedError: [Errno 111] refused"]
    for _ in range(20):  # still down past the reminder interval: one more line, with a count
        outages.report("database", ConnectionRefusedError(111, "refused"))
        now[0] += 1
    assert len(lines()) == 2
    assert "(still; 60 more failures since the last line)" in lines()[1]
    outages.report("redis", OSError("down"))  # another dependency is its own outage
    assert len(lines()) == 3 and lines()[2].startswith("redis unavailable")
    now[0] += 31  # quiet long enough: the next failure is a new outage
    outages.report("database", ConnectionRefusedError(111, "refused"))
    assert lines()[3] == "database unavailable: ConnectionRefusedError: [Errno 111] refused"
