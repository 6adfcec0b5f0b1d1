"""Networks: mtu, dhcp_enabled, dns_servers (DHCP from the address plan).

Existing networks get the defaults a new one gets with the default underlay MTU
(1500): 1450 for VXLAN (50 bytes of encapsulation), 1500 for VLAN; DHCP on, no DNS.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("mtu", sa.Integer(), nullable=False, server_default="1500"))
        batch.add_column(
            sa.Column("dhcp_enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(
            sa.Column("dns_servers", sa.String(255), nullable=False, server_default="")
        )
    op.execute("UPDATE networks SET mtu = 1450 WHERE type = 'vxlan'")


def downgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.drop_column("dns_servers")
        batch.drop_column("dhcp_enabled")
        batch.drop_column("mtu")
