"""Second factors: TOTP secrets, recovery codes, login challenges; how a session signed in.

Revision ID: 0003_second_factors
Revises: 0002_email
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from usergraph.db.models import UTCDateTime

revision: str = "0003_second_factors"
down_revision: str | None = "0002_email"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE"
    )


def upgrade() -> None:
    # Sessions opened before this migration signed in with a password, when they were opened.
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("auth_methods", sa.String(40), nullable=False, server_default="pwd")
        )
        batch.add_column(sa.Column("authenticated_at", UTCDateTime(), nullable=True))
    op.execute("UPDATE sessions SET authenticated_at = created_at")
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("authenticated_at", existing_type=UTCDateTime(), nullable=False)
        batch.alter_column("auth_methods", existing_type=sa.String(40), server_default=None)

    op.create_table(
        "totp_factors",
        sa.Column("user_id", Id, nullable=False),
        sa.Column("secret_ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("enabled_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        _user_fk("totp_factors"),
        sa.PrimaryKeyConstraint("user_id", name="pk_totp_factors"),
    )

    op.create_table(
        "recovery_codes",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        _user_fk("recovery_codes"),
        sa.PrimaryKeyConstraint("id", name="pk_recovery_codes"),
    )
    op.create_index("ix_recovery_codes_user_id", "recovery_codes", ["user_id"])

    op.create_table(
        "second_factor_challenges",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        _user_fk("second_factor_challenges"),
        sa.PrimaryKeyConstraint("id", name="pk_second_factor_challenges"),
        sa.UniqueConstraint("token_hash", name="uq_second_factor_challenges_token_hash"),
    )
    op.create_index("ix_second_factor_challenges_user_id", "second_factor_challenges", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_second_factor_challenges_user_id", table_name="second_factor_challenges")
    op.drop_table("second_factor_challenges")
    op.drop_index("ix_recovery_codes_user_id", table_name="recovery_codes")
    op.drop_table("recovery_codes")
    op.drop_table("totp_factors")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("authenticated_at")
        batch.drop_column("auth_methods")
