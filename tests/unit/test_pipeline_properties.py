"""Properties of the pure pipeline over random fabrics (hypothesis), checked with packets.

A random fabric: hosts (the local one, with a VLAN uplink and tunnels to the
others), tenants whose networks of both types reuse the same address ranges,
ports bound here, elsewhere or nowhere, load balancers over them. On the local
host's flows, every frame a local port sends (unicast to every MAC and address
of the fabric, broadcast, ARP, to VIPs; over IPv6 too: to every address, Neighbor
Solicitations and Advertisements for them) and every frame arriving from the
uplink or a tunnel for a network:

- leaves only through a local port of the same network, the uplink tagged with
  that network's VLAN id, or a tunnel carrying that network's VNI;
- so never reaches a port of another network, whatever address it aims at.

And the same snapshot (in any order) always gives the same flows and groups.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core import model
from controller.core.flows import (
    ARP_REQUEST,
    BROADCAST_MAC,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ICMPV6_NEIGHBOR_ADVERTISEMENT,
    ICMPV6_NEIGHBOR_SOLICITATION,
    IP_PROTO_ICMPV6,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    OFPP_CONTROLLER,
    VLAN_NONE,
    VLAN_PRESENT,
    ip_to_int,
    ipv6_to_int,
    link_local_ipv6,
    mac_to_int,
)
from controller.core.pipeline import compute_datapath
from controller.core.pipeline.context import tunnel_interface_name
from tests.support.flowsim import Emitted, FlowSimulator

pytestmark = pytest.mark.unit

UPLINK = 1
FIRST_TUNNEL = 100
FIRST_TAP = 10
CIDRS = ("10.0.0.0/24", "10.0.1.0/24")  # few ranges: tenants collide on purpose
IPV6S = tuple(f"fd00::{i}" for i in range(1, 9))  # one prefix for every network


@dataclass(frozen=True)
class Fabric:
    snapshot: model.Snapshot
    view: model.DatapathView
    local: str  # host id

    def network(self, network_id: str) -> model.NetworkSpec:
        return next(n for n in self.snapshot.networks if n.id == network_id)

    def ofport(self, port: model.PortSpec) -> int | None:
        if port.host_id != self.local or port.interface is None:
            return None
        return self.view.ofports.get(port.interface)

    def local_ports(self) -> list[tuple[model.PortSpec, int]]:
        found = [(p, self.ofport(p)) for p in self.snapshot.ports]
        return [(p, number) for p, number in found if number is not None]

    def tunnel_ofports(self) -> dict[int, str]:
        """ofport -> peer host id."""
        return {
            number: host.id
            for host in self.snapshot.hosts
            if host.id != self.local
            and (number := self.view.ofports.get(tunnel_interface_name(host.id))) is not None
        }

    def allowed(self, network: model.NetworkSpec, emitted: Emitted) -> bool:
        """May a frame of `network` leave this way?"""
        port = emitted.port
        if port == OFPP_CONTROLLER:
            # A VIP with no healthy backend: the controller answers the sender (RST/ICMP).
            return True
        if port == UPLINK:
            return network.type == "vlan" and emitted.get("vlan_vid") == (
                VLAN_PRESENT | network.segmentation_id
            )
        if port in self.tunnel_ofports():
            return network.type == "vxlan" and emitted.get("tunnel_id") == network.segmentation_id
        members = {number for p, number in self.local_ports() if p.network_id == network.id}
        return port in members and emitted.get("vlan_vid") == VLAN_NONE


def _uuid(draw: st.DrawFn) -> str:
    return str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4))


@st.composite
def fabrics(draw: st.DrawFn) -> Fabric:
    host_ids = [_uuid(draw) for _ in range(draw(st.integers(2, 3)))]
    hosts = tuple(
        model.HostSpec(host_id, f"h{i}", f"unix:/run/h{i}/db.sock", f"192.0.2.{i + 1}", "uplink0")
        for i, host_id in enumerate(host_ids)
    )
    tenants = [f"tenant-{i}" for i in range(draw(st.integers(1, 3)))]
    networks: list[model.NetworkSpec] = []
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["vlan", "vxlan"]))
        used = {n.segmentation_id for n in networks if n.type == kind}
        segment = draw(
            st.integers(1, 4094 if kind == "vlan" else 16_777_215).filter(
                lambda s, used=used: s not in used  # type: ignore[misc]
            )
        )
        cidr = draw(st.sampled_from([*CIDRS, None]))
        networks.append(
            model.NetworkSpec(
                f"net-{i}", draw(st.sampled_from(tenants)), f"n{i}", kind, segment, cidr
            )
        )
    ports: list[model.PortSpec] = []
    taps: dict[str, int] = {}
    for i in range(draw(st.integers(1, 8))):
        network = draw(st.sampled_from(networks))
        host = draw(st.sampled_from([*host_ids, None]))
        ips: tuple[str, ...] = ()
        if network.cidr is not None and draw(st.booleans()):
            taken = {ip for p in ports if p.network_id == network.id for ip in p.ips}
            hosts_in = [str(a) for a in ipaddress.IPv4Network(network.cidr).hosts()][:20]
            free = [a for a in hosts_in if a not in taken]
            ips = (draw(st.sampled_from(free)),) if free else ()
        if draw(st.booleans()):
            taken = {ip for p in ports if p.network_id == network.id for ip in p.ips}
            free = [a for a in IPV6S if a not in taken]
            ips += (draw(st.sampled_from(free)),) if free else ()
        interface = f"tap{i}" if host is not None else None
        ports.append(
            model.PortSpec(
                f"port-{i}", network.id, f"02:00:00:00:00:{i + 1:02x}", ips, host, interface
            )
        )
        if host == host_ids[0] and draw(st.integers(0, 4)):  # sometimes not on the switch yet
            taps[f"tap{i}"] = FIRST_TAP + i
    load_balancers: list[model.LoadBalancerSpec] = []
    for i, network in enumerate(networks):
        members = [p for p in ports if p.network_id == network.id and _ipv4s(p)]
        if network.cidr is None or not draw(st.booleans()):
            continue
        vip = str(ipaddress.IPv4Network(network.cidr).network_address + 200)
        backends = tuple(
            model.BackendSpec(
                _ipv4s(p)[0], 8080, draw(st.integers(1, 5)), draw(st.booleans()), p.id
            )
            for p in members
        )
        protocol = draw(st.sampled_from(["tcp", "udp"]))
        load_balancers.append(
            model.LoadBalancerSpec(f"lb-{i}", network.id, vip, protocol, 80, backends)
        )
    local = host_ids[0]
    ofports = {"uplink0": UPLINK, **taps}
    for i, peer in enumerate(host_ids[1:]):
        ofports[tunnel_interface_name(peer)] = FIRST_TUNNEL + i
    snapshot = model.Snapshot(
        revision=1,
        hosts=hosts,
        networks=tuple(networks),
        ports=tuple(ports),
        load_balancers=tuple(load_balancers),
    )
    return Fabric(snapshot, model.DatapathView(local, ofports), local)


def _ipv4s(port: model.PortSpec) -> list[str]:
    return [ip for ip in port.ips if ":" not in ip]


def _ipv6s(port: model.PortSpec) -> list[int]:
    return [ipv6_to_int(ip) for ip in port.ips if ":" in ip]


def ipv6_frames_from(fabric: Fabric, source: model.PortSpec, in_port: int) -> list[dict[str, int]]:
    """IPv6 a port may send: to every IPv6 address (and link-local one) of the fabric,
    Solicitations for them, Advertisements of them, from its own or its link-local one."""
    mac = mac_to_int(source.mac)
    sources = [*_ipv6s(source), link_local_ipv6(mac)]
    targets = [
        (mac_to_int(p.mac), ip)
        for p in fabric.snapshot.ports
        for ip in [*_ipv6s(p), link_local_ipv6(mac_to_int(p.mac))]
    ]
    frames = []
    for src in sources:
        base = {
            "in_port": in_port,
            "eth_src": mac,
            "eth_type": ETH_TYPE_IPV6,
            "ipv6_src": src,
            "ip_proto": IP_PROTO_ICMPV6,
        }
        for dst_mac, dst_ip in targets:
            frames.append({**base, "eth_dst": dst_mac, "ipv6_dst": dst_ip, "icmpv6_type": 128})
            frames.append(
                {
                    **base,
                    "eth_dst": 0x3333FF000000 | (dst_ip & 0xFFFFFF),
                    "ipv6_dst": ipv6_to_int("ff02::1:ff00:0") | (dst_ip & 0xFFFFFF),
                    "icmpv6_type": ICMPV6_NEIGHBOR_SOLICITATION,
                    "ipv6_nd_target": dst_ip,
                    "ipv6_nd_sll": mac,
                }
            )
            frames.append(
                {
                    **base,
                    "eth_dst": 0x333300000001,
                    "ipv6_dst": ipv6_to_int("ff02::1"),
                    "icmpv6_type": ICMPV6_NEIGHBOR_ADVERTISEMENT,
                    "ipv6_nd_target": dst_ip,
                    "ipv6_nd_tll": mac,
                }
            )
    return frames


def frames_from(fabric: Fabric, source: model.PortSpec, in_port: int) -> list[dict[str, int]]:
    """What a local port may send: to every MAC and address of the fabric, broadcast, ARP."""
    own = _ipv4s(source)
    src_ip = ip_to_int(own[0]) if own else ip_to_int("10.0.0.250")
    base = {"in_port": in_port, "eth_src": mac_to_int(source.mac)}
    targets = [
        (mac_to_int(p.mac), _ipv4s(p)[0] if _ipv4s(p) else "10.0.0.251")
        for p in fabric.snapshot.ports
    ]
    targets += [(BROADCAST_MAC, "255.255.255.255")]
    targets += [(mac_to_int("02:aa:00:00:00:01"), lb.vip) for lb in fabric.snapshot.load_balancers]
    frames = []
    for dst_mac, dst_ip in targets:
        for proto, l4 in (
            (IP_PROTO_UDP, {"udp_src": 5000, "udp_dst": 80}),
            (IP_PROTO_TCP, {"tcp_src": 5000, "tcp_dst": 80}),
        ):
            frames.append(
                {
                    **base,
                    "eth_dst": dst_mac,
                    "eth_type": ETH_TYPE_IPV4,
                    "ipv4_src": src_ip,
                    "ipv4_dst": ip_to_int(dst_ip),
                    "ip_proto": proto,
                    **l4,
                }
            )
        frames.append(
            {
                **base,
                "eth_dst": BROADCAST_MAC,
                "eth_type": ETH_TYPE_ARP,
                "arp_op": ARP_REQUEST,
                "arp_sha": mac_to_int(source.mac),
                "arp_spa": src_ip,
                "arp_tha": 0,
                "arp_tpa": ip_to_int(dst_ip),
            }
        )
    return frames + ipv6_frames_from(fabric, source, in_port)


PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@PROPERTY_SETTINGS
@given(fabric=fabrics())
def test_no_frame_of_a_local_port_leaves_its_network(fabric: Fabric) -> None:
    sim = FlowSimulator.of(compute_datapath(fabric.snapshot, fabric.view))
    for source, in_port in fabric.local_ports():
        network = fabric.network(source.network_id)
        for frame in frames_from(fabric, source, in_port):
            for emitted in sim.emitted(frame):
                assert fabric.allowed(network, emitted), (source, frame, emitted)


@PROPERTY_SETTINGS
@given(fabric=fabrics())
def test_frames_from_the_uplink_and_tunnels_reach_only_their_network(fabric: Fabric) -> None:
    sim = FlowSimulator.of(compute_datapath(fabric.snapshot, fabric.view))
    tunnels = list(fabric.tunnel_ofports())
    for network in fabric.snapshot.networks:
        if network.type == "vlan":
            arrivals = [{"in_port": UPLINK, "vlan_vid": VLAN_PRESENT | network.segmentation_id}]
        else:
            arrivals = [{"in_port": t, "tunnel_id": network.segmentation_id} for t in tunnels]
        for arrival in arrivals:
            for port in fabric.snapshot.ports:
                remote = model.PortSpec(
                    f"{port.id}-remote", network.id, "02:bb:00:00:00:01", port.ips
                )
                for frame in frames_from(fabric, remote, arrival["in_port"]):
                    for emitted in sim.emitted({**frame, **arrival}):
                        assert fabric.allowed(network, emitted), (network, frame, emitted)


@PROPERTY_SETTINGS
@given(fabric=fabrics(), order=st.randoms(use_true_random=False))
def test_the_same_snapshot_gives_the_same_flows(fabric: Fabric, order: object) -> None:
    first = compute_datapath(fabric.snapshot, fabric.view)
    parts = {}
    for name in ("hosts", "networks", "ports", "load_balancers"):
        items = list(getattr(fabric.snapshot, name))
        order.shuffle(items)  # type: ignore[attr-defined]
        parts[name] = tuple(items)
    shuffled = dataclasses.replace(fabric.snapshot, **parts)
    again = compute_datapath(fabric.snapshot, fabric.view)
    reordered = compute_datapath(shuffled, fabric.view)
    for config in (again, reordered):
        assert set(config.flows) == set(first.flows)
        assert set(config.groups) == set(first.groups)
