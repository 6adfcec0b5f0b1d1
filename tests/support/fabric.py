"""A lab whose hosts are registered with a running service, driven over REST."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.client import FabricClient
from api.launcher import ServiceProcess
from lab.hosts import Lab, SimHost, SimVM


@dataclass
class Fabric:
    """A lab whose hosts are registered with a running service."""

    lab: Lab
    service: ServiceProcess
    client: FabricClient
    hosts: dict[str, SimHost] = field(default_factory=dict)
    host_ids: dict[str, str] = field(default_factory=dict)
    port_ids: dict[str, str] = field(default_factory=dict)

    def add_host(self, name: str, *, tunnel: bool = True, uplink: bool = True) -> SimHost:
        sim = self.lab.add_host(
            name, tunnel_ip=self.lab.next_tunnel_ip() if tunnel else None, uplink=uplink
        )
        self.host_ids[name] = self.client.create("hosts", **sim.facts.registration())["id"]
        self.hosts[name] = sim
        return sim

    def network(self, tenant_id: str, name: str, kind: str, cidr: str) -> str:
        net = self.client.create("networks", tenant_id=tenant_id, name=name, type=kind, cidr=cidr)
        return str(net["id"])

    def add_vm(self, host: str, network_id: str, name: str, ip: str, *, wait: bool = True) -> SimVM:
        port = self.client.create("ports", network_id=network_id, name=name, ips=[ip])
        vm = self.hosts[host].add_vm(name, mac=port["mac"], ip=ip)
        self.client.update(
            "ports",
            port["id"],
            host_id=self.host_ids[host],
            interface=vm.host_interface,
            vm_id=f"vm-{name}",
        )
        self.port_ids[name] = port["id"]
        if wait:
            self.wait_active(name)
        return vm

    def wait_active(self, *vm_names: str, timeout: float = 30.0) -> None:
        for name in vm_names:
            port = self.client.wait_port_active(self.port_ids[name], timeout=timeout)
            assert port["status"] == "ACTIVE", (
                f"port of {name} is {port['status']}: {port}\n{self.service.log_tail()}"
            )
