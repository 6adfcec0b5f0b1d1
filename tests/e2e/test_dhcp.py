"""DHCPv4 from the address plan and the network MTU, with a real DHCP client (issue 14).

Two hosts; tenant t has a VLAN network (DNS servers given) and a VXLAN network
(default MTU: the underlay's 1500 minus 50). VMs are namespaces whose eth0 starts
with no address and MTU 1500; busybox `udhcpc` configures them from what the
service answers (address, mask, gateway, MTU, DNS). A rogue DHCP server (busybox
`udhcpd`) in another VM of the VLAN network is never heard, nor is a DHCP offer
forged by that VM.
"""

from __future__ import annotations

import ipaddress
import json
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.core.probes import Endpoints, udp_frame
from lab.hosts import SimVM
from lab.netns import in_netns
from tests.support.dhcp_client import DhcpResult, run_udhcpc
from tests.support.fabric import Fabric, lab_and_service

pytestmark = pytest.mark.e2e

VLAN_CIDR, VLAN_GATEWAY = "10.71.0.0/24", "10.71.0.1"
VX_CIDR, VX_GATEWAY = "10.72.0.0/24", "10.72.0.1"
ROGUE_ROUTER = "10.71.0.66"


def _interface(vm: SimVM) -> dict[str, Any]:
    (eth0,) = json.loads(vm.run("ip", "-j", "addr", "show", "dev", "eth0").stdout)
    return dict(eth0)


def _default_route(vm: SimVM) -> str | None:
    routes = json.loads(vm.run("ip", "-j", "route", "show", "default").stdout)
    return routes[0]["gateway"] if routes else None


class DhcpLab:
    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        fabric.add_host("h1")
        fabric.add_host("h2")
        client = fabric.client
        self.tenant = client.create("tenants", name="t")["id"]
        self.vlan = client.create(
            "networks",
            tenant_id=self.tenant,
            name="v",
            type="vlan",
            cidr=VLAN_CIDR,
            gateway=VLAN_GATEWAY,
            dns_servers=["10.71.0.53", "10.71.0.54"],
        )
        self.vxlan = client.create(
            "networks",
            tenant_id=self.tenant,
            name="x",
            type="vxlan",
            cidr=VX_CIDR,
            gateway=VX_GATEWAY,
        )
        self.ports: dict[str, dict[str, Any]] = {}
        self.vms: dict[str, SimVM] = {}

    def vm(self, host: str, network: dict[str, Any], name: str, *, ips: list[str] | None) -> SimVM:
        """A VM with no address on eth0 (MTU 1500) whose port has `ips` (None: allocated)."""
        body: dict[str, Any] = {"network_id": network["id"], "name": name}
        if ips is not None:
            body["ips"] = ips
        port = self.fabric.client.create("ports", **body)
        vm = self.fabric.plug_vm(host, name, port, ip=None, mtu=1500)
        self.ports[name], self.vms[name] = port, vm
        return vm


@pytest.fixture(scope="module")
def dhcp_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DhcpLab]:
    workdir = tmp_path_factory.mktemp("dhcp")
    with lab_and_service(workdir / "service") as fabric:
        setup = DhcpLab(fabric)
        setup.vm("h1", setup.vlan, "a1", ips=None)
        setup.vm("h2", setup.vlan, "a2", ips=None)
        setup.vm("h2", setup.vlan, "rogue", ips=[])  # no address: sends anything
        setup.vm("h1", setup.vxlan, "b1", ips=None)
        setup.vm("h2", setup.vxlan, "b2", ips=None)
        setup.fabric.wait_active(*setup.vms)
        yield setup


def _assert_configured(
    result: DhcpResult, vm: SimVM, port: dict[str, Any], net: dict[str, Any]
) -> None:
    """The lease is the port's address with the network's settings, and eth0 carries it."""
    assert result.lease is not None, f"no lease for {vm.name}: {result.output}"
    prefix = int(net["cidr"].split("/")[1])
    assert result.lease["ip"] == port["ips"][0]
    assert result.lease["mask"] == str(prefix)
    assert result.lease["router"] == net["gateway"] == result.lease["serverid"]
    assert result.lease["mtu"] == str(net["mtu"])
    assert result.lease["dns"].split() == net["dns_servers"]
    eth0 = _interface(vm)
    assert eth0["mtu"] == net["mtu"]
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] == [
        (port["ips"][0], prefix)
    ]
    assert _default_route(vm) == net["gateway"]


