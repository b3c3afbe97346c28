"""The scenarios: each round, usergraph against the floor, the peer (PostGraphile) or itself
under wrk."""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from hashing import hash_flat_out
from loadgen import LagProbe, Wrk, WrkResult, fixed_script, refresh_script, templated_script
from peer import check_same_users
from report import MIB, Config, Measurements
from seed import BENCH_PASSWORD, BENCH_USER_AGENT, USER_USERNAME, seeded_username
from servers import DatabaseSessions, RssSampler, Server

from usergraph.settings import Settings

DRIVER_AGENT = "usergraph-bench-driver"  # the driver's own logins; kept until the run ends
LOGIN = "mutation($input: LoginInput!) { login(input: $input) { accessToken userErrors { code } } }"
SIGN_IN = (
    "mutation($input: LoginInput!) { login(input: $input) "
    "{ accessToken refreshToken userErrors { code } } }"
)
REFRESH = (
    "mutation($input: RefreshInput!) { refresh(input: $input) "
    "{ accessToken refreshToken userErrors { code } } }"
)
TOKEN_PLACEHOLDER = "@REFRESH_TOKEN@"
REGISTER = (
    "mutation($input: RegisterInput!) { register(input: $input) "
    "{ accessToken userErrors { code } } }"
)


def sign_in(server: Server, username: str) -> dict[str, str]:
    """Log in as username; the access token and the refresh token."""
    body = {
        "query": SIGN_IN,
        "variables": {"input": {"login": username, "password": BENCH_PASSWORD}},
    }
    response = httpx.post(
        server.base_url + "/graphql",
        json=body,
        headers={"User-Agent": DRIVER_AGENT},
        timeout=60,
    )
    payload = (response.json().get("data") or {}).get("login") or {}
    if not payload.get("accessToken") or not payload.get("refreshToken"):
        raise SystemExit(f"could not log in as {username}: {response.text[:500]}")
    return {"access": str(payload["accessToken"]), "refresh": str(payload["refreshToken"])}


def login(server: Server, username: str) -> str:
    return sign_in(server, username)["access"]


def refresh_body(token: str) -> dict[str, Any]:
    return {"query": REFRESH, "variables": {"input": {"refreshToken": token}}}


def body_text(query: str, variables: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"query": query}
    if variables:
        body["variables"] = variables
    return json.dumps(body, separators=(",", ":"))


def post(server: Server, body: str, token: str) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(server.base_url + "/graphql", content=body, headers=headers, timeout=60)


@dataclass
class Fixed:
    """A scenario with one request body, answered identically by usergraph and the floor."""

    name: str
    body: str
    token: str  # "" for none
    check: str  # what the answer must contain, beyond being identical


@dataclass
class PeerRequest:
    """PostGraphile's equivalent of a usergraph scenario, and its answer once checked."""

    scenario: Fixed
    same_users: bool  # a page: it must hold usergraph's users; else the bytes must match
    expected: bytes = b""


