"""Two hypervisors and a peer around one real guest, for the guest/migration e2e and bench.

Three simulated hosts; h1 and h2 are hypervisors, each with its own OVS and its own
libvirtd (tests/support/hypervisors.py); h3 runs a VM namespace as the peer. The
service (a child process) watches both libvirtds. A tiny Linux guest
(tests/support/guest.py) boots on h1 with one virtio NIC whose MAC is a port's on a
VXLAN network; the service wires it from the libvirt event and answers its DHCP.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from api.client import FabricClient
from api.launcher import ServiceProcess
from lab.hosts import Lab, SimHost, SimVM
from lab.netns import in_netns
from tests.support.guest import build_guest_image, guest_domain_xml, wait_for_lease
from tests.support.hypervisors import Hypervisor, hypervisors
from tests.support.libvirt_env import random_mac, run_token

CIDR, GATEWAY = "10.73.0.0/24", "10.73.0.1"
WAIT = 60.0  # bounds waits only (TCG boot under load); nothing asserts speed


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

    def migrate(self, source: str, destination: str) -> None:
        """Live-migrate the guest; the migration stream goes over the underlay."""
        self.hypervisors[source].virsh(
            "migrate",
            "--live",
            self.domain,
            self.hypervisors[destination].uri,
            f"tcp:{self.hosts[destination].tunnel_ip}",
            timeout=WAIT * 2,
        )

    def downtime_ms(self, destination: str) -> float | None:
        """QEMU's own downtime (guest stopped) of the last migration, as the destination's
        libvirt reports it (None: not reported)."""
        try:
            info = self.hypervisors[destination].virsh("domjobinfo", "--completed", self.domain)
        except subprocess.CalledProcessError:
            return None
        found = re.search(r"Total downtime:\s+(\d+)\s+ms", info)
        return float(found.group(1)) if found else None


def _register(client: FabricClient, host: SimHost, libvirt_uri: str | None) -> str:
    body: dict[str, Any] = dict(host.facts.registration())
    if libvirt_uri is not None:
        body["libvirt_uri"] = libvirt_uri
    return str(client.create("hosts", **body)["id"])


@contextlib.contextmanager
def guest_lab(workdir: Path) -> Iterator[GuestLab]:
    """The lab with the guest booted on h1 and its DHCP lease read; everything removed after."""
    image = build_guest_image()
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


@dataclass(frozen=True)
class PingRun:
    transmitted: int
    received: int
    rtt_avg_ms: float | None
    replies: tuple[float, ...]  # wall-clock time of every reply (ping -D)

    @property
    def lost(self) -> int:
        return self.transmitted - self.received

    def longest_gap(self) -> tuple[float, float]:
        """(last reply before, first reply after) the longest silence."""
        pairs = list(zip(self.replies, self.replies[1:], strict=False))
        if not pairs:
            raise ValueError("fewer than two replies")
        return max(pairs, key=lambda pair: pair[1] - pair[0])


_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from", re.MULTILINE)


@contextlib.contextmanager
def pinging(vm: SimVM, ip: str, *, interval: float) -> Iterator[list[PingRun]]:
    """`ping -i interval` from `vm` for as long as the block runs; the run's counts are
    in the yielded list afterwards."""
    result: list[PingRun] = []
    process = subprocess.Popen(
        in_netns(vm.netns, ["ping", "-n", "-D", "-i", f"{interval:g}", "-W", "1", ip]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield result
    finally:
        time.sleep(1.0)  # replies to the last requests
        process.send_signal(2)
        out, _ = process.communicate(timeout=10)
        counts = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
        if counts is None:
            raise RuntimeError(f"ping printed no summary: {out}")
        result.append(
            PingRun(
                int(counts.group(1)),
                int(counts.group(2)),
                float(rtt.group(1)) if rtt else None,
                tuple(float(t) for t in _REPLY.findall(out)),
            )
        )


@contextlib.contextmanager
def resume_events(hypervisor: Hypervisor) -> Iterator[list[float]]:
    """Wall-clock times of the lifecycle RESUMED events of `hypervisor`'s domains while
    the block runs (`virsh event --timestamp`), in the yielded list afterwards."""
    found: list[float] = []
    process = subprocess.Popen(
        # Line-buffered: the events are read when virsh is stopped.
        ["stdbuf", "-oL", "virsh", "-c", hypervisor.uri, "event", "--all", "--loop", "--timestamp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(0.3)  # registered before anything happens
        yield found
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
        for line in out.splitlines():
            if "lifecycle" in line and "Resumed" in line:
                stamp = line.split(": event", 1)[0]
                found.append(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f%z").timestamp())
