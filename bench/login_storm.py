"""Login storm: what many logins at once cost a server with the production argon2 settings.

Starts one `usergraph serve` process on a throwaway SQLite database with the default argon2
costs (argon2id, 64 MiB, t=3, p=4) and the default hashing concurrency (one per core), creates
one account, then sends 200 logins at once (half with the right password, half with a wrong
one) while a thread samples the server's resident memory (/proc/PID/status) every 20 ms.
Throttling is set generous, so what limits the storm is the password hasher alone.

It runs the storm once with the default password_hash_queue and once with a queue so large it
never refuses (1000), and prints a table: with the bounded queue the surplus is refused at once
(RATE_LIMITED) and the latency of the others stays short; with the unbounded one every login
waits its turn.

    .venv/bin/python bench/login_storm.py [--requests 200] [--queues default,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from usergraph.settings import Settings

CLI = [sys.executable, "-m", "usergraph.cli"]
PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "not the password at all"
SIGNING_KEY = "bench-signing-key-that-is-long-enough-0123456789"
LOGIN = """mutation($input: LoginInput!) { login(input: $input) {
  accessToken userErrors { code } } }"""
REGISTER = """mutation($input: RegisterInput!) { register(input: $input) {
  accessToken userErrors { code } } }"""
SAMPLE_SECONDS = 0.02
MIB = 1024 * 1024

# --- the server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(directory: Path, queue: int | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("USERGRAPH_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{directory / 'bench.db'}",
        USERGRAPH_SIGNING_KEY=SIGNING_KEY,
        USERGRAPH_DATA_KEYS="YmVuY2gtZGF0YS1rZXktdGhhdC1pcy0zMi1ieXRlcyE=",
        # Generous limits: the hasher, not the throttle, is what this measures.
        USERGRAPH_LOGIN_ACCOUNT_LIMIT="1000000/minute",
        USERGRAPH_LOGIN_IP_LIMIT="1000000/minute",
        USERGRAPH_REGISTER_IP_LIMIT="1000000/minute",
        USERGRAPH_REFRESH_IP_LIMIT="1000000/minute",
    )
    if queue is not None:
        env["USERGRAPH_PASSWORD_HASH_QUEUE"] = str(queue)
    return env


@contextmanager
def _server(directory: Path, queue: int | None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Migrate, then run `usergraph serve` in directory; yield its URL and process."""
    env = _environment(directory, queue)
    subprocess.run([*CLI, "migrate"], cwd=directory, env=env, check=True, capture_output=True)
    port = _free_port()
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), "--workers", "1"],
            cwd=directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_ready(base_url, process, log_path)
            yield base_url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    output = log_path.read_text(errors="replace")[-4000:]
    raise SystemExit(f"the server did not become ready:\n{output}")


# --- memory ---------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and Threads from /proc/PID/status."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "Threads"):
                values[name] = int(rest.split()[0])
    return values


class Sampler(threading.Thread):
    """Samples the server's RSS and thread count every SAMPLE_SECONDS, until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, RSS KiB, threads)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                status = _status(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples.append((time.monotonic(), status["VmRSS"], status["Threads"]))
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def between(self, start: float, end: float) -> list[tuple[float, int, int]]:
        return [sample for sample in self.samples if start <= sample[0] <= end]


# --- the storm ------------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    requests: int
    concurrency: int
    queue: int
    answers: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    wall: float = 0.0
    baseline_kib: int = 0
    peak_kib: int = 0
    after_kib: int = 0
    hwm_kib: int = 0
    peak_threads: int = 0
    samples: int = 0


def _classify(response: httpx.Response) -> str:
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if body.get("errors"):
        return str(body["errors"][0].get("extensions", {}).get("code", "error without code"))
    (payload,) = body["data"].values()  # the one mutation asked for
    if payload["accessToken"]:
        return "SESSION"
    codes = [error["code"] for error in payload["userErrors"]]
    return codes[0] if len(codes) == 1 else f"userErrors {codes}"


async def _post(client: httpx.AsyncClient, query: str, input: dict[str, str]) -> httpx.Response:
    return await client.post("/graphql", json={"query": query, "variables": {"input": input}})


async def _storm(base_url: str, result: Result) -> None:
    limits = httpx.Limits(max_connections=result.requests, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=900) as client:

        async def one(i: int) -> None:
            password = PASSWORD if i % 2 == 0 else WRONG_PASSWORD
            start = time.perf_counter()
            try:
                response = await _post(client, LOGIN, {"login": "storm", "password": password})
                answer = _classify(response)
                if answer not in ("SESSION", "INVALID_CREDENTIALS", "RATE_LIMITED"):
                    result.others.append(response.text[:200])
            except httpx.HTTPError as exc:
                answer = type(exc).__name__
                result.others.append(repr(exc))
            result.latencies.append(time.perf_counter() - start)
            result.answers[answer] += 1

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(result.requests)))
        result.wall = time.perf_counter() - start


async def _prepare(base_url: str) -> None:
    """Create the account and sign in once (caches warm, the first hash behind us)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        response = await _post(
            client,
            REGISTER,
            {"email": "storm@example.com", "username": "storm", "password": PASSWORD},
        )
        assert _classify(response) == "SESSION", response.text
        response = await _post(client, LOGIN, {"login": "storm", "password": PASSWORD})
        assert _classify(response) == "SESSION", response.text


