"""L4 load balancers in the data plane: pure flow and group builders.

Every host with a local port in a
load balancer's network balances that network's VIP connections itself (like
OVN's logical-switch load balancer); backends on other hosts are reached over
the normal VLAN/VXLAN paths. The walk of a packet:

    lb          local IPv4 to VIP:port -> ct(zone=Z, nat, table=lb_ct)
                other TCP/UDP/ICMP of the network -> ct(zone=Z, nat, table=lb_reply)
                a backend's answer to a health probe (to the VIP, probe ports) -> controller
    lb_ct       +new to VIP:port -> select group; each weighted bucket does
                ct(commit, zone=Z, nat(dst=BACKEND:PORT), table=lb_rewrite);
                UDP: multipath picks a link instead (see below), then the flow of
                that link does the same ct(commit, nat);
                with no usable backend -> controller (which answers TCP RST / ICMP)
                any other tracked, valid packet (already NATed by the first ct) -> lb_rewrite
    lb_rewrite  dst = an address of the network -> eth_dst = its MAC -> l2_forward
    lb_reply    src = a VIP (un-NATed by ct) -> eth_src = the VIP's MAC -> l2_forward;
                a new TCP/UDP connection not to a VIP is committed (see below);
                anything else is forwarded as it is

Conntrack pins a connection to its backend: only `+new` packets reach the
group, so a group change never moves an established connection. (A UDP flow pinned
to a backend that stops being picked is flushed by the host agent instead: udp_pins.)

A client may reach a backend through the VIP and then directly, from the same source
port: both connections are then the same address/port pair at the backend, and the
backend's direct replies would match the VIP connection's reply tuple and be turned
back into the VIP's. So every new TCP/UDP connection of the network that is not to a
VIP is committed in the zone too: from a local VM with a source NAT to its own address
and a port of 32768-60999 (Linux's ephemeral range) that conntrack finds free, so the
direct connection's pair at the backend differs from the VIP connection's (what the
kernel's clash resolution does; a backend sees such clients from ports of that range);
from another host without NAT (so the local end's replies are not taken for new
connections of its own). ICMP is only looked up, as before.

UDP flows are not spread by a select group: OVS's default selection hashes the
addresses and, for TCP only, the ports (its symmetric L4 hash leaves UDP ports out),
so every UDP flow between one client and one VIP would reach the same backend; and
choosing another hash needs OpenFlow 1.5 group properties. A UDP listener's new flow
runs Nicira multipath instead (symmetric_l3l4+udp, modulo_n over the backends' links,
each backend holding weight/gcd links) into reg6, marks reg7 and resubmits to lb_ct,
where one flow per link does the backend's ct(commit, nat). The VIP
answers ARP from flows with a virtual MAC derived from (network, VIP).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from controller.core.flows import (
    ARP_REQUEST,
    CT_INVALID,
    CT_NEW,
    CT_TRACKED,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    IP_PROTO_ICMP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    OFPP_CONTROLLER,
    Action,
    Bucket,
    Ct,
    Flow,
    GroupAction,
    Match,
    Multipath,
    Nat,
    Output,
    Resubmit,
    SetField,
    ip_to_int,
    match,
)
from controller.core.model import LoadBalancerSpec, Snapshot
from controller.core.pipeline.arp_responder import arp_reply_actions
from controller.core.pipeline.context import BoundPort, DatapathContext, LocalNetwork
from controller.core.pipeline.groups import GroupContent
from controller.core.pipeline.hashed_ids import unique_salted_ids
from controller.core.pipeline.tables import (
    LB_REGISTERS,
    ORIGIN_LOCAL,
    ORIGIN_REMOTE,
    REG_ORIGIN,
    TABLE_ARP_RESPONDER,
    TABLE_L2_FORWARD,
    TABLE_LB,
    TABLE_LB_CT,
    TABLE_LB_REPLY,
    TABLE_LB_REWRITE,
)

# Health probes leave the switch from VIP:port with a source port in this range,
# so their answers (to the VIP, destination port in the range) can be told
# apart from client traffic by one masked match. Linux clients pick ephemeral
# ports from 32768-60999, below it.
PROBE_PORT_BASE: Final = 0xF000  # 61440
PROBE_PORT_MASK: Final = 0xFF00  # 256 ports: 61440-61695
PROBE_PORT_COUNT: Final = 0x100

PRIORITY_PROBE_REPLY: Final = 200
PRIORITY_VIP: Final = 150
PRIORITY_BACKEND_REPLY: Final = 100
PRIORITY_NEW_CONNECTION: Final = 100
PRIORITY_PICKED_LINK: Final = 110  # a new UDP flow whose link multipath picked
PRIORITY_TRACKED: Final = 50
PRIORITY_REWRITE: Final = 100
PRIORITY_VIP_ARP: Final = 100
PRIORITY_COMMIT_NEW: Final = 50  # a new connection not to a VIP: committed in the zone
# Source ports a local client's connection may be moved to when its own is taken.
CLIENT_PORTS: Final = (32768, 60999)

_ICMP_DEST_UNREACHABLE: Final = 3
_ZONE_BITS: Final = 16
_VIP_MAC_PREFIX: Final = 0x0E  # locally administered, unicast
# A UDP flow's backend link (multipath's result) and the mark that it was picked.
_LINK_REGISTER, _PICKED_REGISTER = LB_REGISTERS


def vip_mac(network_id: str, vip: str) -> int:
    """The VIP's virtual MAC: the same on every host and every controller replica."""
    digest = hashlib.blake2b(f"{network_id}|{vip}".encode(), digest_size=5).digest()
    return (_VIP_MAC_PREFIX << 40) | int.from_bytes(digest, "big")


