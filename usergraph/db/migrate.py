"""Apply Alembic migrations from code (the CLI, the app's readiness check and the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _script_location() -> Path:
    # Installed wheels carry the scripts inside the package; a source checkout has them at
    # the repository root, as DESIGN.md lays out.
    for candidate in (_PACKAGE_DIR / "_alembic", _PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").exists():
            return candidate
    raise RuntimeError("the Alembic migration scripts are missing from this installation")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_script_location()))
    config.attributes["skip_logging_config"] = True
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None before the first migration."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    # Read directly rather than through a MigrationContext, which logs at INFO every time
    # (the readiness probe calls this every few seconds).
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Migrate the database behind engine to the newest revision."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(run)
