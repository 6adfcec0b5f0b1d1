"""What the pipeline knows about one datapath, read from the snapshot and the switch.

`build_context(snapshot, view)` resolves the networks with a port realized on
this datapath, every bound port of those networks (any host), the uplink and the
tunnels; the feature modules build their flows from it and nothing else.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from controller.core.flows import mac_to_int
from controller.core.model import DatapathView, NetworkSpec, PortSpec, Snapshot
from controller.core.pipeline.tables import PipelineError

__all__ = [
    "BoundPort",
    "DatapathContext",
    "LocalNetwork",
    "bound_ports",
    "build_context",
    "network_metadata",
    "ofport_of",
    "tunnel_interface_name",
]

_VXLAN_METADATA_FLAG: Final = 1 << 24
_MAX_OFPORT: Final = 0xFFFFFF00  # above: reserved port numbers, never a real port


def network_metadata(network: NetworkSpec) -> int:
    """The network's identity in OpenFlow metadata, the same on every host."""
    if network.type == "vlan":
        if not 1 <= network.segmentation_id <= 4094:
            raise PipelineError(f"VLAN id out of range in network {network.id}")
        return network.segmentation_id
    if not 1 <= network.segmentation_id < (1 << 24):
        raise PipelineError(f"VNI out of range in network {network.id}")
    return _VXLAN_METADATA_FLAG | network.segmentation_id


def tunnel_interface_name(peer_host_id: str) -> str:
    """Name of the VXLAN port toward `peer_host_id` (the OVSDB side creates it so)."""
    return "vx" + uuid.UUID(peer_host_id).hex[:10]


@dataclass(frozen=True, slots=True)
class BoundPort:
    id: str
    host_id: str
    mac: int
    ipv4s: tuple[int, ...]
    restricted: bool  # the port has addresses: port security allows only those
    ofport: int | None  # set for ports realized on this datapath only


@dataclass(frozen=True, slots=True)
class LocalNetwork:
    """A network with at least one port realized on this datapath."""

    spec: NetworkSpec
    metadata: int
    local_ports: tuple[BoundPort, ...]  # realized here, by ofport
    bound_ports: tuple[BoundPort, ...]  # every bound port, any host, by (mac, id)
    remote_hosts: tuple[str, ...]  # other hosts with bound ports in this network, sorted


@dataclass(frozen=True, slots=True)
class DatapathContext:
    host_id: str
    uplink_ofport: int | None
    tunnel_ofports: Mapping[str, int]  # peer host id -> ofport of the tunnel toward it
    networks: tuple[LocalNetwork, ...]  # by metadata
    realized_ports: frozenset[str]
    unrealized_ports: frozenset[str]


def ofport_of(port: BoundPort) -> int:
    """The ofport of a port realized on this datapath."""
    assert port.ofport is not None
    return port.ofport


def _switch_ports(view: DatapathView) -> dict[str, int]:
    return {name: no for name, no in view.ofports.items() if 0 < no < _MAX_OFPORT}


def _ipv4s(port: PortSpec) -> tuple[int, ...]:
    # IPv6 is not supported yet: a port's IPv6 addresses open nothing.
    found = (ipaddress.ip_address(ip) for ip in port.ips)
    return tuple(sorted({int(ip) for ip in found if ip.version == 4}))


def _bound_port(port: PortSpec, host_id: str, ofport: int | None) -> BoundPort:
    return BoundPort(
        id=port.id,
        host_id=host_id,
        mac=mac_to_int(port.mac),
        ipv4s=_ipv4s(port),
        restricted=bool(port.ips),
        ofport=ofport,
    )


def _in_bound_order(ports: Iterable[BoundPort]) -> tuple[BoundPort, ...]:
    # The order that decides which port owns an address claimed twice: the first.
    return tuple(sorted(ports, key=lambda p: (p.mac, p.id)))


def bound_ports(snapshot: Snapshot, network_id: str) -> tuple[BoundPort, ...]:
    """Every port of the network bound to a host, in `LocalNetwork.bound_ports` order,
    without ofports: the view of a network from outside any one datapath."""
    return _in_bound_order(
        _bound_port(port, port.host_id, None)
        for port in snapshot.ports
        if port.network_id == network_id and port.host_id is not None
    )


def _check_unique_identities(networks: Iterable[NetworkSpec]) -> dict[str, int]:
    metadata_by_network: dict[str, int] = {}
    owner: dict[int, str] = {}
    for network in networks:
        metadata = network_metadata(network)
        if owner.setdefault(metadata, network.id) != network.id:
            raise PipelineError(
                f"networks {owner[metadata]} and {network.id} share one segment "
                f"({network.type} {network.segmentation_id})"
            )
        metadata_by_network[network.id] = metadata
    return metadata_by_network


def _tunnel_ofports(snapshot: Snapshot, host_id: str, ofports: Mapping[str, int]) -> dict[str, int]:
    host = snapshot.host(host_id)
    if host is None or not host.tunnel_ip:
        return {}
    found: dict[str, int] = {}
    for peer in snapshot.hosts:
        if peer.id == host_id or not peer.tunnel_ip:
            continue
        ofport = ofports.get(tunnel_interface_name(peer.id))
        if ofport is not None:
            found[peer.id] = ofport
    return found


def build_context(snapshot: Snapshot, view: DatapathView) -> DatapathContext:
    networks = {network.id: network for network in snapshot.networks}
    metadata_by_network = _check_unique_identities(networks.values())
    ofports = _switch_ports(view)
    realized: set[str] = set()
    unrealized: set[str] = set()
    bound_by_network: dict[str, list[BoundPort]] = defaultdict(list)
    for port in snapshot.ports:
        if port.host_id is None:
            continue
        local = port.host_id == view.host_id
        ofport = ofports.get(port.interface) if local and port.interface else None
        if port.network_id not in networks:
            if local:
                unrealized.add(port.id)  # nowhere to put it, so none of its flows exist
            continue
        if local:
            (realized if ofport is not None else unrealized).add(port.id)
        bound_by_network[port.network_id].append(_bound_port(port, port.host_id, ofport))
    local_networks: list[LocalNetwork] = []
    for network_id, bound in bound_by_network.items():
        local_ports = sorted(
            (p for p in bound if p.ofport is not None), key=lambda p: (ofport_of(p), p.mac, p.id)
        )
        if not local_ports:
            continue
        local_networks.append(
            LocalNetwork(
                spec=networks[network_id],
                metadata=metadata_by_network[network_id],
                local_ports=tuple(local_ports),
                bound_ports=_in_bound_order(bound),
                remote_hosts=tuple(sorted({p.host_id for p in bound} - {view.host_id})),
            )
        )
    host = snapshot.host(view.host_id)
    return DatapathContext(
        host_id=view.host_id,
        uplink_ofport=ofports.get(host.uplink) if host and host.uplink else None,
        tunnel_ofports=_tunnel_ofports(snapshot, view.host_id, ofports),
        networks=tuple(sorted(local_networks, key=lambda n: n.metadata)),
        realized_ports=frozenset(realized),
        unrealized_ports=frozenset(unrealized),
    )