def conntrack_zones(metadatas: set[int] | frozenset[int]) -> dict[int, int]:
    """A conntrack zone per network (by metadata) that has load balancers here.

    A zone is a hash of the network's identity, so adding or removing another
    network's load balancer never renumbers this one's zone (which would lose its
    connections). A collision re-hashes the later network (in metadata order) with
    the next salt, so the result depends only on the set. Zone 0 (the default zone
    of untracked traffic elsewhere) is never used.
    """
    return unique_salted_ids(sorted(metadatas), _zone_hash)


def _zone_hash(metadata: int, salt: int) -> int:
    data = f"{salt}|{metadata}".encode()
    digest = hashlib.blake2b(data, digest_size=4, person=b"ovs-fabric-ctz").digest()
    return int.from_bytes(digest, "big") & ((1 << _ZONE_BITS) - 1)


@dataclass(frozen=True, slots=True)
class ResolvedBackend:
    ip: int
    port: int
    weight: int
    healthy: bool
    owner: BoundPort | None  # the bound port holding the backend's IP; None: unreachable


@dataclass(frozen=True, slots=True)
class LocalLoadBalancer:
    """A load balancer whose network has ports on this datapath."""

    spec: LoadBalancerSpec
    net: LocalNetwork
    zone: int
    vip: int
    vip_mac: int
    ip_proto: int
    backends: tuple[ResolvedBackend, ...]

    @property
    def usable(self) -> tuple[ResolvedBackend, ...]:
        """Backends new connections may go to: healthy and addressable."""
        return tuple(b for b in self.backends if b.healthy and b.owner is not None)


def backend_owner(
    bound_ports: Iterable[BoundPort], ip: int, port_id: str | None
) -> BoundPort | None:
    """The bound port holding a backend's address; None: the backend is unreachable.

    A backend named by port must be that port; an IP-only backend is reachable
    only if some bound port of the network holds the IP (its MAC is needed). Of
    two ports claiming the address, the first in `bound_ports` order wins. The
    health checks ask the same question, so they probe the port the flows use.
    """
    for port in bound_ports:
        if port_id is not None and port.id != port_id:
            continue
        if ip in port.ipv4s:
            return port
    return None


