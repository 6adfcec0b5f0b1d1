"""Every flow and group one host's integration bridge must hold: a pure function.

`compute_datapath(snapshot, view)` reads no socket, clock or database and uses
no randomness; equal inputs give equal outputs, in a canonical order, whatever
the order of the snapshot's tuples.

Forwarding is proactive: the controller knows every port's MAC and host, so
nothing is learned. A frame walks these tables (declared in `pipeline_tables`):

    classify       which port/network it comes from; anything unknown is dropped
    port_security  a local VM may only use its own MAC and IPs
    arp_responder  ARP requests for known IPs are answered by the switch itself
    lb             L4 load balancer (`load_balancer`): VIP connections and backend
                   replies through conntrack (lb_ct, lb_rewrite, lb_reply), health
                   probe replies to the controller; everything else straight through
    l2_forward     unicast to the owner of eth_dst, flood groups otherwise

Pipeline state carried between tables:
- metadata: the network's identity across the fabric (`network_metadata`);
  every forwarding flow matches it, so frames never cross networks.
- reg5: where the frame came from (ORIGIN_LOCAL: a VM port on this host,
  ORIGIN_REMOTE: the VLAN uplink or a VXLAN tunnel). Remote frames skip port
  security and the ARP responder (they pass lb, where a load balancer's replies
  are un-NATed) and are never sent back to the uplink or a tunnel (split horizon).
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from controller.core.flows import (
    ARP_REPLY,
    ARP_REQUEST,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    IP_PROTO_UDP,
    MULTICAST_BIT,
    OFPP_IN_PORT,
    VLAN_NONE,
    VLAN_PRESENT,
    Action,
    Bucket,
    Flow,
    Group,
    GroupAction,
    Output,
    PopVlan,
    PushVlan,
    RegMove,
    SetField,
    mac_to_int,
    match,
)
from controller.core.model import DatapathView, NetworkSpec, PortSpec, Snapshot
from controller.core.pipeline.groups import GroupContent, assign_group_ids
from controller.core.pipeline.tables import (
    PIPELINE,
    TABLE_ARP_RESPONDER,
    TABLE_CLASSIFY,
    TABLE_L2_FORWARD,
    TABLE_LB,
    TABLE_LB_CT,
    TABLE_LB_REPLY,
    TABLE_LB_REWRITE,
    TABLE_PORT_SECURITY,
    TABLES,
    PipelineError,
    TableDecl,
    check_flow,
    check_group,
)

__all__ = [
    "ORIGIN_LOCAL",
    "ORIGIN_REMOTE",
    "PIPELINE",
    "REG_ORIGIN",
    "TABLES",
    "TABLE_ARP_RESPONDER",
    "TABLE_CLASSIFY",
    "TABLE_L2_FORWARD",
    "TABLE_LB",
    "TABLE_LB_CT",
    "TABLE_LB_REPLY",
    "TABLE_LB_REWRITE",
    "TABLE_PORT_SECURITY",
    "BoundPort",
    "DatapathConfig",
    "DatapathContext",
    "LocalNetwork",
    "PipelineError",
    "TableDecl",
    "arp_reply_actions",
    "build_context",
    "compute_datapath",
    "network_metadata",
    "tunnel_interface_name",
]

REG_ORIGIN: Final = "reg5"
ORIGIN_LOCAL: Final = 1
ORIGIN_REMOTE: Final = 2
# Left to the load balancer: no flow built here reads or writes these registers,
# and this pipeline uses no conntrack zone at all.
LB_REGISTERS: Final = ("reg6", "reg7")

METADATA_MASK: Final = (1 << 64) - 1
_VXLAN_METADATA_FLAG: Final = 1 << 24

PRIORITY_PORT: Final = 100  # classify: a known port / VLAN / VNI
PRIORITY_ADDRESS: Final = 100  # port_security: one allowed source address
PRIORITY_DHCP_DISCOVERY: Final = 90
PRIORITY_OPEN_PORT: Final = 50  # port_security: a port without IPs
PRIORITY_OWN_ADDRESS: Final = 200  # arp_responder: a port asking for its own IP
PRIORITY_ARP_ANSWER: Final = 100
PRIORITY_UNICAST: Final = 100
PRIORITY_FLOOD: Final = 50  # broadcast / multicast
PRIORITY_UNKNOWN_UNICAST: Final = 10
PRIORITY_TABLE_MISS: Final = 0

_DHCP_CLIENT_PORT: Final = 68
_DHCP_SERVER_PORT: Final = 67
_MAX_OFPORT: Final = 0xFFFFFF00  # above: reserved port numbers, never a real port


# ---- public helpers ---------------------------------------------------------------------


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


# ---- what the pipeline knows about one datapath --------------------------------------------


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


@dataclass(frozen=True, slots=True)
class DatapathConfig:
    flows: tuple[Flow, ...]
    groups: tuple[Group, ...]
    realized_ports: frozenset[str]  # bound here with an ofport: their flows are in `flows`
    unrealized_ports: frozenset[str]  # bound here, interface not (yet) on the switch


def _switch_ports(view: DatapathView) -> dict[str, int]:
    return {name: no for name, no in view.ofports.items() if 0 < no < _MAX_OFPORT}


def _ipv4s(port: PortSpec) -> tuple[int, ...]:
    # IPv6 is not supported yet: a port's IPv6 addresses open nothing.
    found = (ipaddress.ip_address(ip) for ip in port.ips)
    return tuple(sorted({int(ip) for ip in found if ip.version == 4}))


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
        bound_by_network[port.network_id].append(
            BoundPort(
                id=port.id,
                host_id=port.host_id,
                mac=mac_to_int(port.mac),
                ipv4s=_ipv4s(port),
                restricted=bool(port.ips),
                ofport=ofport,
            )
        )
    local_networks: list[LocalNetwork] = []
    for network_id, bound in bound_by_network.items():
        local_ports = sorted(
            (p for p in bound if p.ofport is not None), key=lambda p: (_ofport_of(p), p.mac, p.id)
        )
        if not local_ports:
            continue
        local_networks.append(
            LocalNetwork(
                spec=networks[network_id],
                metadata=metadata_by_network[network_id],
                local_ports=tuple(local_ports),
                bound_ports=tuple(sorted(bound, key=lambda p: (p.mac, p.id))),
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


def _ofport_of(port: BoundPort) -> int:
    assert port.ofport is not None
    return port.ofport


# ---- paths between hosts ------------------------------------------------------------------


def _uplink_egress(ctx: DatapathContext, net: LocalNetwork) -> tuple[Action, ...]:
    if ctx.uplink_ofport is None:
        return ()
    return (
        PushVlan(),
        SetField("vlan_vid", VLAN_PRESENT | net.spec.segmentation_id),
        Output(ctx.uplink_ofport),
    )


def _tunnel_egress(
    ctx: DatapathContext, net: LocalNetwork, peer_host_id: str
) -> tuple[Action, ...]:
    tunnel = ctx.tunnel_ofports.get(peer_host_id)
    if tunnel is None:
        return ()
    return (SetField("tunnel_id", net.spec.segmentation_id), Output(tunnel))


def _egress_toward(
    ctx: DatapathContext, net: LocalNetwork, peer_host_id: str
) -> tuple[Action, ...]:
    """Actions sending a frame of `net` to a port on `peer_host_id`; () when no path exists."""
    if net.spec.type == "vlan":
        return _uplink_egress(ctx, net)
    return _tunnel_egress(ctx, net, peer_host_id)


def _flood_egress(ctx: DatapathContext, net: LocalNetwork) -> list[tuple[Action, ...]]:
    """One bucket's actions per way out of this host for a flooded frame of `net`."""
    if net.spec.type == "vlan":
        # The trunk may carry devices we do not manage (a physical gateway), so a
        # VLAN broadcast goes out even when no other managed host has ports in it.
        uplink = _uplink_egress(ctx, net)
        return [uplink] if uplink else []
    paths = (_tunnel_egress(ctx, net, peer) for peer in net.remote_hosts)
    return sorted((p for p in paths if p), key=_output_port)


