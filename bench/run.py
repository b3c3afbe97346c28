"""The benchmark: usergraph against the floor and PostGraphile on PostgreSQL, driven by wrk
(`make bench`).

Seeds the database (seed.py), starts `usergraph serve` (production mode, one worker, default
argon2 costs, throttles opened wide so they do not interfere), the floor app (floor.py:
Starlette + SQLAlchemy Core, the same SQL, byte-identical JSON, checked before measuring), the
peer (peer.py: PostGraphile 5, amber preset, production mode, one Node 22 process, installed
with npm ci on first use; skipped, saying why, when npm is missing or the install fails) and a
second usergraph with two workers, each on its own port. Every round runs every scenario,
usergraph and its comparisons one after the other (A B C, A B, ...); ratios are taken within a
round and reported per round and as the median over rounds (scenarios.py, report.py).

    me          `me { id username email roles { name } }` with a bearer token
    users       `users(first: 50) { totalCount edges { node { id username email roles
                { name } } } }` as an admin
    deep        the same page after a cursor near the end of the table
    __typename  `{ __typename }` without a token: the cost of a request itself (against the peer)
    (peer)      users and deep as PostGraphile asks them (`allUsers(orderBy: [CREATED_AT_ASC,
                ROW_ID_ASC], first: 50)` with the roles through user_roles), checked to hold the
                same users as usergraph's answers; it reads as postgres, with no token to check
    refresh     `refresh` with a fresh token per request: each wrk connection starts with the
                refresh token of its own login and sends the one each answer hands out (rotation
                makes them single-use); a refused refresh fails the run. Against Keycloak's
                sizing figure: 120 refreshes per second per core (server CPU time / wall)
    storm       `me` at a steady pace (wrk's delay()) alone, then while 20 clients log in
                without pause; meanwhile a probe GETs /healthz every 10 ms from outside
                (event-loop lag), and the same probe on the idle floor process is the control
    register    a new account per request, against the hashing limit: cores / CPU time of one
                argon2 hash at the default cost (hashing.py, usergraph's own hasher)
    workers     the users page on one worker against two (both unpinned)

Per run: req/s, p50 and p99 (wrk), server CPU ms per request (/proc/PID/stat), new database
connections per request (pg_stat_database.sessions); per request type, SQL statements and
database round trips, counted in-process (sqlcount.py); peak RSS of the worker under users.

With two or more CPUs the single-worker servers (PostGraphile too) are pinned to the first CPU
and wrk to the second for me/users/deep/__typename/refresh (PostgreSQL is left to the
scheduler); the scenarios that hash passwords and the workers comparison run unpinned, as the
hasher uses every core.

    .venv/bin/python bench/run.py [--users 100000] [--rounds 3] [--duration 10] [--no-pin]
                                  [--no-peer] [--set USERGRAPH_DATABASE_POOL_SIZE=30 ...]
    BENCH_QUICK=1: 1 round of 3 s on 10,000 users.  DATABASE_URL: the database to seed and use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import peer
from floor import ME_QUERY, USERS_QUERY
from hashing import measure_hashing
from loadgen import wrk_version
from report import Config, Measurements, report, summarize, targets
from scenarios import DRIVER_AGENT, Bench, Fixed, PeerRequest, body_text, count_sql, login
from seed import (
    ADMIN_USERNAME,
    DEFAULT_USERS,
    USER_USERNAME,
    created_at,
    database_url,
    reset_bench_writes,
    seed,
    seeded_username,
)
from servers import DatabaseSessions, floor_server, server_environment, usergraph_server
from sqlalchemy import text

from usergraph.db.engine import create_engine
from usergraph.schema.relay import encode_cursor
from usergraph.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
SIGNING_KEY = "bench-signing-key-that-is-long-enough-0123456789"
DATA_KEY = "YmVuY2gtZGF0YS1rZXktdGhhdC1pcy0zMi1ieXRlcyE="  # a Fernet key, for production mode
WIDE_OPEN = "1000000/minute"


def ensure_wrk() -> None:
    """Install wrk with apt-get when it is missing (as root), or stop with a clear message."""
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing; installing it with apt-get", flush=True)
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], check=False)
            subprocess.run(install, check=False)
        if shutil.which("wrk"):
            return
    raise SystemExit(
        "error: the benchmark needs wrk (https://github.com/wg/wrk) and could not install it. "
        "Install it first: `apt-get install wrk` on Debian or Ubuntu (as root), "
        "`brew install wrk` on macOS."
    )


def parse_config() -> Config:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000 if quick else DEFAULT_USERS)
    parser.add_argument("--rounds", type=int, default=1 if quick else 3)
    parser.add_argument("--duration", type=float, default=3 if quick else 10)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--storm-clients", type=int, default=20)
    parser.add_argument("--register-connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the OS")
    parser.add_argument("--no-peer", action="store_true", help="leave PostGraphile out")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every server (e.g. USERGRAPH_DATABASE_POOL_SIZE=30), to measure "
        "one change against another; repeatable",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCH_DIR / ("results-quick.json" if quick else "results.json"),
    )
    args = parser.parse_args()
    if args.users < 200:
        parser.error("--users must be at least 200")
    settings = dict(item.partition("=")[::2] for item in args.set)
    if any(not name for name in settings):
        parser.error("--set takes NAME=VALUE")
    return Config(
        users=args.users,
        rounds=args.rounds,
        duration=args.duration,
        warmup=1 if quick else 2,
        connections=args.connections,
        storm_clients=args.storm_clients,
        register_connections=args.register_connections,
        paced_connections=2,
        pace_ms=10,
        workers=args.workers,
        pin=not args.no_pin,
        quick=quick,
        output=args.output,
        settings=settings,
        peer=not args.no_peer,
    )


async def _reset(url: str, *, everything: bool) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        await reset_bench_writes(engine)
        if everything:
            async with engine.begin() as conn:
                await conn.execute(
                    text("DELETE FROM sessions WHERE user_agent = :agent"), {"agent": DRIVER_AGENT}
                )
    finally:
        await engine.dispose()


def main() -> None:
    config = parse_config()
    started = time.monotonic()
    ensure_wrk()
    url = database_url(config.users)
    for key in [k for k in os.environ if k.startswith("USERGRAPH_")]:
        del os.environ[key]  # the in-process SQL count reads the same settings as the servers
    cpus = sorted(os.sched_getaffinity(0))
    print(
        f"usergraph bench: {config.users:,} users, {config.rounds} round(s) of "
        f"{config.duration:g} s per run, {config.connections} connections, {len(cpus)} CPUs, "
        f"{wrk_version()}, Python {platform.python_version()}",
        flush=True,
    )
    if len(cpus) >= 2 and config.pin:
        print(
            f"pinning: usergraph, the floor and PostGraphile on CPU {cpus[0]}, wrk on CPU "
            f"{cpus[1]} for me/users/deep/__typename/refresh; the rest unpinned",
            flush=True,
        )
    if config.settings:
        print(f"settings for every server: {config.settings}", flush=True)
    asyncio.run(seed(url, config.users))
    asyncio.run(_reset(url, everything=True))
    hashing = measure_hashing(len(cpus), 1.0 if config.quick else 3.0)
    print(
        f"argon2 (default cost): {hashing['hash_wall_ms']} ms wall, {hashing['hash_cpu_ms']} ms "
        f"CPU per hash; limit {hashing['limit_per_s']}/s on {hashing['cores']} cores",
        flush=True,
    )
    settings_env = {
        "DATABASE_URL": url,
        "USERGRAPH_ENV": "production",
        "USERGRAPH_SIGNING_KEY": SIGNING_KEY,
        "USERGRAPH_DATA_KEYS": DATA_KEY,
        # Registrations write their verification email to the outbox; the log mailer "sends".
        "USERGRAPH_MAILER": "log",
        # Throttles wide open: they are not what is measured.
        "USERGRAPH_LOGIN_ACCOUNT_LIMIT": WIDE_OPEN,
        "USERGRAPH_LOGIN_IP_LIMIT": WIDE_OPEN,
        "USERGRAPH_REGISTER_IP_LIMIT": WIDE_OPEN,
        "USERGRAPH_REFRESH_IP_LIMIT": WIDE_OPEN,
        # A full run with 1M users outlasts the default 15 minutes; the cost of checking a
        # token does not depend on its lifetime.
        "USERGRAPH_ACCESS_TOKEN_TTL_SECONDS": "86400",
        **config.settings,
    }
    env = server_environment(**settings_env)
    os.environ.update(settings_env)
    peer_skipped = peer.install() if config.peer else "--no-peer"
    if peer_skipped:
        print(f"peer: PostGraphile is left out: {peer_skipped}", flush=True)
    m: Measurements
    with tempfile.TemporaryDirectory(prefix="usergraph-bench-") as scratch:
        directory = Path(scratch)
        pinned = config.pin and len(cpus) >= 2
        server_cpus = {cpus[0]} if pinned else None
        servers = {
            "usergraph": usergraph_server(
                "usergraph", env=env, directory=directory, cpus=server_cpus
            ),
            "floor": floor_server(env=env, directory=directory, cpus=server_cpus),
            "usergraph-workers": usergraph_server(
                "usergraph-workers",
                env=env,
                directory=directory,
                cpus=None,
                workers=config.workers,
            ),
        }
        if not peer_skipped:
            servers["postgraphile"] = peer.peer_server(
                env=env, database_url=url, directory=directory, cpus=server_cpus
            )
        db_sessions: DatabaseSessions | None = None
        try:
            for server in servers.values():
                server.start()
            for name, server in list(servers.items()):
                try:
                    server.wait_ready()
                except SystemExit as error:
                    if name != "postgraphile":
                        raise
                    peer_skipped = f"it did not start: {error}"
                    print(f"peer: PostGraphile is left out: {peer_skipped}", flush=True)
                    server.stop()
                    del servers[name]
            db_sessions = DatabaseSessions(url)
            bench = Bench(config, servers, cpus, db_sessions)
            m = bench.m
            m.peer = {"skipped": peer_skipped} if peer_skipped else peer.versions()
            admin = login(bench.ug, ADMIN_USERNAME)
            user = login(bench.ug, USER_USERNAME)
            deep_n = config.users - 100
            cursor = encode_cursor("uc", (created_at(deep_n), deep_n))
            me = Fixed("me", body_text(ME_QUERY), user, f'"username":"{USER_USERNAME}"')
            users = Fixed(
                "users", body_text(USERS_QUERY), admin, f'"totalCount":{config.users + 2}'
            )
            deep = Fixed(
                "deep",
                body_text(USERS_QUERY, {"after": cursor}),
                admin,
                f'"username":"{seeded_username(deep_n + 1)}"',
            )
            for scenario in (me, users, deep):
                bench.identical_answer(scenario)
            print("usergraph and the floor answer byte for byte the same: ok", flush=True)
            typename = Fixed("typename", body_text(peer.TYPENAME_QUERY), "", '"__typename"')
            bench.answer(typename)
            if bench.peer is not None:
                after = peer.cursor_of_user(bench.peer, deep_n)
                for asked, body, same_users in (
                    (users, body_text(peer.PEER_USERS_QUERY), True),
                    (deep, body_text(peer.PEER_USERS_QUERY, {"after": after}), True),
                    (typename, body_text(peer.TYPENAME_QUERY), False),
                ):
                    request = PeerRequest(Fixed(asked.name, body, "", ""), same_users)
                    bench.check_peer(asked, request)
                print(
                    f"PostGraphile {m.peer['postgraphile']} (Node {m.peer['node']}) answers with "
                    "the same users as usergraph: ok",
                    flush=True,
                )
            refresh_accounts = config.users // 2  # seeded accounts the refreshes log in as
            counted = bench.refresh_tokens(2, refresh_accounts - 2)
            sql = asyncio.run(
                count_sql(Settings(_env_file=None), [me, users, deep], [typename], counted)
            )
            for name in ("me", "users", "deep"):
                ours, theirs = (sorted(sql[app][name]["sql"]) for app in ("usergraph", "floor"))
                if ours != theirs:
                    print(
                        f"note: for {name} the floor runs other SQL than usergraph; make "
                        "bench/floor.py run the same (results.json lists both)",
                        flush=True,
                    )
            asyncio.run(_reset(url, everything=False))
            bench.warm_up([me, users, deep], [typename])
            for round_ in range(1, config.rounds + 1):
                print(f"round {round_} of {config.rounds}", flush=True)
                tokens = bench.refresh_tokens(config.connections, refresh_accounts)
                for process in (bench.ug, bench.floor, bench.peer):
                    if process is not None:
                        process.pin(bench.server_cpus)
                for scenario in (me, users, deep):
                    bench.compare(round_, scenario)
                bench.compare(round_, typename, floor=False)
                bench.refresh(round_, tokens)
                bench.ug.pin(None)
                bench.storm(round_, me, config.users)
                bench.register(round_)
                asyncio.run(_reset(url, everything=False))
                bench.workers(round_, users)
        finally:
            for server in servers.values():
                server.stop()
            if db_sessions is not None:
                db_sessions.close()
            asyncio.run(_reset(url, everything=True))
    summary = summarize(config, m, sql, hashing)
    goals = targets(config, summary)
    table = report(config, m, sql, hashing, summary, goals)
    elapsed = time.monotonic() - started
    print()
    print(table)
    if m.problems:
        print("\nproblems (the numbers above may not mean what they say):")
        for problem in m.problems:
            print(f"  {problem}")
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(config).items()},
        "machine": {
            "cpus": len(cpus),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "wrk": wrk_version(),
        },
        "hashing": hashing,
        "sql_per_request": sql,
        "summary": summary,
        "targets": goals,
        "runs": m.runs,
        "loop_lag_probes": m.probes,
        "hashing_flat_out": m.hashing,
        "problems": m.problems,
        "elapsed_s": round(elapsed, 1),
    }
    config.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {config.output} ({elapsed:.0f} s)")
    if m.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