def local_load_balancers(snapshot: Snapshot, ctx: DatapathContext) -> tuple[LocalLoadBalancer, ...]:
    """The load balancers this datapath serves, in a canonical order."""
    nets = {net.spec.id: net for net in ctx.networks}
    specs = [lb for lb in snapshot.load_balancers if lb.network_id in nets]
    zones = conntrack_zones({nets[lb.network_id].metadata for lb in specs})
    found = (local_load_balancer(spec, nets[spec.network_id], zones) for spec in specs)
    return tuple(sorted(found, key=load_balancer_order))


def load_balancer_order(lb: LocalLoadBalancer) -> tuple[int, int, int, int]:
    return (lb.net.metadata, lb.vip, lb.ip_proto, lb.spec.port)


def local_load_balancer(
    spec: LoadBalancerSpec, net: LocalNetwork, zones: Mapping[int, int]
) -> LocalLoadBalancer:
    """`spec` as served on a datapath where `net` (its network) has ports; `zones` by
    network metadata, as `conntrack_zones` gives them."""
    backends = tuple(
        sorted(
            (
                ResolvedBackend(
                    ip=ip_to_int(b.ip),
                    port=b.port,
                    weight=b.weight,
                    healthy=b.healthy,
                    owner=backend_owner(net.bound_ports, ip_to_int(b.ip), b.port_id),
                )
                for b in spec.backends
            ),
            key=lambda b: (b.ip, b.port),
        )
    )
    return LocalLoadBalancer(
        spec=spec,
        net=net,
        zone=zones[net.metadata],
        vip=ip_to_int(spec.vip),
        vip_mac=vip_mac(net.spec.id, spec.vip),
        ip_proto=IP_PROTO_TCP if spec.protocol == "tcp" else IP_PROTO_UDP,
        backends=backends,
    )


