"""Tenant isolation across hosts, proven with real packets between namespaces.

The service runs as a child process (real os-ken, real SQLite); every host is a
network namespace with its own ovsdb-server and ovs-vswitchd; VMs are
namespaces on veth pairs. Reachability is shown by ping, isolation by ping AND
by a capture on the target proving nothing arrived.
"""

from __future__ import annotations

import time

import pytest

from tests.support.fabric import Fabric

pytestmark = pytest.mark.e2e


def _two_tenants(fabric: Fabric) -> dict[str, object]:
    """Two hosts; tenants red and blue each with a VLAN and a VXLAN network, same CIDRs."""
    fabric.add_host("h1")
    fabric.add_host("h2")
    c = fabric.client
    red = c.create("tenants", name="red")["id"]
    blue = c.create("tenants", name="blue")["id"]
    nets = {
        "red-vlan": fabric.network(red, "red-vlan", "vlan", "10.1.0.0/24"),
        "red-vx": fabric.network(red, "red-vx", "vxlan", "10.2.0.0/24"),
        "blue-vlan": fabric.network(blue, "blue-vlan", "vlan", "10.1.0.0/24"),
        "blue-vx": fabric.network(blue, "blue-vx", "vxlan", "10.2.0.0/24"),
    }
    vms = {
        "r1": fabric.add_vm("h1", nets["red-vlan"], "r1", "10.1.0.11", wait=False),
        "r2": fabric.add_vm("h2", nets["red-vlan"], "r2", "10.1.0.12", wait=False),
        "r3": fabric.add_vm("h1", nets["red-vx"], "r3", "10.2.0.13", wait=False),
        "r4": fabric.add_vm("h2", nets["red-vx"], "r4", "10.2.0.14", wait=False),
        # blue re-uses red's addresses: b1 has r2's IP, b2 has r4's IP.
        "b1": fabric.add_vm("h2", nets["blue-vlan"], "b1", "10.1.0.12", wait=False),
        "b3": fabric.add_vm("h1", nets["blue-vlan"], "b3", "10.1.0.13", wait=False),
        "b2": fabric.add_vm("h1", nets["blue-vx"], "b2", "10.2.0.14", wait=False),
    }
    fabric.wait_active(*vms)
    return {"nets": nets, "vms": vms, "red": red, "blue": blue}


def test_same_network_reaches_across_hosts_other_tenants_and_networks_never(
    fabric: Fabric,
) -> None:
    t = _two_tenants(fabric)
    vms = t["vms"]
    assert isinstance(vms, dict)
    # Same network, different hosts: over the VLAN trunk and over VXLAN.
    assert vms["r1"].ping("10.1.0.12"), "red VLAN h1 -> h2"
    assert vms["r3"].ping("10.2.0.14"), "red VXLAN h1 -> h2"
    assert vms["b3"].ping("10.1.0.12"), "blue VLAN h1 -> h2 (the address red also uses)"

    # Cross tenant with overlapping addresses: r1 pings 10.1.0.12, which is r2 (red)
    # AND b1 (blue). Only r2 may see it: a capture on b1 proves no frame of r1's
    # (its MAC, its address) arrives, while blue's own traffic does.
    capture = vms["b1"].start_tcpdump("icmp or arp")
    try:
        assert vms["r1"].ping("10.1.0.12")
        assert not vms["b3"].ping("10.1.0.11", count=3, timeout=3)  # blue -> red's address
    finally:
        lines = capture.stop()
    assert any("tell 10.1.0.13" in line for line in lines), "blue's own ARP must reach b1"
    leaked = [ln for ln in lines if vms["r1"].mac in ln or "tell 10.1.0.11" in ln]
    assert not leaked, leaked

    # Same tenant, other network: red VLAN -> red VXLAN.
    capture = vms["r4"].start_tcpdump("icmp or arp")
    try:
        assert not vms["r1"].ping("10.2.0.14", count=3, timeout=3)
    finally:
        lines = capture.stop()
    assert lines == [], lines


def test_ports_report_active_with_activation_time(fabric: Fabric) -> None:
    _two_tenants(fabric)
    ports = fabric.client.list("ports")
    assert ports and all(p["status"] == "ACTIVE" for p in ports), ports
    assert all(p["activation_seconds"] is not None and p["activation_seconds"] >= 0 for p in ports)
    hosts = fabric.client.list("hosts")
    assert all(h["ovsdb_connected"] and h["openflow_connected"] for h in hosts), hosts


