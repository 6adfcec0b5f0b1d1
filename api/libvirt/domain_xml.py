"""Pure: what a libvirt domain's XML says about its NICs, and which port each NIC is.

`parse_domain` turns a domain's (live) XML into interface descriptions and the
network the domain's metadata asks for. `plan_bindings` compares the domains a
host runs with the ports SQL holds and returns the binding changes that make
SQL match, plus a report line per interface. No libvirt, no SQL, no clock:
the watcher gathers the inputs and applies the plan.

Matching an interface to a port, first hit wins:
  1. ``<virtualport type='openvswitch'><parameters interfaceid='PORT-UUID'/>``
     names the port (the OVN/Neutron convention);
  2. a port's MAC equals the interface's MAC -- when the domain's metadata names
     a network for the interface, only a port of that network's tenant: a
     tenant that pre-creates a port with another tenant's VM MAC captures nothing;
  3. the domain's metadata names a network in the service's XML namespace:
     a port is created there with the interface's MAC, ``origin='libvirt'``::

       <metadata>
         <fabric:network xmlns:fabric="https://ovs-fabric.dev/xmlns/1" id="NETWORK-UUID">
           <!-- optional, per NIC: -->
           <fabric:interface mac="52:54:00:00:00:02" name="backend" tenant="acme"/>
         </fabric:network>
       </metadata>

     ``id`` or ``name`` (plus ``tenant``, a tenant name or id, when the name
     is ambiguous) pick the network; ``interface`` children override it per MAC.
Anything else is left alone and reported.

NOTE: the metadata is what says whose a VM is. A domain without it (and
without an interfaceid naming a port) belongs to no tenant the service knows
of: its NICs are matched by MAC alone, and MACs are unique across all tenants.

A binding belongs to a libvirt VM when its vm_id is a UUID (libvirt's domain
UUID). Bindings whose vm_id is anything else (or absent) were made through the
API for non-libvirt machines and are never released here, except when their
interface name is now a tap of a running domain (a kernel name has one owner).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

FABRIC_XMLNS = "https://ovs-fabric.dev/xmlns/1"
PORT_NAME_MAX = 64

DomainActivity = Literal["running", "paused", "migrating", "inactive"]
"""What a domain's state means for its ports on this host.

