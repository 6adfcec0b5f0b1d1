"""Controller replicas on PostgreSQL: controller_replicas and switch_masters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "controller_replicas",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("relay_socket", sa.String(64), nullable=False),
        sa.Column("network_target", sa.String(255), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_controller_replicas")),
    )
    op.create_table(
        "switch_masters",
        sa.Column("host_id", sa.String(36), nullable=False),
        sa.Column("replica_id", sa.String(64), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("host_id", name=op.f("pk_switch_masters")),
    )


def downgrade() -> None:
    op.drop_table("switch_masters")
    op.drop_table("controller_replicas")