def _output_port(actions: tuple[Action, ...]) -> int:
    last = actions[-1]
    assert isinstance(last, Output)
    return last.port


def _ingress_ofports(ctx: DatapathContext, net: LocalNetwork) -> tuple[int, ...]:
    """Switch ports through which frames of `net` may arrive from other hosts."""
    if net.spec.type == "vlan":
        return () if ctx.uplink_ofport is None else (ctx.uplink_ofport,)
    peers = (ctx.tunnel_ofports.get(peer) for peer in net.remote_hosts)
    return tuple(sorted(ofport for ofport in peers if ofport is not None))


# ---- flood groups ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FloodGroups:
    from_local: GroupContent  # other local ports + the ways to other hosts
    from_remote: GroupContent | None  # local ports only; None: nothing arrives from remote


def _flood_groups(ctx: DatapathContext, net: LocalNetwork) -> _FloodGroups:
    # Output to the frame's own in_port is dropped by OpenFlow, so one group
    # serves every local sender.
    local = [Bucket((Output(_ofport_of(port)),)) for port in net.local_ports]
    remote = [Bucket(actions) for actions in _flood_egress(ctx, net)]
    from_remote = GroupContent("all", tuple(local)) if _ingress_ofports(ctx, net) else None
    return _FloodGroups(GroupContent("all", tuple(local + remote)), from_remote)


