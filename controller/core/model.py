"""The desired-state snapshot the controller reads, and the status it writes back.

The API side builds a `Snapshot` from SQL in one read transaction; the pipeline
turns it into flows for one datapath. Nothing here does I/O. Ids are the string
form of the resources' UUIDs.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

NetworkType = Literal["vlan", "vxlan"]
PortStatus = Literal["DOWN", "ACTIVE", "ERROR"]


@dataclass(frozen=True, slots=True)
class HostSpec:
    id: str
    name: str
    ovsdb_remote: str  # unix:/path/db.sock | tcp:IP:PORT | ssl:IP:PORT
    tunnel_ip: str | None = None  # VXLAN underlay address; None: no tunnels to/from it
    uplink: str | None = None  # OVS interface trunking VLAN networks; None: no VLAN trunk
    libvirt_uri: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    id: str
    tenant_id: str
    name: str
    type: NetworkType
    segmentation_id: int  # VLAN id (1-4094) or VNI (1-16777215)
    cidr: str | None = None
    gateway: str | None = None
    mtu: int = 1500  # the VMs' interface MTU, advertised by DHCP (option 26)
    dhcp_enabled: bool = True  # the service answers its ports' DHCP (needs a cidr)
    dns_servers: tuple[str, ...] = ()  # IPv4 addresses, advertised by DHCP


@dataclass(frozen=True, slots=True)
class PortSpec:
    id: str
    network_id: str
    mac: str  # "02:00:00:00:00:01"
    ips: tuple[str, ...] = ()
    host_id: str | None = None  # binding host; None: unbound
    interface: str | None = None  # OVS interface name on that host's integration bridge
    vm_id: str | None = None


@dataclass(frozen=True, slots=True)
class BackendSpec:
    ip: str
    port: int
    weight: int
    healthy: bool = True
    port_id: str | None = None  # the backend's port, when it is one of ours
    # Why its health is unknown now (its switch is not answering the probes), as
    # last recorded; None when the last probe gave a verdict.
    health_unknown: str | None = None


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    interval: float
    timeout: float
    rise: int
    fall: int


@dataclass(frozen=True, slots=True)
class LoadBalancerSpec:
    id: str
    network_id: str
    vip: str
    protocol: Literal["tcp", "udp"]
    port: int
    backends: tuple[BackendSpec, ...]
    health_check: HealthCheckSpec | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    hosts: tuple[HostSpec, ...] = ()
    networks: tuple[NetworkSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    load_balancers: tuple[LoadBalancerSpec, ...] = ()

    def host(self, host_id: str) -> HostSpec | None:
        return next((h for h in self.hosts if h.id == host_id), None)


@dataclass(frozen=True, slots=True)
class DatapathView:
    """What one switch reports about itself that the pipeline needs: OpenFlow port
    numbers by interface name (from OpenFlow port status). Interfaces not yet
    present on the switch are simply absent."""

    host_id: str
    ofports: Mapping[str, int] = field(default_factory=dict)


# ---- status written back by the controller -----------------------------------------


@dataclass(frozen=True, slots=True)
class HostStatus:
    host_id: str
    ovsdb_connected: bool
    openflow_connected: bool
    datapath_id: str | None = None  # 16 hex digits
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class PortStatusUpdate:
    port_id: str
    status: PortStatus
    host_id: str | None
    at: datetime  # when the switch confirmed (or lost) the port's flows


@dataclass(frozen=True, slots=True)
class BackendHealthUpdate:
    load_balancer_id: str
    ip: str
    port: int
    healthy: bool  # the last verdict (kept while the health is unknown)
    at: datetime
    unknown: str | None = None  # why no verdict can be had now; None: it can


class StateStore(Protocol):
    """What the controller needs from the desired-state store (SQL, in `api.store.snapshot`)."""

    def current_revision(self) -> int: ...

    def change_stamp(self) -> Hashable:
        """Changes whenever the snapshot would: a new revision, or a backend health
        verdict recorded (by this or another controller replica) without one."""
        ...

    def load_snapshot(self) -> Snapshot: ...

    def record_host_status(self, status: HostStatus) -> None: ...

    def record_port_status(self, updates: Sequence[PortStatusUpdate]) -> None: ...

    def record_backend_health(self, updates: Sequence[BackendHealthUpdate]) -> None: ...