def test_vxlan_network_spans_a_third_host(fabric: Fabric) -> None:
    for name in ("h1", "h2", "h3"):
        fabric.add_host(name)
    c = fabric.client
    tenant = c.create("tenants", name="t")["id"]
    net = fabric.network(tenant, "overlay", "vxlan", "10.5.0.0/24")
    vlan = fabric.network(tenant, "trunked", "vlan", "10.6.0.0/24")
    a = fabric.add_vm("h1", net, "a", "10.5.0.1")
    fabric.add_vm("h2", net, "b", "10.5.0.2")
    fabric.add_vm("h3", net, "c", "10.5.0.3")
    x = fabric.add_vm("h3", vlan, "x", "10.6.0.1")
    fabric.add_vm("h1", vlan, "y", "10.6.0.2")
    assert a.ping("10.5.0.2") and a.ping("10.5.0.3")
    assert x.ping("10.6.0.2")


def test_spoofed_and_tagged_frames_are_dropped(fabric: Fabric) -> None:
    attacker, victim = fabric.vm_pair("vlan", "10.7.0.0/24", names=("att", "vic"))
    assert attacker.ping("10.7.0.2")  # the path works for honest frames

    victim_mac = bytes.fromhex(victim.mac.replace(":", ""))
    own_mac = bytes.fromhex(attacker.mac.replace(":", ""))
    spoof_mac = bytes.fromhex("020000abcdef")
    broadcast = b"\xff" * 6

    def arp(sender_mac: bytes, sender_ip: bytes) -> bytes:
        return (
            b"\x00\x01\x08\x00\x06\x04\x00\x01"
            + sender_mac
            + sender_ip
            + b"\x00" * 6
            + bytes([10, 7, 0, 2])
        )

    def broadcast_arp(eth_src: bytes, sender_mac: bytes, sender_ip: bytes) -> bytes:
        return broadcast + eth_src + b"\x08\x06" + arp(sender_mac, sender_ip)

    frames = {
        "spoofed source MAC": broadcast_arp(spoof_mac, spoof_mac, bytes([10, 7, 0, 1])),
        "spoofed ARP sender IP": broadcast_arp(own_mac, own_mac, bytes([10, 7, 0, 99])),
        "spoofed ARP sender MAC": broadcast_arp(own_mac, spoof_mac, bytes([10, 7, 0, 1])),
        "802.1Q tagged": victim_mac
        + own_mac
        + b"\x81\x00\x00\x0a\x08\x06"
        + arp(own_mac, bytes([10, 7, 0, 1])),
    }
    for what, frame in frames.items():
        capture = victim.start_tcpdump("arp or vlan")
        try:
            for _ in range(3):
                attacker.send_raw(frame)
            time.sleep(0.5)
        finally:
            lines = capture.stop()
        assert lines == [], f"{what} reached the victim: {lines}"

    # Spoofed IPv4 source: a ping from a foreign source address gets no answer and
    # never reaches the victim.
    capture = victim.start_tcpdump("icmp")
    try:
        attacker.run("ip", "addr", "add", "10.7.0.50/24", "dev", "eth0")
        assert not attacker.ping("10.7.0.2", count=2, timeout=2, source="10.7.0.50")
    finally:
        lines = capture.stop()
    assert not [line for line in lines if "10.7.0.50" in line], lines


def test_deleting_a_port_stops_forwarding_and_recreating_restores_it(fabric: Fabric) -> None:
    a, b = fabric.vm_pair("vxlan", "10.8.0.0/24")
    assert a.ping("10.8.0.2")

    fabric.client.delete("ports", fabric.port_ids["b"])
    deadline = time.monotonic() + 10
    while a.ping("10.8.0.2", count=1, timeout=1) and time.monotonic() < deadline:
        pass
    assert not a.ping("10.8.0.2", count=3, timeout=3), "forwarding survived the port's deletion"

    port = fabric.client.create(
        "ports", network_id=fabric.network_ids["n"], ips=["10.8.0.2"], mac=b.mac
    )
    fabric.client.update(
        "ports", port["id"], host_id=fabric.host_ids["h2"], interface=b.host_interface
    )
    fabric.port_ids["b"] = port["id"]
    fabric.wait_active("b")
    assert a.ping("10.8.0.2")


def test_deleting_a_network_removes_its_flows(fabric: Fabric) -> None:
    a, _b = fabric.vm_pair("vlan", "10.9.0.0/24")
    h1 = fabric.hosts["h1"]
    assert a.ping("10.9.0.2")
    flows_before = len(h1.dump_flows("br-int"))
    for name in ("a", "b"):
        fabric.client.delete("ports", fabric.port_ids[name])
    fabric.client.delete("networks", fabric.network_ids["n"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(h1.dump_flows("br-int")) >= flows_before:
        time.sleep(0.2)
    assert len(h1.dump_flows("br-int")) < flows_before
    assert not a.ping("10.9.0.2", count=2, timeout=2)
