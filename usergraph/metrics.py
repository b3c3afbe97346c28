"""Prometheus metrics: what each part of usergraph counts, and the text a scrape gets.

The metric objects live here, at the bottom of the package, so any layer can count without
knowing about the exposition. With several workers (`usergraph serve --workers N`) each process
writes its own files into PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode,
set up by the CLI before the workers start) and a scrape sums them; without it (tests, one
process embedded) the default registry is used.

Label values are bounded: operation names only from documents that parsed, at most
MAX_OPERATION_NAMES per process (later ones count as "other"); error codes, sign-in outcomes
and throttle rules are fixed sets.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import REGISTRY

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
MAX_OPERATION_NAMES = 50
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")

REQUESTS = Counter(
    "usergraph_graphql_requests_total",
    "GraphQL operations, by operation type and name.",
    ["operation_type", "operation_name"],
)
LATENCY = Histogram(
    "usergraph_graphql_request_duration_seconds",
    "Time from a parsed document to its result, by operation type and name.",
    ["operation_type", "operation_name"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = Counter(
    "usergraph_graphql_errors_total", "GraphQL errors in responses, by extensions.code.", ["code"]
)
SIGN_INS = Counter(
    "usergraph_sign_ins_total",
    "Sign-in attempts by outcome: succeeded, second_factor_required, failed_<reason>.",
    ["outcome"],
)
REFRESH_REUSE = Counter(
    "usergraph_refresh_token_reuse_total",
    "Refresh tokens presented again after the grace window (their sessions were ended).",
)
THROTTLED = Counter(
    "usergraph_throttle_refusals_total",
    "Requests refused by a limit: a per-ip or per-address rule, account_locked, hasher_busy.",
    ["rule"],
)
HASHER_IN_FLIGHT = Gauge(
    "usergraph_password_hasher_in_flight",
    "Password hashes running or waiting for a slot.",
    multiprocess_mode="livesum",
)
HASHER_WAIT = Histogram(
    "usergraph_password_hasher_wait_seconds",
    "How long a hash waited for a free slot.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
POOL_IN_USE = Gauge(
    "usergraph_db_pool_connections_in_use",
    "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)
POOL_OPEN = Gauge(
    "usergraph_db_pool_connections_open",
    "Database connections the pool holds open (in use or idle).",
    multiprocess_mode="livesum",
)

_names: set[str] = set()
_names_lock = threading.Lock()


def operation_name(name: str | None) -> str:
    """The label for an operation's name: bounded, and only what a GraphQL name can be."""
    if not name:
        return ""
    if not _NAME.fullmatch(name):
        return "other"
    with _names_lock:
        if name in _names:
            return name
        if len(_names) >= MAX_OPERATION_NAMES:
            return "other"
        _names.add(name)
        return name


def observe_operation(operation_type: str, name: str | None, seconds: float) -> None:
    labels = (operation_type, operation_name(name))
    REQUESTS.labels(*labels).inc()
    LATENCY.labels(*labels).observe(seconds)


def count_errors(codes: Iterable[str]) -> None:
    for code in codes:
        ERRORS.labels(code).inc()


# Security-log events (services/audit.py) as figures.
_SIGN_IN_EVENTS = {
    "login_succeeded": "succeeded",
    "login_second_factor_required": "second_factor_required",
}


def security_event(event: str, fields: Mapping[str, object]) -> None:
    if event in _SIGN_IN_EVENTS:
        SIGN_INS.labels(_SIGN_IN_EVENTS[event]).inc()
    elif event in ("login_failed", "second_factor_failed"):
        prefix = "failed" if event == "login_failed" else "second_factor_failed"
        SIGN_INS.labels(f"{prefix}_{fields.get('reason', 'unknown')}").inc()
    elif event == "refresh_token_reused":
        REFRESH_REUSE.inc()
    elif event == "rate_limited":
        THROTTLED.labels(str(fields.get("rule", "unknown"))).inc()
    elif event in ("account_locked", "hasher_busy"):
        THROTTLED.labels(event).inc()


class HasherObserver:
    """What the password hasher reports (auth/passwords.py)."""

    def in_flight(self, count: int) -> None:
        HASHER_IN_FLIGHT.set(count)

    def waited(self, seconds: float) -> None:
        HASHER_WAIT.observe(seconds)


def pool_use(in_use: int, open_connections: int) -> None:
    POOL_IN_USE.set(in_use)
    POOL_OPEN.set(open_connections)


def exposition(*extra: CollectorRegistry) -> bytes:
    """The text of a scrape: every process's metrics (multiprocess mode) or this one's, then
    the extra registries (figures read at scrape time, such as the outbox's)."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    return b"".join(generate_latest(r) for r in (registry, *extra))


def worker_started() -> None:
    """Multiprocess mode: forget the workers that died (uvicorn replaced them)."""
    if MULTIPROCESS:
        forget_dead_workers(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def worker_stopping() -> None:
    """Multiprocess mode: this worker's pool and hasher stop counting; its counters stay."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of worker processes that are gone (a killed worker's pool and
    hasher no longer count); their counters stay, as totals must."""
    pids = {
        int(match.group(1))
        for file in os.listdir(directory)
        if (match := re.search(r"_(\d+)\.db$", file))
    }
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def now() -> float:
    return time.perf_counter()