# ---- table helpers -------------------------------------------------------------------------


def _table_miss(table: int, *, goto: int | None = None) -> Flow:
    return Flow(table, PRIORITY_TABLE_MISS, goto_table=goto)


def classify_flows(ctx: DatapathContext) -> Iterator[Flow]:
    yield _table_miss(TABLE_CLASSIFY)
    for net in ctx.networks:
        for port in net.local_ports:
            yield Flow(
                TABLE_CLASSIFY,
                PRIORITY_PORT,
                match(in_port=_ofport_of(port), eth_src=port.mac, vlan_vid=VLAN_NONE),
                actions=(SetField(REG_ORIGIN, ORIGIN_LOCAL),),
                goto_table=TABLE_PORT_SECURITY,
                write_metadata=(net.metadata, METADATA_MASK),
            )
        for ofport in _ingress_ofports(ctx, net):
            if net.spec.type == "vlan":
                segment = match(in_port=ofport, vlan_vid=VLAN_PRESENT | net.spec.segmentation_id)
                entry: tuple[Action, ...] = (PopVlan(), SetField(REG_ORIGIN, ORIGIN_REMOTE))
            else:
                segment = match(in_port=ofport, tunnel_id=net.spec.segmentation_id)
                entry = (SetField(REG_ORIGIN, ORIGIN_REMOTE),)
            yield Flow(
                TABLE_CLASSIFY,
                PRIORITY_PORT,
                segment,
                actions=entry,
                goto_table=TABLE_LB,
                write_metadata=(net.metadata, METADATA_MASK),
            )


def port_security_flows(ctx: DatapathContext) -> Iterator[Flow]:
    # Ports with addresses may send only ARP and IPv4 from those addresses;
    # anything else, IPv6 included (not supported yet), falls to the table miss.
    yield _table_miss(TABLE_PORT_SECURITY)
    passed = TABLE_ARP_RESPONDER
    for net in ctx.networks:
        for port in net.local_ports:
            in_port = _ofport_of(port)
            if not port.restricted:
                yield Flow(
                    TABLE_PORT_SECURITY,
                    PRIORITY_OPEN_PORT,
                    match(in_port=in_port),
                    goto_table=passed,
                )
                continue
            for ip in port.ipv4s:
                yield Flow(
                    TABLE_PORT_SECURITY,
                    PRIORITY_ADDRESS,
                    match(in_port=in_port, eth_type=ETH_TYPE_ARP, arp_sha=port.mac, arp_spa=ip),
                    goto_table=passed,
                )
                yield Flow(
                    TABLE_PORT_SECURITY,
                    PRIORITY_ADDRESS,
                    match(in_port=in_port, eth_type=ETH_TYPE_IPV4, ipv4_src=ip),
                    goto_table=passed,
                )
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_DHCP_DISCOVERY,
                match(
                    in_port=in_port,
                    eth_type=ETH_TYPE_IPV4,
                    ipv4_src=0,
                    ip_proto=IP_PROTO_UDP,
                    udp_src=_DHCP_CLIENT_PORT,
                    udp_dst=_DHCP_SERVER_PORT,
                ),
                goto_table=passed,
            )


