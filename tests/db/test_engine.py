"""Engine settings: database errors never carry their parameters (they may be hashes)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from usergraph.db.engine import Database


async def test_database_errors_hide_their_parameters(database_url: str) -> None:
    db = Database.connect(database_url)
    secret_hash = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0$bm90LWEtcmVhbC1oYXNo"
    try:
        with pytest.raises(IntegrityError) as caught:
            async with db.sessionmaker() as s, s.begin():
                # Role 1 exists (seeded): the insert fails, with our value among its parameters.
                await s.execute(
                    text("INSERT INTO roles (id, name, description) VALUES (:i, :n, :d)"),
                    [{"i": 1, "n": "dup", "d": secret_hash}],
                )
    finally:
        await db.dispose()
    assert secret_hash not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)