running: bind, taking ports over from other hosts (a migration has completed).
paused: bind ports that are free; leave ports bound elsewhere where they are.
migrating: a migration is in its final phase (either side): change nothing.
inactive: not running here: its bindings here are released.
"""

MatchMode = Literal["interfaceid", "mac", "metadata"]
InterfaceState = Literal["bound", "pending", "unmatched"]


class DomainXmlError(ValueError):
    """The XML is not a libvirt domain description."""


# ---- parsing -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkRequest:
    """A network named by domain metadata: by id, or by name (optionally within a tenant)."""

    network_id: str | None = None
    name: str | None = None
    tenant: str | None = None  # tenant name or id

    def describe(self) -> str:
        if self.network_id is not None:
            return f"network {self.network_id}"
        where = f" of tenant {self.tenant!r}" if self.tenant else ""
        return f"network named {self.name!r}{where}"


@dataclass(frozen=True, slots=True)
class DomainInterface:
    mac: str  # lower case, as libvirt writes it
    kind: str  # libvirt's interface type: bridge, ethernet, network, direct, ...
    target: str | None = None  # the tap device; only in a running domain's XML
    source_bridge: str | None = None
    virtualport: str | None = None  # "openvswitch", ...
    interface_id: str | None = None
    alias: str | None = None  # "net0", assigned by libvirt


@dataclass(frozen=True, slots=True)
class DomainDescription:
    uuid: str
    name: str
    interfaces: tuple[DomainInterface, ...] = ()
    network: NetworkRequest | None = None  # metadata default for every NIC
    interface_networks: tuple[tuple[str, NetworkRequest], ...] = ()  # (mac, request)

    def network_for(self, mac: str) -> NetworkRequest | None:
        for candidate, request in self.interface_networks:
            if candidate == mac:
                return request
        return self.network

    def network_requests(self) -> set[NetworkRequest]:
        requests = {request for _, request in self.interface_networks}
        if self.network is not None:
            requests.add(self.network)
        return requests


def parse_domain(xml: str) -> DomainDescription:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainXmlError(f"domain XML does not parse: {exc}") from None
    if root.tag != "domain":
        raise DomainXmlError(f"expected a <domain> element, got <{root.tag}>")
    domain_uuid = (root.findtext("uuid") or "").strip()
    name = (root.findtext("name") or "").strip()
    if not domain_uuid or not name:
        raise DomainXmlError("a domain needs <uuid> and <name>")
    interfaces = tuple(
        parsed
        for parsed in (_parse_interface(element) for element in root.iterfind("devices/interface"))
        if parsed is not None
    )
    network, per_interface = _parse_metadata(root.find("metadata"))
    return DomainDescription(
        uuid=domain_uuid.lower(),
        name=name,
        interfaces=interfaces,
        network=network,
        interface_networks=per_interface,
    )


def _parse_interface(element: ET.Element) -> DomainInterface | None:
    mac_element = element.find("mac")
    mac = mac_element.get("address") if mac_element is not None else None
    if not mac:
        return None  # an inactive definition may leave the MAC for libvirt to generate
    virtualport = element.find("virtualport")
    parameters = virtualport.find("parameters") if virtualport is not None else None
    source = element.find("source")
    target = element.find("target")
    alias = element.find("alias")
    return DomainInterface(
        mac=mac.strip().lower(),
        kind=element.get("type", ""),
        target=_attribute(target, "dev"),
        source_bridge=_attribute(source, "bridge"),
        virtualport=_attribute(virtualport, "type"),
        interface_id=_lower(_attribute(parameters, "interfaceid")),
        alias=_attribute(alias, "name"),
    )


def _parse_metadata(
    metadata: ET.Element | None,
) -> tuple[NetworkRequest | None, tuple[tuple[str, NetworkRequest], ...]]:
    if metadata is None:
        return None, ()
    element = metadata.find(f"{{{FABRIC_XMLNS}}}network")
    if element is None:
        return None, ()
    default = _network_request(element)
    per_interface: list[tuple[str, NetworkRequest]] = []
    for child in element.iterfind(f"{{{FABRIC_XMLNS}}}interface"):
        mac = child.get("mac")
        request = _network_request(child)
        if mac and request is not None:
            per_interface.append((mac.strip().lower(), request))
    return default, tuple(per_interface)


def _network_request(element: ET.Element) -> NetworkRequest | None:
    network_id = _lower(_attribute(element, "id"))
    name = _attribute(element, "name")
    if network_id is None and name is None:
        return None
    return NetworkRequest(network_id=network_id, name=name, tenant=_attribute(element, "tenant"))


def _attribute(element: ET.Element | None, name: str) -> str | None:
    if element is None:
        return None
    value = element.get(name)
    return value.strip() if value and value.strip() else None


def _lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None


def is_libvirt_vm_id(vm_id: str | None) -> bool:
    """True when a binding's vm_id is a domain UUID, i.e. the binding is a libvirt VM's."""
    if not vm_id:
        return False
    try:
        uuid.UUID(vm_id)
    except ValueError:
        return False
    return True


# ---- planning --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservedDomain:
    description: DomainDescription
    activity: DomainActivity

    @property
    def uuid(self) -> str:
        return self.description.uuid


@dataclass(frozen=True, slots=True)
class PortRecord:
    """The part of a port row the matching needs."""

    id: str
    network_id: str
    mac: str
    tenant_id: str | None = None
    host_id: str | None = None
    interface: str | None = None
    vm_id: str | None = None
    origin: str = "api"


@dataclass(frozen=True, slots=True)
class NetworkResolution:
    """What a `NetworkRequest` names in SQL: a network id, or why there is none."""

    network_id: str | None = None
    tenant_id: str | None = None  # the network's
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReleasePort:
    """Unbind the port; delete it instead when the watcher created it (origin libvirt)."""

    port_id: str
    delete: bool
    reason: str


@dataclass(frozen=True, slots=True)
class BindPort:
    port_id: str
    interface: str
    vm_id: str


@dataclass(frozen=True, slots=True)
class CreatePort:
    network_id: str
    mac: str
    interface: str
    vm_id: str
    name: str


PortAction = ReleasePort | BindPort | CreatePort


@dataclass(frozen=True, slots=True)
class InterfaceReport:
    """One NIC of a domain as the watcher sees it (for the log and the API)."""

    vm_id: str
    vm_name: str
    mac: str
    interface: str | None
    kind: str
    state: InterfaceState
    port_id: str | None = None
    match: MatchMode | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BindingPlan:
    actions: tuple[PortAction, ...] = ()
    reports: tuple[InterfaceReport, ...] = ()


def unwireable_reason(interface: DomainInterface, integration_bridge: str) -> str | None:
    """Why the service cannot (or must not) wire this NIC; None when it can."""
    if interface.kind in ("bridge", "network"):
        bridge = interface.source_bridge
        if interface.virtualport != "openvswitch":
            where = f"Linux bridge {bridge!r}" if bridge else "a bridge the service does not manage"
            return (
                f"plugged into {where}; only type='ethernet' taps and taps on OVS bridge "
                f"{integration_bridge!r} are wired"
            )
        if bridge != integration_bridge:
            return (
                f"plugged into OVS bridge {bridge!r}, "
                f"not the integration bridge {integration_bridge!r}"
            )
    elif interface.kind != "ethernet":
        return f"interface type {interface.kind!r} cannot be attached to OVS by the service"
    if interface.target is None:
        return "no tap device (the domain is not running?)"
    return None


def plan_bindings(
    *,
    host_id: str,
    domains: Sequence[ObservedDomain],
    ports: Iterable[PortRecord],
    networks: Mapping[NetworkRequest, NetworkResolution],
    integration_bridge: str,
    scope: frozenset[str] | None = None,
    keep_vm_ids: frozenset[str] = frozenset(),
) -> BindingPlan:
    """The binding changes that make SQL match the domains `host_id` runs.

    `domains`: the domains active on the host (all of them when `scope` is None,
    else those of `scope` that are active). `ports`: at least every port bound
    to the host and every port an interface may match (by id or MAC).
    `scope`: None for a full reconcile (every libvirt binding on the host is
    judged), or the VM ids an event concerns. `keep_vm_ids`: VMs that just
    migrated away; their bindings stay until the destination takes them.
    """
    planner = _Planner(host_id, list(ports), networks, integration_bridge)
    active = [d for d in sorted(domains, key=lambda d: d.uuid) if d.activity != "inactive"]
    running_here = {d.uuid for d in active}
    stale_vm_ids = (
        {
            p.vm_id
            for p in planner.ports
            if p.host_id == host_id
            and is_libvirt_vm_id(p.vm_id)
            and p.vm_id not in running_here
            and p.vm_id not in keep_vm_ids
        }
        if scope is None
        else set()
    )
    for domain in active:
        planner.plan_domain(domain, stale_vm_ids)
    planner.plan_releases(
        running_here=running_here,
        migrating={d.uuid for d in active if d.activity == "migrating"},
        scope=scope,
        keep_vm_ids=keep_vm_ids,
    )
    return planner.result()


@dataclass
class _Planner:
    host_id: str
    ports: list[PortRecord]
    networks: Mapping[NetworkRequest, NetworkResolution]
    integration_bridge: str
    by_id: dict[str, PortRecord] = field(init=False)
    by_mac: dict[str, PortRecord] = field(init=False)
    claimed: dict[str, str] = field(default_factory=dict)  # port id -> "VM name/tap"
    claimed_taps: set[str] = field(default_factory=set)
    created_macs: set[str] = field(default_factory=set)
    releases: list[ReleasePort] = field(default_factory=list)
    wires: list[BindPort | CreatePort] = field(default_factory=list)
    reports: list[InterfaceReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_id = {p.id: p for p in self.ports}
        self.by_mac = {p.mac: p for p in self.ports}

    def result(self) -> BindingPlan:
        # Releases first: a tap name freed by one port may be taken by another.
        return BindingPlan(actions=(*self.releases, *self.wires), reports=tuple(self.reports))

    # -- one domain's interfaces -----------------------------------------------------------

    def plan_domain(self, domain: ObservedDomain, stale_vm_ids: set[str | None]) -> None:
        for interface in domain.description.interfaces:
            self.plan_interface(domain, interface, stale_vm_ids)

    def plan_interface(
        self, domain: ObservedDomain, interface: DomainInterface, stale_vm_ids: set[str | None]
    ) -> None:
        description = domain.description
        if domain.activity == "migrating":
            found = self._find(interface)
            self._report(
                domain,
                interface,
                "pending",
                port_id=found[0].id if found else None,
                match=found[1] if found else None,
                reason="migration in progress; the binding moves when it completes",
            )
            return
        problem = unwireable_reason(interface, self.integration_bridge)
        if problem is not None:
            self._report(domain, interface, "unmatched", reason=problem)
            return
        assert interface.target is not None
        tap = interface.target
        found = self._find(interface)
        if found is None:
            self._plan_creation(domain, interface, tap)
            return
        port, mode = found
        refusal = self._refusal(domain, interface, port, mode, stale_vm_ids)
        if refusal is not None:
            state, reason = refusal
            self._report(domain, interface, state, port_id=port.id, match=mode, reason=reason)
            return
        self.claimed[port.id] = f"{description.name}/{tap}"
        self.claimed_taps.add(tap)
        self._report(domain, interface, "bound", port_id=port.id, match=mode)
        if (port.host_id, port.interface, port.vm_id) != (self.host_id, tap, description.uuid):
            self.wires.append(BindPort(port_id=port.id, interface=tap, vm_id=description.uuid))

    def _refusal(
        self,
        domain: ObservedDomain,
        interface: DomainInterface,
        port: PortRecord,
        mode: MatchMode,
        stale_vm_ids: set[str | None],
    ) -> tuple[InterfaceState, str] | None:
        """Why the interface may not take `port` (now), or None when it may."""
        if port.mac != interface.mac:
            return (
                "unmatched",
                f"interfaceid names port {port.id} whose MAC is {port.mac}; "
                "its frames would be dropped",
            )
        if mode != "interfaceid":
            foreign = self._foreign_to_metadata(domain, interface, port)
            if foreign is not None:
                return "unmatched", foreign
        holder = self.claimed.get(port.id)
        if holder is not None:
            return "unmatched", f"port is already claimed by {holder}"
        other_vm = port.vm_id is not None and port.vm_id != domain.uuid
        if port.host_id is not None and other_vm and port.vm_id not in stale_vm_ids:
            return "unmatched", f"port is bound to VM {port.vm_id} on host {port.host_id}"
        if port.host_id not in (None, self.host_id) and domain.activity != "running":
            # A paused VM may be the target of a migration that has not completed:
            # the port stays where the VM still runs.
            return (
                "pending",
                f"port is bound to host {port.host_id}; it moves here when the VM runs here",
            )
        return None

    def _foreign_to_metadata(
        self, domain: ObservedDomain, interface: DomainInterface, port: PortRecord
    ) -> str | None:
        """Why a port found by MAC is not the tenant's the metadata names; None when it is
        (or the domain's metadata names no network for the interface)."""
        request = domain.description.network_for(interface.mac)
        if request is None:
            return None
        resolution = self.networks.get(request) or NetworkResolution(
            error=f"{request.describe()} was not looked up"
        )
        if resolution.network_id is None:
            return f"MAC {interface.mac} is held by a port, but {resolution.error}"
        if port.tenant_id != resolution.tenant_id:
            return (
                f"MAC {interface.mac} is held by a port of another tenant than "
                f"{request.describe()}'s; not bound (a port cannot capture another tenant's VM)"
            )
        return None

    def _report(
        self,
        domain: ObservedDomain,
        interface: DomainInterface,
        state: InterfaceState,
        *,
        port_id: str | None = None,
        match: MatchMode | None = None,
        reason: str | None = None,
    ) -> None:
        self.reports.append(
            InterfaceReport(
                vm_id=domain.uuid,
                vm_name=domain.description.name,
                mac=interface.mac,
                interface=interface.target,
                kind=interface.kind,
                state=state,
                port_id=port_id,
                match=match,
                reason=reason,
            )
        )

    def _find(self, interface: DomainInterface) -> tuple[PortRecord, MatchMode] | None:
        if interface.interface_id is not None:
            port = self.by_id.get(interface.interface_id)
            if port is not None:
                return port, "interfaceid"
        port = self.by_mac.get(interface.mac)
        if port is not None:
            # A port the watcher created exists only because of the metadata rule.
            return port, "metadata" if port.origin == "libvirt" else "mac"
        return None

    def _plan_creation(self, domain: ObservedDomain, interface: DomainInterface, tap: str) -> None:
        request = domain.description.network_for(interface.mac)
        if request is None:
            asked = f"iface-id {interface.interface_id} or " if interface.interface_id else ""
            self._report(
                domain,
                interface,
                "unmatched",
                reason=f"no port has {asked}MAC {interface.mac}, "
                "and the domain's metadata names no network",
            )
            return
        resolution = self.networks.get(request) or NetworkResolution(
            error=f"{request.describe()} was not looked up"
        )
        if resolution.network_id is None:
            self._report(domain, interface, "unmatched", match="metadata", reason=resolution.error)
            return
        if interface.mac in self.created_macs:
            reason = f"MAC {interface.mac} is used by another interface too"
            self._report(domain, interface, "unmatched", match="metadata", reason=reason)
            return
        self.created_macs.add(interface.mac)
        self.claimed_taps.add(tap)
        self._report(domain, interface, "bound", match="metadata")
        self.wires.append(
            CreatePort(
                network_id=resolution.network_id,
                mac=interface.mac,
                interface=tap,
                vm_id=domain.uuid,
                name=_port_name(domain.description.name, interface.alias or tap),
            )
        )

    # -- bindings on this host that no running interface explains -------------------------

    def plan_releases(
        self,
        *,
        running_here: set[str],
        migrating: set[str],
        scope: frozenset[str] | None,
        keep_vm_ids: frozenset[str],
    ) -> None:
        for port in self.ports:
            if port.host_id != self.host_id or port.id in self.claimed:
                continue
            reason = self._release_reason(port, running_here, migrating, scope, keep_vm_ids)
            if reason is not None:
                self.releases.append(
                    ReleasePort(port_id=port.id, delete=port.origin == "libvirt", reason=reason)
                )

    def _release_reason(
        self,
        port: PortRecord,
        running_here: set[str],
        migrating: set[str],
        scope: frozenset[str] | None,
        keep_vm_ids: frozenset[str],
    ) -> str | None:
        if port.interface is not None and port.interface in self.claimed_taps:
            return f"interface {port.interface} now belongs to another VM"
        if not is_libvirt_vm_id(port.vm_id) or port.vm_id in migrating:
            return None
        if scope is not None and port.vm_id not in scope:
            return None
        if port.vm_id in running_here:
            return f"VM {port.vm_id} no longer has interface {port.interface}"
        if port.vm_id in keep_vm_ids:
            return None
        return f"VM {port.vm_id} is not running on this host"


def _port_name(vm_name: str, nic: str) -> str:
    suffix = f"-{nic}"
    return vm_name[: PORT_NAME_MAX - len(suffix)] + suffix