class Bench:
    """The servers under test and what is measured on them; one method per scenario."""

    def __init__(
        self,
        config: Config,
        servers: dict[str, Server],
        cpus: list[int],
        db_sessions: DatabaseSessions,
    ) -> None:
        self.config = config
        self.db_sessions = db_sessions
        self.servers = servers
        self.cpus = cpus
        pinned = config.pin and len(cpus) >= 2
        self.server_cpus = {cpus[0]} if pinned else None
        self.load_cpus = {cpus[1]} if pinned else None
        self.m = Measurements()
        self.peer_requests: dict[str, PeerRequest] = {}

    @property
    def ug(self) -> Server:
        return self.servers["usergraph"]

    @property
    def floor(self) -> Server:
        return self.servers["floor"]

    @property
    def peer(self) -> Server | None:
        return self.servers.get("postgraphile")

    def answer(self, scenario: Fixed) -> bytes:
        """usergraph's answer to a scenario the floor does not serve, checked."""
        ours = post(self.ug, scenario.body, scenario.token)
        if (
            ours.status_code != 200
            or b'"errors"' in ours.content
            or scenario.check.encode() not in ours.content
        ):
            raise SystemExit(
                f"error: usergraph answered {scenario.name} unexpectedly "
                f"({ours.status_code}): {ours.text[:600]}"
            )
        return ours.content

    def check_peer(self, ours: Fixed, request: PeerRequest) -> None:
        """PostGraphile's answer must hold what usergraph's does; keep it as the expected."""
        assert self.peer is not None
        mine = post(self.ug, ours.body, ours.token)
        theirs = post(self.peer, request.scenario.body, request.scenario.token)
        if theirs.status_code != 200 or b'"errors"' in theirs.content:
            raise SystemExit(
                f"error: PostGraphile answered {ours.name} unexpectedly "
                f"({theirs.status_code}): {theirs.text[:600]}"
            )
        if request.same_users:
            check_same_users(ours.name, mine.content, theirs.content)
        elif theirs.content != mine.content:
            raise SystemExit(
                f"error: PostGraphile answered {ours.name} with {theirs.content[:300]!r}, "
                f"usergraph with {mine.content[:300]!r}"
            )
        request.expected = theirs.content
        self.peer_requests[ours.name] = request

    def identical_answer(self, scenario: Fixed) -> bytes:
        """usergraph's answer, after checking that the floor's is byte for byte the same."""
        ours = post(self.ug, scenario.body, scenario.token)
        theirs = post(self.floor, scenario.body, scenario.token)
        expected = scenario.check.encode()
        if ours.status_code != 200 or b'"errors"' in ours.content or expected not in ours.content:
            raise SystemExit(
                f"error: usergraph answered {scenario.name} unexpectedly "
                f"({ours.status_code}): {ours.text[:600]}"
            )
        if ours.content != theirs.content:
            at = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(ours.content, theirs.content, strict=False))
                    if a != b
                ),
                min(len(ours.content), len(theirs.content)),
            )
            raise SystemExit(
                f"error: the floor's answer to {scenario.name} differs from usergraph's at byte "
                f"{at} (lengths {len(ours.content)} and {len(theirs.content)}):\n"
                f"  usergraph: ...{ours.content[max(0, at - 80) : at + 80]!r}\n"
                f"  floor:     ...{theirs.content[max(0, at - 80) : at + 80]!r}\n"
                "Fix bench/floor.py so it answers as usergraph does; the comparison is "
                "meaningless otherwise."
            )
        return ours.content

    def run_wrk(
        self,
        server: Server,
        script: str,
        *,
        connections: int,
        duration: float,
        cpus: set[int] | None,
        settle: bool = True,
        threads: int = 1,
    ) -> WrkResult:
        if settle:
            _settle(server)  # nothing left over from the previous run
        sessions = self.db_sessions.count()
        before = server.cpu_seconds()
        result = Wrk(
            server.base_url + "/graphql",
            script,
            connections=connections,
            duration=duration,
            threads=threads,
            cpus=cpus,
        ).result()
        result.cpu_s = server.cpu_seconds() - before
        result.extra["db_connections_opened"] = self.db_sessions.count() - sessions
        return result

    def fixed(
        self,
        server: Server,
        scenario: Fixed,
        expected: bytes,
        duration: float,
        *,
        connections: int,
        cpus: set[int] | None,
        pause_ms: int = 0,
        settle: bool = True,
    ) -> WrkResult:
        script = fixed_script(
            scenario.body, expected, token=scenario.token, agent=BENCH_USER_AGENT, pause_ms=pause_ms
        )
        return self.run_wrk(
            server, script, connections=connections, duration=duration, cpus=cpus, settle=settle
        )

    def warm_up(self, scenarios: list[Fixed], alone: list[Fixed]) -> None:
        """Every server on every scenario it will run (V8 compiles the peer's hot code)."""
        for scenario in scenarios:
            expected = self.identical_answer(scenario)
            for server in (self.ug, self.floor, self.servers["usergraph-workers"]):
                self.fixed(
                    server,
                    scenario,
                    expected,
                    self.config.warmup,
                    connections=self.config.connections,
                    cpus=self.load_cpus
                    if server is not self.servers["usergraph-workers"]
                    else None,
                )
        for scenario in alone:
            self.fixed(
                self.ug,
                scenario,
                self.answer(scenario),
                self.config.warmup,
                connections=self.config.connections,
                cpus=self.load_cpus,
            )
        if self.peer is not None:
            for request in self.peer_requests.values():
                self.fixed(
                    self.peer,
                    request.scenario,
                    request.expected,
                    self.config.warmup,
                    connections=self.config.connections,
                    cpus=self.load_cpus,
                )

    def compare(self, round_: int, scenario: Fixed, *, floor: bool = True) -> None:
        """usergraph, then the floor on the same request, then PostGraphile on its equivalent
        (A B C); the ratios to both take usergraph's run of the round."""
        config = self.config
        expected = self.identical_answer(scenario) if floor else self.answer(scenario)
        runs: list[tuple[str, Server, Fixed, bytes]] = [("usergraph", self.ug, scenario, expected)]
        if floor:
            runs.append(("floor", self.floor, scenario, expected))
        request = self.peer_requests.get(scenario.name)
        if self.peer is not None and request is not None:
            runs.append(("postgraphile", self.peer, request.scenario, request.expected))
        for app, server, sent, answer in runs:
            sampler = None
            if app != "floor" and scenario.name in ("users", "deep"):
                sampler = RssSampler(server.workers())
                sampler.start()
            result = self.fixed(
                server,
                sent,
                answer,
                config.duration,
                connections=config.connections,
                cpus=self.load_cpus,
            )
            if sampler is not None:
                peak = sampler.stop()
                if app == "usergraph":
                    self.m.users_rss_peak_kib = max(self.m.users_rss_peak_kib, peak)
                else:
                    self.m.peer_rss_peak_kib = max(self.m.peer_rss_peak_kib, peak)
                result.extra["rss_peak_mib"] = round(peak / MIB, 1)
            self.m.add(round_, scenario.name, app, result)
            _progress(round_, scenario.name, app, result)

    def refresh_tokens(self, count: int, first: int) -> list[str]:
        """Log in count seeded accounts from first on: one refresh token for each connection."""
        names = [seeded_username(first + n) for n in range(count)]
        with ThreadPoolExecutor(max_workers=min(count, 4)) as pool:
            return [pair["refresh"] for pair in pool.map(lambda n: sign_in(self.ug, n), names)]

    def refresh(self, round_: int, tokens: list[str]) -> None:
        """A refresh per request, each connection chaining its own token (rotation makes every
        token single-use); any refused refresh fails the run."""
        script = refresh_script(
            refresh_body(TOKEN_PLACEHOLDER), TOKEN_PLACEHOLDER, tokens, agent=BENCH_USER_AGENT
        )
        result = self.run_wrk(
            self.ug,
            script,
            connections=len(tokens),
            threads=len(tokens),  # wrk's Lua state is per thread: one token chain each
            duration=self.config.duration,
            cpus=self.load_cpus,
        )
        cores = result.cpu_s / result.duration_s if result.duration_s else float("nan")
        result.extra["connections"] = len(tokens)
        result.extra["cores_used"] = round(cores, 3)
        result.extra["ok_per_cpu_s"] = round(result.ok / result.cpu_s, 1) if result.cpu_s else None
        self.m.add(round_, "refresh", "usergraph", result)
        _progress(round_, "refresh", "usergraph", result)
        print(
            f"  round {round_} {'refresh':<18} {'per core':<12} "
            f"{result.extra['ok_per_cpu_s'] or float('nan'):8.1f} /s per core "
            f"(server CPU {cores:.2f} cores of wall)",
            flush=True,
        )
        if result.failures:
            print(
                f"  !! refresh: {result.bad} refreshes refused or malformed, errors "
                f"{result.errors}; e.g. {result.sample[:300]}",
                flush=True,
            )

    def storm(self, round_: int, me: Fixed, users: int) -> None:
        """me at a steady pace, alone and while storm_clients log in; /healthz probed."""
        config = self.config
        expected = self.identical_answer(me)
        paced: dict[str, Any] = {
            "connections": config.paced_connections,
            "cpus": None,
            "pause_ms": config.pace_ms,
            "settle": False,  # the probes keep the server a little busy
        }
        _settle(self.ug)
        # A control probe on the idle floor process (unpinned like usergraph here) tells the
        # machine's own scheduling delays from usergraph's event loop being busy.
        self.floor.pin(None)
        probes = _start_probes(self.ug, self.floor)
        alone = self.fixed(self.ug, me, expected, config.duration, **paced)
        lag_alone, control_alone = (probe.stop() for probe in probes)
        storm_body = {
            "query": LOGIN,
            "variables": {"input": {"login": "@NAME@", "password": BENCH_PASSWORD}},
        }
        storm_script = templated_script(
            storm_body,
            "@NAME@",
            f'string.format("u%07d", math.random(1, {users}))',
            agent=BENCH_USER_AGENT,
        )
        lead = 1.0  # the storm is under way before me is measured
        _settle(self.ug)
        storm_cpu = self.ug.cpu_seconds()
        storm = Wrk(
            self.ug.base_url + "/graphql",
            storm_script,
            connections=config.storm_clients,
            duration=config.duration + 2 * lead,
        )
        time.sleep(lead)
        probes = _start_probes(self.ug, self.floor)
        during = self.fixed(self.ug, me, expected, config.duration, **paced)
        lag_storm, control_storm = (probe.stop() for probe in probes)
        logins = storm.result()
        logins.cpu_s = self.ug.cpu_seconds() - storm_cpu
        self.m.add(round_, "me paced", "usergraph", alone)
        self.m.add(round_, "me paced, logins", "usergraph", during)
        self.m.add(round_, "login storm", "usergraph", logins)
        self.m.probes.append(
            {
                "round": round_,
                "alone": lag_alone,
                "storm": lag_storm,
                "control_alone": control_alone,
                "control_storm": control_storm,
            }
        )
        _progress(round_, "me paced", "alone", alone)
        _progress(round_, "me paced", "+logins", during)
        _progress(round_, "login storm", "usergraph", logins, ok=True)
        print(
            f"  /healthz every 10 ms: alone p99 {lag_alone.get('p99_ms')} ms max "
            f"{lag_alone.get('max_ms')} ms; during logins p99 {lag_storm.get('p99_ms')} ms max "
            f"{lag_storm.get('max_ms')} ms (idle floor process meanwhile: p99 "
            f"{control_storm.get('p99_ms')} ms max {control_storm.get('max_ms')} ms)",
            flush=True,
        )

    def register(self, round_: int) -> None:
        prefix = f"reg_{secrets.token_hex(4)}_"
        body = {
            "query": REGISTER,
            "variables": {
                "input": {
                    "email": "@NAME@@example.com",
                    "username": "@NAME@",
                    "password": BENCH_PASSWORD,
                }
            },
        }
        script = templated_script(
            body,
            "@NAME@",
            f'string.format("{prefix}%d_%d", tid, counter)',
            agent=BENCH_USER_AGENT,
        )
        result = self.run_wrk(
            self.ug,
            script,
            connections=self.config.register_connections,
            duration=self.config.duration,
            cpus=None,
        )
        _settle(self.ug)  # registrations still running when wrk stopped
        self.m.add(round_, "register", "usergraph", result)
        _progress(round_, "register", "usergraph", result, ok=True)
        # B to register's A: what the machine hashes right now, with nothing else to do.
        rate = hash_flat_out(len(self.cpus), self.config.duration)
        self.m.hashing.append({"round": round_, "per_s": round(rate, 2)})
        label = "hashing flat out"
        print(f"  round {round_} {label:<18} {'driver':<12} {rate:8.1f} /s", flush=True)

    def workers(self, round_: int, users: Fixed) -> None:
        expected = self.identical_answer(users)
        for app, server in (
            ("1 worker", self.ug),
            (f"{self.config.workers} workers", self.servers["usergraph-workers"]),
        ):
            result = self.fixed(
                server,
                users,
                expected,
                self.config.duration,
                connections=self.config.connections,
                cpus=None,
            )
            self.m.add(round_, "users, workers", app, result)
            _progress(round_, "users, workers", app, result)


