"""The lab carries real packets: hosts wired by hand with ovs-vsctl/ovs-ofctl, no controller.

These tests prove the harness (trunk, underlay, VXLAN, captures, raw frames),
not the product: every later end-to-end test stands on them.
"""

from __future__ import annotations

import pytest

from lab.hosts import Lab, SimHost, SimVM, build_arp_frame

pytestmark = pytest.mark.e2e


def _trunked_hosts(lab: Lab) -> tuple[SimHost, SimHost]:
    """Hosts h1 and h2 on the trunk only, each br-int a plain learning switch (NORMAL)
    with the host's trunk on it."""
    hosts = lab.add_host("h1", tunnel_ip=None), lab.add_host("h2", tunnel_ip=None)
    for host in hosts:
        host.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev")
        host.vsctl("add-port", "br-int", "trunk0")
    return hosts


def _plug(vm: SimVM, *settings: str) -> None:
    vm.host.vsctl("add-port", "br-int", vm.host_interface, *settings)


def test_vlan_trunk_joins_access_ports_and_keeps_vlans_apart(lab: Lab) -> None:
    h1, h2 = _trunked_hosts(lab)
    a = h1.add_vm("a", mac="02:00:00:00:01:01", ip="10.0.0.1")
    b = h2.add_vm("b", mac="02:00:00:00:01:02", ip="10.0.0.2")
    c = h2.add_vm("c", mac="02:00:00:00:01:03", ip="10.0.0.3")
    _plug(a, "tag=100")
    _plug(b, "tag=100")
    _plug(c, "tag=200")
    on_trunk = h2.start_tcpdump("trunk0", "icmp")
    at_b = b.start_tcpdump("icmp")
    at_c = c.start_tcpdump()  # anything at all

    assert a.ping("10.0.0.2")
    assert not a.ping("10.0.0.3", count=2, timeout=2)

    trunk_lines = on_trunk.stop()
    assert trunk_lines and all("vlan 100" in line for line in trunk_lines), trunk_lines
    assert any("10.0.0.1 > 10.0.0.2: ICMP echo request" in line for line in at_b.stop())
    # a's ARP broadcasts for c's address flooded VLAN 100 only.
    assert at_c.stop() == []


def test_vxlan_over_the_underlay_carries_vm_traffic_by_tunnel_id(lab: Lab) -> None:
    h1 = lab.add_host("h1", tunnel_ip=lab.next_tunnel_ip(), uplink=False)
    h2 = lab.add_host("h2", tunnel_ip=lab.next_tunnel_ip(), uplink=False)
    a = h1.add_vm("a", mac="02:00:00:00:02:01", ip="10.0.0.1")
    b = h2.add_vm("b", mac="02:00:00:00:02:02", ip="10.0.0.2")
    for host, vm, peer in ((h1, a, h2), (h2, b, h1)):
        host.vsctl(
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail_mode=secure",
            "--",
            "add-port",
            "br-int",
            vm.host_interface,
            "--",
            "set",
            "interface",
            vm.host_interface,
            "ofport_request=1",
            "--",
            "add-port",
            "br-int",
            "vx0",
            "--",
            "set",
            "interface",
            "vx0",
            "type=vxlan",
            f"options:remote_ip={peer.tunnel_ip}",
            "options:key=flow",
            "ofport_request=2",
        )
        host.ofctl(
            "--bundle",
            "add-flows",
            "-",
            input=(
                "table=0,in_port=1,actions=set_field:5005->tun_id,output:2\n"
                "table=0,in_port=2,tun_id=5005,actions=output:1\n"
            ),
        )
    on_underlay = h2.start_tcpdump("ul0", "udp port 4789")

    # The first packets may only teach OVS the peer's underlay MAC.
    assert a.wait_for_ping("10.0.0.2", timeout=10)
    assert a.ping("10.0.0.2")
    assert any("vni 5005" in line for line in on_underlay.stop())

    # Traffic really rides on the tunnel id: h2 now expects another one.
    h2.ofctl("del-flows", "br-int")
    h2.ofctl(
        "add-flows",
        "br-int",
        "-",
        input=(
            "table=0,in_port=1,actions=set_field:6006->tun_id,output:2\n"
            "table=0,in_port=2,tun_id=6006,actions=output:1\n"
        ),
    )
    at_b = b.start_tcpdump("icmp")
    assert not a.ping("10.0.0.2", count=2, timeout=2)
    assert at_b.stop() == []


def test_raw_tagged_frames_reach_their_vlan_only_and_captures_show_it(lab: Lab) -> None:
    h1, h2 = _trunked_hosts(lab)
    sender = h1.add_vm("s", mac="02:00:00:00:03:01", ip="10.0.0.1")
    in_100 = h2.add_vm("v100", mac="02:00:00:00:03:02", ip="10.0.0.2")
    in_200 = h2.add_vm("v200", mac="02:00:00:00:03:03", ip="10.0.0.3")
    _plug(sender)  # no tag: a trunk port, so the sender chooses the VLAN
    _plug(in_100, "tag=100")
    _plug(in_200, "tag=200")

    def who_has(target_ip: str, vlan: int) -> bytes:
        return build_arp_frame(
            op="request",
            sender_mac=sender.mac,
            sender_ip="10.0.0.1",
            target_ip=target_ip,
            vlan=vlan,
        )

    on_trunk = h2.start_tcpdump("trunk0", "arp or vlan")
    at_100 = in_100.start_tcpdump("arp")
    at_200 = in_200.start_tcpdump("arp")
    sender.send_raw(who_has("10.0.0.9", vlan=100))

    assert at_100.wait_for_packets(1)
    assert on_trunk.wait_for_packets(1)
    (arrived,) = at_100.lines()
    assert "Request who-has 10.0.0.9 tell 10.0.0.1" in arrived
    assert "vlan" not in arrived, "an access port delivers untagged"
    (carried,) = on_trunk.lines()
    assert "vlan 100" in carried and "who-has 10.0.0.9" in carried
    # OVS flooded VLAN 100 on h2 in one pass: VLAN 200 was not part of it.
    assert at_200.lines() == []

    # And the VLAN 200 capture does work: a frame for VLAN 200 shows up there only.
    sender.send_raw(who_has("10.0.0.8", vlan=200))
    assert at_200.wait_for_packets(1)
    assert "who-has 10.0.0.8" in at_200.stop()[0]
    assert len(at_100.stop()) == 1
