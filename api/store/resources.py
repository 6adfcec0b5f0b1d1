"""The rules of the desired state: keyword-only create/read/update/delete helpers.

Every helper works inside a session its caller opened (`Database.write()` for
changes, `Database.read()` for reads) and raises `api.errors` problems when a
request cannot be honoured; the caller's transaction then rolls back, so a
refused request changes nothing. Scoping is enforced here: an object of another
tenant is "not found", never "forbidden", so its existence does not leak.

The libvirt watcher uses the port helpers with the default `SYSTEM` actor.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, Forbidden, Invalid, NotFound
from api.rest.auth import SYSTEM, Principal
from api.store.models import (
    Base,
    GlobalRevision,
    Host,
    LbBackend,
    LoadBalancer,
    Network,
    Port,
    PortIp,
    Tenant,
    utcnow,
)
from api.store.segments import SegmentPools
from api.validation import (
    check_host_address,
    duplicates,
    lowest_free_address,
    normalize_mac,
    random_local_mac,
)

M = TypeVar("M", bound=Base)
T = TypeVar("T")
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def _paginate(
    session: Session, stmt: Select[Any], model: Any, *, limit: int, offset: int
) -> Page[Any]:
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    ordered = stmt.order_by(model.created_at, model.id).limit(limit).offset(offset)
    return Page(list(session.scalars(ordered)), int(total), limit, offset)


def _scope(stmt: Select[Any], tenant_column: Any, actor: Principal) -> Select[Any]:
    return stmt if actor.is_admin else stmt.where(tenant_column == actor.tenant_id)


def _exists(session: Session, *conditions: ColumnElement[bool]) -> bool:
    return session.execute(select(1).where(*conditions).limit(1)).first() is not None


def _owned(session: Session, model: type[M], obj_id: str, actor: Principal, what: str) -> M:
    obj = session.get(model, obj_id)
    if obj is None or not (actor.is_admin or getattr(obj, "tenant_id", None) == actor.tenant_id):
        raise NotFound(f"{what} {obj_id} not found")
    return obj


# ---- hosts (admin only: the routes enforce it) ------------------------------------


def create_host(
    session: Session,
    *,
    name: str,
    ovsdb_remote: str,
    libvirt_uri: str | None = None,
    tunnel_ip: str | None = None,
    uplink: str | None = None,
) -> Host:
    _check_host_unique(session, name=name, tunnel_ip=tunnel_ip, host_id=None)
    host = Host(
        name=name,
        ovsdb_remote=ovsdb_remote,
        libvirt_uri=libvirt_uri,
        tunnel_ip=tunnel_ip,
        uplink=uplink,
    )
    session.add(host)
    session.flush()
    return host


def _check_host_unique(
    session: Session, *, name: str | None, tunnel_ip: str | None, host_id: str | None
) -> None:
    if name is not None and _exists(session, Host.name == name, Host.id != (host_id or "")):
        raise Conflict(f"a host named {name!r} already exists")
    if tunnel_ip is not None and _exists(
        session, Host.tunnel_ip == tunnel_ip, Host.id != (host_id or "")
    ):
        raise Conflict(f"tunnel_ip {tunnel_ip} is already used by another host")


def get_host(session: Session, *, host_id: str) -> Host:
    host = session.get(Host, host_id)
    if host is None:
        raise NotFound(f"host {host_id} not found")
    return host


def list_hosts(session: Session, *, limit: int = 100, offset: int = 0) -> Page[Host]:
    return _paginate(session, select(Host), Host, limit=limit, offset=offset)


def update_host(session: Session, *, host_id: str, changes: Mapping[str, Any]) -> Host:
    host = get_host(session, host_id=host_id)
    _check_host_unique(
        session, name=changes.get("name"), tunnel_ip=changes.get("tunnel_ip"), host_id=host.id
    )
    for field, value in changes.items():
        setattr(host, field, value)
    session.flush()
    return host


def delete_host(session: Session, *, host_id: str) -> None:
    host = get_host(session, host_id=host_id)
    bound = session.scalar(select(func.count()).where(Port.host_id == host.id)) or 0
    if bound:
        raise Conflict(f"host {host.name!r} still has {bound} bound port(s); unbind them first")
    session.delete(host)
    session.flush()


# ---- tenants ----------------------------------------------------------------------


def create_tenant(session: Session, *, name: str, description: str = "") -> Tenant:
    if _exists(session, Tenant.name == name):
        raise Conflict(f"a tenant named {name!r} already exists")
    tenant = Tenant(name=name, description=description)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, *, actor: Principal = SYSTEM, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or not (actor.is_admin or tenant.id == actor.tenant_id):
        raise NotFound(f"tenant {tenant_id} not found")
    return tenant


def list_tenants(
    session: Session, *, actor: Principal = SYSTEM, limit: int = 100, offset: int = 0
) -> Page[Tenant]:
    return _paginate(
        session, _scope(select(Tenant), Tenant.id, actor), Tenant, limit=limit, offset=offset
    )


def update_tenant(session: Session, *, tenant_id: str, changes: Mapping[str, Any]) -> Tenant:
    tenant = get_tenant(session, tenant_id=tenant_id)
    name = changes.get("name")
    if name is not None and _exists(session, Tenant.name == name, Tenant.id != tenant.id):
        raise Conflict(f"a tenant named {name!r} already exists")
    for field, value in changes.items():
        setattr(tenant, field, value)
    session.flush()
    return tenant


def delete_tenant(session: Session, *, tenant_id: str) -> None:
    tenant = get_tenant(session, tenant_id=tenant_id)
    networks = session.scalar(select(func.count()).where(Network.tenant_id == tenant.id)) or 0
    if networks:
        raise Conflict(f"tenant {tenant.name!r} still has {networks} network(s); delete them first")
    session.delete(tenant)  # its tokens go with it (ON DELETE CASCADE)
    session.flush()


# ---- networks ---------------------------------------------------------------------


def create_network(
    session: Session,
    *,
    actor: Principal = SYSTEM,
    pools: SegmentPools,
    name: str,
    type: str,
    tenant_id: str | None = None,
    segmentation_id: int | None = None,
    cidr: str | None = None,
    gateway: str | None = None,
) -> Network:
    if segmentation_id is not None and not actor.is_admin:
        raise Forbidden("only an admin token may choose segmentation_id; omit it to get one")
    if actor.is_admin:
        if tenant_id is None:
            raise Invalid("tenant_id", "required with an admin token")
        if session.get(Tenant, tenant_id) is None:
            raise Invalid("tenant_id", f"tenant {tenant_id} does not exist")
    elif tenant_id is None:
        tenant_id = actor.tenant_id
    elif tenant_id != actor.tenant_id:
        raise Forbidden("a tenant token can only create networks of its own tenant")
    assert tenant_id is not None
    if _exists(session, Network.tenant_id == tenant_id, Network.name == name):
        raise Conflict(f"the tenant already has a network named {name!r}")

    pool = pools.for_type(type)
    label = "VLAN id" if type == "vlan" else "VNI"
    if segmentation_id is not None and segmentation_id not in pool:
        raise Invalid(
            "segmentation_id", f"{segmentation_id} is outside the {label} ranges {pool.describe()}"
        )
    # Write transactions are serialised, so the first pick is free; the retry
    # only guards against a writer that bypasses that (the UNIQUE constraint
    # still has the last word).
    for _attempt in range(5):
        used = session.scalars(select(Network.segmentation_id).where(Network.type == type))
        chosen = segmentation_id if segmentation_id is not None else pool.lowest_free(used)
        if chosen is None:
            raise Conflict(f"no free {label} left in {pool.describe()}")
        if segmentation_id is not None and _exists(
            session, Network.type == type, Network.segmentation_id == chosen
        ):
            raise Conflict(f"{label} {chosen} is already used by another network")
        network = Network(
            tenant_id=tenant_id,
            name=name,
            type=type,
            segmentation_id=chosen,
            cidr=cidr,
            gateway=gateway,
        )
        try:
            with session.begin_nested():
                session.add(network)
        except IntegrityError:
            if segmentation_id is not None:
                raise Conflict(f"{label} {chosen} is already used by another network") from None
            continue
        return network
    raise Conflict(f"could not allocate a {label}: concurrent allocations; retry")


def get_network(session: Session, *, actor: Principal = SYSTEM, network_id: str) -> Network:
    return _owned(session, Network, network_id, actor, "network")


def list_networks(
    session: Session,
    *,
    actor: Principal = SYSTEM,
    tenant_id: str | None = None,
    type: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[Network]:
    stmt = _scope(select(Network), Network.tenant_id, actor)
    if tenant_id is not None:
        stmt = stmt.where(Network.tenant_id == tenant_id)
    if type is not None:
        stmt = stmt.where(Network.type == type)
    return _paginate(session, stmt, Network, limit=limit, offset=offset)


def update_network(
    session: Session, *, actor: Principal = SYSTEM, network_id: str, changes: Mapping[str, Any]
) -> Network:
    network = get_network(session, actor=actor, network_id=network_id)
    name = changes.get("name")
    if name is not None and _exists(
        session,
        Network.tenant_id == network.tenant_id,
        Network.name == name,
        Network.id != network.id,
    ):
        raise Conflict(f"the tenant already has a network named {name!r}")
    gateway = changes.get("gateway")
    if gateway is not None and gateway != network.gateway:
        if network.cidr is None:
            raise Invalid("gateway", "the network has no cidr")
        _check_inside("gateway", gateway, network.cidr)
        _check_address_free(session, network, gateway, port_id=None)
    for field, value in changes.items():
        setattr(network, field, value)
    session.flush()
    return network


def delete_network(session: Session, *, actor: Principal = SYSTEM, network_id: str) -> None:
    network = get_network(session, actor=actor, network_id=network_id)
    ports = session.scalar(select(func.count()).where(Port.network_id == network.id)) or 0
    lbs = session.scalar(select(func.count()).where(LoadBalancer.network_id == network.id)) or 0
    if ports or lbs:
        raise Conflict(
            f"network {network.name!r} still has {ports} port(s) and {lbs} load balancer(s)"
        )
    session.delete(network)
    session.flush()


# ---- addresses --------------------------------------------------------------------


def _check_inside(field: str, address: str, cidr: str) -> None:
    try:
        check_host_address(ipaddress.IPv4Address(address), ipaddress.IPv4Network(cidr))
    except ValueError as exc:
        raise Invalid(field, str(exc)) from None


def _address_users(session: Session, network: Network, *, port_id: str | None) -> dict[str, str]:
    """Addresses of `network` already spoken for, with who holds them (`port_id` excluded)."""
    users: dict[str, str] = {}
    if network.gateway:
        users[network.gateway] = "the network's gateway"
    for ip, vip_lb in session.execute(
        select(LoadBalancer.vip, LoadBalancer.id).where(LoadBalancer.network_id == network.id)
    ):
        users.setdefault(ip, f"the VIP of load balancer {vip_lb}")
    for ip, holder in session.execute(
        select(PortIp.ip, PortIp.port_id).where(
            PortIp.network_id == network.id, PortIp.port_id != (port_id or "")
        )
    ):
        users[ip] = f"port {holder}"
    return users


def _check_address_free(
    session: Session, network: Network, address: str, *, port_id: str | None
) -> None:
    holder = _address_users(session, network, port_id=port_id).get(address)
    if holder is not None:
        raise Conflict(f"{address} is already used by {holder}")


def _resolve_port_ips(
    session: Session, network: Network, requested: Sequence[str] | None, *, port_id: str | None
) -> list[str]:
    """The addresses a port gets: `requested` checked, or one allocated when None."""
    users = _address_users(session, network, port_id=port_id)
    if requested is None:
        if network.cidr is None:
            return []
        taken = {ipaddress.IPv4Address(ip) for ip in users}
        free = lowest_free_address(ipaddress.IPv4Network(network.cidr), taken)
        if free is None:
            raise Conflict(f"no free address left in {network.cidr}")
        return [str(free)]
    if requested and network.cidr is None:
        raise Invalid("ips", f"network {network.id} has no cidr, so its ports cannot have IPs")
    repeated = duplicates(requested)
    if repeated:
        raise Invalid("ips", f"duplicate address {repeated[0]}")
    for address in requested:
        assert network.cidr is not None
        _check_inside("ips", address, network.cidr)
        if address in users:
            raise Conflict(f"{address} is already used by {users[address]}")
    return list(requested)


# ---- ports ------------------------------------------------------------------------


def _network_of_body(session: Session, actor: Principal, network_id: str) -> Network:
    network = session.get(Network, network_id)
    if network is None or not (actor.is_admin or network.tenant_id == actor.tenant_id):
        raise Invalid("network_id", f"network {network_id} does not exist")
    return network


def _check_binding(
    session: Session, *, host_id: str | None, interface: str | None, port_id: str | None
) -> None:
    if interface is not None and host_id is None:
        raise Invalid("interface", "an interface needs a host_id")
    if host_id is None:
        return
    if session.get(Host, host_id) is None:
        raise Invalid("host_id", f"host {host_id} does not exist")
    if interface is not None:
        holder = session.scalar(
            select(Port.id).where(
                Port.host_id == host_id, Port.interface == interface, Port.id != (port_id or "")
            )
        )
        if holder is not None:
            raise Conflict(f"interface {interface!r} on host {host_id} is bound to port {holder}")


def _check_mac_free(session: Session, mac: str, *, port_id: str | None) -> None:
    holder = session.scalar(select(Port.id).where(Port.mac == mac, Port.id != (port_id or "")))
    if holder is not None:
        raise Conflict(f"MAC {mac} is already used by port {holder}")


def _allocate_mac(session: Session) -> str:
    for _attempt in range(16):
        mac = random_local_mac()
        if not _exists(session, Port.mac == mac):
            return mac
    raise Conflict("could not allocate a unique MAC address; retry")


def _set_ips(port: Port, network_id: str, ips: Sequence[str]) -> None:
    existing = {address.ip: address for address in port.addresses}
    kept: list[PortIp] = []
    for position, ip in enumerate(ips):
        address = existing.get(ip) or PortIp(ip=ip, network_id=network_id)
        address.position = position
        kept.append(address)
    port.addresses = kept


def create_port(
    session: Session,
    *,
    actor: Principal = SYSTEM,
    network_id: str,
    name: str | None = None,
    mac: str | None = None,
    ips: Sequence[str] | None = None,
    host_id: str | None = None,
    interface: str | None = None,
    vm_id: str | None = None,
    origin: str = "api",
) -> Port:
    network = _network_of_body(session, actor, network_id)
    if mac is None:
        mac = _allocate_mac(session)
    else:
        mac = normalize_mac(mac)
        _check_mac_free(session, mac, port_id=None)
    resolved_ips = _resolve_port_ips(session, network, ips, port_id=None)
    _check_binding(session, host_id=host_id, interface=interface, port_id=None)
    port = Port(
        network_id=network.id,
        tenant_id=network.tenant_id,
        name=name,
        mac=mac,
        host_id=host_id,
        interface=interface,
        vm_id=vm_id,
        origin=origin,
        bound_at=utcnow() if host_id is not None else None,
        status="DOWN",
    )
    _set_ips(port, network.id, resolved_ips)
    session.add(port)
    session.flush()
    return port


def get_port(session: Session, *, actor: Principal = SYSTEM, port_id: str) -> Port:
    return _owned(session, Port, port_id, actor, "port")


def find_port(session: Session, *, port_id: str) -> Port | None:
    return session.get(Port, port_id)


def find_port_by_mac(session: Session, *, mac: str) -> Port | None:
    try:
        normalized = normalize_mac(mac)
    except ValueError:
        return None
    return session.scalar(select(Port).where(Port.mac == normalized))


def ports_of_vm(session: Session, *, vm_id: str) -> list[Port]:
    return list(session.scalars(select(Port).where(Port.vm_id == vm_id).order_by(Port.created_at)))


def list_ports(
    session: Session,
    *,
    actor: Principal = SYSTEM,
    network_id: str | None = None,
    host_id: str | None = None,
    status: str | None = None,
    vm_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[Port]:
    stmt = _scope(select(Port), Port.tenant_id, actor)
    for column, value in (
        (Port.network_id, network_id),
        (Port.host_id, host_id),
        (Port.status, status),
        (Port.vm_id, vm_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return _paginate(session, stmt, Port, limit=limit, offset=offset)


def update_port(
    session: Session, *, actor: Principal = SYSTEM, port_id: str, changes: Mapping[str, Any]
) -> Port:
    port = get_port(session, actor=actor, port_id=port_id)
    network = session.get_one(Network, port.network_id)
    if "mac" in changes:
        mac = normalize_mac(changes["mac"])
        _check_mac_free(session, mac, port_id=port.id)
        port.mac = mac
    if "ips" in changes:
        new_ips = _resolve_port_ips(session, network, changes["ips"], port_id=port.id)
        _check_backends_keep_ips(session, port, new_ips)
        _set_ips(port, network.id, new_ips)
    if "name" in changes:
        port.name = changes["name"]
    if "vm_id" in changes:
        port.vm_id = changes["vm_id"]
    if "host_id" in changes or "interface" in changes:
        host_id = changes.get("host_id", port.host_id)
        # Unbinding from the host drops the interface unless one is given.
        interface = changes.get("interface", port.interface if host_id is not None else None)
        _check_binding(session, host_id=host_id, interface=interface, port_id=port.id)
        if (host_id, interface) != (port.host_id, port.interface):
            port.host_id = host_id
            port.interface = interface
            port.bound_at = utcnow()
            port.status = "DOWN"
            port.status_at = port.bound_at
            port.activation_seconds = None
    session.flush()
    return port


def _check_backends_keep_ips(session: Session, port: Port, new_ips: Sequence[str]) -> None:
    for lb_id, ip in session.execute(
        select(LbBackend.load_balancer_id, LbBackend.ip).where(LbBackend.port_id == port.id)
    ):
        if ip not in new_ips:
            raise Conflict(f"{ip} is a backend of load balancer {lb_id}; update it first")


def bind_port(
    session: Session,
    *,
    port_id: str,
    host_id: str,
    interface: str | None,
    vm_id: str | None = None,
) -> Port:
    return update_port(
        session,
        port_id=port_id,
        changes={"host_id": host_id, "interface": interface, "vm_id": vm_id},
    )


def unbind_port(session: Session, *, port_id: str) -> Port:
    return update_port(
        session, port_id=port_id, changes={"host_id": None, "interface": None, "vm_id": None}
    )


def delete_port(session: Session, *, actor: Principal = SYSTEM, port_id: str) -> None:
    port = get_port(session, actor=actor, port_id=port_id)
    lb_id = session.scalar(select(LbBackend.load_balancer_id).where(LbBackend.port_id == port.id))
    if lb_id is not None:
        raise Conflict(f"port {port.id} is a backend of load balancer {lb_id}; remove it first")
    session.delete(port)
    session.flush()


# ---- load balancers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Backend:
    ip: str
    port: int
    weight: int
    port_id: str | None


def _resolve_backends(
    session: Session, network: Network, vip: str, raw: Sequence[Mapping[str, Any]]
) -> list[_Backend]:
    assert network.cidr is not None
    resolved: list[_Backend] = []
    seen: set[tuple[str, int]] = set()
    for index, backend in enumerate(raw):
        field = f"backends.{index}"
        ip: str | None = backend.get("ip")
        port_id: str | None = backend.get("port_id")
        if port_id is not None:
            member = session.get(Port, port_id)
            if member is None or member.network_id != network.id:
                raise Invalid(f"{field}.port_id", f"port {port_id} is not on network {network.id}")
            if not member.ips:
                raise Invalid(f"{field}.port_id", f"port {port_id} has no IP address")
            if ip is None:
                ip = member.ips[0]
            elif ip not in member.ips:
                raise Invalid(f"{field}.ip", f"{ip} is not an address of port {port_id}")
        assert ip is not None
        _check_inside(f"{field}.ip", ip, network.cidr)
        if ip == vip:
            raise Invalid(f"{field}.ip", "a backend cannot be the VIP itself")
        key = (ip, int(backend["port"]))
        if key in seen:
            raise Invalid(field, f"duplicate backend {ip}:{key[1]}")
        seen.add(key)
        resolved.append(_Backend(ip, key[1], int(backend.get("weight", 1)), port_id))
    return resolved


def _set_backends(lb: LoadBalancer, backends: Sequence[_Backend]) -> None:
    # Health is kept for backends that stay: replacing the list must not make a
    # known-dead backend healthy again.
    existing = {(b.ip, b.port): b for b in lb.backends}
    kept: list[LbBackend] = []
    for position, wanted in enumerate(backends):
        row = existing.get((wanted.ip, wanted.port)) or LbBackend(
            ip=wanted.ip, port=wanted.port, healthy=True
        )
        row.weight = wanted.weight
        row.port_id = wanted.port_id
        row.position = position
        kept.append(row)
    lb.backends = kept


def create_load_balancer(
    session: Session,
    *,
    actor: Principal = SYSTEM,
    network_id: str,
    name: str,
    vip: str,
    protocol: str,
    port: int,
    health_check: Mapping[str, Any],
    backends: Sequence[Mapping[str, Any]] = (),
) -> LoadBalancer:
    network = _network_of_body(session, actor, network_id)
    if network.cidr is None:
        raise Invalid("network_id", f"network {network.id} has no cidr; a VIP needs one")
    _check_inside("vip", vip, network.cidr)
    if vip == network.gateway:
        raise Conflict(f"{vip} is the network's gateway")
    holder = session.scalar(
        select(PortIp.port_id).where(PortIp.network_id == network.id, PortIp.ip == vip)
    )
    if holder is not None:
        raise Conflict(f"{vip} is already used by port {holder}")
    if _exists(
        session,
        LoadBalancer.network_id == network.id,
        LoadBalancer.vip == vip,
        LoadBalancer.protocol == protocol,
        LoadBalancer.port == port,
    ):
        raise Conflict(f"a listener for {protocol}/{vip}:{port} already exists")
    if _exists(session, LoadBalancer.tenant_id == network.tenant_id, LoadBalancer.name == name):
        raise Conflict(f"the tenant already has a load balancer named {name!r}")
    lb = LoadBalancer(
        tenant_id=network.tenant_id,
        network_id=network.id,
        name=name,
        vip=vip,
        protocol=protocol,
        port=port,
    )
    _apply_health_check(lb, health_check)
    _set_backends(lb, _resolve_backends(session, network, vip, backends))
    session.add(lb)
    session.flush()
    return lb


def _apply_health_check(lb: LoadBalancer, health_check: Mapping[str, Any]) -> None:
    for key, column in (
        ("enabled", "hc_enabled"),
        ("interval", "hc_interval"),
        ("timeout", "hc_timeout"),
        ("rise", "hc_rise"),
        ("fall", "hc_fall"),
    ):
        if key in health_check:
            setattr(lb, column, health_check[key])
    if lb.hc_timeout is not None and lb.hc_interval is not None and lb.hc_timeout > lb.hc_interval:
        raise Invalid("health_check.timeout", f"must not exceed interval ({lb.hc_interval} s)")


def get_load_balancer(
    session: Session, *, actor: Principal = SYSTEM, load_balancer_id: str
) -> LoadBalancer:
    return _owned(session, LoadBalancer, load_balancer_id, actor, "load balancer")


def list_load_balancers(
    session: Session,
    *,
    actor: Principal = SYSTEM,
    network_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[LoadBalancer]:
    stmt = _scope(select(LoadBalancer), LoadBalancer.tenant_id, actor)
    if network_id is not None:
        stmt = stmt.where(LoadBalancer.network_id == network_id)
    return _paginate(session, stmt, LoadBalancer, limit=limit, offset=offset)


def update_load_balancer(
    session: Session,
    *,
    actor: Principal = SYSTEM,
    load_balancer_id: str,
    changes: Mapping[str, Any],
) -> LoadBalancer:
    lb = get_load_balancer(session, actor=actor, load_balancer_id=load_balancer_id)
    name = changes.get("name")
    if name is not None and _exists(
        session,
        LoadBalancer.tenant_id == lb.tenant_id,
        LoadBalancer.name == name,
        LoadBalancer.id != lb.id,
    ):
        raise Conflict(f"the tenant already has a load balancer named {name!r}")
    if name is not None:
        lb.name = name
    if "health_check" in changes:
        _apply_health_check(lb, changes["health_check"])
    if "backends" in changes:
        network = session.get_one(Network, lb.network_id)
        _set_backends(lb, _resolve_backends(session, network, lb.vip, changes["backends"]))
    session.flush()
    return lb


def delete_load_balancer(
    session: Session, *, actor: Principal = SYSTEM, load_balancer_id: str
) -> None:
    lb = get_load_balancer(session, actor=actor, load_balancer_id=load_balancer_id)
    session.delete(lb)
    session.flush()


# ---- whole-fabric view ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topology:
    hosts: list[Host]
    tenants: list[Tenant]
    networks: list[Network]
    ports: list[Port]
    load_balancers: list[LoadBalancer]


def topology(session: Session, *, actor: Principal = SYSTEM) -> Topology:
    """Everything the caller may see (hosts are admin-only)."""

    def everything(model: Any, tenant_column: Any) -> list[Any]:
        stmt = _scope(select(model), tenant_column, actor)
        return list(session.scalars(stmt.order_by(model.created_at, model.id)))

    return Topology(
        hosts=everything(Host, None) if actor.is_admin else [],
        tenants=everything(Tenant, Tenant.id),
        networks=everything(Network, Network.tenant_id),
        ports=everything(Port, Port.tenant_id),
        load_balancers=everything(LoadBalancer, LoadBalancer.tenant_id),
    )


def revision_query() -> Select[Any]:
    return select(GlobalRevision.value).where(GlobalRevision.id == 1)
