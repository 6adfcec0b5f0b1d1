"""A real guest under libvirt gets its address from the service, and migrates live (issue 14).

Three simulated hosts; h1 and h2 are hypervisors, each with its own OVS and its own
libvirtd (in the host's network namespace, with mount and UTS namespaces of its
own: tests/support/hypervisors.py). h3 runs a VM namespace as the peer. The service
watches both libvirtds. A tiny Linux guest (Debian's kernel, a busybox initramfs:
tests/support/guest.py) boots on h1 with one virtio NIC whose MAC is a port's; the
service wires the NIC from the libvirt event, the guest's own udhcpc is answered
with the port's address and the network's MTU, and the peer pings it over VXLAN.
Then the guest migrates live to h2 while the peer pings it: the port follows, and
h1 keeps nothing of it. One guest boot serves both tests.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.client import FabricClient
from api.launcher import ServiceProcess
from lab.hosts import Lab, SimHost, SimVM
from lab.netns import in_netns
from tests.support.eventually import eventually
from tests.support.guest import build_guest_image, guest_domain_xml, wait_for_lease
from tests.support.hypervisors import Hypervisor, hypervisors
from tests.support.libvirt_env import random_mac, run_token

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CIDR, GATEWAY = "10.73.0.0/24", "10.73.0.1"
WAIT = 60.0  # bounds waits only (TCG boot under load); nothing here asserts speed


@dataclass
class GuestLab:
    lab: Lab
    service: ServiceProcess
    client: FabricClient
    hosts: dict[str, SimHost]
    host_ids: dict[str, str]
    hypervisors: dict[str, Hypervisor]
    network: dict[str, Any]
    port: dict[str, Any]
    peer: SimVM
    domain: str
    tap: str
    mac: str
    console: Path
    lease: dict[str, str]

    def guest_ip(self) -> str:
        return str(self.port["ips"][0])


def _register(client: FabricClient, host: SimHost, libvirt_uri: str | None) -> str:
    body: dict[str, Any] = dict(host.facts.registration())
    if libvirt_uri is not None:
        body["libvirt_uri"] = libvirt_uri
    return str(client.create("hosts", **body)["id"])


@pytest.fixture(scope="module")
def guest_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestLab]:
    image = build_guest_image()
    workdir = tmp_path_factory.mktemp("guest")
    lab = Lab()
    service = ServiceProcess(workdir / "service", extra_env={"OVS_FABRIC_LIBVIRT_ENABLED": "true"})
    try:
        hosts = {
            name: lab.add_host(name, tunnel_ip=lab.next_tunnel_ip(), uplink=True)
            for name in ("h1", "h2", "h3")
        }
        with hypervisors(hosts["h1"], hosts["h2"]) as (hv1, hv2):
            service.start()
            with FabricClient(service.base_url, service.admin_token) as client:
                hvs = {"h1": hv1, "h2": hv2}
                host_ids = {
                    name: _register(client, host, hvs[name].uri if name in hvs else None)
                    for name, host in hosts.items()
                }
                tenant = client.create("tenants", name="t")["id"]
                network = client.create(
                    "networks", tenant_id=tenant, name="g", type="vxlan", cidr=CIDR, gateway=GATEWAY
                )
                # The peer: a VM namespace on h3 with a static address.
                peer_port = client.create("ports", network_id=network["id"], name="peer")
                peer = hosts["h3"].add_vm(
                    "peer", mac=peer_port["mac"], ip=peer_port["ips"][0], prefix_len=24, mtu=1450
                )
                client.update(
                    "ports",
                    peer_port["id"],
                    host_id=host_ids["h3"],
                    interface=peer.host_interface,
                    vm_id="vm-peer",
                )
                # The guest's port: the watcher matches the domain's NIC to it by MAC.
                mac = random_mac()
                port = client.create("ports", network_id=network["id"], name="guest", mac=mac)
                token = run_token()
                domain, tap = f"ovsf-guest-{token}", f"ovsg{token}"
                console = workdir / "console.log"
                xml = workdir / "guest.xml"
                xml.write_text(guest_domain_xml(domain, image, mac=mac, tap=tap, console=console))
                hv1.virsh("define", str(xml))
                hv1.virsh("start", domain)
                lease = wait_for_lease(console, timeout=WAIT * 2)
                yield GuestLab(
                    lab=lab,
                    service=service,
                    client=client,
                    hosts=hosts,
                    host_ids=host_ids,
                    hypervisors=hvs,
                    network=network,
                    port=client.get("ports", port["id"]),
                    peer=peer,
                    domain=domain,
                    tap=tap,
                    mac=mac,
                    console=console,
                    lease=lease,
                )
    finally:
        try:
            service.stop()
        finally:
            lab.close()


def _domain_macs(hypervisor: Hypervisor, domain: str) -> list[str]:
    lines = hypervisor.virsh("domiflist", domain).splitlines()[2:]
    return [line.split()[4].lower() for line in lines if len(line.split()) == 5]


def _flows_with(host: SimHost, text: str) -> list[str]:
    return [flow for flow in host.dump_flows() if text in flow]


def test_a_libvirt_guest_is_wired_and_configured_by_dhcp_and_reachable(guest_lab: GuestLab) -> None:
    g = guest_lab
    port = g.port
    # The binding the watcher made from the libvirt event: this domain's tap on h1.
    assert port["binding"]["host_id"] == g.host_ids["h1"]
    assert port["binding"]["interface"] == g.tap
    assert port["status"] == "ACTIVE" or g.client.wait_port_active(port["id"])["status"] == "ACTIVE"
    # The domain's interface, the port and the DHCP answer the guest got agree.
    assert _domain_macs(g.hypervisors["h1"], g.domain) == [g.mac] == [port["mac"]]
    assert g.lease["mac"] == g.mac
    assert g.lease["ip"] == g.guest_ip()
    assert g.lease["mask"] == "24"
    assert g.lease["router"] == GATEWAY == g.lease["serverid"]
    assert g.lease["mtu"] == str(g.network["mtu"]) == "1450"
    # A VM on another host reaches it over VXLAN.
    assert g.peer.wait_for_ping(g.guest_ip(), timeout=WAIT), "peer on h3 -> guest on h1"


def test_live_migration_moves_the_port_and_leaves_nothing_behind(guest_lab: GuestLab) -> None:
    g = guest_lab
    h1, h2 = g.hypervisors["h1"], g.hypervisors["h2"]
    assert g.peer.wait_for_ping(g.guest_ip(), timeout=WAIT)
    # The peer pings every 50 ms through the whole migration.
    pinger = subprocess.Popen(
        in_netns(g.peer.netns, ["ping", "-n", "-i", "0.05", "-W", "1", g.guest_ip()]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1.0)  # a steady state before
        h1.virsh(
            "migrate",
            "--live",
            g.domain,
            h2.uri,
            f"tcp:{g.hosts['h2'].tunnel_ip}",
            timeout=WAIT * 2,
        )
        eventually(
            lambda: g.client.get("ports", g.port["id"])["binding"]["host_id"] == g.host_ids["h2"],
            "the port bound to h2",
            timeout=WAIT,
        )
        assert g.client.wait_port_active(g.port["id"], timeout=WAIT)["status"] == "ACTIVE"
        time.sleep(2.0)  # a steady state after
    finally:
        pinger.send_signal(2)
        out, _ = pinger.communicate(timeout=10)
    assert g.domain in h2.domains() and h2.virsh("domstate", g.domain).strip() == "running"
    assert g.domain not in h1.virsh("list", "--name").split()
    port = g.client.get("ports", g.port["id"])
    assert port["binding"]["interface"] == g.tap and port["status"] == "ACTIVE"
    # Reachable on h2; h1 holds nothing of it: no tap, no OVS port, no flow with its MAC.
    assert g.peer.wait_for_ping(g.guest_ip(), timeout=WAIT), "peer -> guest on h2"
    hw = g.mac.lower()
    eventually(
        lambda: not _flows_with(g.hosts["h1"], hw) and g.tap not in _ovs_ports(g.hosts["h1"]),
        "h1 without flows or OVS port of the guest",
        timeout=WAIT,
    )
    assert _flows_with(g.hosts["h2"], hw)
    links = json.loads(g.hosts["h1"].run("ip", "-j", "link").stdout)
    assert g.tap not in {link["ifname"] for link in links}
    # Make before break: every other host followed only once h2 had confirmed the port.
    log = g.service.log_path.read_text(errors="replace").splitlines()
    port_id = g.port["id"]
    bound = _first(log, f"libvirt h2: bound port {port_id}")
    active = _first(log, f"port {port_id} ACTIVE on host h2")
    followed = _first(log, f"port {port_id} moved to host {g.host_ids['h2']}: confirmed")
    assert bound < active < followed, "\n".join(log[bound:])
    assert all(i > followed for i, line in enumerate(log) if i > bound and "host h3: +" in line)
    summary = [line for line in out.splitlines() if "transmitted" in line]
    print("migration ping:", summary)


def _first(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


def _ovs_ports(host: SimHost) -> list[str]:
    return host.run("ovs-vsctl", f"--db={host.ovsdb_remote}", "list-ports", "br-int").stdout.split()
