"""IPv6 in the pipeline: source guard, Neighbor Discovery answered by flows, RA guard, DAD.

The fabric seen from host A (one VXLAN network "six", and another tenant's network
"twin" on the same prefix):

    six:  p1 (port 3: 10.6.0.1 + fd00:6::1), p2 (port 4: fd00:6::2 only),
          open (port 5, no addresses), p4 (port 7: 10.6.0.4 only, so no IPv6 at all),
          pb on host B (fd00:6::b); tunnel to B is port 10
    twin: q1 (port 6: fd00:6::2, p2's address)
"""

from __future__ import annotations

import pytest

from controller.core.flows import (
    ARP_REQUEST,
    BROADCAST_MAC,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ICMPV6_NEIGHBOR_ADVERTISEMENT,
    ICMPV6_NEIGHBOR_SOLICITATION,
    ICMPV6_REDIRECT,
    ICMPV6_ROUTER_ADVERTISEMENT,
    ICMPV6_ROUTER_SOLICITATION,
    IP_PROTO_ICMPV6,
    IP_PROTO_UDP,
    ip_to_int,
    ipv6_to_int,
    link_local_ipv6,
    mac_to_int,
)
from controller.core.model import DatapathView, HostSpec, NetworkSpec, PortSpec, Snapshot
from controller.core.pipeline import compute_datapath
from controller.core.pipeline.context import tunnel_interface_name
from controller.core.pipeline.nd_responder import ND_ADVERT_FLAGS
from tests.support.flowsim import Emitted, FlowSimulator

pytestmark = pytest.mark.unit

HOST_A = "a0000000-0000-4000-8000-00000000000a"
HOST_B = "b0000000-0000-4000-8000-00000000000b"
TUNNEL_B = 10
SIX = NetworkSpec("net-six", "tenant-1", "six", "vxlan", 7001)
TWIN = NetworkSpec("net-twin", "tenant-2", "twin", "vxlan", 7002)


def _port(name: str, net: NetworkSpec, mac: str, ips: tuple[str, ...], host: str) -> PortSpec:
    return PortSpec(f"port-{name}", net.id, mac, ips, host, f"tap-{name}")


P1 = _port("p1", SIX, "02:00:00:00:06:01", ("10.6.0.1", "fd00:6::1"), HOST_A)
P2 = _port("p2", SIX, "02:00:00:00:06:02", ("fd00:6::2",), HOST_A)
OPEN = _port("open", SIX, "02:00:00:00:06:05", (), HOST_A)
PB = _port("pb", SIX, "02:00:00:00:06:0b", ("fd00:6::b",), HOST_B)
P4 = _port("p4", SIX, "02:00:00:00:06:04", ("10.6.0.4",), HOST_A)
Q1 = _port("q1", TWIN, "02:00:00:00:07:01", ("fd00:6::2",), HOST_A)
OFPORT = {P1: 3, P2: 4, OPEN: 5, Q1: 6, P4: 7}
OTHER_MAC = mac_to_int("02:00:00:00:99:99")


@pytest.fixture(scope="module")
def sim() -> FlowSimulator:
    hosts = (
        HostSpec(HOST_A, "a", "unix:/run/a/db.sock", "192.0.2.1"),
        HostSpec(HOST_B, "b", "unix:/run/b/db.sock", "192.0.2.2"),
    )
    snapshot = Snapshot(1, hosts, (SIX, TWIN), (P1, P2, OPEN, PB, Q1, P4))
    ofports = {f"tap-{port.id[5:]}": number for port, number in OFPORT.items()}
    ofports[tunnel_interface_name(HOST_B)] = TUNNEL_B
    return FlowSimulator.of(compute_datapath(snapshot, DatapathView(HOST_A, ofports)))


def mac(port: PortSpec) -> int:
    return mac_to_int(port.mac)


def v6(text: str) -> int:
    return ipv6_to_int(text)


def ll(port: PortSpec) -> int:
    return link_local_ipv6(mac(port))


def solicited_node_mac(target: int) -> int:
    return 0x3333FF000000 | (target & 0xFFFFFF)


def icmpv6(src: PortSpec, icmpv6_type: int, ipv6_src: int, ipv6_dst: int, **fields: int) -> dict:
    return {
        "in_port": OFPORT[src],
        "eth_src": mac(src),
        "eth_dst": 0x333300000001,
        "eth_type": ETH_TYPE_IPV6,
        "ip_proto": IP_PROTO_ICMPV6,
        "ipv6_src": ipv6_src,
        "ipv6_dst": ipv6_dst,
        "icmpv6_type": icmpv6_type,
        **fields,
    }


def solicitation(src: PortSpec, target: int, *, ipv6_src: int | None = None, **fields: int) -> dict:
    frame = icmpv6(
        src,
        ICMPV6_NEIGHBOR_SOLICITATION,
        v6(src.ips[-1]) if ipv6_src is None else ipv6_src,
        v6("ff02::1:ff00:0") | (target & 0xFFFFFF),
        ipv6_nd_target=target,
        ipv6_nd_sll=mac(src),
    )
    frame["eth_dst"] = solicited_node_mac(target)
    return frame | fields


