"""The connectivity-diagnosis lab: every kind of healthy path, and objects to break.

Two hosts (h1, h2) by default, more for the benchmark. Tenant "t":
- VLAN network "nv" (10.1.0.0/24): a1 and b1 on h1 (same host), c1 on h2 (across VLAN),
  a load balancer VIP 10.1.0.100:80 -> c1:8080 (a server runs there: healthy) and a
  VIP 10.1.0.101:80 -> b1:8081 (nobody listens: no healthy backend), and a port "lone"
  that is never bound;
- VXLAN network "nx" (10.2.0.0/24): x1 on h1, x2 on h2 (across VXLAN).
Tenant "u": VXLAN network "nu" (10.1.0.0/24, the same addresses as nv) with u1 on h2.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from lab.hosts import SimVM
from lab.netns import in_netns
from tests.support.eventually import eventually
from tests.support.fabric import Fabric
from tests.support.load_balancer import FAST_HEALTH, Servers

VIP = "10.1.0.100"
DEAD_VIP = "10.1.0.101"
LISTENER = 80
BACKEND_PORT = 8080
DEAD_BACKEND_PORT = 8081

# VM name -> (host, network, address)
PLACEMENT: dict[str, tuple[str, str, str]] = {
    "a1": ("h1", "nv", "10.1.0.11"),
    "b1": ("h1", "nv", "10.1.0.12"),
    "c1": ("h2", "nv", "10.1.0.13"),
    "x1": ("h1", "nx", "10.2.0.11"),
    "x2": ("h2", "nx", "10.2.0.12"),
    "u1": ("h2", "nu", "10.1.0.11"),
}


@dataclass
class DiagnoseLab:
    fabric: Fabric
    tenants: dict[str, str]
    vms: dict[str, SimVM]
    load_balancers: dict[str, dict[str, Any]] = field(default_factory=dict)
    lone_port: str = ""


def build(fabric: Fabric, servers: Servers, *, extra_hosts: int = 0) -> DiagnoseLab:
    """The lab above on h1, h2 (and h3.. for `extra_hosts`, each with a VM pair on nx)."""
    hosts = ["h1", "h2", *(f"h{i}" for i in range(3, 3 + extra_hosts))]
    for host in hosts:
        fabric.add_host(host)
    client = fabric.client
    tenants = {name: client.create("tenants", name=name)["id"] for name in ("t", "u")}
    fabric.network(tenants["t"], "nv", "vlan", "10.1.0.0/24")
    fabric.network(tenants["t"], "nx", "vxlan", "10.2.0.0/24")
    fabric.network(tenants["u"], "nu", "vxlan", "10.1.0.0/24")
    placement = dict(PLACEMENT)
    for index, host in enumerate(hosts[2:], start=3):
        placement[f"y{index}"] = (host, "nx", f"10.2.0.{20 + index}")
    vms = {
        name: fabric.add_vm(host, fabric.network_ids[net], name, ip, wait=False)
        for name, (host, net, ip) in placement.items()
    }
    fabric.wait_active(*vms)
    servers.start(vms["c1"], BACKEND_PORT)
    lab = DiagnoseLab(fabric, tenants, vms)
    for name, vip, backend, port in (
        ("web", VIP, "c1", BACKEND_PORT),
        ("dead", DEAD_VIP, "b1", DEAD_BACKEND_PORT),
    ):
        lab.load_balancers[name] = client.create(
            "load-balancers",
            network_id=fabric.network_ids["nv"],
            name=name,
            vip=vip,
            protocol="tcp",
            port=LISTENER,
            backends=[{"port_id": fabric.port_ids[backend], "port": port, "weight": 1}],
            health_check=FAST_HEALTH,
        )
    lab.lone_port = client.create(
        "ports", network_id=fabric.network_ids["nv"], name="lone", ips=["10.1.0.50"]
    )["id"]
    # Warm the paths (the first VXLAN packet waits for neighbour resolution).
    assert vms["a1"].wait_for_ping(vms["c1"].ip or "")
    assert vms["x1"].wait_for_ping(vms["x2"].ip or "")
    eventually(lambda: _health(lab) == {"web": True, "dead": False}, "backend verdicts")
    return lab


def _health(lab: DiagnoseLab) -> dict[str, bool]:
    found = {}
    for name, lb in lab.load_balancers.items():
        current = lab.fabric.client.get("load-balancers", lb["id"])
        found[name] = all(b["healthy"] for b in current["backends"])
    return found


def keep_sending(vm: SimVM, dst: str, *, source: str | None = None) -> subprocess.Popen[bytes]:
    """Ping `dst` from `vm` five times a second until killed (traffic the switch sees)."""
    cmd = ["ping", "-n", "-q", "-i", "0.2", dst] + (["-I", source] if source else [])
    return subprocess.Popen(
        in_netns(vm.netns, cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


__all__ = ["DiagnoseLab", "build", "keep_sending"]
