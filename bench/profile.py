"""Where the CPU time of a request goes: py-spy samples `usergraph serve` while wrk drives one
document, and the samples' self time is summed by library (`make profile`).

Same server as `make bench` (production mode, one worker, the seeded bench database, wide open
throttles). py-spy is a dev dependency; it reads the process with ptrace, so it needs root or
ptrace permission (a container may need `--cap-add SYS_PTRACE`).

    .venv/bin/python bench/profile.py [--scenario users|me|typename] [--duration 15]
                                      [--users 10000] [--set USERGRAPH_FAST_EXECUTION=false]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from floor import ME_QUERY, USERS_QUERY
from loadgen import Wrk, fixed_script
from run import DATA_KEY, SIGNING_KEY, WIDE_OPEN, ensure_wrk
from scenarios import DRIVER_AGENT, body_text, login
from seed import ADMIN_USERNAME, database_url, seed
from servers import server_environment, usergraph_server

DOCUMENTS = {"users": USERS_QUERY, "me": ME_QUERY, "typename": "{ __typename }"}
# Self time is counted by the package of the innermost frame's file: py-spy names a frame
# `function (package/module.py:line)`, the path relative to where it was imported from.
LIBRARIES = {
    "sqlalchemy": "SQLAlchemy",
    "graphql": "graphql-core",
    "strawberry": "Strawberry",
    "cross_web": "Strawberry",
    "usergraph": "usergraph",
    "starlette": "Starlette",
    "uvicorn": "uvicorn",
    "asyncpg": "asyncpg",
    "aiodataloader.py": "aiodataloader",
    "jwt": "PyJWT",
    "cryptography": "cryptography",
    "asyncio": "asyncio",
    "uvloop": "uvloop",
    "httptools": "httptools",
    "h11": "h11",
    "prometheus_client": "prometheus-client",
}


def library(frame: str) -> str:
    where = frame.rpartition("(")[2].rstrip(")")
    package = where.split("/", 1)[0]
    return LIBRARIES.get(package, "other (stdlib, C)")


def shares(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """Samples by library and by innermost function, from py-spy's raw (collapsed) output:
    one line per stack, `frame;frame;...;innermost count`."""
    by_library: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        innermost = stack.rsplit(";", 1)[-1]
        by_library[library(innermost)] += int(count)
        by_function[innermost] += int(count)
        total += int(count)
    return by_library, by_function, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(DOCUMENTS), default="users")
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is missing: `make .venv/.installed-dev` installs it")
    ensure_wrk()
    url = database_url(args.users)
    asyncio.run(seed(url, args.users))
    env = server_environment(
        DATABASE_URL=url,
        USERGRAPH_ENV="production",
        USERGRAPH_SIGNING_KEY=SIGNING_KEY,
        USERGRAPH_DATA_KEYS=DATA_KEY,
        USERGRAPH_MAILER="log",
        USERGRAPH_LOGIN_IP_LIMIT=WIDE_OPEN,
        USERGRAPH_LOGIN_ACCOUNT_LIMIT=WIDE_OPEN,
        USERGRAPH_ACCESS_TOKEN_TTL_SECONDS="86400",
        **dict(item.partition("=")[::2] for item in args.set),
    )
    with tempfile.TemporaryDirectory(prefix="usergraph-profile-") as scratch:
        server = usergraph_server("usergraph", env=env, directory=Path(scratch), cpus=None)
        server.start()
        try:
            server.wait_ready()
            token = login(server, ADMIN_USERNAME)
            script = fixed_script(
                body_text(DOCUMENTS[args.scenario]), b'"data"', token=token, agent=DRIVER_AGENT
            )
            url_graphql = server.base_url + "/graphql"
            Wrk(url_graphql, script, connections=args.connections, duration=3).result()  # warm
            output = Path(scratch) / "profile.txt"
            wrk = Wrk(url_graphql, script, connections=args.connections, duration=args.duration)
            subprocess.run(
                [spy, "record", "--pid", str(server.pid), "--duration", str(int(args.duration)),
                 "--rate", "250", "--format", "raw", "--output", str(output), "--nonblocking"],
                check=True, capture_output=True,
            )  # fmt: skip
            result = wrk.result()
            raw = output.read_text()
        finally:
            server.stop()
    by_library, by_function, total = shares(raw)
    print(
        f"{args.scenario}: {result.rps:.0f} req/s over {args.duration:g} s, {total} samples "
        f"({', '.join(args.set) or 'default settings'})"
    )
    print("| library | self time |\n| --- | --- |")
    for name, count in by_library.most_common():
        print(f"| {name} | {100 * count / total:.1f}% |")
    print("\ninnermost functions:")
    for name, count in by_function.most_common(15):
        print(f"  {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
