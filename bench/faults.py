"""Faults survived, with figures (issue 12, items 2 and 5-8): `make faults`.

Every scenario runs real `usergraph serve` processes (production mode) on a throwaway
PostgreSQL database of its own (usergraph_faults_<run>_<scenario>, dropped afterwards) and a
Redis key prefix of its own (its keys deleted afterwards), on the loopback interface only.
Servers hash with cheap argon2 costs, except where the cost is the point (the slow requests of
the SIGTERM scenarios and the timing scenario use the defaults). Throttles are opened wide.

    connections  every backend connection of the server's database ended with
                 pg_terminate_backend (a warm pool left dead, as after a PostgreSQL restart),
                 then 100 concurrent requests (reads and writes); FAULTS_RESTART_ROUNDS times
                 (faults_database.py)
    kill-worker  --workers 2 under load, SIGKILL one worker (faults_workers.py)
    sigterm      SIGTERM with slow logins in flight and clients asking `me` besides, 1 and 2
                 workers, and once with more work than the graceful timeout allows
                 (faults_workers.py)
    durability   concurrent registrations, password changes and refreshes, SIGKILL, restart
                 on the same database, FAULTS_KILL_ROUNDS times; every acknowledged write is
                 there and nothing is half written (faults_database.py)
    soak         mixed traffic at a bounded rate for FAULTS_SOAK_SECONDS (default 600) against
                 one worker: RSS, 5xx, internal errors, p99 of `me` (faults_soak.py)
    timing       login with an unknown name vs a known name and a wrong password, registration
                 with a taken vs a free email (also with verification required),
                 FAULTS_TIMING_ATTEMPTS (default 200) each, interleaved (faults_timing.py)

    .venv/bin/python bench/faults.py [--only soak,timing] [--logs DIR]
    FAULTS_SOAK_SECONDS, FAULTS_SOAK_RATE (requests/s, default 30), FAULTS_TIMING_ATTEMPTS,
    FAULTS_RESTART_ROUNDS (3), FAULTS_KILL_ROUNDS (3); FAULTS_POSTGRES_URL (default
    postgresql+asyncpg://postgres@127.0.0.1:5432), FAULTS_REDIS_URL (redis://127.0.0.1:6379/0).
    --logs DIR keeps every server's log (otherwise they go with a temporary directory).

Prints one table: scenario, requests, failed, 5xx, internal errors, lost / duplicated writes,
the scenario's figure and whether its goal was met; then what each scenario noted. Exits 1 when
a goal was not met.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import faults_database
import faults_soak
import faults_timing
import faults_workers
from faults_support import (
    PG_SERVER,
    REDIS_URL,
    Row,
    Store,
    log,
    reachable,
    redis_reachable,
    table,
)

SCENARIOS = ("connections", "kill-worker", "sigterm", "durability", "soak", "timing")


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


Scenario = Callable[[Path, Store], Awaitable[Row | list[Row]]]


async def _in_store(name: str, directory: Path, run: Scenario) -> list[Row]:
    store = Store(name)
    await store.create()
    scratch = directory / name
    scratch.mkdir()
    started = time.monotonic()
    try:
        rows = await run(scratch, store)
        return rows if isinstance(rows, list) else [rows]
    finally:
        await store.drop()
        log(f"{name}: {time.monotonic() - started:.0f} s")


def _sigterm(workers: int, in_flight: int, graceful: int, name: str) -> Scenario:
    async def run(directory: Path, store: Store) -> Row:
        return await faults_workers.sigterm(
            directory, store, workers_n=workers, in_flight=in_flight, graceful=graceful, name=name
        )

    return run


async def main_async(only: list[str], directory: Path) -> list[Row]:
    problems = [p for p in (await reachable(PG_SERVER), await redis_reachable(REDIS_URL)) if p]
    if problems:
        raise SystemExit(
            "error: the fault scenarios need PostgreSQL and Redis on this machine:\n  "
            + "\n  ".join(problems)
        )
    soak_seconds = _int("FAULTS_SOAK_SECONDS", 600)
    rows: list[Row] = []

    async def scenario(name: str, run: Scenario) -> None:
        log(f"{name} ...")
        for row in await _in_store(name, directory, run):
            log(f"{row.scenario}: {'MET' if row.met else 'NOT MET'}: {row.figure}")
            rows.append(row)

    if "connections" in only:
        rounds = _int("FAULTS_RESTART_ROUNDS", 3)
        await scenario(
            "connections", lambda d, s: faults_database.dead_connections(d, s, rounds=rounds)
        )
    if "kill-worker" in only:
        await scenario("killworker", faults_workers.kill_worker)
    if "sigterm" in only:
        for workers, in_flight, graceful, name in (
            (1, 16, 30, "sigterm1"),
            (2, 24, 30, "sigterm2"),
            (1, 60, 2, "sigterm1past"),
        ):
            await scenario(name, _sigterm(workers, in_flight, graceful, name))
    if "durability" in only:
        rounds = _int("FAULTS_KILL_ROUNDS", 3)
        await scenario("durability", lambda d, s: faults_database.durability(d, s, rounds=rounds))
    if "soak" in only:
        rate = _int("FAULTS_SOAK_RATE", 30)
        await scenario("soak", lambda d, s: faults_soak.soak(d, s, seconds=soak_seconds, rate=rate))
    if "timing" in only:
        attempts = _int("FAULTS_TIMING_ATTEMPTS", 200)
        await scenario("timing", lambda d, s: faults_timing.timing(d, s, attempts=attempts))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--logs", type=Path, help="keep every server's log in a new directory under this one"
    )
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    for key in [k for k in os.environ if k.startswith("USERGRAPH_")]:
        del os.environ[key]
    started = time.monotonic()
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        kept = Path(tempfile.mkdtemp(prefix="faults-", dir=args.logs))
        log(f"server logs go to {kept}")
        rows = asyncio.run(main_async(only, kept))
    else:
        with tempfile.TemporaryDirectory(prefix="usergraph-faults-") as scratch:
            rows = asyncio.run(main_async(only, Path(scratch)))
    print()
    print(table(rows))
    print(
        "\nfailed: answers other than the expected one, not counting requests cut in flight by "
        "a kill or the graceful timeout (the figure says how many); lost: acknowledged writes "
        "missing afterwards; dup: writes applied twice (sessions beyond those acknowledged, "
        "refresh-token families with two live tokens)\n"
    )
    for row in rows:
        for note in row.notes:
            print(f"{row.scenario}: {note}")
    print(f"\n{len(rows)} rows in {time.monotonic() - started:.0f} s")
    if not all(row.met for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
