"""Address cursors (per network, where the search for a free address starts), and
indexes that read a page of ports in list order.

Networks get no cursor row here: allocation starts from the network's first host
address until its first allocation writes one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "address_cursors",
        sa.Column("network_id", sa.String(36), nullable=False),
        sa.Column("next_free", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"],
            ["networks.id"],
            name=op.f("fk_address_cursors_network_id_networks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("network_id", name=op.f("pk_address_cursors")),
    )
    op.create_index("ix_ports_tenant_id_created_at_id", "ports", ["tenant_id", "created_at", "id"])
    op.create_index(
        "ix_ports_network_id_tenant_id_created_at_id",
        "ports",
        ["network_id", "tenant_id", "created_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_ports_network_id_tenant_id_created_at_id", table_name="ports")
    op.drop_index("ix_ports_tenant_id_created_at_id", table_name="ports")
    op.drop_table("address_cursors")