def run(label: str, queue: int | None, requests: int) -> Result:
    defaults = Settings.model_fields
    result = Result(
        label=label,
        requests=requests,
        concurrency=os.cpu_count() or 1,  # the server's default: one per core
        queue=queue if queue is not None else int(defaults["password_hash_queue"].default),
    )
    with tempfile.TemporaryDirectory(prefix="usergraph-bench-") as directory:
        with _server(Path(directory), queue) as (base_url, process):
            asyncio.run(_prepare(base_url))
            sampler = Sampler(process.pid)
            sampler.start()
            time.sleep(1.0)  # idle: the baseline
            idle_end = time.monotonic()
            asyncio.run(_storm(base_url, result))
            storm_end = time.monotonic()
            time.sleep(2.0)  # idle again: what is given back
            result.hwm_kib = _status(process.pid)["VmHWM"]
            sampler.stop()
        idle = sampler.between(0, idle_end)
        during = sampler.between(idle_end, storm_end)
        after = sampler.between(storm_end + 1.5, float("inf"))
        result.baseline_kib = int(statistics.median(rss for _, rss, _ in idle))
        result.peak_kib = max(rss for _, rss, _ in during)
        result.peak_threads = max(threads for _, _, threads in during)
        result.after_kib = after[-1][1] if after else sampler.samples[-1][1]
        result.samples = len(sampler.samples)
    return result


# --- the report -----------------------------------------------------------------------------


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _describe(result: Result) -> None:
    answers = result.answers
    other = result.requests - sum(
        answers[name] for name in ("SESSION", "INVALID_CREDENTIALS", "RATE_LIMITED")
    )
    latencies = sorted(result.latencies)
    print(f"\n== {result.label}: concurrency {result.concurrency}, queue {result.queue}")
    print(
        f"  RSS: baseline {_mib(result.baseline_kib)} MiB, peak {_mib(result.peak_kib)} MiB "
        f"(+{_mib(result.peak_kib - result.baseline_kib)}), after {_mib(result.after_kib)} MiB; "
        f"VmHWM {_mib(result.hwm_kib)} MiB; threads at most {result.peak_threads} "
        f"({result.samples} samples)"
    )
    print(
        f"  answers: session {answers['SESSION']}, INVALID_CREDENTIALS "
        f"{answers['INVALID_CREDENTIALS']}, RATE_LIMITED (busy) {answers['RATE_LIMITED']}, "
        f"other {other}"
    )
    for name, count in answers.items():
        if name not in ("SESSION", "INVALID_CREDENTIALS", "RATE_LIMITED"):
            print(f"    other: {name} x{count}")
    for text in result.others[:3]:
        print(f"    e.g. {text}")
    print(
        f"  wall {result.wall:.2f} s; latency p50 {statistics.median(latencies):.3f} s, "
        f"max {latencies[-1]:.3f} s"
    )


def _table(results: list[Result]) -> None:
    header = (
        "queue",
        "session",
        "invalid",
        "busy",
        "other",
        "wall s",
        "p50 s",
        "max s",
        "base MiB",
        "peak MiB",
        "HWM MiB",
        "after MiB",
    )
    rows = [header]
    for result in results:
        answers = result.answers
        known = answers["SESSION"] + answers["INVALID_CREDENTIALS"] + answers["RATE_LIMITED"]
        latencies = sorted(result.latencies)
        rows.append(
            (
                f"{result.queue} ({result.label})",
                str(answers["SESSION"]),
                str(answers["INVALID_CREDENTIALS"]),
                str(answers["RATE_LIMITED"]),
                str(result.requests - known),
                f"{result.wall:.2f}",
                f"{statistics.median(latencies):.3f}",
                f"{latencies[-1]:.3f}",
                _mib(result.baseline_kib),
                _mib(result.peak_kib),
                _mib(result.hwm_kib),
                _mib(result.after_kib),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print()
    for n, row in enumerate(rows):
        print(" | ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("-+-".join("-" * width for width in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--queues",
        default="default,1000",
        help="comma-separated password_hash_queue values; 'default' leaves the setting unset",
    )
    args = parser.parse_args()
    defaults = Settings.model_fields
    print(
        f"login storm: {args.requests} logins at once, half with a wrong password; argon2id "
        f"m={defaults['argon2_memory_cost_kib'].default} KiB "
        f"t={defaults['argon2_time_cost'].default} p={defaults['argon2_parallelism'].default} "
        f"(the defaults); {os.cpu_count()} CPUs"
    )
    results = []
    for item in args.queues.split(","):
        queue = None if item.strip() == "default" else int(item)
        result = run("default" if queue is None else "set", queue, args.requests)
        _describe(result)
        results.append(result)
    _table(results)


if __name__ == "__main__":
    main()