def arp_reply_actions(owner_mac: int, owner_ip: int) -> tuple[Action, ...]:
    """Turn the ARP request in place into the owner's reply and send it back."""
    return (
        RegMove("eth_src", "eth_dst", 48),
        SetField("eth_src", owner_mac),
        SetField("arp_op", ARP_REPLY),
        RegMove("arp_sha", "arp_tha", 48),
        SetField("arp_sha", owner_mac),
        RegMove("arp_spa", "arp_tpa", 32),
        SetField("arp_spa", owner_ip),
        Output(OFPP_IN_PORT),
    )


def arp_responder_flows(ctx: DatapathContext) -> Iterator[Flow]:
    yield _table_miss(TABLE_ARP_RESPONDER, goto=TABLE_LB)
    for net in ctx.networks:
        for owner in net.bound_ports:
            for ip in owner.ipv4s:
                yield Flow(
                    TABLE_ARP_RESPONDER,
                    PRIORITY_ARP_ANSWER,
                    match(
                        metadata=net.metadata, eth_type=ETH_TYPE_ARP, arp_op=ARP_REQUEST, arp_tpa=ip
                    ),
                    actions=arp_reply_actions(owner.mac, ip),
                )
        # A port asking for its own address probes for a duplicate or announces
        # itself (gratuitous ARP): the network must see it, not the switch answer it.
        for port in net.local_ports:
            for ip in port.ipv4s:
                yield Flow(
                    TABLE_ARP_RESPONDER,
                    PRIORITY_OWN_ADDRESS,
                    match(
                        metadata=net.metadata,
                        eth_src=port.mac,
                        eth_type=ETH_TYPE_ARP,
                        arp_op=ARP_REQUEST,
                        arp_tpa=ip,
                    ),
                    goto_table=TABLE_LB,
                )


def l2_forward_flows(
    ctx: DatapathContext, floods: Mapping[int, _FloodGroups], group_ids: Mapping[GroupContent, int]
) -> Iterator[Flow]:
    yield _table_miss(TABLE_L2_FORWARD)
    for net in ctx.networks:
        for port in net.bound_ports:
            if port.ofport is not None:
                yield Flow(
                    TABLE_L2_FORWARD,
                    PRIORITY_UNICAST,
                    match(metadata=net.metadata, eth_dst=port.mac),
                    actions=(Output(port.ofport),),
                )
            elif port.host_id != ctx.host_id:
                egress = _egress_toward(ctx, net, port.host_id)
                if egress:
                    yield Flow(
                        TABLE_L2_FORWARD,
                        PRIORITY_UNICAST,
                        match(metadata=net.metadata, reg5=ORIGIN_LOCAL, eth_dst=port.mac),
                        actions=egress,
                    )
        flood = floods[net.metadata]
        origins = [(ORIGIN_LOCAL, flood.from_local)]
        if flood.from_remote is not None:
            origins.append((ORIGIN_REMOTE, flood.from_remote))
        for origin, content in origins:
            to_group = (GroupAction(group_ids[content]),)
            yield Flow(
                TABLE_L2_FORWARD,
                PRIORITY_FLOOD,
                match(metadata=net.metadata, reg5=origin, eth_dst=(MULTICAST_BIT, MULTICAST_BIT)),
                actions=to_group,
            )
            yield Flow(
                TABLE_L2_FORWARD,
                PRIORITY_UNKNOWN_UNICAST,
                match(metadata=net.metadata, reg5=origin),
                actions=to_group,
            )


