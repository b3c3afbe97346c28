"""The processes under test: start them, pin them to CPUs, read their CPU time and memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

BENCH_DIR = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_environment(**settings: str) -> dict[str, str]:
    """The driver's environment without any usergraph setting, plus settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("USERGRAPH_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(settings)
    return env


def descendants(pid: int) -> list[int]:
    """pid and every process below it (uvicorn's workers are children of its supervisor)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes (all their threads), from /proc/PID/stat."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pin(pids: Iterable[int], cpus: set[int] | None) -> None:
    """Move every thread of the processes to cpus (all CPUs when None), as `taskset -a -p`."""
    target = cpus or os.sched_getaffinity(0)
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                os.sched_setaffinity(int(task), target)


class Server:
    """One server process (usergraph or the floor) on its own port, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        directory: Path,
        ready_path: str,
        cpus: set[int] | None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [*argv, "--port", str(self.port)]
        self.env = env
        self.directory = directory
        self.ready_path = ready_path
        self.cpus = cpus
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            # cwd: a scratch directory, so no .env file there changes the settings.
            self.process = subprocess.Popen(
                self.argv, cwd=self.directory, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 90) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=2).status_code == 200:
                    self.pin(self.cpus)
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not become ready:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def pids(self) -> list[int]:
        return descendants(self.pid)

    def workers(self) -> list[int]:
        """The processes that serve requests: the server itself, or uvicorn's children."""
        pids = self.pids()
        return pids[1:] or pids

    def pin(self, cpus: set[int] | None) -> None:
        pin(self.pids(), cpus)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def wait_idle(self, *, busy: float = 0.05, timeout: float = 120) -> float:
        """Wait until the server has finished what earlier load left queued (its CPU use stays
        under busy cores for a moment); return the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            before = self.cpu_seconds()
            time.sleep(0.3)
            if self.cpu_seconds() - before < busy * 0.3:
                break
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def usergraph_server(
    name: str, *, env: dict[str, str], directory: Path, cpus: set[int] | None, workers: int = 1
) -> Server:
    argv = [sys.executable, "-m", "usergraph.cli", "serve", "--workers", str(workers)]
    return Server(name, argv, env=env, directory=directory, ready_path="/readyz", cpus=cpus)


def floor_server(*, env: dict[str, str], directory: Path, cpus: set[int] | None) -> Server:
    argv = [sys.executable, str(BENCH_DIR / "floor.py")]
    return Server("floor", argv, env=env, directory=directory, ready_path="/healthz", cpus=cpus)


class RssSampler(threading.Thread):
    """The largest VmRSS of the processes, sampled every 20 ms while running."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for pid in self.pids:
                with contextlib.suppress(OSError):
                    self.peak_kib = max(self.peak_kib, rss_kib(pid))
            self._stop_event.wait(0.02)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak_kib


class DatabaseSessions:
    """Connections ever opened to the database (pg_stat_database.sessions), read over one
    connection kept open, so reading does not count itself. A pool that closes and reopens
    connections under load shows here. A backend reports its statistics lazily (when it goes
    idle, at most once a second, and when it exits), so the count is close, not exact."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._loop = asyncio.new_event_loop()
        self._conn: Any = self._loop.run_until_complete(
            asyncpg.connect(url.render_as_string(hide_password=False))
        )

    def count(self) -> int:
        query = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        # Each query is its own transaction, so it sees fresh statistics.
        return int(self._loop.run_until_complete(self._conn.fetchval(query)) or 0)

    def close(self) -> None:
        self._loop.run_until_complete(self._conn.close())
        self._loop.close()
