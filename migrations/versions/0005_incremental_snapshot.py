"""Incremental snapshot loading: revision indexes and tombstones of deleted rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_REVISIONED = ("hosts", "tenants", "networks", "ports", "load_balancers")


def upgrade() -> None:
    for table in _REVISIONED:
        op.create_index(op.f(f"ix_{table}_revision"), table, ["revision"])
    op.create_table(
        "deleted_rows",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("row_id", sa.String(36), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_deleted_rows")),
    )
    op.create_index(op.f("ix_deleted_rows_revision"), "deleted_rows", ["revision"])


def downgrade() -> None:
    op.drop_index(op.f("ix_deleted_rows_revision"), table_name="deleted_rows")
    op.drop_table("deleted_rows")
    for table in _REVISIONED:
        op.drop_index(op.f(f"ix_{table}_revision"), table_name=table)
