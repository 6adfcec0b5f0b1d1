"""What `ovs-fabric apply` must change: a pure comparison of a declared topology with
the service's (its `/topology` document), and the request bodies that make the changes.

Objects are matched by name along their parents (tenant, network); only fields the
file states are compared. Creations and updates run parents first (hosts, tenants,
networks, ports, load balancers), deletions children first and before them. What
the file does not declare is kept unless `prune` (ports the libvirt watcher made
are never pruned: it would make them again). A declared field that the API cannot
change in place (a network's type) is a conflict the plan reports, not a change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from api.cli.document import (
    BackendDecl,
    Document,
    HealthCheckDecl,
    HostDecl,
    LoadBalancerDecl,
    NetworkDecl,
    PortDecl,
    TenantDecl,
)

Kind = Literal["host", "tenant", "network", "port", "load_balancer"]
Action = Literal["create", "update", "delete"]
KIND_ORDER: tuple[Kind, ...] = ("host", "tenant", "network", "port", "load_balancer")
RESOURCE_PATH: dict[Kind, str] = {
    "host": "hosts", "tenant": "tenants", "network": "networks", "port": "ports",
    "load_balancer": "load-balancers",
}
Decl = HostDecl | TenantDecl | NetworkDecl | PortDecl | LoadBalancerDecl
Key = tuple[str, ...]  # names from the tenant down: (tenant, network, port)
Ids = Callable[[Kind, Key], str]  # the id of an object that exists by now


@dataclass(frozen=True)
class FieldChange:
    name: str
    current: object
    desired: object


@dataclass(frozen=True)
class Change:
    action: Action
    kind: Kind
    key: Key
    fields: tuple[FieldChange, ...] = ()
    id: str | None = None  # the existing object's (update, delete)
    decl: Decl | None = field(default=None, compare=False)  # create, update

    @property
    def label(self) -> str:
        return f"{self.kind.replace('_', ' ')} {'/'.join(self.key)}"


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    kept: tuple[str, ...] = ()  # labels of undeclared objects left alone (no prune)
    conflicts: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changes)

    def count(self, action: Action) -> int:
        return sum(1 for change in self.changes if change.action == action)


# ---- the service's side, indexed by name ---------------------------------------------------


@dataclass
class _Current:
    hosts: dict[Key, dict[str, Any]] = field(default_factory=dict)
    tenants: dict[Key, dict[str, Any]] = field(default_factory=dict)
    networks: dict[Key, dict[str, Any]] = field(default_factory=dict)
    ports: dict[Key, dict[str, Any]] = field(default_factory=dict)
    load_balancers: dict[Key, dict[str, Any]] = field(default_factory=dict)
    host_names: dict[str, str] = field(default_factory=dict)
    port_names: dict[str, str] = field(default_factory=dict)

    def of(self, kind: Kind) -> dict[Key, dict[str, Any]]:
        found: dict[Key, dict[str, Any]] = getattr(self, f"{kind}s")
        return found


def _index(topology: Mapping[str, Any]) -> _Current:
    current = _Current()
    tenant_names = {t["id"]: t["name"] for t in topology["tenants"]}
    network_keys: dict[str, Key] = {}
    for host in topology["hosts"]:
        current.hosts[(host["name"],)] = host
        current.host_names[host["id"]] = host["name"]
    for tenant in topology["tenants"]:
        current.tenants[(tenant["name"],)] = tenant
    for network in topology["networks"]:
        # A network of a tenant the token cannot name (never for admins) keys by id.
        key = (tenant_names.get(network["tenant_id"], network["tenant_id"]), network["name"])
        network_keys[network["id"]] = key
        current.networks[key] = network
    for port in topology["ports"]:
        name = port["name"] or port["id"]
        current.port_names[port["id"]] = name
        key = (*network_keys.get(port["network_id"], (port["network_id"],)), name)
        current.ports.setdefault(key, port)  # same-named twins: the rest are undeclared
    for lb in topology["load_balancers"]:
        key = (*network_keys.get(lb["network_id"], (lb["network_id"],)), lb["name"])
        current.load_balancers[key] = lb
    return current


# ---- what the file declares, in the API's terms ---------------------------------------------


def _declared(document: Document) -> dict[Kind, dict[Key, Decl]]:
    declared: dict[Kind, dict[Key, Decl]] = {kind: {} for kind in KIND_ORDER}
    for host in document.hosts or ():
        declared["host"][(host.name,)] = host
    for tenant in document.tenants:
        declared["tenant"][(tenant.name,)] = tenant
        for network in tenant.networks:
            net_key = (tenant.name, network.name)
            declared["network"][net_key] = network
            for port in network.ports:
                declared["port"][(*net_key, port.name)] = port
            for lb in network.load_balancers:
                declared["load_balancer"][(*net_key, lb.name)] = lb
    return declared


def _backend_key(backend: BackendDecl) -> tuple[str, str, int, int]:
    if backend.port_name is not None:
        return ("port", backend.port_name, backend.port, backend.weight)
    return ("ip", str(backend.ip), backend.port, backend.weight)


def _current_backend_key(
    backend: Mapping[str, Any], current: _Current
) -> tuple[str, str, int, int]:
    if backend.get("port_id"):
        name = current.port_names.get(backend["port_id"], backend["port_id"])
        return ("port", name, backend["port"], backend["weight"])
    return ("ip", backend["ip"], backend["port"], backend["weight"])


def _compared(
    kind: Kind, decl: Decl, now: Mapping[str, Any], current: _Current
) -> tuple[dict[str, tuple[object, object]], dict[str, tuple[object, object]]]:
    """(mutable, immutable) stated fields as {name: (current, desired)}."""
    mutable: dict[str, tuple[object, object]] = {}
    immutable: dict[str, tuple[object, object]] = {}
    if isinstance(decl, HostDecl):
        stated = decl.stated("ovsdb_remote", "tunnel_ip", "uplink", "libvirt_uri")
        for name, value in stated.items():
            mutable[name] = (now.get(name), value)
    elif isinstance(decl, TenantDecl):
        for name, value in decl.stated("description").items():
            mutable[name] = (now.get(name), value or "")
    elif isinstance(decl, NetworkDecl):
        for name, value in decl.stated("type", "cidr", "ipv6_cidr", "segmentation_id").items():
            immutable[name] = (now.get(name), value)
        for name, value in decl.stated("gateway").items():
            mutable[name] = (now.get(name), value)
    elif isinstance(decl, PortDecl):
        stated = decl.stated("mac", "ips", "host", "interface", "vm_id")
        if "mac" in stated:
            mutable["mac"] = (now["mac"], (decl.mac or "").lower() or None)
        if "ips" in stated:
            mutable["ips"] = (list(now["ips"]), list(decl.ips or ()))
        binding = now["binding"]
        if "host" in stated:
            host_now = current.host_names.get(binding["host_id"], binding["host_id"])
            mutable["host"] = (host_now, decl.host)
            mutable["interface"] = (binding["interface"], decl.interface)
        if "vm_id" in stated:
            mutable["vm_id"] = (binding["vm_id"], decl.vm_id)
    elif isinstance(decl, LoadBalancerDecl):
        for name, value in decl.stated("vip", "port", "protocol").items():
            immutable[name] = (now.get(name), value)
        if decl.protocol != now["protocol"]:  # a default the file may leave out
            immutable["protocol"] = (now["protocol"], decl.protocol)
        if decl.backends is not None:
            mutable["backends"] = (
                sorted(_current_backend_key(b, current) for b in now["backends"]),
                sorted(_backend_key(b) for b in decl.backends),
            )
        if decl.health_check is not None:
            stated_hc = _stated_health_check(decl.health_check)
            hc_now = {name: now["health_check"][name] for name in stated_hc}
            mutable["health_check"] = (hc_now, stated_hc)
    changed = {name: pair for name, pair in mutable.items() if pair[0] != pair[1]}
    conflicting = {name: pair for name, pair in immutable.items() if pair[0] != pair[1]}
    # A binding is changed as a whole (host and interface in one PATCH).
    if ("host" in changed) != ("interface" in changed) and isinstance(decl, PortDecl):
        changed.setdefault("host", mutable["host"])
        changed.setdefault("interface", mutable["interface"])
    return changed, conflicting


def _stated_health_check(health_check: HealthCheckDecl) -> dict[str, object]:
    return {name: value for name, value in health_check.model_dump().items() if value is not None}


def _create_fields(decl: Decl) -> tuple[FieldChange, ...]:
    skip = {"name", "networks", "ports", "load_balancers"}
    values = decl.model_dump(exclude_none=True, exclude=skip)
    return tuple(FieldChange(name, None, value) for name, value in values.items())


# ---- the plan ---------------------------------------------------------------------------------


def plan(document: Document, topology: Mapping[str, Any], *, prune: bool = False) -> Plan:
    """The changes that make the service hold what `document` declares."""
    current = _index(topology)
    declared = _declared(document)
    changes: list[Change] = []
    conflicts: list[str] = []
    for kind in KIND_ORDER:
        existing = current.of(kind)
        for key, decl in declared[kind].items():
            now = existing.get(key)
            if now is None:
                changes.append(Change("create", kind, key, _create_fields(decl), decl=decl))
                continue
            changed, conflicting = _compared(kind, decl, now, current)
            label = Change("update", kind, key).label
            for name, (was, wanted) in conflicting.items():
                conflicts.append(
                    f"{label}: {name} is {was!r}, the file says {wanted!r}; it cannot change in "
                    "place (remove the entry, apply with --prune, then add it back)"
                )
            if changed:
                fields = tuple(FieldChange(n, was, wanted) for n, (was, wanted) in changed.items())
                changes.append(Change("update", kind, key, fields, id=now["id"], decl=decl))
    deletions, never_pruned = _undeclared(current, declared, document)
    if prune:
        changes[:0] = deletions
    kept = never_pruned if prune else (*(c.label for c in deletions), *never_pruned)
    return Plan(changes=tuple(changes), kept=tuple(kept), conflicts=tuple(conflicts))


def _undeclared(
    current: _Current, declared: Mapping[Kind, Mapping[Key, Decl]], document: Document
) -> tuple[list[Change], tuple[str, ...]]:
    """Deletions of what exists undeclared, children first; and what is never pruned."""
    deletions: list[Change] = []
    never: list[str] = []
    for kind in reversed(KIND_ORDER):
        if kind == "host" and document.hosts is None:
            continue  # the file does not manage hosts
        for key, now in current.of(kind).items():
            if key in declared[kind]:
                continue
            change = Change("delete", kind, key, id=now["id"])
            if kind == "port" and now.get("origin") == "libvirt":
                never.append(f"{change.label} (made by the libvirt watcher)")
                continue
            deletions.append(change)
    return deletions, tuple(never)


# ---- request bodies ---------------------------------------------------------------------------


def create_body(change: Change, ids: Ids) -> dict[str, Any]:
    """POST body of a creation, references resolved by `ids` (parents exist by then)."""
    decl = change.decl
    key = change.key
    if isinstance(decl, HostDecl):
        return decl.model_dump(exclude_none=True)
    if isinstance(decl, TenantDecl):
        return {"name": decl.name, **({"description": decl.description}
                                      if decl.description is not None else {})}
    if isinstance(decl, NetworkDecl):
        body = decl.model_dump(exclude_none=True, exclude={"ports", "load_balancers"})
        return {**body, "tenant_id": ids("tenant", key[:1])}
    if isinstance(decl, PortDecl):
        body = {"network_id": ids("network", key[:2]), "name": decl.name}
        body.update(decl.model_dump(exclude_none=True, exclude={"name", "host"}))
        if "ips" in body:
            body["ips"] = list(body["ips"])
        if decl.host is not None:
            body["host_id"] = ids("host", (decl.host,))
        return body
    if isinstance(decl, LoadBalancerDecl):
        body = {"network_id": ids("network", key[:2]), "name": decl.name, "vip": decl.vip,
                "port": decl.port, "protocol": decl.protocol,
                "backends": _backends(decl.backends or (), key[:2], ids)}
        if decl.health_check is not None:
            body["health_check"] = _stated_health_check(decl.health_check)
        return body
    raise ValueError(f"nothing to create for {change.label}")


def update_body(change: Change, ids: Ids) -> dict[str, Any]:
    """PATCH body of an update: the changed fields only."""
    names = {f.name for f in change.fields}
    decl = change.decl
    body: dict[str, Any] = {}
    if isinstance(decl, PortDecl):
        if "host" in names:
            body["host_id"] = None if decl.host is None else ids("host", (decl.host,))
            body["interface"] = decl.interface
        if "ips" in names:
            body["ips"] = list(decl.ips or ())
        if "mac" in names:
            body["mac"] = decl.mac
        if "vm_id" in names:
            body["vm_id"] = decl.vm_id
        return body
    if isinstance(decl, LoadBalancerDecl):
        if "backends" in names:
            body["backends"] = _backends(decl.backends or (), change.key[:2], ids)
        if "health_check" in names and decl.health_check is not None:
            body["health_check"] = _stated_health_check(decl.health_check)
        return body
    if decl is None:
        raise ValueError(f"nothing to update for {change.label}")
    return {f.name: getattr(decl, f.name) for f in change.fields}


def _backends(backends: Iterable[BackendDecl], network: Key, ids: Ids) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for backend in backends:
        body: dict[str, Any] = {"port": backend.port, "weight": backend.weight}
        if backend.port_name is not None:
            body["port_id"] = ids("port", (*network, backend.port_name))
        else:
            body["ip"] = backend.ip
        result.append(body)
    return result


def bound_ports(document: Document) -> list[Key]:
    """Ports the file binds to a host: `apply` waits until they are ACTIVE."""
    return [
        (tenant.name, network.name, port.name)
        for tenant in document.tenants
        for network in tenant.networks
        for port in network.ports
        if port.host is not None
    ]
