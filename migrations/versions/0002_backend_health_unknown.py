"""Load-balancer backends: why their health is unknown (the probing switch is silent).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("lb_backends", sa.Column("health_unknown", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lb_backends") as batch:
        batch.drop_column("health_unknown")
