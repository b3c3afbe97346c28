"""The `usergraph` command: serve | migrate | create-user | send-mail | mail-status |
keys generate|list|retire | new-data-key | rotate-data-key | export-schema | check-schema."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from graphql import build_schema as parse_sdl
from graphql import find_breaking_changes, find_dangerous_changes
from pydantic import ValidationError

from usergraph.logs import configure_logging, logging_config
from usergraph.settings import Settings

if TYPE_CHECKING:
    from strawberry import Schema

DEFAULT_SCHEMA_FILE = Path("schema.graphql")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """uvicorn, as `uvicorn.run` would run it, but SIGTERM ends in exit status 0 (uvicorn
    raises the signal again after its graceful shutdown), and with several workers the
    supervisor stops listening at once, so new connections are refused while the workers
    finish what they took (uvicorn's supervisor keeps the socket open until they are gone)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def handle_term(self) -> None:
            for sock in self.sockets:
                sock.close()
            super().handle_term()

    if settings.metrics_enabled:
        _metrics_directory(settings)
    config = uvicorn.Config(
        "usergraph.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=logging_config(settings.log_level, settings.log_format),
        # The client address is the socket's: X-Forwarded-For is not trusted by default.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # what uvicorn raises again
    server = uvicorn.Server(config)
    if config.workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
        return 0
    config.load_app()
    server.run()
    return 0 if server.started else 3


def _metrics_directory(settings: Settings) -> None:
    """Prometheus' multiprocess mode for the workers to come: a directory of their figures,
    emptied first (figures of an earlier run would count again), named in the environment
    that the workers inherit; and, with USERGRAPH_METRICS_PORT, a scrape endpoint of its own,
    served from this (the supervising) process."""
    import tempfile

    if settings.metrics_dir is not None:
        directory = settings.metrics_dir
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)
        for figures in directory.glob("*.db"):  # prometheus-client's files, nothing else
            figures.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="usergraph-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if settings.metrics_port is not None:
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(settings.metrics_port, registry=registry)


async def _migrate(settings: Settings) -> None:
    from usergraph.db.engine import Database
    from usergraph.db.migrate import upgrade_to_head

    db = Database.connect(settings.database_url)
    try:
        await upgrade_to_head(db.engine)
    finally:
        await db.dispose()


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise SystemExit("The passwords differ.")
    return password


async def _create_user(args: argparse.Namespace, settings: Settings, password: str) -> int:
    from usergraph.runtime import build_runtime
    from usergraph.services.errors import Rejected
    from usergraph.services.users import create_user

    runtime = build_runtime(settings)
    try:
        user = await create_user(
            db=runtime.db,
            passwords=runtime.passwords,
            email=args.email,
            username=args.username,
            password=password,
            admin=args.admin,
        )
    except Rejected as exc:
        for problem in exc.problems:
            field = problem.field[-1] if problem.field else "-"
            print(f"error: {field}: {problem.message} ({problem.code.value})", file=sys.stderr)
        return 1
    finally:
        await runtime.close()
    roles = "admin, user" if args.admin else "user"
    print(f"created user {user.username} (id {user.id}, roles: {roles})")
    return 0


def printed_schema(schema: Schema | None = None) -> str:
    from usergraph.schema import build_schema

    return (schema or build_schema()).as_str() + "\n"


def _check_schema(path: Path) -> int:
    try:
        old = parse_sdl(path.read_text())
    except FileNotFoundError:
        print(f"error: {path} does not exist; run `usergraph export-schema`", file=sys.stderr)
        return 2
    from usergraph.schema import build_schema

    schema = build_schema()
    new = schema._schema
    breaking = find_breaking_changes(old, new)
    dangerous = find_dangerous_changes(old, new)
    for kind, changes in (("BREAKING", breaking), ("DANGEROUS", dangerous)):
        for change in changes:
            print(f"{kind} {change.type.name}: {change.description}")
    if printed_schema(schema) != path.read_text():
        print(f"note: {path} differs from the code's schema; run `make schema`")
    if not breaking and not dangerous:
        print("no breaking or dangerous changes")
    return 1 if breaking else 0


async def _send_mail(settings: Settings, *, forever: bool) -> int:
    """Send the outbox from this process (operators who run the sender apart)."""
    from usergraph.runtime import build_runtime, build_sender

    runtime = build_runtime(settings)
    try:
        sender = build_sender(runtime)
        if not forever:
            print(f"sent {await sender.send_due()} message(s)")
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        await sender.run(stop)
        return 0
    finally:
        await runtime.close()


async def _mail_status(settings: Settings) -> int:
    """The outbox's backlog and recent failures; exit status 1 when some mail failed."""
    from usergraph.db import outbox as outbox_queries
    from usergraph.db.engine import Database

    db = Database.connect(settings.database_url)
    try:
        async with db.read_sessionmaker() as s:
            counts = await outbox_queries.count_by_status(s)
            oldest = await outbox_queries.oldest_pending(s)
            failures = await outbox_queries.recent_failures(s, limit=10)
    finally:
        await db.dispose()
    for status in (outbox_queries.PENDING, outbox_queries.SENT, outbox_queries.FAILED):
        print(f"{status}: {counts.get(status, 0)}")
    if oldest is not None:
        print(f"oldest pending since: {oldest.isoformat()}")
    for row in failures:
        print(f"failed id={row.id} kind={row.kind} attempts={row.attempts} error={row.last_error}")
    return 1 if counts.get(outbox_queries.FAILED) else 0


async def _rotate_data_key(settings: Settings) -> int:
    """Re-encrypt the TOTP secrets with the first data key; 1 when some no key decrypts."""
    from usergraph.db.engine import Database
    from usergraph.runtime import data_cipher
    from usergraph.services import data_keys

    db = Database.connect(settings.database_url)
    try:
        rotation = await data_keys.rotate(db=db, cipher=data_cipher(settings))
    finally:
        await db.dispose()
    print(f"re-encrypted {rotation.rotated} TOTP secret(s) with the first data key")
    if rotation.undecryptable:
        users = ", ".join(str(user_id) for user_id in rotation.undecryptable)
        print(
            f"error: no data key decrypts the TOTP secret of user id(s) {users}; put the key "
            "that encrypted them back into USERGRAPH_DATA_KEYS, or reset their second factors",
            file=sys.stderr,
        )
        return 1
    return 0


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    """Manage the signing keys in USERGRAPH_JWT_KEYS_DIR (ES256, EdDSA)."""
    from datetime import UTC, datetime, timedelta

    from usergraph.auth.keys import KeyDirectory, KeySet, overlap
    from usergraph.wellknown import CACHE_SECONDS

    directory = KeyDirectory(settings.jwt_keys_dir)
    if args.action == "generate":
        if settings.signing_algorithm == "HS256":
            print(
                "error: tokens are HS256 here (USERGRAPH_SIGNING_KEY): set "
                "USERGRAPH_JWT_ALGORITHM=ES256 or EdDSA to sign with a key pair",
                file=sys.stderr,
            )
            return 2
        # Published at once; signing once every verifier's cached JWKS has it (unless --now,
        # or the directory has no key that signs: then nothing else could).
        live = [key for key in directory.load() if key.retired_at is None]
        delay = timedelta(0) if args.now or not live else timedelta(seconds=CACHE_SECONDS)
        key = directory.generate(args.algorithm or settings.signing_algorithm, delay=delay)
        assert key.signs_from is not None
        when = "now" if not delay else f"at {key.signs_from.isoformat()}"
        print(f"generated {key.alg} key {key.kid}: published now, signs new tokens from {when}")
        return 0
    if args.action == "retire":
        live = [key for key in directory.load() if key.retired_at is None]
        if [key.kid for key in live] == [args.kid]:
            print("error: this is the only live key; generate a new one first", file=sys.stderr)
            return 1
        try:
            key = directory.retire(args.kid)
        except KeyError:
            print(f"error: no key {args.kid} in {settings.jwt_keys_dir}", file=sys.stderr)
            return 1
        print(f"retired {key.kid}: it signs nothing more and is published until its tokens expire")
        return 0
    published = overlap(
        timedelta(seconds=settings.access_token_ttl_seconds),
        timedelta(seconds=settings.jwt_leeway_seconds),
    )
    keys = KeySet(tuple(directory.load()), published)
    now = datetime.now(UTC)
    signing = keys.signing(now)
    for key in sorted(keys.keys, key=lambda k: k.created_at or now, reverse=True):
        if key is signing:
            status = "signing"
        elif key.retired_at is None and key.signs_from is not None and key.signs_from > now:
            status = f"published, signs from {key.signs_from.isoformat()}"
        elif key.retired_at is None:
            status = "verifying"
        elif keys.in_use(key, now):
            status = f"retired, published until {(key.retired_at + published).isoformat()}"
        else:
            status = "retired, expired"
        created = key.created_at.isoformat() if key.created_at else "-"
        print(f"{key.kid}  {key.alg:5}  created {created}  {status}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="usergraph", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)

    commands.add_parser("migrate", help="apply database migrations up to the newest")

    create = commands.add_parser("create-user", help="create an account (no sign-in)")
    create.add_argument("--email", required=True)
    create.add_argument("--username", required=True)
    create.add_argument("--admin", action="store_true", help="also give the admin role")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )

    send = commands.add_parser("send-mail", help="send the mail outbox from this process")
    how = send.add_mutually_exclusive_group(required=True)
    how.add_argument("--once", action="store_true", help="send what is due, then exit")
    how.add_argument("--forever", action="store_true", help="keep sending until stopped")
    commands.add_parser("mail-status", help="the outbox: pending, sent, failed")

    keys = commands.add_parser("keys", help="the access-token signing keys (ES256, EdDSA)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    generate = key_actions.add_parser(
        "generate", help="make a key: published now, signing in 5 minutes (caches catch up)"
    )
    generate.add_argument("--algorithm", choices=["ES256", "EdDSA"])
    generate.add_argument("--now", action="store_true", help="sign with it at once")
    key_actions.add_parser("list", help="every key, and whether it signs or verifies")
    retire = key_actions.add_parser(
        "retire", help="stop signing with a key; it verifies until its tokens expire"
    )
    retire.add_argument("kid")

    commands.add_parser("new-data-key", help="print a new key for USERGRAPH_DATA_KEYS")
    commands.add_parser(
        "rotate-data-key",
        help="re-encrypt the TOTP secrets with the first of USERGRAPH_DATA_KEYS",
    )

    export = commands.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    export.add_argument("--output", type=Path, help="write to this file instead of stdout")

    check = commands.add_parser(
        "check-schema", help="compare the code's schema with schema.graphql"
    )
    check.add_argument("path", nargs="?", type=Path, default=DEFAULT_SCHEMA_FILE)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "new-data-key":
        from usergraph.auth.data_keys import new_data_key

        print(new_data_key())
        return 0
    if args.command in ("export-schema", "check-schema"):
        if args.command == "check-schema":
            return _check_schema(args.path)
        if args.output:
            args.output.write_text(printed_schema())
        else:
            sys.stdout.write(printed_schema())
        return 0
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            print(f"error: {where}: {error['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        problem = settings.missing_signing_key()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return _serve(args, settings)
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        print("database is at the newest migration")
        return 0
    if args.command == "create-user":
        password = _read_password(args)
        return asyncio.run(_create_user(args, settings, password))
    if args.command == "send-mail":
        return asyncio.run(_send_mail(settings, forever=args.forever))
    if args.command == "mail-status":
        return asyncio.run(_mail_status(settings))
    if args.command == "keys":
        return _keys(args, settings)
    if args.command == "rotate-data-key":
        return asyncio.run(_rotate_data_key(settings))
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
