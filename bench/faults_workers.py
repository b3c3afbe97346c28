"""Issue 12, item 5: workers and shutdown.

kill_worker  `usergraph serve --workers 2` under load (clients register, log in and ask `me`,
             each request on a new connection, so the kernel spreads them over the workers);
             SIGKILL the worker holding the most connections. uvicorn's supervisor must start a
             replacement that then holds connections of its own, the other worker must serve
             meanwhile, and every registration that answered success must log in afterwards.
sigterm      logins at the default argon2 cost in flight (connections opened beforehand, the
             requests written, then SIGTERM): every one completes, new connections are refused
             once the listener is closed (probed every 100 ms with a GET /healthz on a new
             connection), the process exits 0 within USERGRAPH_GRACEFUL_SHUTDOWN_SECONDS.
             Also with more work in flight than the graceful timeout allows: the process still
             exits in time, cutting what is left.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from faults_support import (
    PASSWORD,
    Answer,
    Client,
    Row,
    Store,
    alive,
    client,
    codes,
    environment,
    established,
    kill,
    log,
    migrate,
    start,
    stop_all,
    workers,
)
from servers import Server

KILL_CLIENTS = 16
BACKGROUND = 4  # clients asking `me` while a SIGTERM drains


async def _wait_for_workers(server: Server, count: int, within: float = 60) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = [pid for pid in workers(server) if alive(pid)]
        if len(found) == count:
            return found
        await asyncio.sleep(0.1)
    raise SystemExit(f"{server.name}: {count} workers did not come up")


async def verify_logins(base_url: str, accounts: dict[str, str]) -> list[Answer]:
    """Log every account in with its password, 8 at a time; the answers."""
    async with client(base_url, connections=8) as c:
        gate = asyncio.Semaphore(8)

        async def one(name: str, password: str) -> Answer:
            async with gate:
                return await c.login(name, password)

        return list(await asyncio.gather(*(one(n, p) for n, p in accounts.items())))


async def kill_worker(directory: Path, store: Store, *, load_seconds: float = 4.0) -> Row:
    row = Row("SIGKILL 1 of 2 workers under load")
    env = environment(store)
    migrate(env, directory)
    server = start("kill-worker", env, directory, workers=2)
    try:
        before = await _wait_for_workers(server, 2)
        acked: dict[str, str] = {}
        stop = asyncio.Event()
        # Every request on a new connection: many clients, and the kernel's choice of worker.
        c = Client(server.base_url, connections=KILL_CLIENTS * 2, keepalive=0)

        async def user(i: int) -> None:
            n = 0
            while not stop.is_set():
                name = f"fk{i}n{n}"
                n += 1
                registered = await c.register(name)
                if not registered.ok:
                    continue
                acked[name] = PASSWORD
                signed_in = await c.login(name)
                if signed_in.ok and signed_in.payload:
                    await c.me(signed_in.payload["accessToken"])

        tasks = [asyncio.create_task(user(i)) for i in range(KILL_CLIENTS)]
        await asyncio.sleep(load_seconds)
        connections = {pid: established(pid, server.port) for pid in before}
        victim = max(before, key=lambda pid: connections[pid])
        (survivor,) = (pid for pid in before if pid != victim)
        kill(victim)
        killed_at = time.monotonic()
        for _ in range(6000):  # at most 30 s
            if not alive(victim):
                break
            await asyncio.sleep(0.005)
        dead_after = time.monotonic() - killed_at
        log(
            f"kill-worker: SIGKILL worker {victim} (connections held: {connections}); gone "
            f"after {dead_after:.3f} s"
        )
        spawned_at = serving_at = None
        replacement = None
        while time.monotonic() < killed_at + 60:
            now = [pid for pid in workers(server) if alive(pid)]
            new = [pid for pid in now if pid not in before]
            if new and spawned_at is None:
                replacement, spawned_at = new[0], time.monotonic()
            if replacement is not None and established(replacement, server.port) > 0:
                serving_at = time.monotonic()
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(load_seconds)  # more load, the replacement serving too
        stop.set()
        await asyncio.gather(*tasks)
        await c.close()
        after = [pid for pid in workers(server) if alive(pid)]
        answers = c.answers
        served_meanwhile = sum(
            1 for a in answers if a.ok and killed_at < a.started + a.latency < (serving_at or 0)
        )
        failed = [a for a in answers if not a.ok]
        cut = [a for a in failed if a.transport and a.started < killed_at]
        row.count(answers)
        row.failed -= len(cut)  # in flight on the killed worker: shown in the figure
        checks = await verify_logins(server.base_url, acked)
        row.count(checks)
        row.lost = sum(not a.ok for a in checks)
        names = await store.usernames()
        row.duplicated = sum(n - 1 for n in names.values() if n > 1)
        torn = await store.half_written()
        unacknowledged = len([n for n in names if n not in acked])
        gap = f"{serving_at - killed_at:.1f} s" if serving_at else "never"
        spawned = f"{spawned_at - killed_at:.1f} s" if spawned_at else "never"
        row.figure = (
            f"replaced after {spawned} (serving after {gap}); the other served "
            f"{served_meanwhile} meanwhile; {len(acked)} acknowledged accounts log in; "
            f"{len(cut)} cut in flight"
        )
        if not cut:
            row.note(
                f"nothing was in flight on the killed worker ({connections[victim]} connections "
                "held just before)"
            )
        row.note(
            f"workers before {before}, killed {victim}, after {after}; failures during load: "
            f"{codes(failed)}; {unacknowledged} accounts committed though their answer was "
            f"lost; half-written rows: {torn}"
        )
        if serving_at is None or replacement not in after:
            row.miss("no replacement worker took connections within 60 s")
        if survivor not in after or served_meanwhile == 0:
            row.miss("the other worker did not keep serving")
        if row.lost or row.duplicated or any(torn.values()):
            row.miss(f"{row.lost} acknowledged accounts lost, torn rows {torn}")
        if row.failed or len(cut) > KILL_CLIENTS:
            row.miss(f"failures beyond the requests cut on the killed worker: {codes(failed)}")
        if row.http_5xx or row.internal:
            row.miss("5xx or internal errors")
        return row
    finally:
        stop_all(server)


@dataclass
class Probe:
    at: float  # s after the signal when the probe began
    outcome: str  # served, refused, reset, hung


async def probe(port: int) -> str:
    """A new connection and a GET /healthz on it: served, refused, reset (closed unanswered)
    or hung (no answer within 2 s)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except ConnectionRefusedError:
        return "refused"
    except (TimeoutError, OSError):
        return "hung"
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 2)
        return "served" if line.startswith(b"HTTP/1.1 200") else "reset"
    except TimeoutError:
        return "hung"
    except OSError:
        return "reset"
    finally:
        writer.close()


