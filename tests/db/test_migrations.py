"""Alembic owns the schema: the migrations must build exactly what the models describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from alembic import command
from usergraph.db.engine import Database
from usergraph.db.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from usergraph.db.models import Base, Role


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_models_and_migrations_agree(database_url: str) -> None:
    db = Database.connect(database_url)
    try:
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
            assert await connection.run_sync(current_revision) == head_revision()
    finally:
        await db.dispose()


async def test_migration_seeds_the_roles(database_url: str) -> None:
    db = Database.connect(database_url)
    try:
        async with db.read_sessionmaker() as s:
            names = (await s.scalars(select(Role.name).order_by(Role.name))).all()
    finally:
        await db.dispose()
    assert names == ["admin", "user"]


async def test_downgrade_then_upgrade_round_trips(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}")

    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    try:
        await upgrade_to_head(db.engine)
        async with db.engine.begin() as connection:
            await connection.run_sync(downgrade)
        async with db.engine.connect() as connection:
            tables = (
                (
                    await connection.execute(
                        text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                    )
                )
                .scalars()
                .all()
            )
        assert tables == ["alembic_version"]
        await upgrade_to_head(db.engine)
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
    finally:
        await db.dispose()