def test_vms_get_their_ports_address_gateway_and_mtu_and_rogue_servers_are_unheard(
    dhcp_lab: DhcpLab,
) -> None:
    lab = dhcp_lab
    vms, ports = lab.vms, lab.ports
    rogue = vms["rogue"]
    # The rogue VM runs a real DHCP server offering other addresses and another router.
    rogue.run("ip", "addr", "add", "10.71.0.250/24", "dev", "eth0")
    conf = Path(lab.fabric.lab.workdir) / "rogue-udhcpd.conf"
    conf.write_text(
        "interface eth0\nstart 10.71.0.200\nend 10.71.0.210\n"
        f"option subnet 255.255.255.0\noption router {ROGUE_ROUTER}\n"
        f"lease_file {conf.with_suffix('.leases')}\npidfile {conf.with_suffix('.pid')}\n"
    )
    conf.with_suffix(".leases").touch()
    server = subprocess.Popen(
        in_netns(rogue.netns, ["busybox", "udhcpd", "-f", str(conf)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        heard_by_rogue = rogue.start_tcpdump("udp port 67 or udp port 68")
        from_rogue = vms["a1"].start_tcpdump(f"ether src {rogue.mac}")
        # VLAN: both VMs, on different hosts, come up configured and reach each other.
        for name in ("a1", "a2"):
            _assert_configured(run_udhcpc(vms[name]), vms[name], ports[name], lab.vlan)
        assert vms["a1"].ping(ports["a2"]["ips"][0]), "VLAN peers configured by DHCP"
        # The rogue VM's forged offer (UDP 67 -> 68, broadcast) is dropped at its port.
        forged = _dhcp_offer_frame(rogue.mac, "10.71.0.250")
        rogue.send_raw(forged, count=3)
        vms["a1"].ping(ports["a2"]["ips"][0], count=1)  # something after it, on the same path
        assert server.poll() is None, (
            f"udhcpd exited: {server.stderr.read() if server.stderr else ''}"
        )
        assert heard_by_rogue.stop() == [], "a DHCP request reached another VM"
        assert from_rogue.stop() == [], "something of the rogue VM reached a1"
        # A port without address gets no answer: nothing to offer (no dynamic pool).
        rogue.run("ip", "addr", "flush", "dev", "eth0")
        unanswered = run_udhcpc(rogue, tries=2, timeout=1)
        assert unanswered.lease is None, unanswered.output
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_vxlan_mtu_comes_from_dhcp_and_bigger_frames_fail_clearly(dhcp_lab: DhcpLab) -> None:
    lab = dhcp_lab
    vms, ports = lab.vms, lab.ports
    assert lab.vxlan["mtu"] == 1450
    for name in ("b1", "b2"):
        _assert_configured(run_udhcpc(vms[name]), vms[name], ports[name], lab.vxlan)
    peer = ports["b2"]["ips"][0]
    # 1422 bytes of ICMP data + 8 ICMP + 20 IPv4 = 1450: the largest packet that fits.
    fits = vms["b1"].run(
        "ping", "-n", "-c", "2", "-W", "2", "-M", "do", "-s", "1422", peer, check=False
    )
    assert fits.returncode == 0, fits.stdout + fits.stderr
    # One byte more with DF: the VM's own interface (MTU 1450 from DHCP) refuses it.
    too_big = vms["b1"].run(
        "ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1423", peer, check=False
    )
    assert too_big.returncode != 0
    assert "message too long, mtu=1450" in too_big.stdout + too_big.stderr
    # Without DF the VM's kernel fragments it to the MTU, and it passes.
    fragmented = vms["b1"].run("ping", "-n", "-c", "1", "-W", "2", "-s", "1472", peer, check=False)
    assert fragmented.returncode == 0, fragmented.stdout + fragmented.stderr
    # A VM that ignores the advertised MTU sends 1500-byte packets: encapsulated they
    # exceed the underlay's 1500 and are dropped on the way; nothing comes back.
    vms["b1"].run("ip", "link", "set", "eth0", "mtu", "1500")
    try:
        dropped = vms["b1"].run(
            "ping", "-n", "-c", "2", "-W", "1", "-M", "do", "-s", "1472", peer, check=False
        )
        assert dropped.returncode == 1 and " 0 received" in dropped.stdout, dropped.stdout
    finally:
        vms["b1"].run("ip", "link", "set", "eth0", "mtu", "1450")


def _dhcp_offer_frame(src_mac: str, src_ip: str) -> bytes:
    """A DHCP OFFER of 10.71.0.201 with router ROGUE_ROUTER, broadcast, as udhcpd sends it."""
    mac = int(src_mac.replace(":", ""), 16)
    bootp = struct.pack(
        "!BBBBIHHIIII16s64s128s",
        2,
        1,
        6,
        0,
        0x1234,
        0,
        0x8000,
        0,
        int(ipaddress.IPv4Address("10.71.0.201")),
        0,
        0,
        b"\xff" * 6,
        b"",
        b"",
    )
    options = bytes((53, 1, 2, 54, 4)) + ipaddress.IPv4Address(src_ip).packed
    options += bytes((3, 4)) + ipaddress.IPv4Address(ROGUE_ROUTER).packed + b"\xff"
    ends = Endpoints(mac, 0xFFFFFFFFFFFF, int(ipaddress.IPv4Address(src_ip)), 0xFFFFFFFF, 67, 68)
    return udp_frame(ends, bootp + b"\x63\x82\x53\x63" + options)
