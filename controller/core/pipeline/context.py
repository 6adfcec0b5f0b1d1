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
from operator import attrgetter
from typing import Final, NamedTuple

from controller.core.flows import mac_to_int
from controller.core.model import DatapathView, NetworkSpec, PortSpec, Snapshot
from controller.core.pipeline.tables import PipelineError

__all__ = [
    "BoundPort",
    "DatapathContext",
    "LocalNetwork",
    "bound_port",
    "bound_ports",
    "build_context",
    "dotted_quad",
    "host_paths",
    "in_bound_order",
    "local_network",
    "network_metadata",
    "ofport_of",
    "switch_ports",
    "tunnel_interface_name",
]

_VXLAN_METADATA_FLAG: Final = 1 << 24
_MAC_LIMIT: Final = 1 << 48
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


class BoundPort(NamedTuple):
    """A NamedTuple: a full compute builds one per bound port of every local network
    (40,000 at 4,000 networks), and change detection compares them, both in C."""

    id: str
    host_id: str
    mac: int
    ipv4s: tuple[int, ...]
    restricted: bool  # the port has addresses: port security allows only those
    ofport: int | None  # set for ports realized on this datapath only
    ipv6s: tuple[int, ...] = ()  # given by the API (the link-local one is derived from mac)


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


def switch_ports(view: DatapathView) -> dict[str, int]:
    """The view's ofports that can be a port of ours (reserved numbers left out)."""
    return {name: no for name, no in view.ofports.items() if 0 < no < _MAX_OFPORT}


def dotted_quad(text: str) -> int | None:
    """`text` as an int if it is an IPv4 address in the form `ipaddress` accepts (four
    ASCII decimal octets, no leading zero); None: let `ipaddress` decide."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3 or part[0] == "0" != part:
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


def _addresses(port: PortSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The port's IPv4 and IPv6 addresses, each sorted."""
    if len(port.ips) == 1:  # the usual port: one IPv4 address
        quad = dotted_quad(port.ips[0])
        if quad is not None:
            return (quad,), ()
    ipv4s: set[int] = set()
    ipv6s: set[int] = set()
    for text in port.ips:
        # Parsing with `ipaddress` costs more than the rest of a port's flows.
        quad = dotted_quad(text)
        if quad is not None:
            ipv4s.add(quad)
            continue
        ip = ipaddress.ip_address(text)
        (ipv4s if ip.version == 4 else ipv6s).add(int(ip))
    return tuple(sorted(ipv4s)), tuple(sorted(ipv6s))


def bound_port(port: PortSpec, host_id: str, ofport: int | None) -> BoundPort:
    """`port`, bound to `host_id`, as the pipeline sees it; `ofport` only where it is realized."""
    mac = mac_to_int(port.mac)
    if not 0 <= mac < _MAC_LIMIT:  # the flow builders put it in matches without `match()`
        raise ValueError(f"not a MAC address: {port.mac!r}")
    ipv4s, ipv6s = _addresses(port)
    # Positional: a NamedTuple's keyword arguments cost a third more.
    return BoundPort(port.id, host_id, mac, ipv4s, bool(port.ips), ofport, ipv6s)


_BOUND_ORDER: Final = attrgetter("mac", "id")
_LOCAL_ORDER: Final = attrgetter("ofport", "mac", "id")


def in_bound_order(ports: Iterable[BoundPort]) -> tuple[BoundPort, ...]:
    # The order that decides which port owns an address claimed twice: the first.
    return tuple(sorted(ports, key=_BOUND_ORDER))


def bound_ports(snapshot: Snapshot, network_id: str) -> tuple[BoundPort, ...]:
    """Every port of the network bound to a host, in `LocalNetwork.bound_ports` order,
    without ofports: the view of a network from outside any one datapath."""
    return in_bound_order(
        bound_port(port, port.host_id, None)
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


def local_network(
    spec: NetworkSpec, metadata: int, bound: Iterable[BoundPort], host_id: str
) -> LocalNetwork | None:
    """The network as the datapath of `host_id` sees it, from every bound port of it (with
    ofports for those realized there); None when none is realized there."""
    bound = tuple(bound)
    local_ports = sorted((p for p in bound if p.ofport is not None), key=_LOCAL_ORDER)
    if not local_ports:
        return None
    return LocalNetwork(
        spec=spec,
        metadata=metadata,
        local_ports=tuple(local_ports),
        bound_ports=in_bound_order(bound),
        remote_hosts=tuple(sorted({p.host_id for p in bound} - {host_id})),
    )


def host_paths(snapshot: Snapshot, host_id: str, ofports: Mapping[str, int]) -> DatapathContext:
    """The ways out of the datapath of `host_id` (uplink, tunnels) as a context without
    networks: what the per-network flow builders read besides their network."""
    host = snapshot.host(host_id)
    return DatapathContext(
        host_id=host_id,
        uplink_ofport=ofports.get(host.uplink) if host and host.uplink else None,
        tunnel_ofports=_tunnel_ofports(snapshot, host_id, ofports),
        networks=(),
        realized_ports=frozenset(),
        unrealized_ports=frozenset(),
    )


def build_context(snapshot: Snapshot, view: DatapathView) -> DatapathContext:
    networks = {network.id: network for network in snapshot.networks}
    metadata_by_network = _check_unique_identities(networks.values())
    ofports = switch_ports(view)
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
        bound_by_network[port.network_id].append(bound_port(port, port.host_id, ofport))
    local_networks = (
        local_network(networks[network_id], metadata_by_network[network_id], bound, view.host_id)
        for network_id, bound in bound_by_network.items()
    )
    host = snapshot.host(view.host_id)
    return DatapathContext(
        host_id=view.host_id,
        uplink_ofport=ofports.get(host.uplink) if host and host.uplink else None,
        tunnel_ofports=_tunnel_ofports(snapshot, view.host_id, ofports),
        networks=tuple(sorted((n for n in local_networks if n), key=lambda n: n.metadata)),
        realized_ports=frozenset(realized),
        unrealized_ports=frozenset(unrealized),
    )
