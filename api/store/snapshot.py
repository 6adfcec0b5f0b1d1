"""The controller's view of SQL: `controller.core.model.StateStore` over the service database.

Reads build one `Snapshot` per read transaction; status writes are plain UPDATEs
that never bump the global revision (see `api.store.models`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, select, update

from api.store.db import Database, read_revision
from api.store.models import (
    Host,
    LbBackend,
    LoadBalancer,
    Network,
    Port,
    PortIp,
    utcnow,
)
from controller.core.model import (
    BackendHealthUpdate,
    BackendSpec,
    HealthCheckSpec,
    HostSpec,
    HostStatus,
    LoadBalancerSpec,
    NetworkSpec,
    PortSpec,
    PortStatusUpdate,
    Snapshot,
)


class SqlStateStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def current_revision(self) -> int:
        return self.database.current_revision()

    def load_snapshot(self) -> Snapshot:
        with self.database.read() as session:
            revision = read_revision(session)
            hosts = session.execute(
                select(
                    Host.id,
                    Host.name,
                    Host.ovsdb_remote,
                    Host.tunnel_ip,
                    Host.uplink,
                    Host.libvirt_uri,
                ).order_by(Host.created_at, Host.id)
            ).all()
            networks = session.execute(
                select(
                    Network.id,
                    Network.tenant_id,
                    Network.name,
                    Network.type,
                    Network.segmentation_id,
                    Network.cidr,
                    Network.gateway,
                ).order_by(Network.created_at, Network.id)
            ).all()
            ports = session.execute(
                select(
                    Port.id, Port.network_id, Port.mac, Port.host_id, Port.interface, Port.vm_id
                ).order_by(Port.created_at, Port.id)
            ).all()
            port_ips = session.execute(
                select(PortIp.port_id, PortIp.ip).order_by(PortIp.port_id, PortIp.position)
            ).all()
            lbs = session.execute(
                select(
                    LoadBalancer.id,
                    LoadBalancer.network_id,
                    LoadBalancer.vip,
                    LoadBalancer.protocol,
                    LoadBalancer.port,
                    LoadBalancer.hc_enabled,
                    LoadBalancer.hc_interval,
                    LoadBalancer.hc_timeout,
                    LoadBalancer.hc_rise,
                    LoadBalancer.hc_fall,
                ).order_by(LoadBalancer.created_at, LoadBalancer.id)
            ).all()
            backends = session.execute(
                select(
                    LbBackend.load_balancer_id,
                    LbBackend.ip,
                    LbBackend.port,
                    LbBackend.weight,
                    LbBackend.healthy,
                    LbBackend.port_id,
                ).order_by(LbBackend.load_balancer_id, LbBackend.position)
            ).all()

        ips_by_port: dict[str, list[str]] = defaultdict(list)
        for port_id, ip in port_ips:
            ips_by_port[port_id].append(ip)
        backends_by_lb: dict[str, list[BackendSpec]] = defaultdict(list)
        for lb_id, ip, port, weight, healthy, member_port_id in backends:
            backends_by_lb[lb_id].append(BackendSpec(ip, port, weight, healthy, member_port_id))

        return Snapshot(
            revision=revision,
            hosts=tuple(
                HostSpec(
                    id=h.id,
                    name=h.name,
                    ovsdb_remote=h.ovsdb_remote,
                    tunnel_ip=h.tunnel_ip,
                    uplink=h.uplink,
                    libvirt_uri=h.libvirt_uri,
                )
                for h in hosts
            ),
            networks=tuple(
                NetworkSpec(
                    id=n.id,
                    tenant_id=n.tenant_id,
                    name=n.name,
                    type=n.type,
                    segmentation_id=n.segmentation_id,
                    cidr=n.cidr,
                    gateway=n.gateway,
                )
                for n in networks
            ),
            ports=tuple(
                PortSpec(
                    id=p.id,
                    network_id=p.network_id,
                    mac=p.mac,
                    ips=tuple(ips_by_port[p.id]),
                    host_id=p.host_id,
                    interface=p.interface,
                    vm_id=p.vm_id,
                )
                for p in ports
            ),
            load_balancers=tuple(
                LoadBalancerSpec(
                    id=lb.id,
                    network_id=lb.network_id,
                    vip=lb.vip,
                    protocol=lb.protocol,
                    port=lb.port,
                    backends=tuple(backends_by_lb[lb.id]),
                    health_check=HealthCheckSpec(
                        interval=lb.hc_interval,
                        timeout=lb.hc_timeout,
                        rise=lb.hc_rise,
                        fall=lb.hc_fall,
                    )
                    if lb.hc_enabled
                    else None,
                )
                for lb in lbs
            ),
        )

    def record_host_status(self, status: HostStatus) -> None:
        with self.database.unversioned_write() as session:
            session.execute(
                update(Host)
                .where(Host.id == status.host_id)
                .values(
                    ovsdb_connected=status.ovsdb_connected,
                    openflow_connected=status.openflow_connected,
                    datapath_id=status.datapath_id,
                    last_error=status.last_error,
                    status_at=utcnow(),
                )
            )

    def record_port_status(self, updates: Sequence[PortStatusUpdate]) -> None:
        """Apply status reports, skipping stale ones.

        A report is stale when the port is now bound to another host than the
        reporter's, or when it was made before the current binding (`at` earlier
        than `bound_at`): it describes a binding that no longer exists.
        """
        if not updates:
            return
        with self.database.unversioned_write() as session:
            for item in updates:
                at = _aware(item.at)
                row = session.execute(select(Port.bound_at).where(Port.id == item.port_id)).first()
                if row is None:
                    continue
                bound_at: datetime | None = row.bound_at
                if bound_at is not None and at < bound_at:
                    continue
                activation = (
                    (at - bound_at).total_seconds()
                    if item.status == "ACTIVE" and bound_at is not None
                    else None
                )
                session.execute(
                    update(Port)
                    .where(
                        Port.id == item.port_id,
                        Port.status != item.status,
                        Port.host_id.is_(None)
                        if item.host_id is None
                        else Port.host_id == item.host_id,
                        # the binding we measured against is still the current one
                        Port.bound_at.is_(None) if bound_at is None else Port.bound_at == bound_at,
                    )
                    .values(status=item.status, status_at=at, activation_seconds=activation)
                )

    def record_backend_health(self, updates: Sequence[BackendHealthUpdate]) -> None:
        if not updates:
            return
        with self.database.unversioned_write() as session:
            for item in updates:
                session.execute(
                    update(LbBackend)
                    .where(
                        and_(
                            LbBackend.load_balancer_id == item.load_balancer_id,
                            LbBackend.ip == item.ip,
                            LbBackend.port == item.port,
                            LbBackend.healthy != item.healthy,
                        )
                    )
                    .values(healthy=item.healthy, health_at=_aware(item.at))
                )


def _aware(moment: datetime) -> datetime:
    # The contract asks for aware datetimes; a naive one is taken as UTC rather
    # than failing the controller's status path.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