def advertisement(src: PortSpec, target: int, **fields: int) -> dict:
    frame = icmpv6(
        src,
        ICMPV6_NEIGHBOR_ADVERTISEMENT,
        v6(src.ips[-1]),
        v6("ff02::1"),
        ipv6_nd_target=target,
        ipv6_nd_tll=mac(src),
    )
    return frame | fields


def ports(emitted: list[Emitted]) -> set[int]:
    return {e.port for e in emitted}


FLOODED_FROM_P1 = {OFPORT[P2], OFPORT[OPEN], OFPORT[P4], TUNNEL_B}


# ---- Neighbor Solicitations answered by flows -------------------------------------------


@pytest.mark.parametrize(
    ("owner", "target"),
    [(P2, v6("fd00:6::2")), (P2, link_local_ipv6(mac_to_int(P2.mac))), (PB, v6("fd00:6::b"))],
    ids=["local", "link-local", "remote"],
)
def test_solicitation_for_a_known_address_is_answered_by_the_switch(
    sim: FlowSimulator, owner: PortSpec, target: int
) -> None:
    (advert,) = sim.emitted(solicitation(P1, target))
    assert advert.port == OFPORT[P1]
    assert advert.get("eth_src") == mac(owner)
    assert advert.get("eth_dst") == mac(P1)
    assert advert.get("ipv6_src") == target
    assert advert.get("ipv6_dst") == v6("fd00:6::1")
    assert advert.get("icmpv6_type") == ICMPV6_NEIGHBOR_ADVERTISEMENT
    assert advert.get("ipv6_nd_target") == target
    assert advert.get("nd_reserved") == ND_ADVERT_FLAGS
    assert advert.get("nd_options_type") == 2  # target link-layer address
    assert advert.get("ipv6_nd_tll") == mac(owner)


def test_solicitation_from_a_link_local_source_is_answered_to_it(sim: FlowSimulator) -> None:
    (advert,) = sim.emitted(solicitation(P1, v6("fd00:6::2"), ipv6_src=ll(P1)))
    assert advert.get("ipv6_dst") == ll(P1)


def test_solicitation_for_an_unknown_address_floods_in_its_network_only(
    sim: FlowSimulator,
) -> None:
    emitted = sim.emitted(solicitation(P1, v6("fd00:6::77")))
    assert ports(emitted) == FLOODED_FROM_P1
    assert all(e.get("icmpv6_type") == ICMPV6_NEIGHBOR_SOLICITATION for e in emitted)


def test_identical_prefixes_of_two_tenants_stay_apart(sim: FlowSimulator) -> None:
    # q1 asks for fd00:6::1, which exists only in the other tenant's network: no answer,
    # and the solicitation reaches nobody of "six".
    assert sim.emitted(solicitation(Q1, v6("fd00:6::1"))) == []
    # p1 asks for fd00:6::2: p2 answers (its network), never q1 (same address, other tenant).
    (advert,) = sim.emitted(solicitation(P1, v6("fd00:6::2")))
    assert advert.get("eth_src") == mac(P2)
    ping = icmpv6(P1, 128, v6("fd00:6::1"), v6("fd00:6::2"), eth_dst=mac(Q1))
    assert OFPORT[Q1] not in ports(sim.emitted(ping))


# ---- source guard --------------------------------------------------------------------------


def test_ipv6_only_from_the_ports_own_addresses(sim: FlowSimulator) -> None:
    to_p2 = {"eth_dst": mac(P2)}
    assert ports(sim.emitted(icmpv6(P1, 128, v6("fd00:6::1"), v6("fd00:6::2"), **to_p2))) == {
        OFPORT[P2]
    }
    assert ports(sim.emitted(icmpv6(P1, 128, ll(P1), ll(P2), **to_p2))) == {OFPORT[P2]}
    # Another port's address, one of nobody's, another MAC's link-local: dropped.
    for spoofed in (v6("fd00:6::2"), v6("fd00:6::99"), ll(P2), 0):
        assert sim.emitted(icmpv6(P1, 128, spoofed, v6("fd00:6::2"), **to_p2)) == [], spoofed


def test_ipv6_only_port_sends_no_ipv4(sim: FlowSimulator) -> None:
    frame = {
        "in_port": OFPORT[P2],
        "eth_src": mac(P2),
        "eth_dst": mac(P1),
        "eth_type": ETH_TYPE_IPV4,
        "ipv4_src": ip_to_int("10.6.0.2"),
        "ipv4_dst": ip_to_int("10.6.0.1"),
        "ip_proto": IP_PROTO_UDP,
    }
    assert sim.emitted(frame) == []


def test_solicitation_must_carry_the_ports_own_link_layer_address(sim: FlowSimulator) -> None:
    target = v6("fd00:6::77")  # nobody's: a passed solicitation floods
    assert sim.emitted(solicitation(P1, target, ipv6_nd_sll=OTHER_MAC)) == []
    assert ports(sim.emitted(solicitation(P1, target, ipv6_nd_sll=0))) == FLOODED_FROM_P1
    assert sim.emitted(solicitation(P1, target, ipv6_src=v6("fd00:6::2"))) == []


