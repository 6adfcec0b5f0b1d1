"""The desired state in SQL: SQLAlchemy 2.0 typed ORM.

Desired-state rows carry `revision`: the global revision (table `fabric_revision`)
at their last change. `api.store.db` bumps that counter once per write transaction and
stamps every changed row; the controller polls it to know when to reload.
Status columns (written by the controller through `api.store.snapshot`) are updated with
plain UPDATE statements that bypass the stamping on purpose: a status write must
not look like a change of desired state, or the controller would chase its tail.
"""

from __future__ import annotations

import uuid
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones: store naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AddressList(TypeDecorator[tuple[str, ...]]):
    """A short list of addresses as one comma-separated text column, read as a tuple
    (the controller's records are hashable)."""

    impl = String(255)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str:
        return ",".join(value or ())

    def process_result_value(self, value: Any, dialect: Dialect) -> tuple[str, ...]:
        return tuple(value.split(",")) if value else ()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime()}


def columns_for(model: type[Base], record: type[Any]) -> list[Any]:
    """The columns of `model` named like the fields of the dataclass `record`, in its order.

    Readers that turn rows into plain records (the controller's snapshot, the
    libvirt watcher's port records) select these, so a field is named once, in
    the record; fields that are not columns (computed ones) are left out.
    """
    table = model.__table__.columns
    return [table[field.name] for field in fields(record) if field.name in table]


class GlobalRevision(Base):
    """One row (id = 1): the revision of the whole desired state."""

    __tablename__ = "fabric_revision"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Tombstones (`deleted_rows`) at or below this revision may have been pruned: a
    # reader whose last revision is below it must read everything (api.store.tombstones).
    tombstones_pruned_through: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )


class Revisioned:
    """Columns shared by every desired-state resource."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
    # Indexed: the controller loads the rows changed since the revision it last read.
    revision: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, index=True)


class DeletedRow(Base):
    """A tombstone: a desired-state row deleted at `revision` (kind: its table), so a
    reader loading what changed since a revision learns about deletions too."""

    __tablename__ = "deleted_rows"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # the model class: Port, Host...
    row_id: Mapped[str] = mapped_column(String(36))
    revision: Mapped[int] = mapped_column(BigInteger, index=True)
    # Indexed: tombstones older than the retention are pruned (api.store.tombstones).
    deleted_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, index=True)


class Host(Revisioned, Base):
    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    ovsdb_remote: Mapped[str] = mapped_column(String(255))
    libvirt_uri: Mapped[str | None] = mapped_column(String(255))
    tunnel_ip: Mapped[str | None] = mapped_column(String(15), unique=True)
    uplink: Mapped[str | None] = mapped_column(String(15))
    # status, written by the controller
    datapath_id: Mapped[str | None] = mapped_column(String(16))
    ovsdb_connected: Mapped[bool] = mapped_column(Boolean, default=False)
    openflow_connected: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    status_at: Mapped[datetime | None]
    # what its switch holds after the controller's last pass (None: not known)
    flow_count: Mapped[int | None] = mapped_column(Integer)
    group_count: Mapped[int | None] = mapped_column(Integer)


class Tenant(Revisioned, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class Network(Revisioned, Base):
    __tablename__ = "networks"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        UniqueConstraint("type", "segmentation_id"),
        CheckConstraint("type IN ('vlan', 'vxlan')", name="type"),
    )

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(8))
    segmentation_id: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str | None] = mapped_column(String(18))
    gateway: Mapped[str | None] = mapped_column(String(15))
    ipv6_cidr: Mapped[str | None] = mapped_column(String(43))
    # Advertised by the service's DHCP (which a network may turn off).
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    dhcp_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    dns_servers: Mapped[tuple[str, ...]] = mapped_column(AddressList(), default=())


class Port(Revisioned, Base):
    __tablename__ = "ports"
    __table_args__ = (
        # One OVS interface carries one port.
        UniqueConstraint("host_id", "interface"),
        # A page of a tenant's (or a network's) ports in list order is read from the
        # index, and counted from it, without sorting or reading every row.
        Index("ix_ports_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index(
            "ix_ports_network_id_tenant_id_created_at_id",
            *("network_id", "tenant_id", "created_at", "id"),
        ),
        CheckConstraint("origin IN ('api', 'libvirt')", name="origin"),
        CheckConstraint("status IN ('DOWN', 'ACTIVE', 'ERROR')", name="status"),
    )

    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    interface: Mapped[str | None] = mapped_column(String(15))
    vm_id: Mapped[str | None] = mapped_column(String(64), index=True)
    origin: Mapped[str] = mapped_column(String(8), default="api")
    bound_at: Mapped[datetime | None]
    # status, written by the controller
    status: Mapped[str] = mapped_column(String(8), default="DOWN")
    status_at: Mapped[datetime | None]
    activation_seconds: Mapped[float | None] = mapped_column(Float)

    addresses: Mapped[list[PortIp]] = relationship(
        back_populates="port",
        cascade="all, delete-orphan",
        order_by="PortIp.position",
        lazy="selectin",
    )

    @property
    def ips(self) -> list[str]:
        return [address.ip for address in self.addresses]


class PortIp(Base):
    """One fixed IP of a port. UNIQUE(network_id, ip) rules out duplicates, races included."""

    __tablename__ = "port_ips"
    __table_args__ = (UniqueConstraint("network_id", "ip"),)

    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    # IPv4 dotted quad, or IPv6 compressed as `ipaddress` writes it (one text per address).
    ip: Mapped[str] = mapped_column(String(39), primary_key=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"))
    position: Mapped[int] = mapped_column(Integer, default=0)

    port: Mapped[Port] = relationship(back_populates="addresses")


class LoadBalancer(Revisioned, Base):
    """One listener: a VIP, a protocol and a port, spread over weighted backends."""

    __tablename__ = "load_balancers"
    __table_args__ = (
        UniqueConstraint("network_id", "vip", "protocol", "port"),
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint("protocol IN ('tcp', 'udp')", name="protocol"),
        CheckConstraint("port BETWEEN 1 AND 65535", name="port"),
    )

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    vip: Mapped[str] = mapped_column(String(15))
    protocol: Mapped[str] = mapped_column(String(3))
    port: Mapped[int] = mapped_column(Integer)
    hc_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    hc_interval: Mapped[float] = mapped_column(Float, default=2.0)
    hc_timeout: Mapped[float] = mapped_column(Float, default=1.0)
    hc_rise: Mapped[int] = mapped_column(Integer, default=2)
    hc_fall: Mapped[int] = mapped_column(Integer, default=2)

    backends: Mapped[list[LbBackend]] = relationship(
        back_populates="load_balancer",
        cascade="all, delete-orphan",
        order_by="LbBackend.position",
        lazy="selectin",
    )


class LbBackend(Base):
    __tablename__ = "lb_backends"
    __table_args__ = (
        CheckConstraint("weight BETWEEN 1 AND 100", name="weight"),
        CheckConstraint("port BETWEEN 1 AND 65535", name="port"),
    )

    load_balancer_id: Mapped[str] = mapped_column(
        ForeignKey("load_balancers.id", ondelete="CASCADE"), primary_key=True
    )
    ip: Mapped[str] = mapped_column(String(15), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    # A backend that is one of our ports: the port cannot be deleted while in use.
    port_id: Mapped[str | None] = mapped_column(ForeignKey("ports.id"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # status, written by the controller's health checks
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    health_at: Mapped[datetime | None]
    # Why no verdict can be had now (the switch sending its probes is not
    # answering); `healthy` is then the last verdict. NULL: the checks work.
    health_unknown: Mapped[str | None] = mapped_column(String(200))

    load_balancer: Mapped[LoadBalancer] = relationship(back_populates="backends")


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored. tenant_id NULL means admin."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
    # NULL: valid until revoked (the row deleted).
    expires_at: Mapped[datetime | None]


class ControllerReplica(Base):
    """A controller replica (PostgreSQL only). Live while its session holds the
    replica's advisory lock; rows of dead replicas are swept when another joins."""

    __tablename__ = "controller_replicas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    relay_socket: Mapped[str] = mapped_column(String(64))
    network_target: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)


class SwitchMaster(Base):
    """The last master of a host's switch and its generation: the OpenFlow role
    request's fencing token, incremented in the statement that records a new master."""

    __tablename__ = "switch_masters"

    host_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    replica_id: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(BigInteger)
    since: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)


class AddressCursor(Base):
    """Per network: every host address below `next_free` is in use (a port's, the
    gateway, a VIP), so allocation searches from there instead of reading every used
    address (api.store.addresses). Not desired state: no revision."""

    __tablename__ = "address_cursors"

    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
    )
    next_free: Mapped[int] = mapped_column(BigInteger)


DESIRED_STATE_CHILDREN: tuple[type[Base], ...] = (PortIp, LbBackend)