# ---- load balancer extension point -----------------------------------------------------------


# `load_balancer` builds on this module's context types, so it is imported where
# it is used rather than at the top (which would be a circular import).


def load_balancer_groups(snapshot: Snapshot, ctx: DatapathContext) -> tuple[GroupContent, ...]:
    """Groups (select, weighted backends) for `snapshot.load_balancers`."""
    from controller.core.pipeline import load_balancer as lb

    return lb.load_balancer_groups(snapshot, ctx)


def load_balancer_flows(
    snapshot: Snapshot, ctx: DatapathContext, group_ids: Mapping[GroupContent, int]
) -> Iterator[Flow]:
    """Flows of the load-balancer tables (above their table misses) and the VIPs' ARP
    answers; they reach their groups through `group_ids`."""
    from controller.core.pipeline import load_balancer as lb

    return lb.load_balancer_flows(snapshot, ctx, group_ids)


# ---- assembly --------------------------------------------------------------------------------


def _flow_key(flow: Flow) -> tuple[int, int, tuple[tuple[str, int, int], ...]]:
    fields = tuple((f.name, f.value, -1 if f.mask is None else f.mask) for f in flow.match.fields)
    return (flow.table, -flow.priority, fields)


def _canonical_flows(flows: Iterable[Flow]) -> tuple[Flow, ...]:
    """Check every flow, drop exact duplicates, refuse two different flows for one match."""
    by_key: dict[tuple[int, int, tuple[tuple[str, int, int], ...]], Flow] = {}
    for flow in flows:
        check_flow(flow)
        key = _flow_key(flow)
        previous = by_key.setdefault(key, flow)
        if previous != flow:
            raise PipelineError(f"two flows for one match: {previous!r} and {flow!r}")
    return tuple(by_key[key] for key in sorted(by_key))


def _referenced_groups(flows: Iterable[Flow]) -> set[int]:
    return {a.group_id for f in flows for a in f.actions if isinstance(a, GroupAction)}


def compute_datapath(snapshot: Snapshot, view: DatapathView) -> DatapathConfig:
    """Every flow and group the integration bridge of `view.host_id` must hold."""
    ctx = build_context(snapshot, view)
    floods = {net.metadata: _flood_groups(ctx, net) for net in ctx.networks}
    contents: list[GroupContent] = [*load_balancer_groups(snapshot, ctx)]
    for flood in floods.values():
        contents.append(flood.from_local)
        if flood.from_remote is not None:
            contents.append(flood.from_remote)
    group_ids = assign_group_ids(contents)
    flows = _canonical_flows(
        [
            *classify_flows(ctx),
            *port_security_flows(ctx),
            *arp_responder_flows(ctx),
            _table_miss(TABLE_LB, goto=TABLE_L2_FORWARD),
            _table_miss(TABLE_LB_CT),  # untracked or invalid on the way to a VIP: dropped
            _table_miss(TABLE_LB_REWRITE),  # toward a backend this host cannot address
            # A reply nobody NATed (e.g. on the backend's own host): forwarded as it is.
            _table_miss(TABLE_LB_REPLY, goto=TABLE_L2_FORWARD),
            *load_balancer_flows(snapshot, ctx, group_ids),
            *l2_forward_flows(ctx, floods, group_ids),
        ]
    )
    groups = tuple(
        sorted(
            (
                Group(group_id, content.type, content.buckets)
                for content, group_id in group_ids.items()
            ),
            key=lambda g: g.group_id,
        )
    )
    for group in groups:
        check_group(group)
    dangling = _referenced_groups(flows) - {g.group_id for g in groups}
    if dangling:
        raise PipelineError(f"flows point to groups that do not exist: {sorted(dangling)}")
    return DatapathConfig(
        flows=flows,
        groups=groups,
        realized_ports=ctx.realized_ports,
        unrealized_ports=ctx.unrealized_ports,
    )
