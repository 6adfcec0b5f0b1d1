"""Tombstone pruning: when each tombstone was written, and the horizon pruned through.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "fabric_revision",
        sa.Column("tombstones_pruned_through", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # Tombstones written before this upgrade count from now: they are pruned one
    # retention later, never early.
    with op.batch_alter_table("deleted_rows") as batch:
        batch.add_column(
            sa.Column(
                "deleted_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
            )
        )
    with op.batch_alter_table("deleted_rows") as batch:
        batch.alter_column("deleted_at", server_default=None)
        batch.create_index(op.f("ix_deleted_rows_deleted_at"), ["deleted_at"])


def downgrade() -> None:
    with op.batch_alter_table("deleted_rows") as batch:
        batch.drop_index(op.f("ix_deleted_rows_deleted_at"))
        batch.drop_column("deleted_at")
    with op.batch_alter_table("fabric_revision") as batch:
        batch.drop_column("tombstones_pruned_through")