# ---- Neighbor Advertisements -----------------------------------------------------------------


def test_advertisement_of_the_ports_own_address_is_delivered(sim: FlowSimulator) -> None:
    for target in (v6("fd00:6::1"), ll(P1)):
        assert ports(sim.emitted(advertisement(P1, target))) == FLOODED_FROM_P1
    # Without a target link-layer option too.
    assert ports(sim.emitted(advertisement(P1, ll(P1), ipv6_nd_tll=0))) == FLOODED_FROM_P1


def test_forged_advertisements_are_dropped(sim: FlowSimulator) -> None:
    assert sim.emitted(advertisement(P1, v6("fd00:6::2"))) == []  # p2's address
    assert sim.emitted(advertisement(P1, v6("fd00:6::b"))) == []  # a remote port's
    assert sim.emitted(advertisement(P1, v6("fd00:6::77"))) == []  # nobody's
    assert sim.emitted(advertisement(P1, v6("fd00:6::1"), ipv6_nd_tll=OTHER_MAC)) == []
    assert sim.emitted(advertisement(P1, v6("fd00:6::1"), ipv6_src=v6("fd00:6::2"))) == []


# ---- RA guard ------------------------------------------------------------------------------


@pytest.mark.parametrize("router_only", [ICMPV6_ROUTER_ADVERTISEMENT, ICMPV6_REDIRECT])
def test_router_messages_from_a_vm_are_dropped(sim: FlowSimulator, router_only: int) -> None:
    assert sim.emitted(icmpv6(P1, router_only, ll(P1), v6("ff02::1"))) == []
    # A port without addresses sends anything (as for IPv4), RAs included.
    from_open = icmpv6(OPEN, router_only, ll(OPEN), v6("ff02::1"))
    assert ports(sim.emitted(from_open)) == {OFPORT[P1], OFPORT[P2], OFPORT[P4], TUNNEL_B}


def test_router_solicitation_from_a_vm_is_delivered(sim: FlowSimulator) -> None:
    rs = icmpv6(P1, ICMPV6_ROUTER_SOLICITATION, ll(P1), v6("ff02::2"))
    assert ports(sim.emitted(rs)) == FLOODED_FROM_P1


# ---- Duplicate Address Detection and ARP probes ----------------------------------------------


@pytest.mark.parametrize("target", [v6("fd00:6::1"), link_local_ipv6(mac_to_int(P1.mac))])
def test_dad_probe_for_an_own_address_reaches_the_network_unanswered(
    sim: FlowSimulator, target: int
) -> None:
    dad = solicitation(P1, target, ipv6_src=0, ipv6_nd_sll=0)
    emitted = sim.emitted(dad)
    assert ports(emitted) == FLOODED_FROM_P1
    assert all(e.get("icmpv6_type") == ICMPV6_NEIGHBOR_SOLICITATION for e in emitted)


def test_dad_probe_for_another_ports_address_or_with_a_link_layer_option_is_dropped(
    sim: FlowSimulator,
) -> None:
    # Probing p2's address would make p2 think its own address is a duplicate.
    assert sim.emitted(solicitation(P1, v6("fd00:6::2"), ipv6_src=0, ipv6_nd_sll=0)) == []
    assert sim.emitted(solicitation(P1, v6("fd00:6::1"), ipv6_src=0)) == []  # with SLL


def test_arp_probe_from_zero_for_an_own_address_floods_unanswered(sim: FlowSimulator) -> None:
    probe = {
        "in_port": OFPORT[P1],
        "eth_src": mac(P1),
        "eth_dst": BROADCAST_MAC,
        "eth_type": ETH_TYPE_ARP,
        "arp_op": ARP_REQUEST,
        "arp_sha": mac(P1),
        "arp_spa": 0,
        "arp_tpa": ip_to_int("10.6.0.1"),
    }
    emitted = sim.emitted(probe)
    assert ports(emitted) == FLOODED_FROM_P1
    assert all(e.get("arp_op") == ARP_REQUEST for e in emitted)
    # A probe for an address that is not the port's own: dropped.
    assert sim.emitted(probe | {"arp_tpa": ip_to_int("10.6.0.2")}) == []


def test_a_port_with_ipv4_addresses_only_sends_no_ipv6_and_is_not_answered_for(
    sim: FlowSimulator,
) -> None:
    # Not even from its link-local address: a port gets IPv6 with an IPv6 address.
    to_p1 = {"eth_dst": mac(P1)}
    assert sim.emitted(icmpv6(P4, 128, ll(P4), ll(P1), **to_p1)) == []
    assert sim.emitted(solicitation(P4, v6("fd00:6::1"), ipv6_src=ll(P4))) == []
    # Nobody gets an answer for its link-local address from the switch: the
    # solicitation floods (and p4 drops IPv6 anyway).
    emitted = sim.emitted(solicitation(P1, ll(P4)))
    assert all(e.get("icmpv6_type") == ICMPV6_NEIGHBOR_SOLICITATION for e in emitted)
