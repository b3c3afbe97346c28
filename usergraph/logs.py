"""Log setup: every line carries the request id and client ip of the request that wrote it."""

from __future__ import annotations

import contextvars
import logging
import logging.config
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


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """The dictConfig for this process; uvicorn applies the same in each of its workers."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # Alembic lists its plugins at INFO every time a script directory loads.
        "loggers": {"alembic.runtime.plugins": {"level": "WARNING"}},
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
