"""Initial schema: revision counter, hosts, tenants, networks, ports, load balancers, tokens.

Revision ID: 0001
Revises:
Create Date: 2024-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _revisioned_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    revision_table = op.create_table(
        "fabric_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fabric_revision"),
    )
    op.bulk_insert(revision_table, [{"id": 1, "value": 0}])

    op.create_table(
        "hosts",
        *_revisioned_columns(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("ovsdb_remote", sa.String(255), nullable=False),
        sa.Column("libvirt_uri", sa.String(255), nullable=True),
        sa.Column("tunnel_ip", sa.String(15), nullable=True),
        sa.Column("uplink", sa.String(15), nullable=True),
        sa.Column("datapath_id", sa.String(16), nullable=True),
        sa.Column("ovsdb_connected", sa.Boolean(), nullable=False),
        sa.Column("openflow_connected", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_hosts"),
        sa.UniqueConstraint("name", name="uq_hosts_name"),
        sa.UniqueConstraint("tunnel_ip", name="uq_hosts_tunnel_ip"),
    )

    op.create_table(
        "tenants",
        *_revisioned_columns(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
    )

    op.create_table(
        "networks",
        *_revisioned_columns(),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("segmentation_id", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(18), nullable=True),
        sa.Column("gateway", sa.String(15), nullable=True),
        sa.CheckConstraint("type IN ('vlan', 'vxlan')", name="ck_networks_type"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_networks_tenant_id_tenants"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_networks"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_networks_tenant_id_name"),
        sa.UniqueConstraint("type", "segmentation_id", name="uq_networks_type_segmentation_id"),
    )
    op.create_index("ix_networks_tenant_id", "networks", ["tenant_id"])

    op.create_table(
        "ports",
        *_revisioned_columns(),
        sa.Column("network_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=True),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("host_id", sa.String(36), nullable=True),
        sa.Column("interface", sa.String(15), nullable=True),
        sa.Column("vm_id", sa.String(64), nullable=True),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activation_seconds", sa.Float(), nullable=True),
        sa.CheckConstraint("origin IN ('api', 'libvirt')", name="ck_ports_origin"),
        sa.CheckConstraint("status IN ('DOWN', 'ACTIVE', 'ERROR')", name="ck_ports_status"),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name="fk_ports_host_id_hosts"),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name="fk_ports_network_id_networks"
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_ports_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_ports"),
        sa.UniqueConstraint("host_id", "interface", name="uq_ports_host_id_interface"),
        sa.UniqueConstraint("mac", name="uq_ports_mac"),
    )
    op.create_index("ix_ports_network_id", "ports", ["network_id"])
    op.create_index("ix_ports_tenant_id", "ports", ["tenant_id"])
    op.create_index("ix_ports_host_id", "ports", ["host_id"])
    op.create_index("ix_ports_vm_id", "ports", ["vm_id"])

    op.create_table(
        "port_ips",
        sa.Column("port_id", sa.String(36), nullable=False),
        sa.Column("ip", sa.String(15), nullable=False),
        sa.Column("network_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name="fk_port_ips_network_id_networks"
        ),
        sa.ForeignKeyConstraint(
            ["port_id"], ["ports.id"], name="fk_port_ips_port_id_ports", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("port_id", "ip", name="pk_port_ips"),
        sa.UniqueConstraint("network_id", "ip", name="uq_port_ips_network_id_ip"),
    )

    op.create_table(
        "load_balancers",
        *_revisioned_columns(),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("network_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("vip", sa.String(15), nullable=False),
        sa.Column("protocol", sa.String(3), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("hc_enabled", sa.Boolean(), nullable=False),
        sa.Column("hc_interval", sa.Float(), nullable=False),
        sa.Column("hc_timeout", sa.Float(), nullable=False),
        sa.Column("hc_rise", sa.Integer(), nullable=False),
        sa.Column("hc_fall", sa.Integer(), nullable=False),
        sa.CheckConstraint("protocol IN ('tcp', 'udp')", name="ck_load_balancers_protocol"),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name="ck_load_balancers_port"),
        sa.ForeignKeyConstraint(
            ["network_id"], ["networks.id"], name="fk_load_balancers_network_id_networks"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_load_balancers_tenant_id_tenants"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_load_balancers"),
        sa.UniqueConstraint(
            "network_id",
            "vip",
            "protocol",
            "port",
            name="uq_load_balancers_network_id_vip_protocol_port",
        ),
        sa.UniqueConstraint("tenant_id", "name", name="uq_load_balancers_tenant_id_name"),
    )
    op.create_index("ix_load_balancers_tenant_id", "load_balancers", ["tenant_id"])
    op.create_index("ix_load_balancers_network_id", "load_balancers", ["network_id"])

    op.create_table(
        "lb_backends",
        sa.Column("load_balancer_id", sa.String(36), nullable=False),
        sa.Column("ip", sa.String(15), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("port_id", sa.String(36), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("health_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("weight BETWEEN 1 AND 100", name="ck_lb_backends_weight"),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name="ck_lb_backends_port"),
        sa.ForeignKeyConstraint(
            ["load_balancer_id"],
            ["load_balancers.id"],
            name="fk_lb_backends_load_balancer_id_load_balancers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["port_id"], ["ports.id"], name="fk_lb_backends_port_id_ports"),
        sa.PrimaryKeyConstraint("load_balancer_id", "ip", "port", name="pk_lb_backends"),
    )
    op.create_index("ix_lb_backends_port_id", "lb_backends", ["port_id"])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_api_tokens_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_tenant_id", "api_tokens", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_api_tokens_tenant_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_index("ix_lb_backends_port_id", table_name="lb_backends")
    op.drop_table("lb_backends")
    op.drop_index("ix_load_balancers_network_id", table_name="load_balancers")
    op.drop_index("ix_load_balancers_tenant_id", table_name="load_balancers")
    op.drop_table("load_balancers")
    op.drop_table("port_ips")
    for column in ("vm_id", "host_id", "tenant_id", "network_id"):
        op.drop_index(f"ix_ports_{column}", table_name="ports")
    op.drop_table("ports")
    op.drop_index("ix_networks_tenant_id", table_name="networks")
    op.drop_table("networks")
    op.drop_table("tenants")
    op.drop_table("hosts")
    op.drop_table("fabric_revision")
