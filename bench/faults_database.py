"""Issue 12, items 2 and 6: the database goes away under a warm pool; acknowledged means
durable.

dead_connections  one worker with a warm pool; every backend connection of its database is
                  ended with pg_terminate_backend (what a PostgreSQL restart leaves in the
                  pool), then 100 concurrent requests: `me`, users pages, logins, refreshes
                  and registrations. Every one must succeed, and no write may happen twice
                  (a retried login would open two sessions).
durability        16 clients register accounts, refresh their sessions and change their
                  passwords; the server is SIGKILLed mid-traffic and restarted on the same
                  database, `rounds` times. Then every acknowledged registration logs in with
                  its last acknowledged password (or the one whose change was cut by a kill),
                  every acknowledged refresh token refreshes, and SQL finds no torn rows.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

from faults_support import (
    PASSWORD,
    Answer,
    Client,
    Row,
    Store,
    client,
    codes,
    create_admin,
    environment,
    kill,
    log,
    migrate,
    start,
    stop_all,
)

ADMIN = "faultsadmin"
BURST = 100
CLIENTS = 16


async def _backends(store: Store) -> int:
    name = store.database_url.rsplit("/", 1)[1]
    return int(
        await store.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    )


async def _terminate(store: Store) -> int:
    name = store.database_url.rsplit("/", 1)[1]
    return int(
        await store.scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    )


@dataclass
class Session:
    name: str
    access: str
    refresh: str


async def dead_connections(directory: Path, store: Store, *, rounds: int) -> Row:
    row = Row("pg_terminate_backend, warm pool, 100 at once")
    env = environment(store)
    migrate(env, directory)
    create_admin(env, directory, ADMIN)
    server = start("connections", env, directory)
    try:
        async with client(server.base_url, connections=BURST) as c:
            c.keep = False
            admin = await c.login(ADMIN)
            assert admin.ok and admin.payload, admin.text
            admin_token = admin.payload["accessToken"]
            sessions: list[Session] = []
            for i in range(40):
                answer = await c.register(f"fc{i}")
                assert answer.ok and answer.payload, answer.text
                sessions.append(
                    Session(f"fc{i}", answer.payload["accessToken"], answer.payload["refreshToken"])
                )
            acked_sessions = 1 + len(sessions)  # the admin's login and each registration
            acked_accounts: dict[str, str] = {s.name: PASSWORD for s in sessions}
            terminated: list[int] = []
            burst_answers: list[Answer] = []
            for round_ in range(rounds):
                # Warm the pool: enough concurrent reads that it holds all it may keep.
                warm = [c.me(s.access) for s in sessions] + [
                    c.users_page(admin_token) for _ in range(10)
                ]
                warmed = await asyncio.gather(*warm)
                assert all(a.ok for a in warmed), codes(warmed)
                pooled = await _backends(store)
                ended = await _terminate(store)
                terminated.append(ended)
                await asyncio.sleep(0.5)  # the backends are gone; the pool does not know yet
                log(f"connections: round {round_ + 1}: {pooled} backends, {ended} terminated")
                c.keep = True
                start_at = len(c.answers)
                burst = []
                for i in range(40):
                    burst.append(c.me(sessions[i % len(sessions)].access))
                for _ in range(20):
                    burst.append(c.users_page(admin_token))
                for i in range(15):
                    burst.append(c.login(sessions[i].name))
                refreshed = sessions[15:30]
                for s in refreshed:
                    burst.append(c.refresh(s.refresh))
                new_names = [f"fc{round_}r{i}" for i in range(BURST - len(burst))]
                for name in new_names:
                    burst.append(c.register(name))
                answers = await asyncio.gather(*burst)
                c.keep = False
                burst_answers.extend(c.answers[start_at:])
                for answer in answers[40 + 20 : 40 + 20 + 15]:
                    acked_sessions += answer.ok
                for s, answer in zip(refreshed, answers[75:90], strict=True):
                    if answer.ok and answer.payload:
                        s.access = answer.payload["accessToken"]
                        s.refresh = answer.payload["refreshToken"]
                for name, answer in zip(new_names, answers[90:], strict=True):
                    if answer.ok:
                        acked_accounts[name] = PASSWORD
                        acked_sessions += 1
                await asyncio.sleep(0.5)
            row.count(burst_answers)
            sessions_written = int(await store.scalar("SELECT count(*) FROM sessions"))
            torn = await store.half_written()
            # Every acknowledged refresh token still works, every account logs in.
            checks = [await c.refresh(s.refresh) for s in sessions]
            checks += [await c.login(name) for name in acked_accounts]
        lost = sum(not a.ok for a in checks)
        row.lost = lost
        row.duplicated = max(0, sessions_written - acked_sessions)
        failed = [a for a in burst_answers if not a.ok]
        row.figure = (
            f"{'/'.join(map(str, terminated))} connections ended; "
            f"{len(failed)} of {len(burst_answers)} failed: {codes(failed)}"
        )
        if failed:
            row.note("e.g. " + "; ".join(sorted({a.text[:160] for a in failed})[:3]))
        row.note(
            f"sessions in the database {sessions_written}, acknowledged {acked_sessions}; "
            f"half-written rows: {torn}"
        )
        if row.failed or row.http_5xx or row.internal:
            row.miss(f"{row.failed} requests failed after the connections were ended")
        if row.lost or row.duplicated or any(torn.values()):
            row.miss("lost, duplicated or torn writes")
        return row
    finally:
        stop_all(server)


# --- durability -------------------------------------------------------------------------------


@dataclass
class Account:
    name: str
    registered: bool = False  # acknowledged
    password: str = PASSWORD  # the last acknowledged one
    cut_password: str | None = None  # a change in flight at a kill: either may be in force
    access: str = ""
    refresh: str = ""
    uncertain: bool = False  # an operation was cut: the session's state is unknown
    cut: str = ""  # which operation was cut
    changes: int = 0
    refreshes: int = 0


class Traffic:
    """The clients' state across kills and restarts."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.rng = random.Random(12)
        self.counter = 0

    async def client_loop(self, c: Client, i: int, stop: asyncio.Event) -> None:
        mine: list[Account] = [a for a in self.accounts.values() if a.name.startswith(f"fd{i}n")]
        while not stop.is_set():
            usable = [a for a in mine if a.registered and not a.uncertain]
            if len(usable) < 2 or self.rng.random() < 0.35:
                self.counter += 1
                account = Account(f"fd{i}n{self.counter}")
                self.accounts[account.name] = account
                mine.append(account)
                answer = await c.register(account.name)
                if answer.ok and answer.payload:
                    account.registered = True
                    account.access = answer.payload["accessToken"]
                    account.refresh = answer.payload["refreshToken"]
                elif answer.transport:
                    account.cut = "register"
                continue
            account = self.rng.choice(usable)
            if self.rng.random() < 0.5:
                answer = await c.refresh(account.refresh)
                if answer.ok and answer.payload:
                    account.access = answer.payload["accessToken"]
                    account.refresh = answer.payload["refreshToken"]
                    account.refreshes += 1
                else:
                    account.uncertain = True
                    account.cut = f"refresh ({answer.code})"
            else:
                new = f"changed {account.name} {account.changes + 1} of many"
                answer = await c.change_password(account.access, account.password, new)
                if answer.ok:
                    account.password = new
                    account.changes += 1
                else:
                    account.uncertain = True
                    account.cut_password = new
                    account.cut = f"changePassword ({answer.code})"


