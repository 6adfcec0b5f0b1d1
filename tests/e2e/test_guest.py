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
import time
from collections.abc import Iterator

import pytest

from lab.hosts import SimHost
from tests.support.eventually import eventually
from tests.support.guest_lab import GATEWAY, WAIT, GuestLab, guest_lab, pinging
from tests.support.hypervisors import Hypervisor

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestLab]:
    with guest_lab(tmp_path_factory.mktemp("guest")) as lab:
        yield lab


def _domain_macs(hypervisor: Hypervisor, domain: str) -> list[str]:
    lines = hypervisor.virsh("domiflist", domain).splitlines()[2:]
    return [line.split()[4].lower() for line in lines if len(line.split()) == 5]


def _flows_with(host: SimHost, text: str) -> list[str]:
    return [flow for flow in host.dump_flows() if text in flow]


def test_a_libvirt_guest_is_wired_and_configured_by_dhcp_and_reachable(guest: GuestLab) -> None:
    g = guest
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


def test_live_migration_moves_the_port_and_leaves_nothing_behind(guest: GuestLab) -> None:
    g = guest
    h1, h2 = g.hypervisors["h1"], g.hypervisors["h2"]
    assert g.peer.wait_for_ping(g.guest_ip(), timeout=WAIT)
    # The peer pings every 50 ms through the whole migration.
    with pinging(g.peer, g.guest_ip(), interval=0.05) as ping:
        time.sleep(1.0)  # a steady state before
        g.migrate("h1", "h2")
        eventually(
            lambda: g.client.get("ports", g.port["id"])["binding"]["host_id"] == g.host_ids["h2"],
            "the port bound to h2",
            timeout=WAIT,
        )
        assert g.client.wait_port_active(g.port["id"], timeout=WAIT)["status"] == "ACTIVE"
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
    before, after = ping[0].longest_gap()
    print(
        f"migration under ping every 50 ms: {ping[0].lost} lost, longest silence "
        f"{(after - before) * 1000:.0f} ms, QEMU downtime {g.downtime_ms('h2')} ms"
    )


def _first(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


def _ovs_ports(host: SimHost) -> list[str]:
    return host.run("ovs-vsctl", f"--db={host.ovsdb_remote}", "list-ports", "br-int").stdout.split()
