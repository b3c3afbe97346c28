"""The `usergraph` command line."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.client import DEFAULT_PASSWORD
from tests.environment import TEST_SIGNING_KEY, make_settings
from usergraph import cli
from usergraph.db.engine import Database
from usergraph.db.loaders import Loaders
from usergraph.db.models import User


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    # The CLI configures the root logger; keep pytest's log capture in place.
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("USERGRAPH_SIGNING_KEY", TEST_SIGNING_KEY)
    monkeypatch.setenv("USERGRAPH_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("USERGRAPH_ARGON2_MEMORY_COST_KIB", "1024")
    monkeypatch.setenv("USERGRAPH_ARGON2_PARALLELISM", "1")
    return database_url


def _create_user(monkeypatch: pytest.MonkeyPatch, *args: str, password: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return cli.main(["create-user", *args, "--password-stdin"])


async def _roles_of(database_url: str, username: str) -> list[str]:
    db = Database.connect(database_url)
    try:
        async with db.read_sessionmaker() as s:
            user_id = await s.scalar(select(User.id).where(User.username == username))
        assert user_id is not None
        roles = await Loaders.create(db).roles_by_user_id.load(user_id)
        return sorted(role.name for role in roles)
    finally:
        await db.dispose()


def test_migrate_is_idempotent(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate"]) == 0
    assert "newest migration" in capsys.readouterr().out


def test_create_admin(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _create_user(
        monkeypatch,
        "--email", "root-cli@example.com", "--username", "RootCli", "--admin",
        password=DEFAULT_PASSWORD,
    )  # fmt: skip
    assert code == 0
    assert "created user rootcli" in capsys.readouterr().out
    assert asyncio.run(_roles_of(cli_env, "rootcli")) == ["admin", "user"]
    # The same email again is refused with the reason, not a traceback.
    again = _create_user(
        monkeypatch,
        "--email",
        "ROOT-cli@example.com",
        "--username",
        "other",
        password=DEFAULT_PASSWORD,
    )
    assert again == 1
    assert "EMAIL_TAKEN" in capsys.readouterr().err


def test_create_user_refuses_a_weak_password(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _create_user(
        monkeypatch, "--email", "weak@example.com", "--username", "weakling", password="password"
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "WEAK_PASSWORD" in err and "password" in err


def test_export_schema_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out.graphql"
    assert cli.main(["export-schema", "--output", str(target)]) == 0
    assert target.read_text() == cli.printed_schema()
    assert "type Mutation" in target.read_text()


def test_new_data_key_prints_a_key_the_settings_accept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["new-data-key"]) == 0
    first = capsys.readouterr().out.strip()
    assert cli.main(["new-data-key"]) == 0
    second = capsys.readouterr().out.strip()
    assert first != second and len(first) == 44
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path, data_keys=first)
    assert [key.get_secret_value() for key in settings.data_keys] == [first]


def test_a_bad_data_key_gives_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USERGRAPH_DATA_KEYS", "not-a-key")
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "data_keys" in err and "usergraph new-data-key" in err
    assert "not-a-key" not in err and "Traceback" not in err


def test_bad_settings_give_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USERGRAPH_ENV", "production")
    monkeypatch.setenv("USERGRAPH_JWT_ALGORITHM", "HS256")
    monkeypatch.delenv("USERGRAPH_SIGNING_KEY", raising=False)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "USERGRAPH_SIGNING_KEY is required" in err
    assert "Traceback" not in err
