"""The real service as a child process, and a lab whose hosts are registered with it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_network
from itertools import islice
from pathlib import Path
from typing import Any

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
    network_ids: dict[str, str] = field(default_factory=dict)

    def add_host(self, name: str, *, tunnel: bool = True, uplink: bool = True) -> SimHost:
        sim = self.lab.add_host(
            name, tunnel_ip=self.lab.next_tunnel_ip() if tunnel else None, uplink=uplink
        )
        self.host_ids[name] = self.client.create("hosts", **sim.facts.registration())["id"]
        self.hosts[name] = sim
        return sim

    def network(
        self, tenant_id: str, name: str, kind: str, cidr: str | None, **extra: object
    ) -> str:
        """A network (no IPv4 cidr when `cidr` is None; `extra`: more of its fields)."""
        body = {**({} if cidr is None else {"cidr": cidr}), **extra}
        net = self.client.create("networks", tenant_id=tenant_id, name=name, type=kind, **body)
        self.network_ids[name] = str(net["id"])
        return str(net["id"])

    def vm_pair(
        self, kind: str, cidr: str, names: tuple[str, str] = ("a", "b")
    ) -> tuple[SimVM, SimVM]:
        """Hosts h1 and h2, network "n" (`kind`, `cidr`) of tenant "t", and on it a VM
        per host with the network's first and second address, both ACTIVE."""
        self.add_host("h1")
        self.add_host("h2")
        tenant = self.client.create("tenants", name="t")["id"]
        net = self.network(tenant, "n", kind, cidr)
        first, second = (str(ip) for ip in islice(ip_network(cidr).hosts(), 2))
        return self.add_vm("h1", net, names[0], first), self.add_vm("h2", net, names[1], second)

    def add_vm(self, host: str, network_id: str, name: str, ip: str, *, wait: bool = True) -> SimVM:
        port = self.client.create("ports", network_id=network_id, name=name, ips=[ip])
        vm = self.plug_vm(host, name, port, ip=ip)
        if wait:
            self.wait_active(name)
        return vm

    def plug_vm(
        self, host: str, name: str, port: dict[str, Any], *, ip: str | None, mtu: int = 1400
    ) -> SimVM:
        """VM `name` on `host` with `port`'s MAC (eth0 given `ip`, or no address), and
        the port bound to it."""
        vm = self.hosts[host].add_vm(name, mac=port["mac"], ip=ip, mtu=mtu)
        self.client.update(
            "ports",
            port["id"],
            host_id=self.host_ids[host],
            interface=vm.host_interface,
            vm_id=f"vm-{name}",
        )
        self.port_ids[name] = port["id"]
        return vm

    def wait_active(self, *vm_names: str, timeout: float = 30.0) -> None:
        for name in vm_names:
            port = self.client.wait_port_active(self.port_ids[name], timeout=timeout)
            assert port["status"] == "ACTIVE", (
                f"port of {name} is {port['status']}: {port}\n{self.service.log_tail()}"
            )


@contextlib.contextmanager
def running_service(
    workdir: Path, *, extra_env: dict[str, str] | None = None
) -> Iterator[ServiceProcess]:
    """The service started on `workdir` (its database, log, sockets), stopped afterwards."""
    service = ServiceProcess(workdir, extra_env=extra_env)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def lab_and_service(workdir: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[Fabric]:
    """A new lab and the service started on `workdir`, as a Fabric (for a module-scoped
    fixture); afterwards the service is stopped and the lab closed, even when the start
    failed."""
    lab = Lab()
    service = ServiceProcess(workdir, extra_env=extra_env)
    try:
        service.start()
        with fabric_of(lab, service) as fabric:
            yield fabric
    finally:
        try:
            service.stop()
        finally:
            lab.close()


@contextlib.contextmanager
def fabric_of(lab: Lab, service: ServiceProcess) -> Iterator[Fabric]:
    """A Fabric driving `service` as its admin, for hosts of `lab`."""
    with FabricClient(service.base_url, service.admin_token) as client:
        yield Fabric(lab=lab, service=service, client=client)
