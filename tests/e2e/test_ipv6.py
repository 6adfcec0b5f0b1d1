"""IPv6 between namespaced VMs on real switches: reachability over VLAN and VXLAN, the
switch answering Neighbor Solicitations, DAD, the source/NA/RA guards, and two tenants
on one prefix.

One lab for the module: hosts h1 and h2; tenant red with a VLAN network (fd00:10::/64:
r1 on h1, r2 on h2) and a VXLAN one (fd00:20::/64: r3 on h1, r4 on h2); tenant blue with
a VXLAN network on the same prefix, whose VMs hold red's addresses (b1 on h2 has r3's
fd00:20::1, b2 on h1 has r4's fd00:20::2). Addresses are added in the VMs once their
ports are ACTIVE (IPv6 turned on in their eth0), with Duplicate Address Detection on
(the kernel's default).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from controller.core.flows import int_to_ipv6, link_local_ipv6, mac_to_int
from lab.hosts import SimVM, require_lab_tools
from tests.support.eventually import eventually
from tests.support.fabric import Fabric, lab_and_service
from tests.support.ipv6_frames import (
    echo_request,
    neighbor_advertisement,
    router_advertisement,
)

pytestmark = pytest.mark.e2e

# VM -> (host, network, address)
PLAN = {
    "r1": ("h1", "red-vlan", "fd00:10::1"),
    "r2": ("h2", "red-vlan", "fd00:10::2"),
    "r3": ("h1", "red-vx", "fd00:20::1"),
    "r4": ("h2", "red-vx", "fd00:20::2"),
    "b1": ("h2", "blue-vx", "fd00:20::1"),
    "b2": ("h1", "blue-vx", "fd00:20::2"),
}


@dataclass
class Ipv6Lab:
    fabric: Fabric
    vms: dict[str, SimVM] = field(default_factory=dict)
    dad_seen_by_r2: list[str] = field(default_factory=list)

    def link_local(self, name: str) -> str:
        return int_to_ipv6(link_local_ipv6(mac_to_int(self.vms[name].mac)))


def _addresses(vm: SimVM) -> list[dict[str, object]]:
    shown = json.loads(vm.run("ip", "-6", "-j", "addr", "show", "dev", "eth0").stdout)
    found: list[dict[str, object]] = shown[0]["addr_info"] if shown else []
    return found


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ipv6Lab]:
    require_lab_tools()
    workdir = tmp_path_factory.mktemp("ipv6")
    with lab_and_service(workdir / "service") as fabric:
        yield _build(fabric)


def _build(fabric: Fabric) -> Ipv6Lab:
    fabric.add_host("h1")
    fabric.add_host("h2")
    client = fabric.client
    red = client.create("tenants", name="red")["id"]
    blue = client.create("tenants", name="blue")["id"]
    networks = {
        name: fabric.network(tenant, name, kind, None, ipv6_cidr=prefix)
        for name, tenant, kind, prefix in (
            ("red-vlan", red, "vlan", "fd00:10::/64"),
            ("red-vx", red, "vxlan", "fd00:20::/64"),
            ("blue-vx", blue, "vxlan", "fd00:20::/64"),
        )
    }
    six = Ipv6Lab(fabric)
    for name, (host, network, address) in PLAN.items():
        port = client.create("ports", network_id=networks[network], name=name, ips=[address])
        assert port["ips"] == [address]
        six.vms[name] = fabric.plug_vm(host, name, port, ip=None)
    fabric.wait_active(*six.vms)
    # Addresses come up through the flows now: r2 listens for r1's DAD probe.
    capture = six.vms["r2"].start_tcpdump("icmp6 and src ::")
    try:
        for name, (_host, _network, address) in PLAN.items():
            vm = six.vms[name]
            # Lab namespaces start with IPv6 off (lab.netns.create_netns): on for eth0,
            # which now forms its link-local address (with DAD) too.
            vm.run("sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=0")
            vm.run("ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0")
        for name, vm in six.vms.items():
            eventually(
                lambda vm=vm: not any(a.get("tentative") for a in _addresses(vm)),
                timeout=15,
                what=f"{name}'s addresses to finish DAD",
            )
        eventually(
            lambda: any("who has fd00:10::1" in line for line in capture.lines()),
            timeout=5,
            what="r1's DAD probe at r2",
        )
    finally:
        six.dad_seen_by_r2 = capture.stop()
    return six


def test_addresses_pass_dad_and_the_probes_reach_the_network(six: Ipv6Lab) -> None:
    for name, vm in six.vms.items():
        flags = [(a["local"], a.get("dadfailed", False)) for a in _addresses(vm)]
        assert (PLAN[name][2], False) in flags, (name, flags)
        assert not any(failed for _address, failed in flags), (name, flags)
    # r1's probe for its own address crossed the VLAN trunk to r2 (not answered by the
    # switch, which would have made r1 give the address up).
    probes = [line for line in six.dad_seen_by_r2 if "who has fd00:10::1" in line]
    assert probes and all(six.vms["r1"].mac in line for line in probes), six.dad_seen_by_r2


def test_vms_reach_each_other_over_vlan_and_vxlan(six: Ipv6Lab) -> None:
    vms = six.vms
    capture = vms["r2"].start_tcpdump("icmp6")
    try:
        assert vms["r1"].wait_for_ping("fd00:10::2"), "VLAN h1 -> h2"
        assert vms["r1"].ping(f"{six.link_local('r2')}%eth0"), "VLAN link-local"
    finally:
        seen_by_r2 = capture.stop()
    assert vms["r3"].wait_for_ping("fd00:20::2"), "VXLAN h1 -> h2"
    assert vms["b1"].wait_for_ping("fd00:20::2"), "blue VXLAN h2 -> h1"
    # r1 learnt r2's MAC from the switch: r2 never saw a solicitation for its address.
    neighbour = vms["r1"].run("ip", "-6", "neigh", "show", "fd00:10::2").stdout
    assert vms["r2"].mac in neighbour, neighbour
    assert not [line for line in seen_by_r2 if "who has fd00:10::2" in line], seen_by_r2


def test_spoofed_source_forged_advertisement_and_router_advertisement_are_not_delivered(
    six: Ipv6Lab,
) -> None:
    r1, r2 = six.vms["r1"], six.vms["r2"]
    r1_ll = six.link_local("r1")
    capture = r2.start_tcpdump("icmp6 and ether src " + r1.mac)
    try:
        forged = {
            "spoofed source": echo_request(
                src_mac=r1.mac, dst_mac=r2.mac, src="fd00:10::99", dst="fd00:10::2", ident=7
            ),
            "forged NA": neighbor_advertisement(
                src_mac=r1.mac, src=r1_ll, target="fd00:10::2", lladdr=r1.mac
            ),
            "RA": router_advertisement(src_mac=r1.mac, src=r1_ll, prefix="fd00:99::/64"),
        }
        for frame in forged.values():
            r1.send_raw(frame, count=2)
        # The same kinds of frame, legitimate, sent after the forged ones: once these
        # arrive, the forged ones would have too.
        r1.send_raw(
            echo_request(
                src_mac=r1.mac, dst_mac=r2.mac, src="fd00:10::1", dst="fd00:10::2", ident=8
            )
        )
        r1.send_raw(
            neighbor_advertisement(src_mac=r1.mac, src=r1_ll, target="fd00:10::1", lladdr=r1.mac)
        )
        eventually(
            lambda: any("tgt is fd00:10::1" in line for line in capture.lines()),
            timeout=10,
            what="r1's own advertisement at r2",
        )
    finally:
        lines = capture.stop()
    assert any("fd00:10::1 > fd00:10::2" in line and "echo request" in line for line in lines)
    assert not [line for line in lines if "fd00:10::99" in line], lines
    assert not [line for line in lines if "tgt is fd00:10::2" in line], lines
    assert not [line for line in lines if "router advertisement" in line], lines
    # And nothing of it took hold in r2: no address from the RA's prefix, no default
    # route, r1's MAC not taken for r2's own address.
    assert "fd00:99" not in r2.run("ip", "-6", "addr").stdout
    assert "default" not in r2.run("ip", "-6", "route").stdout


def test_two_tenants_on_one_prefix_stay_apart(six: Ipv6Lab) -> None:
    vms = six.vms
    # r3 (red) pings fd00:20::2: r4 answers; b2 (blue), with the same address on the
    # very host of r3, hears nothing of it. Then b1 (blue) pings b2: r4 hears nothing.
    capture_b2 = vms["b2"].start_tcpdump("icmp6")
    try:
        assert vms["r3"].ping("fd00:20::2")
    finally:
        seen_by_b2 = capture_b2.stop()
    assert not [line for line in seen_by_b2 if vms["r3"].mac in line], seen_by_b2
    capture_r4 = vms["r4"].start_tcpdump("icmp6")
    try:
        assert vms["b1"].ping("fd00:20::2")
    finally:
        seen_by_r4 = capture_r4.stop()
    assert not [line for line in seen_by_r4 if vms["b1"].mac in line], seen_by_r4
