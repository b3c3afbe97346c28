"""The security log: one structured line per security event, on the "usergraph.security" logger.

    ... WARNING usergraph.security request_id=9f2c... client_ip=203.0.113.7 event=account_locked
        user_id=- login=5d41402abc4b2a76 retry_after=900

The request id and client ip come from the log format (usergraph.logs); the fields also ride on
the record as `security_event` for a JSON formatter. Callers pass ids and reasons only: never a
password, token or hash. A login name is logged as a short digest, so the log does not collect
email addresses but repeated attempts on one name still line up.
"""

from __future__ import annotations

import hashlib
import logging
import re

from usergraph import metrics

log = logging.getLogger("usergraph.security")

_PLAIN = re.compile(r"[A-Za-z0-9_.:@/+-]+")


def log_security_event(event: str, *, level: int = logging.INFO, **fields: object) -> None:
    data: dict[str, object] = {"event": event, "user_id": None, **fields}
    line = " ".join(f"{key}={_value(value)}" for key, value in data.items())
    log.log(level, "%s", line, extra={"security_event": data})
    metrics.security_event(event, data)  # counted whatever the log level


def login_digest(login_key: str) -> str:
    """A short digest of a login key (services.validation.login_key) for the log."""
    return hashlib.sha256(login_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _value(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
