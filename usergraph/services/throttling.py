"""How the services spend the throttles and the hasher: refuse, count, lock out.

Every check that can refuse a request raises Throttled (a RATE_LIMITED error for the whole
request) or, for an account's lockout, Rejected with ACCOUNT_LOCKED (a userError). Each refusal
is a security log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from usergraph.auth.passwords import HasherBusy
from usergraph.auth.throttle import Rule, Throttle, Verdict
from usergraph.services.audit import log_security_event
from usergraph.services.errors import Problem, ProblemCode, Rejected, Throttled

# When every hashing slot and the queue are taken: come back in about a hash's time.
BUSY_RETRY_AFTER = 1


@contextmanager
def hashing() -> Iterator[None]:
    """A saturated hasher refuses the request (RATE_LIMITED) instead of queueing it."""
    try:
        yield
    except HasherBusy:
        log_security_event("hasher_busy", level=logging.WARNING)
        raise Throttled(BUSY_RETRY_AFTER, "busy") from None


def account_key(user_id: int) -> str:
    """The key an account's lockout counts under, whichever name (username, email) was used."""
    return f"account:{user_id}"


def unknown_login_key(login_key: str) -> str:
    """The lockout key of a login name no account has: it locks exactly like an account."""
    return f"name:{login_key}"


def ip_key(ip_address: str | None) -> str:
    """The key a client's per-ip counters use."""
    return ip_address or "unknown"


def refuse_unless_allowed(verdict: Verdict, rule: Rule) -> None:
    if not verdict.allowed:
        log_security_event("rate_limited", level=logging.WARNING, rule=rule.value)
        raise Throttled(verdict.retry_after, rule.value)


async def count_ip_attempt(throttle: Throttle, rule: Rule, ip_address: str | None) -> None:
    """Count one attempt against the client's ip; raise Throttled if its window is full."""
    refuse_unless_allowed(await throttle.hit(rule, ip_key(ip_address)), rule)


def account_locked(retry_after: int, *field: str) -> Rejected:
    return Rejected(
        [
            Problem(
                code=ProblemCode.ACCOUNT_LOCKED,
                message=(
                    "Too many failed sign-ins for this account; "
                    f"try again in {retry_after} seconds."
                ),
                field=field,
                retry_after=retry_after,
            )
        ]
    )
