"""Log setup: every line carries the request id and client ip of the request that wrote it, as
text or as JSON lines."""

from __future__ import annotations

import contextvars
import logging
import logging.config
import math
import time
from typing import Any

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
client_ip_var: contextvars.ContextVar[str] = contextvars.ContextVar("client_ip", default="-")

FORMAT = (
    "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s client_ip=%(client_ip)s "
    "%(message)s"
)


class RequestIdFilter(logging.Filter):
    """Adds the current request's id and client ip to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.client_ip = client_ip_var.get()
        return True


# JSON lines (USERGRAPH_LOG_FORMAT=json): python-json-logger writes these record attributes
# as keys, with an ISO 8601 UTC "time"; extras ride along as keys of their own, so a security
# event is the object under "security_event", not a string to parse.
JSON_FIELDS = "%(levelname)s %(name)s %(request_id)s %(client_ip)s %(message)s"
JSON_NAMES = {"levelname": "level", "name": "logger"}


def logging_config(level: str = "INFO", log_format: str = "text") -> dict[str, Any]:
    """The dictConfig for this process; uvicorn applies the same in each of its workers."""
    formatters: dict[str, Any] = {
        "text": {"format": FORMAT},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": JSON_NAMES,
            "timestamp": "time",
        },
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {log_format: formatters[log_format]},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # Alembic lists its plugins at INFO every time a script directory loads.
        "loggers": {"alembic.runtime.plugins": {"level": "WARNING"}},
    }


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    logging.config.dictConfig(logging_config(level, log_format))


class OutageLog:
    """Logs a dependency that is down once per outage, not once per request that met it.

    The first failure after a quiet spell logs a WARNING; later ones only count, with a
    reminder at most every `remind_seconds`. An outage is over after `quiet_seconds` with no
    failure: the next one logs again.
    """

    def __init__(self, *, quiet_seconds: float = 30, remind_seconds: float = 60) -> None:
        self._quiet, self._remind = quiet_seconds, remind_seconds
        self._last_failure: dict[str, float] = {}
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self._log = logging.getLogger("usergraph.outages")

    def report(self, dependency: str, error: BaseException) -> None:
        now = time.monotonic()
        new = now - self._last_failure.get(dependency, -math.inf) > self._quiet
        self._last_failure[dependency] = now
        if new or now - self._last_logged.get(dependency, -math.inf) > self._remind:
            missed = 0 if new else self._unlogged.get(dependency, 0)
            self._log.warning(
                "%s unavailable%s: %s: %s",
                dependency,
                "" if new else f" (still; {missed} more failures since the last line)",
                type(error).__name__,
                str(error)[:200],
            )
            self._last_logged[dependency] = now
            self._unlogged[dependency] = 0
        else:
            self._unlogged[dependency] = self._unlogged.get(dependency, 0) + 1


# One per process: every request of a worker reports to it.
outages = OutageLog()
