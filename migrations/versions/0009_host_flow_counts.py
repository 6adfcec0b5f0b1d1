"""Hosts: the flows and groups their switch holds (`ovs-fabric status`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hosts", sa.Column("flow_count", sa.Integer(), nullable=True))
    op.add_column("hosts", sa.Column("group_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("group_count")
        batch.drop_column("flow_count")
