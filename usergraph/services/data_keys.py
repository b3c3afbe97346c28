"""Re-encrypting what is encrypted at rest (TOTP secrets) with the first data key, so an old
key can be dropped from USERGRAPH_DATA_KEYS (`usergraph rotate-data-key`)."""

from __future__ import annotations

from dataclasses import dataclass

from usergraph.auth.data_keys import DataCipher, UndecryptableValue
from usergraph.db import second_factors as factor_queries
from usergraph.db.engine import Database
from usergraph.services.audit import log_security_event

BATCH = 500


@dataclass(frozen=True, slots=True)
class Rotation:
    rotated: int
    # Users whose secret no configured key decrypts (left as they are).
    undecryptable: tuple[int, ...]


async def rotate(*, db: Database, cipher: DataCipher, batch: int = BATCH) -> Rotation:
    """Encrypt every stored TOTP secret again with the first key, batch by batch (each batch
    one transaction, its rows locked while they change)."""
    rotated, undecryptable, after = 0, [], 0
    while True:
        async with db.sessionmaker() as s, s.begin():
            rows = await factor_queries.totp_factors_after(s, user_id=after, limit=batch, lock=True)
            for row in rows:
                try:
                    row.secret_ciphertext = cipher.rotate(row.secret_ciphertext)
                    rotated += 1
                except UndecryptableValue:
                    undecryptable.append(row.user_id)
        if len(rows) < batch:
            break
        after = rows[-1].user_id
    log_security_event("data_key_rotated", rotated=rotated, undecryptable=len(undecryptable))
    return Rotation(rotated=rotated, undecryptable=tuple(undecryptable))
