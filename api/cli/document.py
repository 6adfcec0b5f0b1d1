"""The declarative topology file of `ovs-fabric apply` (topologies/*.yaml).

It nests as the lab's topology files do (tenants -> networks with name, type,
cidr), with the API's own field names, and declares what the API stores:
networks hold their ports and load balancers; hosts (admin only) are listed
apart. Only the fields a file states are compared with the service: what it
leaves out (an allocated MAC, a segmentation id) is the service's to choose.

    hosts:                         # optional, admin tokens only
      - {name: hv1, ovsdb_remote: "tcp:192.0.2.11:6640", tunnel_ip: 192.0.2.11, uplink: eth1}
    tenants:
      - name: acme
        networks:
          - name: web
            type: vxlan            # or vlan
            cidr: 10.0.0.0/24
            ports:
              - {name: web1, ips: [10.0.0.11], host: hv1, interface: tap-web1}
            load_balancers:
              - name: http
                vip: 10.0.0.100
                port: 80
                backends: [{port_name: web1, port: 8080}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Name = str  # the API checks the spelling; the file only needs them unique where they are keys


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def stated(self, *names: str) -> dict[str, Any]:
        """The given fields that the file states (set explicitly), with their values."""
        return {name: getattr(self, name) for name in names if name in self.model_fields_set}


class HostDecl(_Strict):
    name: Name
    ovsdb_remote: str
    tunnel_ip: str | None = None
    uplink: str | None = None
    libvirt_uri: str | None = None


class PortDecl(_Strict):
    name: Name
    mac: str | None = None
    ips: tuple[str, ...] | None = None
    host: Name | None = Field(default=None, description="Bind to this host (admin).")
    interface: str | None = None
    vm_id: str | None = None

    @model_validator(mode="after")
    def _binding_whole(self) -> PortDecl:
        if (self.host is None) != (self.interface is None):
            raise ValueError("a binding needs both host and interface")
        return self


class BackendDecl(_Strict):
    port: int
    ip: str | None = None
    port_name: Name | None = Field(default=None, description="A port of the same network.")
    weight: int = 1

    @model_validator(mode="after")
    def _one_target(self) -> BackendDecl:
        if (self.ip is None) == (self.port_name is None):
            raise ValueError("a backend needs exactly one of ip and port_name")
        return self


class HealthCheckDecl(_Strict):
    enabled: bool | None = None
    interval: float | None = None
    timeout: float | None = None
    rise: int | None = None
    fall: int | None = None


class LoadBalancerDecl(_Strict):
    name: Name
    vip: str
    port: int
    protocol: Literal["tcp", "udp"] = "tcp"
    backends: tuple[BackendDecl, ...] | None = None
    health_check: HealthCheckDecl | None = None


class NetworkDecl(_Strict):
    name: Name
    type: Literal["vlan", "vxlan"]
    cidr: str | None = None
    gateway: str | None = None
    ipv6_cidr: str | None = None
    segmentation_id: int | None = None
    ports: tuple[PortDecl, ...] = ()
    load_balancers: tuple[LoadBalancerDecl, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> NetworkDecl:
        _no_duplicates(f"network {self.name}: port", [p.name for p in self.ports])
        _no_duplicates(f"network {self.name}: load balancer",
                       [lb.name for lb in self.load_balancers])
        ports = {p.name for p in self.ports}
        for lb in self.load_balancers:
            for backend in lb.backends or ():
                if backend.port_name is not None and backend.port_name not in ports:
                    raise ValueError(
                        f"load balancer {lb.name}: backend port_name {backend.port_name!r} "
                        f"is not a port of network {self.name}"
                    )
        return self


class TenantDecl(_Strict):
    name: Name
    description: str | None = None
    networks: tuple[NetworkDecl, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> TenantDecl:
        _no_duplicates(f"tenant {self.name}: network", [n.name for n in self.networks])
        # The API keeps load-balancer names unique per tenant.
        _no_duplicates(f"tenant {self.name}: load balancer",
                       [lb.name for n in self.networks for lb in n.load_balancers])
        return self


class Document(_Strict):
    hosts: tuple[HostDecl, ...] | None = Field(
        default=None, description="Absent: hosts are not managed by this file (never pruned)."
    )
    tenants: tuple[TenantDecl, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Document:
        _no_duplicates("host", [h.name for h in self.hosts or ()])
        _no_duplicates("tenant", [t.name for t in self.tenants])
        return self


def _no_duplicates(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} {name!r} is declared twice")
        seen.add(name)


class DocumentError(Exception):
    pass


def parse_document(raw: object, source: str = "the file") -> Document:
    try:
        return Document.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise DocumentError(f"{source}: {where}: {message}") from None


def load_document(path: Path) -> Document:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DocumentError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise DocumentError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_document(raw, str(path))