def udp_links(lb: LocalLoadBalancer) -> tuple[ResolvedBackend, ...]:
    """The usable backends of a UDP listener, each repeated weight/gcd times: link k of
    multipath's choice is the k-th."""
    usable = lb.usable
    unit = math.gcd(*(b.weight for b in usable)) if usable else 1
    return tuple(b for b in usable for _ in range(b.weight // unit))


def _backend_ct(lb: LocalLoadBalancer, backend: ResolvedBackend) -> Ct:
    return Ct(
        zone=lb.zone,
        commit=True,
        table=TABLE_LB_REWRITE,
        nat=Nat(dst_ip=backend.ip, dst_port=backend.port),
    )


def backend_group(lb: LocalLoadBalancer) -> GroupContent | None:
    """The select group spreading new TCP connections over the usable backends; None if
    none, and for UDP (multipath spreads its flows)."""
    usable = lb.usable
    if not usable or lb.ip_proto == IP_PROTO_UDP:
        return None
    buckets = tuple(Bucket((_backend_ct(lb, b),), weight=b.weight) for b in usable)
    return GroupContent("select", buckets)


def load_balancer_groups(snapshot: Snapshot, ctx: DatapathContext) -> tuple[GroupContent, ...]:
    groups = (backend_group(lb) for lb in local_load_balancers(snapshot, ctx))
    return tuple(g for g in groups if g is not None)


def _l4(
    ip_proto: int,
    *,
    src: int | tuple[int, int] | None = None,
    dst: int | tuple[int, int] | None = None,
) -> dict[str, int | tuple[int, int]]:
    prefix = "tcp" if ip_proto == IP_PROTO_TCP else "udp"
    fields: dict[str, int | tuple[int, int]] = {"ip_proto": ip_proto}
    if src is not None:
        fields[f"{prefix}_src"] = src
    if dst is not None:
        fields[f"{prefix}_dst"] = dst
    return fields


def _ipv4(metadata: int, **fields: int | tuple[int, int]) -> Match:
    return match(metadata=metadata, eth_type=ETH_TYPE_IPV4, **fields)


def _to_controller() -> tuple[Action, ...]:
    return (Output(OFPP_CONTROLLER),)


def _vip_flows(lb: LocalLoadBalancer, group_ids: Mapping[GroupContent, int]) -> Iterator[Flow]:
    metadata = lb.net.metadata
    listener = _l4(lb.ip_proto, dst=lb.spec.port)
    # Only local clients: every host balances its own clients' connections.
    yield Flow(
        TABLE_LB,
        PRIORITY_VIP,
        _ipv4(metadata, ipv4_dst=lb.vip, **{REG_ORIGIN: ORIGIN_LOCAL}, **listener),
        actions=(Ct(zone=lb.zone, table=TABLE_LB_CT, nat=Nat()),),
    )
    group = backend_group(lb)
    links = udp_links(lb) if lb.ip_proto == IP_PROTO_UDP else ()
    new_to_vip: dict[str, int | tuple[int, int]] = {
        "ct_state": (CT_TRACKED | CT_NEW, CT_TRACKED | CT_NEW | CT_INVALID),
        "ipv4_dst": lb.vip,
        **listener,
    }
    # No usable backend: the controller answers with a TCP RST / ICMP unreachable.
    pick: tuple[Action, ...] = _to_controller()
    if group is not None:
        pick = (GroupAction(group_ids[group]),)
    elif links:
        pick = (
            SetField(_PICKED_REGISTER, 1),
            Multipath(_LINK_REGISTER, len(links)),
            Resubmit(TABLE_LB_CT),
        )
    yield Flow(TABLE_LB_CT, PRIORITY_NEW_CONNECTION, _ipv4(metadata, **new_to_vip), actions=pick)
    for link, backend in enumerate(links):
        yield Flow(
            TABLE_LB_CT,
            PRIORITY_PICKED_LINK,
            _ipv4(metadata, **new_to_vip, **{_LINK_REGISTER: link, _PICKED_REGISTER: 1}),
            actions=(_backend_ct(lb, backend),),
        )
    yield Flow(
        TABLE_ARP_RESPONDER,
        PRIORITY_VIP_ARP,
        match(metadata=metadata, eth_type=ETH_TYPE_ARP, arp_op=ARP_REQUEST, arp_tpa=lb.vip),
        actions=arp_reply_actions(lb.vip_mac, lb.vip),
    )
    yield Flow(
        TABLE_LB_REPLY,
        PRIORITY_REWRITE,
        _ipv4(metadata, ipv4_src=lb.vip),
        actions=(SetField("eth_src", lb.vip_mac),),
        goto_table=TABLE_L2_FORWARD,
    )


def _probe_flows(lb: LocalLoadBalancer, host_id: str) -> Iterator[Flow]:
    if lb.spec.health_check is None:
        return
    for backend in lb.backends:
        if backend.owner is not None and backend.owner.host_id == host_id:
            yield from _probe_reply_flows(lb, backend)


def _probe_reply_flows(lb: LocalLoadBalancer, backend: ResolvedBackend) -> Iterator[Flow]:
    """Answers of a local backend to the probes the controller sends from the VIP."""
    answers = [_l4(lb.ip_proto, src=backend.port, dst=(PROBE_PORT_BASE, PROBE_PORT_MASK))]
    if lb.ip_proto == IP_PROTO_UDP:
        # A closed UDP port answers with ICMP port unreachable (its ports are
        # inside the ICMP payload, which the controller reads).
        answers.append({"ip_proto": IP_PROTO_ICMP, "icmpv4_type": _ICMP_DEST_UNREACHABLE})
    for answer in answers:
        yield Flow(
            TABLE_LB,
            PRIORITY_PROBE_REPLY,
            _ipv4(lb.net.metadata, ipv4_src=backend.ip, ipv4_dst=lb.vip, **answer),
            actions=_to_controller(),
        )


def load_balancer_network_flows(net: LocalNetwork, zone: int) -> Iterator[Flow]:
    """What every network with load balancers here needs, whatever its load balancers."""
    metadata = net.metadata
    # Every other TCP/UDP/ICMP packet of the network passes conntrack (as in OVN):
    # a backend's reply (or an ICMP error about a connection) is un-NATed on the
    # client's host, whichever host it comes from. Matching all of them rather
    # than the current backends keeps the connections of a backend removed from
    # the load balancer alive until they end.
    for proto in (IP_PROTO_TCP, IP_PROTO_UDP, IP_PROTO_ICMP):
        yield Flow(
            TABLE_LB,
            PRIORITY_BACKEND_REPLY,
            _ipv4(metadata, ip_proto=proto),
            actions=(Ct(zone=zone, table=TABLE_LB_REPLY, nat=Nat()),),
        )
    new_here = {"ct_state": (CT_TRACKED | CT_NEW, CT_TRACKED | CT_NEW | CT_INVALID)}
    for proto in (IP_PROTO_TCP, IP_PROTO_UDP):
        yield Flow(
            TABLE_LB_REPLY,
            PRIORITY_COMMIT_NEW,
            _ipv4(metadata, ip_proto=proto, **new_here, **{REG_ORIGIN: ORIGIN_REMOTE}),
            actions=(Ct(zone=zone, commit=True),),
            goto_table=TABLE_L2_FORWARD,
        )
        for port in net.local_ports:
            for ip in port.ipv4s:
                yield Flow(
                    TABLE_LB_REPLY,
                    PRIORITY_COMMIT_NEW,
                    _ipv4(
                        metadata,
                        ip_proto=proto,
                        ipv4_src=ip,
                        **new_here,
                        **{REG_ORIGIN: ORIGIN_LOCAL},
                    ),
                    actions=(
                        Ct(zone=zone, commit=True, nat=Nat(src_ip=ip, src_ports=CLIENT_PORTS)),
                    ),
                    goto_table=TABLE_L2_FORWARD,
                )
    # A tracked, valid packet that is not a new connection to a VIP was NATed
    # by the first ct (established, related, a retransmitted SYN): only its MAC
    # is left to fix.
    yield Flow(
        TABLE_LB_CT,
        PRIORITY_TRACKED,
        match(metadata=metadata, ct_state=(CT_TRACKED, CT_TRACKED | CT_INVALID)),
        goto_table=TABLE_LB_REWRITE,
    )
    # Any address of the network may be (or have been) a backend.
    seen: set[int] = set()
    for port in net.bound_ports:
        for ip in port.ipv4s:
            if ip in seen:
                continue  # an address claimed twice: the first owner (by MAC) wins
            seen.add(ip)
            yield Flow(
                TABLE_LB_REWRITE,
                PRIORITY_REWRITE,
                _ipv4(metadata, ipv4_dst=ip),
                actions=(SetField("eth_dst", port.mac),),
                goto_table=TABLE_L2_FORWARD,
            )


def load_balancer_flows(
    snapshot: Snapshot, ctx: DatapathContext, group_ids: Mapping[GroupContent, int]
) -> Iterator[Flow]:
    lbs = local_load_balancers(snapshot, ctx)
    zones = {lb.net.metadata: (lb.net, lb.zone) for lb in lbs}
    for metadata in sorted(zones):
        yield from load_balancer_network_flows(*zones[metadata])
    for lb in lbs:
        yield from load_balancer_own_flows(lb, group_ids, ctx.host_id)


def load_balancer_own_flows(
    lb: LocalLoadBalancer, group_ids: Mapping[GroupContent, int], host_id: str
) -> Iterator[Flow]:
    """The flows of one load balancer on the datapath of `host_id`."""
    yield from _vip_flows(lb, group_ids)
    yield from _probe_flows(lb, host_id)


__all__ = [
    "CLIENT_PORTS",
    "PROBE_PORT_BASE",
    "PROBE_PORT_COUNT",
    "PROBE_PORT_MASK",
    "LocalLoadBalancer",
    "ResolvedBackend",
    "backend_group",
    "backend_owner",
    "conntrack_zones",
    "load_balancer_flows",
    "load_balancer_groups",
    "load_balancer_network_flows",
    "load_balancer_order",
    "load_balancer_own_flows",
    "local_load_balancer",
    "local_load_balancers",
    "udp_links",
    "vip_mac",
]
