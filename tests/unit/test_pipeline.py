"""The integration-bridge pipeline, checked by sending packets through the simulator.

The fabric seen from host A:

    tenant 1, VLAN 100 "red":   red1 (port 3), red2 (port 7), red_open (port 8, no IPs),
                                red_pending (bound to A, interface not on the switch yet),
                                red_b on host B, red_unbound (no host)
    tenant 2, VLAN 200 "green": green1 (port 4) and green2 (port 9) reuse red's addresses
    tenant 1, VXLAN 5001 "blue": blue1 (port 5), blue2 (port 6), blue_b on B, blue_c on C
    host D has a tunnel from A but no port in any network
    port 1 is the VLAN uplink; ports 10/11/12 are the tunnels toward B/C/D;
    port 20 is an interface on the bridge that no port is bound to.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from controller.core.flows import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST_MAC,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    IP_PROTO_UDP,
    OFPP_CONTROLLER,
    VLAN_NONE,
    VLAN_PRESENT,
    Bucket,
    Flow,
    GroupAction,
    Output,
    PushVlan,
    SetField,
    ip_to_int,
    mac_to_int,
    match,
)
from controller.core.model import DatapathView, HostSpec, NetworkSpec, PortSpec, Snapshot
from controller.core.pipeline import DatapathConfig, PipelineError, compute_datapath
from controller.core.pipeline import groups as pipeline_groups
from controller.core.pipeline.arp_responder import arp_reply_actions
from controller.core.pipeline.context import network_metadata, tunnel_interface_name
from controller.core.pipeline.tables import (
    ORIGIN_REMOTE,
    REG_ORIGIN,
    TABLE_ARP_RESPONDER,
    TABLE_CLASSIFY,
    TABLE_L2_FORWARD,
    TABLE_PORT_SECURITY,
    check_flow,
    check_flows,
)
from tests.support.flowsim import Emitted, FlowSimulator, simulate

pytestmark = pytest.mark.unit

HOST_A = "a0000000-0000-4000-8000-00000000000a"
HOST_B = "b0000000-0000-4000-8000-00000000000b"
HOST_C = "c0000000-0000-4000-8000-00000000000c"
HOST_D = "d0000000-0000-4000-8000-00000000000d"

UPLINK, TUNNEL_B, TUNNEL_C, TUNNEL_D, STRAY = 1, 10, 11, 12, 20

RED = NetworkSpec("net-red", "tenant-1", "red", "vlan", 100, "10.0.0.0/24")
GREEN = NetworkSpec("net-green", "tenant-2", "green", "vlan", 200, "10.0.0.0/24")
BLUE = NetworkSpec("net-blue", "tenant-1", "blue", "vxlan", 5001, "10.1.0.0/24")


def _port(
    name: str, net: NetworkSpec, mac: str, ips: tuple[str, ...], host: str | None
) -> PortSpec:
    return PortSpec(
        id=f"port-{name}",
        network_id=net.id,
        mac=mac,
        ips=ips,
        host_id=host,
        interface=f"tap-{name}" if host else None,
    )


RED1 = _port("red1", RED, "02:00:00:00:01:03", ("10.0.0.3",), HOST_A)
RED2 = _port("red2", RED, "02:00:00:00:01:07", ("10.0.0.7",), HOST_A)
RED_OPEN = _port("red-open", RED, "02:00:00:00:01:08", (), HOST_A)
RED_PENDING = _port("red-pending", RED, "02:00:00:00:01:09", ("10.0.0.9",), HOST_A)
RED_B = _port("red-b", RED, "02:00:00:00:01:20", ("10.0.0.20",), HOST_B)
RED_UNBOUND = _port("red-unbound", RED, "02:00:00:00:01:99", ("10.0.0.99",), None)
GREEN1 = _port("green1", GREEN, "02:00:00:00:02:04", ("10.0.0.3",), HOST_A)
GREEN2 = _port("green2", GREEN, "02:00:00:00:02:09", ("10.0.0.7",), HOST_A)
BLUE1 = _port("blue1", BLUE, "02:00:00:00:03:05", ("10.1.0.5",), HOST_A)
BLUE2 = _port("blue2", BLUE, "02:00:00:00:03:06", ("10.1.0.6",), HOST_A)
BLUE_B = _port("blue-b", BLUE, "02:00:00:00:03:20", ("10.1.0.20",), HOST_B)
BLUE_C = _port("blue-c", BLUE, "02:00:00:00:03:30", ("10.1.0.30",), HOST_C)

OFPORT = {RED1: 3, RED2: 7, RED_OPEN: 8, GREEN1: 4, GREEN2: 9, BLUE1: 5, BLUE2: 6}


def _host(host_id: str, name: str, tunnel_ip: str | None, uplink: str | None) -> HostSpec:
    return HostSpec(host_id, name, f"unix:/run/{name}/db.sock", tunnel_ip, uplink)


def fabric() -> Snapshot:
    return Snapshot(
        revision=1,
        hosts=(
            _host(HOST_A, "a", "192.0.2.1", "uplink0"),
            _host(HOST_B, "b", "192.0.2.2", "uplink0"),
            _host(HOST_C, "c", "192.0.2.3", None),
            _host(HOST_D, "d", "192.0.2.4", None),
        ),
        networks=(RED, GREEN, BLUE),
        ports=(
            RED1,
            RED2,
            RED_OPEN,
            RED_PENDING,
            RED_B,
            RED_UNBOUND,
            GREEN1,
            GREEN2,
            BLUE1,
            BLUE2,
            BLUE_B,
            BLUE_C,
        ),
    )


def view_a(**extra: int) -> DatapathView:
    ofports = {f"tap-{port.id[5:]}": number for port, number in OFPORT.items()}
    ofports.update(
        {
            "uplink0": UPLINK,
            tunnel_interface_name(HOST_B): TUNNEL_B,
            tunnel_interface_name(HOST_C): TUNNEL_C,
            tunnel_interface_name(HOST_D): TUNNEL_D,
            "tap-stray": STRAY,
            **extra,
        }
    )
    return DatapathView(HOST_A, ofports)


@pytest.fixture(scope="module")
def config() -> DatapathConfig:
    return compute_datapath(fabric(), view_a())


@pytest.fixture(scope="module")
def sim(config: DatapathConfig) -> FlowSimulator:
    return FlowSimulator.of(config)


# ---- packet builders ------------------------------------------------------------------------


def mac(port: PortSpec) -> int:
    return mac_to_int(port.mac)


def ip(port: PortSpec) -> int:
    return ip_to_int(port.ips[0])


def ipv4_frame(in_port: int, src: PortSpec, dst_mac: int, dst_ip: int, **fields: int) -> dict:
    return {
        "in_port": in_port,
        "eth_src": mac(src),
        "eth_dst": dst_mac,
        "eth_type": ETH_TYPE_IPV4,
        "ipv4_src": ip(src),
        "ipv4_dst": dst_ip,
        "ip_proto": IP_PROTO_UDP,
        "udp_src": 5000,
        "udp_dst": 5001,
        **fields,
    }


def unicast(src: PortSpec, dst: PortSpec, **fields: int) -> dict:
    return ipv4_frame(OFPORT[src], src, mac(dst), ip(dst), **fields)


def broadcast(src: PortSpec, in_port: int | None = None, **fields: int) -> dict:
    in_port = OFPORT[src] if in_port is None else in_port
    return ipv4_frame(in_port, src, BROADCAST_MAC, ip_to_int("255.255.255.255"), **fields)


def arp_request(src: PortSpec, target_ip: str, **fields: int) -> dict:
    return {
        "in_port": OFPORT[src],
        "eth_src": mac(src),
        "eth_dst": BROADCAST_MAC,
        "eth_type": ETH_TYPE_ARP,
        "arp_op": ARP_REQUEST,
        "arp_sha": mac(src),
        "arp_spa": ip(src),
        "arp_tha": 0,
        "arp_tpa": ip_to_int(target_ip),
        **fields,
    }


def outputs(emitted: list[Emitted]) -> set[tuple[int, int]]:
    """(port, vlan_vid) of every copy sent out."""
    return {(e.port, e.get("vlan_vid")) for e in emitted}


def untagged(*ports: int) -> set[tuple[int, int]]:
    return {(port, VLAN_NONE) for port in ports}


# ---- forwarding -----------------------------------------------------------------------------


def test_local_unicast_reaches_the_destination_port_untagged(sim: FlowSimulator) -> None:
    frame = unicast(RED1, RED2)
    (out,) = sim.emitted(frame)
    assert out.port == OFPORT[RED2]
    assert out.get("vlan_vid") == VLAN_NONE
    for name in ("eth_src", "eth_dst", "ipv4_src", "ipv4_dst", "udp_dst"):
        assert out.get(name) == frame[name]


def test_frames_never_reach_another_network_even_with_overlapping_ips(sim: FlowSimulator) -> None:
    # red1 aims at green1's MAC and address (10.0.0.3 exists in both tenants).
    out = sim.emitted(ipv4_frame(OFPORT[RED1], RED1, mac(GREEN1), ip(GREEN1)))
    assert OFPORT[GREEN1] not in {e.port for e in out}
    assert outputs(out) <= untagged(OFPORT[RED2], OFPORT[RED_OPEN]) | {(UPLINK, VLAN_PRESENT | 100)}
    # Same the other way round, and from green into the VXLAN network.
    out = sim.emitted(ipv4_frame(OFPORT[GREEN2], GREEN2, mac(RED1), ip(RED1)))
    assert outputs(out) <= untagged(OFPORT[GREEN1]) | {(UPLINK, VLAN_PRESENT | 200)}
    out = sim.emitted(ipv4_frame(OFPORT[GREEN1], GREEN1, mac(BLUE1), ip(BLUE1)))
    assert {e.port for e in out}.isdisjoint({OFPORT[BLUE1], OFPORT[BLUE2], TUNNEL_B, TUNNEL_C})


def test_vlan_broadcast_reaches_other_local_ports_and_the_tagged_uplink(sim: FlowSimulator) -> None:
    out = sim.emitted(broadcast(RED1))
    assert outputs(out) == untagged(OFPORT[RED2], OFPORT[RED_OPEN]) | {(UPLINK, VLAN_PRESENT | 100)}
    assert len(out) == 3


def test_vxlan_broadcast_reaches_other_local_ports_and_tunnels_with_the_vni(
    sim: FlowSimulator,
) -> None:
    out = sim.emitted(broadcast(BLUE1))
    assert {e.port for e in out} == {OFPORT[BLUE2], TUNNEL_B, TUNNEL_C}  # not D: no blue port
    assert len(out) == 3
    for e in out:
        assert e.get("vlan_vid") == VLAN_NONE
        if e.port in (TUNNEL_B, TUNNEL_C):
            assert e.get("tunnel_id") == 5001


def test_broadcast_from_remote_reaches_local_ports_only(sim: FlowSimulator) -> None:
    out = sim.emitted(broadcast(RED_B, UPLINK, vlan_vid=VLAN_PRESENT | 100))
    assert outputs(out) == untagged(OFPORT[RED1], OFPORT[RED2], OFPORT[RED_OPEN])
    out = sim.emitted(broadcast(BLUE_B, TUNNEL_B, tunnel_id=5001))
    assert outputs(out) == untagged(OFPORT[BLUE1], OFPORT[BLUE2])


def test_unicast_from_remote_reaches_the_local_port(sim: FlowSimulator) -> None:
    frame = ipv4_frame(UPLINK, RED_B, mac(RED2), ip(RED2), vlan_vid=VLAN_PRESENT | 100)
    assert outputs(sim.emitted(frame)) == untagged(OFPORT[RED2])
    frame = ipv4_frame(TUNNEL_C, BLUE_C, mac(BLUE1), ip(BLUE1), tunnel_id=5001)
    assert outputs(sim.emitted(frame)) == untagged(OFPORT[BLUE1])


def test_remote_vlan_unicast_leaves_tagged_on_the_uplink(sim: FlowSimulator) -> None:
    (out,) = sim.emitted(unicast(RED1, RED_B))
    assert (out.port, out.get("vlan_vid")) == (UPLINK, VLAN_PRESENT | 100)
    # red_b's MAC is unknown in green: flooded, but only within green.
    out = sim.emitted(ipv4_frame(OFPORT[GREEN1], GREEN1, mac(RED_B), ip(RED_B)))
    assert outputs(out) == untagged(OFPORT[GREEN2]) | {(UPLINK, VLAN_PRESENT | 200)}


def test_remote_vxlan_unicast_leaves_on_the_peers_tunnel_with_the_vni(sim: FlowSimulator) -> None:
    (out,) = sim.emitted(unicast(BLUE1, BLUE_C))
    assert (out.port, out.get("tunnel_id"), out.get("vlan_vid")) == (TUNNEL_C, 5001, VLAN_NONE)
    (out,) = sim.emitted(unicast(BLUE2, BLUE_B))
    assert (out.port, out.get("tunnel_id")) == (TUNNEL_B, 5001)


def test_remote_frames_are_never_sent_back_to_the_uplink_or_a_tunnel(sim: FlowSimulator) -> None:
    # Unicast from B to a MAC on C arrives here (e.g. flooded by B): split horizon.
    frame = ipv4_frame(TUNNEL_B, BLUE_B, mac(BLUE_C), ip(BLUE_C), tunnel_id=5001)
    assert {e.port for e in sim.emitted(frame)} <= {OFPORT[BLUE1], OFPORT[BLUE2]}
    frame = ipv4_frame(UPLINK, RED_B, mac(RED_B), ip(RED_B), vlan_vid=VLAN_PRESENT | 100)
    assert UPLINK not in {e.port for e in sim.emitted(frame)}


def test_no_path_to_other_hosts_without_uplink_or_tunnel() -> None:
    view = dataclasses.replace(
        view_a(),
        ofports={
            k: v
            for k, v in view_a().ofports.items()
            if k not in ("uplink0", tunnel_interface_name(HOST_C))
        },
    )
    sim = FlowSimulator.of(compute_datapath(fabric(), view))
    assert outputs(sim.emitted(broadcast(RED1))) == untagged(OFPORT[RED2], OFPORT[RED_OPEN])
    assert {e.port for e in sim.emitted(broadcast(BLUE1))} == {OFPORT[BLUE2], TUNNEL_B}
    # Without a tunnel to C, blue_c's MAC is unknown unicast: flooded where paths exist.
    assert {e.port for e in sim.emitted(unicast(BLUE1, BLUE_C))} == {OFPORT[BLUE2], TUNNEL_B}
    # Nothing can arrive for red from other hosts any more: no remote-origin flows for it.
    config = compute_datapath(fabric(), view)
    assert (
        flows_matching(config, metadata=network_metadata(RED), **{REG_ORIGIN: ORIGIN_REMOTE}) == []
    )
    assert (
        flows_matching(config, metadata=network_metadata(BLUE), **{REG_ORIGIN: ORIGIN_REMOTE}) != []
    )


def flows_matching(config: DatapathConfig, **fields: int) -> list[Flow]:
    """Flows whose match includes every given field with exactly that value."""
    found = []
    for flow in config.flows:
        values = {f.name: f.value for f in flow.match.fields}
        if all(values.get(name) == value for name, value in fields.items()):
            found.append(flow)
    return found


# ---- what is dropped ------------------------------------------------------------------------


def test_frames_from_the_uplink_with_an_unknown_vlan_or_no_tag_are_dropped(
    sim: FlowSimulator,
) -> None:
    assert sim.emitted(broadcast(RED_B, UPLINK, vlan_vid=VLAN_PRESENT | 999)) == []
    assert sim.emitted(broadcast(RED_B, UPLINK)) == []  # untagged


def test_frames_from_a_tunnel_with_an_unknown_vni_are_dropped(sim: FlowSimulator) -> None:
    assert sim.emitted(broadcast(BLUE_B, TUNNEL_B, tunnel_id=5002)) == []
    assert sim.emitted(broadcast(BLUE_B, TUNNEL_B, tunnel_id=100)) == []  # red's VLAN id
    # Host D has no blue port, so nothing it sends for blue is accepted.
    assert sim.emitted(broadcast(BLUE_B, TUNNEL_D, tunnel_id=5001)) == []
    # A VLAN frame arriving on a tunnel is not the uplink's either.
    assert sim.emitted(broadcast(RED_B, TUNNEL_B, vlan_vid=VLAN_PRESENT | 100)) == []


def test_spoofed_source_mac_is_dropped(sim: FlowSimulator) -> None:
    assert sim.emitted(unicast(RED1, RED2, eth_src=mac(RED_OPEN))) == []
    assert sim.emitted(unicast(RED1, RED2, eth_src=0x020000000666)) == []
    # Another network's MAC from that port, too.
    assert sim.emitted(unicast(RED1, RED2, eth_src=mac(GREEN1))) == []


def test_spoofed_arp_sender_is_dropped(sim: FlowSimulator) -> None:
    assert sim.emitted(arp_request(RED1, "10.0.0.7", arp_spa=ip(RED_B))) == []
    assert sim.emitted(arp_request(RED1, "10.0.0.7", arp_sha=mac(RED2))) == []
    # ...while the honest request is answered (so the drops above are the spoofing).
    assert sim.emitted(arp_request(RED1, "10.0.0.7")) != []


def test_spoofed_ipv4_source_is_dropped(sim: FlowSimulator) -> None:
    assert sim.emitted(unicast(RED1, RED2, ipv4_src=ip(RED2))) == []
    assert sim.emitted(unicast(RED1, RED2, ipv4_src=ip_to_int("10.0.0.250"))) == []
    assert sim.emitted(unicast(RED1, RED2)) != []


def test_dhcp_client_messages_reach_the_controller_only(sim: FlowSimulator) -> None:
    discover = broadcast(RED1, ipv4_src=0, udp_src=68, udp_dst=67)
    assert outputs(sim.emitted(discover)) == {(OFPP_CONTROLLER, VLAN_NONE)}
    renewal = unicast(RED1, RED2, udp_src=68, udp_dst=67)  # from its own address
    assert outputs(sim.emitted(renewal)) == {(OFPP_CONTROLLER, VLAN_NONE)}
    # Only DHCP may use 0.0.0.0.
    assert sim.emitted(broadcast(RED1, ipv4_src=0, udp_src=5000, udp_dst=67)) == []


def test_dhcp_of_a_port_without_address_or_on_a_network_without_dhcp_is_dropped() -> None:
    # red_open has no IP: nothing to offer, and nobody else may hear it either.
    no_dhcp = dataclasses.replace(RED, dhcp_enabled=False)
    snapshot = dataclasses.replace(fabric(), networks=(no_dhcp, GREEN, BLUE))
    for sim, port in (
        (FlowSimulator.of(compute_datapath(fabric(), view_a())), RED_OPEN),
        (FlowSimulator.of(compute_datapath(snapshot, view_a())), RED1),
    ):
        discover = ipv4_frame(OFPORT[port], RED1, BROADCAST_MAC, 0xFFFFFFFF, ipv4_src=0)
        discover.update(eth_src=mac(port), udp_src=68, udp_dst=67)
        assert sim.emitted(discover) == []


def test_dhcp_server_messages_from_a_vm_are_dropped(sim: FlowSimulator) -> None:
    assert sim.emitted(broadcast(RED1, udp_src=67, udp_dst=68)) == []
    assert sim.emitted(unicast(RED1, RED2, udp_src=67, udp_dst=68)) == []
    # A port without addresses may send anything, but not that.
    offer = ipv4_frame(OFPORT[RED_OPEN], RED1, mac(RED2), ip(RED2), udp_src=67, udp_dst=68)
    offer["eth_src"] = mac(RED_OPEN)
    assert sim.emitted(offer) == []
    assert sim.emitted({**offer, "udp_src": 5000}) != []


def test_other_ethertypes_are_dropped_for_ports_with_addresses(sim: FlowSimulator) -> None:
    ipv6 = {
        "in_port": OFPORT[RED1],
        "eth_src": mac(RED1),
        "eth_dst": mac(RED2),
        "eth_type": ETH_TYPE_IPV6,
    }
    assert sim.emitted(ipv6) == []
    # A port without addresses may send anything from its own MAC.
    from_open = ipv6 | {"in_port": OFPORT[RED_OPEN], "eth_src": mac(RED_OPEN)}
    assert outputs(sim.emitted(from_open)) == untagged(OFPORT[RED2])


def test_tagged_frame_from_a_vm_is_dropped(sim: FlowSimulator) -> None:
    assert sim.emitted(unicast(RED1, RED2, vlan_vid=VLAN_PRESENT | 100)) == []
    assert sim.emitted(unicast(RED1, RED2, vlan_vid=VLAN_PRESENT | 200)) == []


def test_frame_from_an_unbound_interface_is_dropped(sim: FlowSimulator) -> None:
    frame = ipv4_frame(STRAY, RED_UNBOUND, mac(RED1), ip(RED1))
    assert sim.emitted(frame) == []
    assert sim.emitted(broadcast(RED_UNBOUND, STRAY)) == []


# ---- ARP responder --------------------------------------------------------------------------


def test_arp_request_is_answered_by_the_switch_out_of_the_in_port(sim: FlowSimulator) -> None:
    (reply,) = sim.emitted(arp_request(RED1, "10.0.0.7"))
    assert reply.port == OFPORT[RED1]
    assert reply.get("eth_dst") == mac(RED1)
    assert reply.get("eth_src") == mac(RED2)
    assert reply.get("eth_type") == ETH_TYPE_ARP
    assert reply.get("arp_op") == ARP_REPLY
    assert reply.get("arp_sha") == mac(RED2)
    assert reply.get("arp_spa") == ip_to_int("10.0.0.7")
    assert reply.get("arp_tha") == mac(RED1)
    assert reply.get("arp_tpa") == ip(RED1)
    assert reply.get("vlan_vid") == VLAN_NONE


def test_arp_answers_cover_remote_and_pending_ports_but_not_unbound_ones(
    sim: FlowSimulator,
) -> None:
    (reply,) = sim.emitted(arp_request(RED1, "10.0.0.20"))  # red_b, on host B
    assert (reply.port, reply.get("arp_sha")) == (OFPORT[RED1], mac(RED_B))
    (reply,) = sim.emitted(arp_request(RED1, "10.0.0.9"))  # red_pending, bound here
    assert reply.get("arp_sha") == mac(RED_PENDING)
    # Nobody owns 10.0.0.99 (its port is unbound): the request is flooded, not answered.
    out = sim.emitted(arp_request(RED1, "10.0.0.99"))
    assert outputs(out) == untagged(OFPORT[RED2], OFPORT[RED_OPEN]) | {(UPLINK, VLAN_PRESENT | 100)}
    assert all(e.get("arp_op") == ARP_REQUEST for e in out)


def test_arp_answer_comes_from_the_askers_own_network(sim: FlowSimulator) -> None:
    # 10.0.0.3 is red1 in red and green1 in green.
    (reply,) = sim.emitted(arp_request(GREEN2, "10.0.0.3"))
    assert (reply.port, reply.get("arp_sha")) == (OFPORT[GREEN2], mac(GREEN1))
    (reply,) = sim.emitted(arp_request(RED2, "10.0.0.3"))
    assert (reply.port, reply.get("arp_sha")) == (OFPORT[RED2], mac(RED1))


def test_gratuitous_arp_is_not_answered_but_passed_on(sim: FlowSimulator) -> None:
    out = sim.emitted(arp_request(RED1, "10.0.0.3"))
    assert outputs(out) == untagged(OFPORT[RED2], OFPORT[RED_OPEN]) | {(UPLINK, VLAN_PRESENT | 100)}
    assert all(e.get("arp_op") == ARP_REQUEST and e.get("eth_src") == mac(RED1) for e in out)


def test_arp_from_remote_is_not_answered_here(sim: FlowSimulator) -> None:
    request = arp_request(RED1, "10.0.0.7") | {"in_port": UPLINK, "vlan_vid": VLAN_PRESENT | 100}
    request |= {"eth_src": mac(RED_B), "arp_sha": mac(RED_B), "arp_spa": ip(RED_B)}
    out = sim.emitted(request)
    assert outputs(out) == untagged(OFPORT[RED1], OFPORT[RED2], OFPORT[RED_OPEN])
    assert all(e.get("arp_op") == ARP_REQUEST for e in out)


# ---- realization ----------------------------------------------------------------------------


def test_ports_bound_here_are_realized_only_with_an_ofport(config: DatapathConfig) -> None:
    assert config.realized_ports == {p.id for p in OFPORT}
    assert config.unrealized_ports == {RED_PENDING.id}


def test_a_port_realizes_when_its_interface_appears() -> None:
    config = compute_datapath(fabric(), view_a(**{"tap-red-pending": 30}))
    assert RED_PENDING.id in config.realized_ports
    assert config.unrealized_ports == frozenset()
    frame = ipv4_frame(30, RED_PENDING, mac(RED1), ip(RED1))
    assert outputs(simulate(config, frame)) == untagged(OFPORT[RED1])


def test_bound_port_of_an_unknown_network_is_unrealized() -> None:
    orphan = PortSpec("port-orphan", "net-gone", "02:00:00:00:09:01", (), HOST_A, "tap-red1")
    snapshot = dataclasses.replace(fabric(), ports=(*fabric().ports, orphan))
    config = compute_datapath(snapshot, view_a())
    assert "port-orphan" in config.unrealized_ports
    assert "port-orphan" not in config.realized_ports


def test_host_without_ports_only_drops() -> None:
    config = compute_datapath(fabric(), DatapathView(HOST_D, {"tap-x": 1}))
    assert config.groups == ()
    assert config.realized_ports == config.unrealized_ports == frozenset()
    assert all(not f.match.fields and f.priority == 0 for f in config.flows)
    assert simulate(config, broadcast(BLUE_B, 1, tunnel_id=5001)) == []


# ---- determinism and groups -------------------------------------------------------------------


def test_same_input_gives_equal_output(config: DatapathConfig) -> None:
    assert compute_datapath(fabric(), view_a()) == config


def test_order_of_the_snapshot_does_not_matter(config: DatapathConfig) -> None:
    rng = random.Random(7)
    snapshot = fabric()
    for _ in range(5):
        shuffled = {
            name: tuple(rng.sample(getattr(snapshot, name), len(getattr(snapshot, name))))
            for name in ("hosts", "networks", "ports")
        }
        ofports = list(view_a().ofports.items())
        rng.shuffle(ofports)
        again = compute_datapath(
            dataclasses.replace(snapshot, **shuffled), DatapathView(HOST_A, dict(ofports))
        )
        assert again == config


def test_flows_come_in_canonical_order(config: DatapathConfig) -> None:
    keys = [(f.table, -f.priority) for f in config.flows]
    assert keys == sorted(keys)
    assert [g.group_id for g in config.groups] == sorted(g.group_id for g in config.groups)


def _flood_group_ids(config: DatapathConfig, network: NetworkSpec) -> set[int]:
    return {
        action.group_id
        for flow in flows_matching(config, metadata=network_metadata(network))
        for action in flow.actions
        if isinstance(action, GroupAction)
    }


def test_group_ids_are_content_addressed(config: DatapathConfig) -> None:
    new_port = _port("red-new", RED, "02:00:00:00:01:0a", ("10.0.0.10",), HOST_A)
    grown = compute_datapath(
        dataclasses.replace(fabric(), ports=(*fabric().ports, new_port)),
        view_a(**{"tap-red-new": 40}),
    )
    red_before, red_after = _flood_group_ids(config, RED), _flood_group_ids(grown, RED)
    assert len(red_before) == 2 and len(red_after) == 2  # from local, from remote
    assert red_before.isdisjoint(red_after)
    # Everything else keeps its groups, and no group is left without a flow.
    for network in (GREEN, BLUE):
        assert _flood_group_ids(config, network) == _flood_group_ids(grown, network)
    referenced = set().union(*(_flood_group_ids(grown, n) for n in (RED, GREEN, BLUE)))
    assert {g.group_id for g in grown.groups} == referenced
    # And the new port is a member of red's local flood group.
    new_members = {
        b.actions[-1].port  # type: ignore[union-attr]
        for g in grown.groups
        if g.group_id in red_after
        for b in g.buckets
    }
    assert 40 in new_members


def test_group_ids_are_31_bit_and_non_zero(config: DatapathConfig) -> None:
    assert len(config.groups) == 6  # red, green, blue: from local + from remote
    for group in config.groups:
        assert 0 < group.group_id < 1 << 31
        assert group.type == "all"


def test_group_id_collisions_are_resolved_deterministically(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_hash = pipeline_groups.group_hash

    def colliding(content: pipeline_groups.GroupContent, salt: int) -> int:
        return 4242 if salt == 0 else real_hash(content, salt)

    monkeypatch.setattr(pipeline_groups, "group_hash", colliding)
    first = compute_datapath(fabric(), view_a())
    ids = [g.group_id for g in first.groups]
    assert len(set(ids)) == len(ids) == 6
    assert ids.count(4242) == 1
    assert compute_datapath(fabric(), view_a()) == first
    # Every flood still reaches the right ports through its re-hashed group.
    assert outputs(simulate(first, broadcast(RED1))) == untagged(OFPORT[RED2], OFPORT[RED_OPEN]) | {
        (UPLINK, VLAN_PRESENT | 100)
    }
    assert outputs(simulate(first, broadcast(BLUE1, TUNNEL_B, tunnel_id=5001))) == untagged(
        OFPORT[BLUE1], OFPORT[BLUE2]
    )


def test_arp_answers_carry_the_reply_actions(config: DatapathConfig) -> None:
    # The ARP responder inlines `arp_reply_actions` (a call per answer): the same actions.
    answers = [f for f in config.flows if f.table == TABLE_ARP_RESPONDER and f.actions]
    assert answers
    for flow in answers:
        owner_mac = flow.actions[1]
        target = flow.match.get("arp_tpa")
        assert isinstance(owner_mac, SetField) and target is not None
        assert flow.actions == arp_reply_actions(owner_mac.value, target.value)


def test_group_ids_hash_the_repr_of_the_content(config: DatapathConfig) -> None:
    # Group ids must not move between versions: `canonical` writes the usual bucket out
    # by hand and must stay the repr it replaced.
    contents = [pipeline_groups.GroupContent(g.type, g.buckets) for g in config.groups]
    contents += [
        pipeline_groups.GroupContent("all", ()),
        pipeline_groups.GroupContent("all", (Bucket((Output(1),)),)),
        pipeline_groups.GroupContent("select", (Bucket((Output(1, 5),), 3, 7), Bucket((), 1))),
        pipeline_groups.GroupContent(
            "indirect", (Bucket((PushVlan(), SetField("vlan_vid", 4097), Output(2))),)
        ),
        pipeline_groups.GroupContent("all", (Bucket((Output(1), Output(2))),)),
    ]
    for content in contents:
        assert content.canonical() == repr((content.type, content.buckets))


def test_zero_hash_is_never_a_group_id(monkeypatch: pytest.MonkeyPatch) -> None:
    real_hash = pipeline_groups.group_hash
    monkeypatch.setattr(
        pipeline_groups, "group_hash", lambda c, salt: 0 if salt == 0 else real_hash(c, salt)
    )
    config = compute_datapath(fabric(), view_a())
    assert all(g.group_id != 0 for g in config.groups)


# ---- the declared tables ----------------------------------------------------------------------


def test_every_flow_obeys_its_table_declaration(config: DatapathConfig) -> None:
    for flow in config.flows:
        check_flow(flow)


def test_every_forwarding_flow_is_scoped_to_one_network(config: DatapathConfig) -> None:
    for flow in config.flows:
        if flow.table in (TABLE_ARP_RESPONDER, TABLE_L2_FORWARD) and flow.match.fields:
            assert flow.match.get("metadata") is not None, flow


@pytest.mark.parametrize(
    ("flow", "reason"),
    [
        (Flow(TABLE_L2_FORWARD, 10, match(metadata=100, in_port=3)), "does not allow"),
        (Flow(TABLE_L2_FORWARD, 10, match(eth_dst=5), actions=(Output(3),)), "requires matching"),
        (Flow(TABLE_PORT_SECURITY, 10, match(in_port=3), goto_table=TABLE_CLASSIFY), "continue"),
        (Flow(TABLE_CLASSIFY, 10, match(in_port=3), goto_table=TABLE_L2_FORWARD + 1), "continue"),
        (Flow(TABLE_PORT_SECURITY, 10, match(in_port=3, ipv4_src=1)), "requires an exact eth_type"),
        (
            Flow(TABLE_PORT_SECURITY, 10, match(in_port=3, eth_type=ETH_TYPE_ARP, ipv4_src=1)),
            "requires an exact eth_type",
        ),
        (Flow(99, 10), "undeclared"),
    ],
)
def test_table_declaration_rejects_a_bad_flow(flow: Flow, reason: str) -> None:
    with pytest.raises(PipelineError, match=reason):
        check_flow(flow)


def test_a_checked_shape_with_another_prerequisite_value_is_checked_again() -> None:
    # The check remembers shapes (field names): the values prerequisites read are part
    # of what it remembers, so a known shape with a wrong eth_type is still refused.
    good = match(in_port=3, eth_type=ETH_TYPE_IPV4, ipv4_src=1)
    bad = match(in_port=3, eth_type=ETH_TYPE_ARP, ipv4_src=1)
    check_flows([Flow(TABLE_PORT_SECURITY, 10, good)] * 2)
    with pytest.raises(PipelineError, match="requires an exact eth_type"):
        check_flows([Flow(TABLE_PORT_SECURITY, 10, good), Flow(TABLE_PORT_SECURITY, 10, bad)])
    with pytest.raises(PipelineError, match="requires an exact eth_type"):
        check_flow(Flow(TABLE_PORT_SECURITY, 10, match(in_port=3, ipv4_src=1)))


def test_a_flow_pointing_to_a_group_not_given_is_refused() -> None:
    flood = Flow(TABLE_L2_FORWARD, 10, match(metadata=100), actions=(GroupAction(7),))
    check_flows([flood], group_ids={7})
    check_flows([flood])  # no group ids: not checked
    with pytest.raises(PipelineError, match="group that does not exist"):
        check_flows([flood], group_ids={8})


# ---- helpers and contradictions ---------------------------------------------------------------


def test_network_metadata_is_the_fabric_wide_identity() -> None:
    assert network_metadata(RED) == 100
    assert network_metadata(BLUE) == (1 << 24) | 5001
    with pytest.raises(PipelineError):
        network_metadata(dataclasses.replace(RED, segmentation_id=4095))
    with pytest.raises(PipelineError):
        network_metadata(dataclasses.replace(BLUE, segmentation_id=1 << 24))


def test_tunnel_interface_name() -> None:
    assert tunnel_interface_name("0A1B2C3D-4E5F-4000-8000-000000000001") == "vx0a1b2c3d4e"
    assert tunnel_interface_name(HOST_B) == "vxb000000000"
    assert len(tunnel_interface_name(HOST_B)) <= 15  # Linux IFNAMSIZ - 1
    with pytest.raises(ValueError):
        tunnel_interface_name("host-b")


def test_two_networks_on_one_segment_are_refused() -> None:
    twin = NetworkSpec("net-twin", "tenant-2", "twin", "vlan", 100)
    snapshot = dataclasses.replace(fabric(), networks=(*fabric().networks, twin))
    with pytest.raises(PipelineError, match="share one segment"):
        compute_datapath(snapshot, view_a())


def test_two_ports_with_one_address_in_a_network_are_refused() -> None:
    clash = _port("clash", RED, "02:00:00:00:01:0b", ("10.0.0.7",), HOST_B)
    snapshot = dataclasses.replace(fabric(), ports=(*fabric().ports, clash))
    with pytest.raises(PipelineError, match="two flows for one match"):
        compute_datapath(snapshot, view_a())


# ---- scale ------------------------------------------------------------------------------------


def test_two_thousand_ports_over_fifty_networks() -> None:
    hosts = tuple(
        _host(f"{i:08x}-0000-4000-8000-000000000000", f"h{i}", f"192.0.2.{i + 1}", "uplink0")
        for i in range(10)
    )
    networks = tuple(
        NetworkSpec(f"net-{n}", f"tenant-{n % 7}", f"n{n}", "vlan" if n % 2 else "vxlan", 100 + n)
        for n in range(50)
    )
    ports = tuple(
        PortSpec(
            id=f"port-{p}",
            network_id=f"net-{p % 50}",
            mac=f"02:00:00:00:{p >> 8:02x}:{p & 0xFF:02x}",
            ips=(f"10.{p % 50}.{p // 250}.{p % 250 + 1}",) if p % 5 else (),
            host_id=hosts[(p // 50) % 10].id,
            interface=f"tap{p}",
        )
        for p in range(2000)
    )
    here = hosts[0].id
    ofports = {p.interface: 100 + int(p.id[5:]) for p in ports if p.host_id == here}
    ofports["uplink0"] = 1
    ofports.update({tunnel_interface_name(h.id): 2 + i for i, h in enumerate(hosts[1:])})
    config = compute_datapath(Snapshot(1, hosts, networks, ports), DatapathView(here, ofports))
    assert len(config.realized_ports) == 200
    assert config.unrealized_ports == frozenset()
    classified = {
        f.match.get("in_port").value  # type: ignore[union-attr]
        for f in config.flows
        if f.table == TABLE_CLASSIFY and f.match.get("eth_src") is not None
    }
    assert classified == set(ofports.values()) - set(range(1, 11))
    # Every network has ports here and on the nine other hosts: two flood groups each.
    assert len(config.groups) == 2 * 50
    sim = FlowSimulator.of(config)
    by_id = {p.id: p for p in ports}
    # Network 12 is a VXLAN (VNI 112): port 12 and port 512 are here, port 62 on host 1.
    src, local_dst, remote_dst = by_id["port-12"], by_id["port-512"], by_id["port-62"]
    assert outputs(sim.emitted(ipv4_frame(112, src, mac(local_dst), ip(local_dst)))) == untagged(
        612
    )
    out = sim.emitted(ipv4_frame(112, src, mac(remote_dst), ip(remote_dst)))
    assert {(e.port, e.get("tunnel_id")) for e in out} == {(2, 112)}