def _start_probes(*servers: Server) -> list[LagProbe]:
    probes = [LagProbe(server.base_url + "/healthz") for server in servers]
    for probe in probes:
        probe.start()
    return probes


def _settle(server: Server) -> None:
    waited = server.wait_idle()
    if waited > 3:
        print(f"  (waited {waited:.1f} s for {server.name} to finish earlier requests)", flush=True)


def _progress(round_: int, scenario: str, app: str, result: WrkResult, ok: bool = False) -> None:
    rate = result.ok_rps if ok else result.rps
    cpu = 1000 * result.cpu_s / result.requests if result.requests else float("nan")
    flag = f"  !! {result.failures} failed" if result.failures and not ok else ""
    print(
        f"  round {round_} {scenario:<18} {app:<12} {rate:8.1f} req/s  p50 "
        f"{result.latency_ms['p50']:7.2f} ms  p99 {result.latency_ms['p99']:8.2f} ms  "
        f"CPU {cpu:6.2f} ms/req{flag}",
        flush=True,
    )


async def count_sql(
    settings: Settings,
    scenarios: list[Fixed],
    alone: list[Fixed],
    refresh_tokens: list[str],
) -> dict[str, dict[str, Any]]:
    """Statements and round trips per request (bench/sqlcount.py): the scenarios in usergraph
    and in the floor; the ones alone, a login, a registration and a refresh (two refresh
    tokens: one to warm up, one counted) in usergraph."""
    import floor
    from sqlcount import Request, count_requests

    from usergraph.app import create_app

    def request(scenario: Fixed) -> Request:
        headers = {"User-Agent": BENCH_USER_AGENT}
        if scenario.token:
            headers["Authorization"] = f"Bearer {scenario.token}"
        return Request(scenario.name, json.loads(scenario.body), headers)

    login_body = {
        "query": LOGIN,
        "variables": {"input": {"login": USER_USERNAME, "password": BENCH_PASSWORD}},
    }

    def register_body() -> dict[str, Any]:
        name = f"reg_{secrets.token_hex(6)}"
        return {
            "query": REGISTER,
            "variables": {
                "input": {
                    "email": f"{name}@example.com",
                    "username": name,
                    "password": BENCH_PASSWORD,
                }
            },
        }

    agent = {"User-Agent": BENCH_USER_AGENT}
    signing_in = [
        Request("login", login_body, agent),
        Request("register", register_body(), agent),
        Request("refresh", refresh_body(refresh_tokens[0]), agent),
    ]

    def fresh(r: Request) -> Request:
        if r.name == "register":
            return Request(r.name, register_body(), r.headers)
        if r.name == "refresh":
            return Request(r.name, refresh_body(refresh_tokens[1]), r.headers)
        return r

    app = create_app(settings)
    ours = await count_requests(
        app,
        lambda: app.router.lifespan_context(app),
        [*map(request, [*scenarios, *alone]), *signing_in],
        repeat=fresh,
    )
    floor_app = floor.create_app(settings)
    theirs = await count_requests(
        floor_app,
        lambda: floor_app.router.lifespan_context(floor_app),
        list(map(request, scenarios)),
    )
    return {
        "usergraph": {name: count.as_dict() for name, count in ours.items()},
        "floor": {name: count.as_dict() for name, count in theirs.items()},
    }