async def durability(directory: Path, store: Store, *, rounds: int) -> Row:
    row = Row(f"SIGKILL mid-writes x{rounds}, restart (PostgreSQL)")
    env = environment(store)
    migrate(env, directory)
    traffic = Traffic()
    server = start("durable0", env, directory)
    in_flight = 0
    try:
        for round_ in range(rounds):
            c = Client(server.base_url, connections=CLIENTS)
            stop = asyncio.Event()
            loops = [asyncio.create_task(traffic.client_loop(c, i, stop)) for i in range(CLIENTS)]
            await asyncio.sleep(2 + traffic.rng.random() * 2)
            kill(server.pid)  # one worker: the server process is the worker
            stop.set()
            killed_at = time.monotonic()
            await asyncio.gather(*loops)
            await c.close()
            assert server.process is not None
            server.process.wait(timeout=30)
            cut = [a for a in c.answers if a.transport and a.started < killed_at]
            in_flight += len(cut)
            row.count(c.answers)
            log(
                f"durability: round {round_ + 1}: {len(c.answers)} requests, SIGKILL with "
                f"{len(cut)} in flight"
            )
            server = start(f"durable{round_ + 1}", env, directory)
        torn = await store.half_written()
        live_tokens = int(
            await store.scalar(
                "SELECT count(*) FROM (SELECT session_id FROM refresh_tokens WHERE used_at IS "
                "NULL GROUP BY session_id HAVING count(*) > 1) AS twice"
            )
        )
        names = await store.usernames()
        accounts = list(traffic.accounts.values())
        acked = [a for a in accounts if a.registered]
        lost: list[str] = []
        async with client(server.base_url, connections=8) as c:
            c.keep = False
            for a in acked:
                if not a.uncertain:
                    answer = await c.refresh(a.refresh)
                    if not answer.ok:
                        lost.append(f"{a.name}: refresh token {answer.code}")
                answer = await c.login(a.name, a.password)
                if not answer.ok and a.cut_password:
                    answer = await c.login(a.name, a.cut_password)
                if not answer.ok:
                    lost.append(f"{a.name}: login {answer.code}")
                if names[a.name] != 1:
                    lost.append(f"{a.name}: {names[a.name]} rows")
            cut_registrations = [a for a in accounts if a.cut == "register"]
            committed_anyway = [a for a in cut_registrations if names[a.name]]
            for a in committed_anyway:
                if not (await c.login(a.name)).ok:
                    lost.append(f"{a.name}: committed unacknowledged, cannot log in")
            checked = len(c.answers)
        row.requests += checked
        row.lost = len(lost)
        row.duplicated = live_tokens + sum(n - 1 for n in names.values() if n > 1)
        changes = sum(a.changes for a in acked)
        refreshes = sum(a.refreshes for a in acked)
        row.figure = (
            f"{len(acked)} registrations, {changes} password changes, {refreshes} refreshes "
            f"acknowledged, all there; {in_flight} cut in flight"
        )
        row.failed -= in_flight  # cut by the kill: expected, not failures of the server
        row.note(
            f"{len(cut_registrations)} registrations cut by a kill, {len(committed_anyway)} of "
            f"them committed; sessions with two live refresh tokens: {live_tokens}; "
            f"half-written rows: {torn}"
        )
        if lost:
            row.note("lost: " + "; ".join(lost[:5]))
            row.miss(f"{len(lost)} acknowledged writes missing")
        if row.duplicated or any(torn.values()):
            row.miss("duplicated or torn writes")
        if row.failed or row.http_5xx or row.internal:
            row.miss(f"{row.failed} requests failed other than those cut by the kills")
        return row
    finally:
        stop_all(server)
