"""IPv6: networks get an optional ipv6_cidr; port addresses may be IPv6 (39 characters).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("ipv6_cidr", sa.String(43), nullable=True))
    with op.batch_alter_table("port_ips") as batch:
        batch.alter_column("ip", existing_type=sa.String(15), type_=sa.String(39))


def downgrade() -> None:
    # PostgreSQL refuses it while IPv6 addresses exist (they do not fit in 15 characters;
    # SQLite does not check lengths): delete or readdress those ports first.
    with op.batch_alter_table("port_ips") as batch:
        batch.alter_column("ip", existing_type=sa.String(39), type_=sa.String(15))
    with op.batch_alter_table("networks") as batch:
        batch.drop_column("ipv6_cidr")
