"""Issue 12, item 7: the soak. Mixed traffic at a bounded, open-loop rate (a request is started
every 1/rate seconds whatever the answers take, at most 64 in flight) against one worker on
PostgreSQL and Redis.

    me 45%, users page 10% (first or second page, as an administrator), login 10%, refresh
    10%, register 5%, hostile 20%: too deep, too many aliases, a NUL in a literal and in a
    variable, malformed JSON, 710 identical sibling fields

Measured: the worker's RSS (/proc, every second) at the end of the warm-up (a fifth of the run,
at most 60 s) and at the end; every answer (5xx, INTERNAL_SERVER_ERROR, anything other than
the expected answer); p99 of `me` in the first window after the warm-up and in the last one
(a minute each, or a third of what is left of a shorter run).
Goals: RSS growth < 10%, no 5xx, no internal error, nothing unexpected, last p99 <= 1.5x first.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faults_support import (
    Answer,
    Client,
    Row,
    Store,
    client,
    codes,
    create_admin,
    environment,
    log,
    migrate,
    percentile,
    sleep_until,
    start,
    stop_all,
)
from servers import rss_kib

ADMIN = "soakadmin"
MAX_IN_FLIGHT = 64
PLAN = (
    ["me"] * 45
    + ["users"] * 10
    + ["login"] * 10
    + ["refresh"] * 10
    + ["register"] * 5
    + ["deep", "aliases", "nul_literal", "nul_variable", "malformed_json"] * 3
    + ["overlap"] * 5
)
DEEP = (
    "{ me { sessions { edges { node { user { sessions { edges { node { user { sessions "
    "{ edges { node { id } } } } } } } } } } } } }"
)
ALIASES = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(20)) + " }"
NUL_LITERAL = '{ user(username: "ab\\u0000c") { id } }'
NUL_VARIABLE = "query($u: String) { user(username: $u) { id } }"
OVERLAP = "{ " + " ".join(["__typename"] * 710) + " }"
# What each hostile document must answer: anything else counts as failed.
HOSTILE: dict[str, set[str]] = {
    "deep": {"QUERY_TOO_COMPLEX"},
    "aliases": {"QUERY_TOO_COMPLEX"},
    "nul_literal": {"BAD_USER_INPUT"},
    "nul_variable": {"BAD_USER_INPUT"},
    "malformed_json": {"BAD_REQUEST"},
    "overlap": {"QUERY_TOO_COMPLEX"},
}


@dataclass
class Account:
    name: str
    access: str
    refresh: str
    busy: bool = False


class Soak:
    def __init__(self, c: Client, admin: str, accounts: list[Account]) -> None:
        self.c = c
        self.admin = admin
        self.accounts = accounts
        self.rng = random.Random(7)
        self.cursor: str | None = None
        self.registered = 0

    def _account(self) -> Account:
        return self.rng.choice(self.accounts)

    async def run(self, op: str) -> Answer:
        c = self.c
        if op == "me":
            return await c.me(self._account().access)
        if op == "users":
            after = self.cursor if self.rng.random() < 0.5 else None
            answer = await c.users_page(self.admin, after)
            if answer.ok and answer.payload:
                self.cursor = answer.payload["pageInfo"]["endCursor"]
            return answer
        if op == "login":
            return await c.login(self._account().name)
        if op == "refresh":
            free = [a for a in self.accounts if not a.busy]
            account = self.rng.choice(free)
            account.busy = True
            try:
                answer = await c.refresh(account.refresh)
                if answer.ok and answer.payload:
                    account.access = answer.payload["accessToken"]
                    account.refresh = answer.payload["refreshToken"]
            finally:
                account.busy = False
            return answer
        if op == "register":
            self.registered += 1
            answer = await c.register(f"soak{self.registered}")
            if answer.ok and answer.payload and len(self.accounts) < 200:
                p = answer.payload
                self.accounts.append(Account(p["user"]["username"], p["accessToken"],
                                             p["refreshToken"]))  # fmt: skip
            return answer
        return await self.hostile(op)

    async def hostile(self, op: str) -> Answer:
        c = self.c
        token = self._account().access
        body: dict[str, Any]
        if op == "malformed_json":
            return await c.send(op, content=b'{"query": "{ me { id } }"', token=token)
        if op == "nul_variable":
            body = {"query": NUL_VARIABLE, "variables": {"u": "ab\u0000c"}}
        else:
            query = {"deep": DEEP, "aliases": ALIASES, "nul_literal": NUL_LITERAL,
                     "overlap": OVERLAP}[op]  # fmt: skip
            body = {"query": query}
        return await c.send(op, content=json.dumps(body).encode(), token=token)


def expected(answer: Answer) -> bool:
    return answer.code in HOSTILE.get(answer.op, {"OK"})


async def soak(directory: Path, store: Store, *, seconds: int, rate: int) -> Row:
    row = Row(f"soak {seconds} s at {rate}/s, 1 worker")
    env = environment(store)
    migrate(env, directory)
    create_admin(env, directory, ADMIN)
    server = start("soak", env, directory)
    warmup = min(60.0, seconds / 5)
    window = min(60.0, (seconds - warmup) / 3)
    rss: list[tuple[float, int]] = []
    try:
        async with client(server.base_url, connections=MAX_IN_FLIGHT) as c:
            c.keep = False
            admin = await c.login(ADMIN)
            assert admin.ok and admin.payload, admin.text
            accounts = []
            for i in range(30):
                a = await c.register(f"soakseed{i}")
                assert a.ok and a.payload, a.text
                accounts.append(Account(f"soakseed{i}", a.payload["accessToken"],
                                        a.payload["refreshToken"]))  # fmt: skip
            soak_ = Soak(c, admin.payload["accessToken"], accounts)
            for op in sorted(set(PLAN)):  # each kind answers as expected before the clock starts
                probe = await soak_.run(op)
                if not expected(probe):
                    row.note(f"before the soak, {op} answered {probe.code}: {probe.text[:200]}")
            c.keep = True
            plan = PLAN[:]
            random.Random(3).shuffle(plan)
            gate = asyncio.Semaphore(MAX_IN_FLIGHT)
            skipped = 0
            tasks: set[asyncio.Task[Any]] = set()
            started = time.monotonic()

            async def sample() -> None:
                while True:
                    rss.append((time.monotonic() - started, rss_kib(server.pid)))
                    await asyncio.sleep(1)

            async def one(op: str) -> None:
                async with gate:
                    await soak_.run(op)

            sampler = asyncio.create_task(sample())
            n = 0
            last_log = started
            while (now := time.monotonic()) < started + seconds:
                op = plan[n % len(plan)]
                n += 1
                if gate.locked():
                    skipped += 1
                else:
                    task = asyncio.create_task(one(op))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if now - last_log >= 60:
                    last_log = now
                    log(f"soak: {now - started:.0f} s, {len(c.answers)} answers, "
                        f"RSS {rss[-1][1] / 1024:.1f} MiB")  # fmt: skip
                await sleep_until(started + n / rate)
            await asyncio.gather(*tasks)
            sampler.cancel()
            answers = c.answers
    finally:
        stop_all(server)
    row.requests = len(answers)
    unexpected = [a for a in answers if not expected(a)]
    row.failed = len(unexpected)
    row.http_5xx = sum(1 for a in answers if a.status is not None and a.status >= 500)
    row.internal = sum(
        1
        for a in answers
        if a.code == "INTERNAL_SERVER_ERROR"
        or any((e.get("extensions") or {}).get("code") == "INTERNAL_SERVER_ERROR"
               for e in a.errors or [])
    )  # fmt: skip
    at_warmup = next(kib for t, kib in rss if t >= warmup)
    at_end = rss[-1][1]
    growth = at_end / at_warmup - 1
    peak = max(kib for _, kib in rss)

    def me_p99(start: float, end: float) -> tuple[float, int]:
        lat = [a.latency for a in answers if a.op == "me" and a.ok
               and start <= a.started - started < end]  # fmt: skip
        return percentile(lat, 99) * 1000, len(lat)

    first, n_first = me_p99(warmup, warmup + window)
    last, n_last = me_p99(seconds - window, seconds)
    ratio = last / first
    row.figure = (
        f"RSS {at_warmup / 1024:.1f} -> {at_end / 1024:.1f} MiB ({growth:+.1%}); me p99 "
        f"{first:.1f} -> {last:.1f} ms ({ratio:.2f}x)"
    )
    row.note(
        f"warm-up {warmup:.0f} s, windows of {window:.0f} s ({n_first} and {n_last} `me`); "
        f"RSS peak {peak / 1024:.1f} MiB; {skipped} requests not started ({MAX_IN_FLIGHT} in "
        f"flight); unexpected answers: {codes(unexpected)}"
    )
    if unexpected:
        row.note("e.g. " + "; ".join(sorted({f"{a.op}: {a.text[:160]}" for a in unexpected})[:3]))
    if growth >= 0.10:
        row.miss(f"RSS grew {growth:.1%}")
    if ratio > 1.5:
        row.miss(f"me p99 in the last window {ratio:.2f}x the first")
    if row.failed or row.http_5xx or row.internal:
        row.miss("unexpected answers, 5xx or internal errors")
    if skipped:
        row.note(f"the server fell behind: {skipped} requests were not sent")
    return row
