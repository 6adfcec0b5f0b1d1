"""The desired-state snapshot the controller reads, and the status it writes back.

The API side builds a `Snapshot` from SQL in one read transaction; the pipeline
turns it into flows for one datapath. Nothing here does I/O. Ids are the string
form of the resources' UUIDs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, TypeVar

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


_Record = TypeVar("_Record", HostSpec, NetworkSpec, PortSpec, LoadBalancerSpec)


@dataclass(frozen=True, slots=True)
class SnapshotChange:
    """What a snapshot changed from the one loaded before it: (before, after) of every
    record that appeared (before None), went (after None) or changed, by kind."""

    hosts: tuple[tuple[HostSpec | None, HostSpec | None], ...] = ()
    networks: tuple[tuple[NetworkSpec | None, NetworkSpec | None], ...] = ()
    ports: tuple[tuple[PortSpec | None, PortSpec | None], ...] = ()
    load_balancers: tuple[tuple[LoadBalancerSpec | None, LoadBalancerSpec | None], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.hosts or self.networks or self.ports or self.load_balancers)


@dataclass(frozen=True, slots=True)
class SnapshotUpdate:
    """A loaded snapshot and what changed since the previous load. `change` is None
    after a full load (the first, or a resync): anything may have changed."""

    snapshot: Snapshot
    change: SnapshotChange | None


def snapshot_change(old: Snapshot, new: Snapshot) -> SnapshotChange:
    """The records that differ between two snapshots, by id (O(snapshot); the
    incremental loader knows its change without this)."""

    return SnapshotChange(
        hosts=_differ(old.hosts, new.hosts),
        networks=_differ(old.networks, new.networks),
        ports=_differ(old.ports, new.ports),
        load_balancers=_differ(old.load_balancers, new.load_balancers),
    )


def _differ(
    before: Sequence[_Record], after: Sequence[_Record]
) -> tuple[tuple[_Record | None, _Record | None], ...]:
    was: dict[str, _Record] = {item.id: item for item in before}
    now: dict[str, _Record] = {item.id: item for item in after}
    return tuple(
        (was.get(key), now.get(key))
        for key in dict.fromkeys([*was, *now])
        if was.get(key) != now.get(key)
    )


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
    # What the switch holds after the last pass that reached it (None: not known).
    flow_count: int | None = None
    group_count: int | None = None


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


class SnapshotLoader(Protocol):
    def load(self, *, full: bool = False) -> SnapshotUpdate | None:
        """The desired state now and what changed since the last load; None when
        nothing did. `full` reads everything again (a resync)."""
        ...


class StateStore(Protocol):
    """What the controller needs from the desired-state store (SQL, in `api.store.snapshot`)."""

    def current_revision(self) -> int: ...

    def change_stamp(self) -> Hashable:
        """Changes whenever the snapshot would: a new revision, or a backend health
        verdict recorded (by this or another controller replica) without one."""
        ...

    def load_snapshot(self) -> Snapshot: ...

    def snapshot_loader(self) -> SnapshotLoader:
        """A loader of its own for one reader: a full load first, then what changed."""
        ...

    def watch_changes(self, changed: Callable[[], None]) -> Callable[[], None]:
        """Call `changed` (from any thread) soon after desired state or a health verdict
        is committed, by anyone; returns a function that stops the watch. Best effort:
        a reader still checks now and then."""
        ...

    def record_host_status(self, status: HostStatus) -> None: ...

    def record_port_status(self, updates: Sequence[PortStatusUpdate]) -> None: ...

    def record_backend_health(self, updates: Sequence[BackendHealthUpdate]) -> None: ...