async def sigterm(
    directory: Path, store: Store, *, workers_n: int, in_flight: int, graceful: int, name: str
) -> Row:
    """SIGTERM with in_flight logins at the default argon2 cost under way."""
    past_timeout = name.endswith("past")
    label = (
        f"SIGTERM, {workers_n} worker{'s' if workers_n > 1 else ''}, {in_flight} slow in flight"
        + (f", {graceful} s timeout" if past_timeout else "")
    )
    row = Row(label)
    env = environment(store, cheap=False, USERGRAPH_GRACEFUL_SHUTDOWN_SECONDS=str(graceful))
    migrate(env, directory)
    server = start(name, env, directory, workers=workers_n)
    try:
        await _wait_for_workers(server, workers_n)
        async with client(server.base_url, connections=in_flight + 2) as c:
            c.keep = False
            registered = await c.register("slowpoke")
            assert registered.ok and registered.payload, registered.text
            token = registered.payload["accessToken"]
            assert (await c.login("slowpoke")).ok  # the first hash's costs behind us
            # Load besides: clients asking `me` on kept-alive connections until the end.
            background = Client(server.base_url, connections=BACKGROUND)
            ended = asyncio.Event()

            async def asking() -> None:
                while not ended.is_set():
                    if (await background.me(token)).transport:
                        await asyncio.sleep(0.05)

            askers = [asyncio.create_task(asking()) for _ in range(BACKGROUND)]
            # Open the connections first, so every login below is written at once.
            await asyncio.gather(*(c.http.get("/healthz") for _ in range(in_flight)))
            c.keep = True
            logins = [asyncio.create_task(c.login("slowpoke")) for _ in range(in_flight)]
            await asyncio.sleep(0.5)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            probes: list[Probe] = []
            exit_wait = asyncio.create_task(asyncio.to_thread(server.process.wait, graceful + 60))
            while not exit_wait.done():
                began = time.monotonic() - signalled
                probes.append(Probe(began, await probe(server.port)))
                await asyncio.sleep(0.1)
            code = await exit_wait
            exited = time.monotonic() - signalled
            ended.set()
            await asyncio.gather(*askers)
            await background.close()
            answers = list(await asyncio.gather(*logins))
        completed_after = sum(1 for a in answers if a.ok and a.started + a.latency > signalled)
        row.count(answers)
        # The background load: answered, or refused (connect), or cut: a request written on
        # a kept-alive connection as the server closed it (the client may retry it).
        asked = background.answers
        after_signal = [a for a in asked if a.started + a.latency >= signalled]
        by_outcome = Counter(
            "answered" if not a.transport else "refused" if a.code == "ConnectError" else "cut"
            for a in after_signal
        )
        row.count([a for a in asked if not a.transport])
        row.note(
            f"background `me` ({BACKGROUND} clients), {len(asked)} requests; ending after the "
            f"signal: {dict(by_outcome)}; not OK: {codes(asked)}"
        )
        outcomes = Counter(p.outcome for p in probes)
        # The first refusal while the requests in flight were still being answered (once they
        # are, the process closes its sockets and exits anyway).
        draining = max(a.started + a.latency for a in answers) - signalled
        first_refused = next(
            (p.at for p in probes if p.outcome == "refused" and p.at < draining), None
        )
        row.figure = (
            f"exit {code} after {exited:.1f} s (timeout {graceful} s); {completed_after} slow "
            f"answered after SIGTERM; new connections: "
            + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        )
        row.note(f"in-flight answers: {Counter(a.code for a in answers)}")
        row.note(
            "probes (s after SIGTERM: outcome): "
            + ", ".join(f"{p.at:.2f} {p.outcome}" for p in probes[:12])
            + (" ..." if len(probes) > 12 else "")
        )
        if code != 0:
            row.miss(f"exit status {code}" + (" (killed by SIGTERM)" if code == -15 else ""))
        if exited > graceful + 5:
            row.miss(f"took {exited:.1f} s, the graceful timeout is {graceful} s")
        elif not past_timeout and exited > draining + 5:
            row.miss(
                f"exited {exited - draining:.1f} s after the last request in flight was answered "
                "(a worker kept waiting for a connection it had not closed)"
            )
        if past_timeout:
            cut = sum(not a.ok for a in answers)
            row.failed -= cut  # cut at the timeout, as asked
            row.note(f"{cut} cut at the timeout: {codes(answers)}")
            if cut == 0:
                row.note("the timeout cut nothing: more work in flight needed to show it")
        else:
            if any(not a.ok for a in answers):
                row.miss(f"requests in flight did not complete: {codes(answers)}")
            if completed_after == 0:
                row.miss("nothing was in flight at the signal (the test proved nothing)")
        # A connection made before the listener closed may be served, or closed unanswered
        # (uvicorn closes idle connections); after the first refusal, all must be refused.
        after_close = [p for p in probes if first_refused is not None and p.at >= first_refused]
        if first_refused is None or first_refused > 1.0:
            row.miss(
                f"new connections were not refused within 1 s of SIGTERM while the requests in "
                f"flight were answered ({draining:.1f} s): "
                + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
            )
        elif any(p.outcome != "refused" for p in after_close):
            row.miss("a new connection was accepted after one had been refused")
        if not past_timeout and (row.http_5xx or row.internal):
            row.miss("5xx or internal errors")
        return row
    finally:
        stop_all(server)
