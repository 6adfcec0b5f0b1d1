"""Lab topology files (topologies/*.yaml): simulated hosts, tenants, networks, VMs.

Pure parsing and the reachability a correct fabric must show: two VMs reach
each other exactly when they sit on the same network.
"""

from __future__ import annotations

import ipaddress
from itertools import permutations
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabHost(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,3}$")  # short: it becomes part of netns names
    tunnel: bool = True
    uplink: bool = True


class LabVM(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,3}$")
    host: str
    ip: str


class LabNetwork(_Strict):
    name: str
    type: Literal["vlan", "vxlan"]
    cidr: str
    vms: tuple[LabVM, ...] = ()


class LabTenant(_Strict):
    name: str
    networks: tuple[LabNetwork, ...] = ()


class Topology(_Strict):
    hosts: tuple[LabHost, ...]
    tenants: tuple[LabTenant, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        hosts = {h.name for h in self.hosts}
        if len(hosts) != len(self.hosts):
            raise ValueError("host names must be unique")
        seen: set[str] = set()
        for tenant in self.tenants:
            for net in tenant.networks:
                cidr = ipaddress.IPv4Network(net.cidr)
                for vm in net.vms:
                    if vm.host not in hosts:
                        raise ValueError(f"VM {vm.name} is on unknown host {vm.host!r}")
                    if ipaddress.IPv4Address(vm.ip) not in cidr:
                        raise ValueError(f"VM {vm.name} address {vm.ip} is outside {net.cidr}")
                    if vm.name in seen:
                        raise ValueError(f"VM name {vm.name!r} is used twice")
                    seen.add(vm.name)
        return self

    def vms(self) -> list[tuple[LabTenant, LabNetwork, LabVM]]:
        return [(t, n, vm) for t in self.tenants for n in t.networks for vm in n.vms]

    def expected_reachability(self) -> dict[tuple[str, str], bool]:
        """(source VM, target VM) -> whether a correct fabric lets them talk."""
        network_of = {vm.name: (t.name, n.name) for t, n, vm in self.vms()}
        return {(a, b): network_of[a] == network_of[b] for a, b in permutations(network_of, 2)}


class TopologyError(Exception):
    pass


def load_topology(path: Path) -> Topology:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TopologyError(f"cannot read topology {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return Topology.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise TopologyError(f"{path}: {where}: {first['msg']}") from exc
