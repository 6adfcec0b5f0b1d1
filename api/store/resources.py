"""The rules of the desired state: keyword-only resource services.

Every service works inside a session its caller opened (`Database.write()` for
changes, `Database.read()` for reads) and raises `api.errors` problems when a
request cannot be honoured; the caller's transaction then rolls back, so a
refused request changes nothing.

Every service takes the acting principal as a required keyword (`actor`): the
REST routes pass the caller, the libvirt watcher `LIBVIRT_WATCHER`. Who may see
what is decided in one place, `find`: an object of another tenant is "not
found", never "forbidden", so its existence does not leak; hosts are admin-only
and tenants are changed by admins only.

Get, list, update and delete are generic over a `Resource` (`HOSTS`, `TENANTS`,
`NETWORKS`, `PORTS`, `LOAD_BALANCERS`); creation and the rules of each kind
(unique names, addresses, bindings, backends) are per resource.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from api.errors import Conflict, Forbidden, Invalid, NotFound
from api.store import addresses
from api.store.db import change_revision
from api.store.ipv6_addresses import resolve_ipv6, split_families
from api.store.models import (
    Host,
    LbBackend,
    LoadBalancer,
    Network,
    Port,
    PortIp,
    Revisioned,
    Tenant,
    new_id,
    utcnow,
)
from api.store.principals import Principal, check_admin
from api.store.segments import SegmentPools
from api.validation import (
    check_host_address,
    duplicates,
    normalize_mac,
    random_local_mac,
)

M = TypeVar("M", bound=Revisioned)
T = TypeVar("T")
MAX_LIMIT = 1000
# Deeper pages than this are refused (422): SQL engines overflow on 64-bit offsets.
MAX_OFFSET = 10_000_000

Changes = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


def _no_rule(*_args: Any) -> None:
    return None


def _set_fields(_session: Session, obj: Any, changes: Changes, _actor: Principal) -> None:
    for field, value in changes.items():
        setattr(obj, field, value)


@dataclass(frozen=True, slots=True)
class Resource(Generic[M]):
    """One kind of desired-state row, as the generic services see it."""

    model: type[M]
    noun: str  # as in "load balancer <id> not found"
    # The column naming the owning tenant; None: admin only (hosts).
    owner: InstrumentedAttribute[str] | None
    # Tenants read their own row, but only admins change it.
    admin_writes: bool = False
    # Names are unique (within the owning tenant, when the owner is not the row itself).
    unique_name: bool = True
    # Fields only an admin may set, on creation and update (tenants get 403).
    admin_fields: frozenset[str] = frozenset()
    # Rules of an update beyond the name (raise to refuse), then how it is applied
    # (the actor decides what a conflict may name).
    check_update: Callable[[Session, M, Changes], None] = _no_rule
    apply: Callable[[Session, M, Changes, Principal], None] = _set_fields
    # Why the row cannot go yet (raise Conflict), checked before deleting.
    check_delete: Callable[[Session, M], None] = _no_rule
    # What else changes when the row goes (after check_delete).
    on_delete: Callable[[Session, M], None] = _no_rule

    def owner_of(self, obj: M) -> str | None:
        return None if self.owner is None else getattr(obj, self.owner.key)

    @property
    def scoped_names(self) -> bool:
        """Names are unique per tenant (not globally)."""
        return self.owner is not None and self.owner.key != "id"


# ---- the generic services ---------------------------------------------------------


def _visible(stmt: Select[Any], resource: Resource[Any], actor: Principal) -> Select[Any]:
    """`stmt` narrowed to the rows `actor` may see: the one place ownership is checked."""
    if resource.owner is None:
        check_admin(actor)
        return stmt
    return stmt if actor.is_admin else stmt.where(resource.owner == actor.tenant_id)


def _exists(session: Session, *conditions: ColumnElement[bool]) -> bool:
    return session.execute(select(1).where(*conditions).limit(1)).first() is not None


def _count(session: Session, *conditions: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).where(*conditions)) or 0


# Built once per resource and kind of caller: every request that names an object runs it.
_FIND_STATEMENTS: dict[tuple[str, bool], Select[Any]] = {}


def _find_statement(resource: Resource[Any], scoped: bool) -> Select[Any]:
    """The row of `resource` by id (`scoped`: and of the actor's tenant)."""
    stmt = _FIND_STATEMENTS.get((resource.noun, scoped))
    if stmt is None:
        model = resource.model
        stmt = select(model).where(model.id == bindparam("id"))
        if scoped and resource.owner is not None:
            stmt = stmt.where(resource.owner == bindparam("actor_tenant_id"))
        _FIND_STATEMENTS[(resource.noun, scoped)] = stmt
    return stmt


def find(session: Session, resource: Resource[M], *, actor: Principal, id: str) -> M | None:
    """The row if it exists and `actor` may see it, else None (whichever it is)."""
    if resource.owner is None:
        check_admin(actor)
    scoped = resource.owner is not None and not actor.is_admin
    params = {"id": id, "actor_tenant_id": actor.tenant_id} if scoped else {"id": id}
    found: M | None = session.scalar(_find_statement(resource, scoped), params)
    return found


def get(session: Session, resource: Resource[M], *, actor: Principal, id: str) -> M:
    obj = find(session, resource, actor=actor, id=id)
    if obj is None:
        raise NotFound(f"{resource.noun} {id} not found")
    return obj


def get_page(
    session: Session,
    resource: Resource[M],
    *,
    actor: Principal,
    where: Changes | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[M]:
    """One page of what `actor` may see, oldest first; `where` filters columns (None: any)."""
    model = resource.model
    stmt = _visible(select(model), resource, actor)
    for column, value in (where or {}).items():
        if value is not None:
            stmt = stmt.where(getattr(model, column) == value)
    total = _count_rows(session, stmt)
    ordered = stmt.order_by(model.created_at, model.id).limit(limit).offset(offset)
    return Page(list(session.scalars(ordered)), total, limit, offset)


# ---- ports read as rows (the list route's hot path) -------------------------------

# The columns of a port record (with `ips`, all a PortOut body shows).
PORT_COLUMNS: Final = (
    *("id", "created_at", "updated_at", "revision", "network_id", "tenant_id", "name"),
    *("mac", "origin", "host_id", "interface", "vm_id", "bound_at", "status", "status_at"),
    "activation_seconds",
)
PORT_FILTERS: Final = ("network_id", "host_id", "status", "vm_id")


@functools.cache
def _port_page_statements(
    tenant_scoped: bool, filters: frozenset[str]
) -> tuple[Select[Any], Select[Any]]:
    """The page and count statements for a kind of caller and a set of filters, built
    once: constructing a statement costs more CPU than SQLite running it. The page
    is joined to its addresses (a row per address, at least one per port)."""
    conditions = [getattr(Port, name) == bindparam(name) for name in sorted(filters)]
    if tenant_scoped:
        conditions.append(Port.tenant_id == bindparam("actor_tenant_id"))
    page = (
        select(*(getattr(Port, name) for name in PORT_COLUMNS))
        .where(*conditions)
        .order_by(Port.created_at, Port.id)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
        .subquery("page")
    )
    with_addresses = (
        select(page, PortIp.ip)
        .outerjoin(PortIp, PortIp.port_id == page.c.id)
        .order_by(page.c.created_at, page.c.id, PortIp.position)
    )
    count = select(func.count()).select_from(Port).where(*conditions)
    return with_addresses, count


def port_records(
    session: Session,
    *,
    actor: Principal,
    where: Changes | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[dict[str, Any]]:
    """`get_page` of `PORTS` as plain records (`PORT_COLUMNS` and `ips`, in position
    order), read with two Core queries (count, page with addresses) instead of loading
    ORM objects: a page of 100 ports as objects cost ~3x the CPU of the whole request
    (BENCHMARKS.md, rest_load)."""
    given = {name: value for name, value in (where or {}).items() if value is not None}
    unknown = set(given) - set(PORT_FILTERS)
    if unknown:
        raise ValueError(f"not a port filter: {sorted(unknown)}")
    page_stmt, count_stmt = _port_page_statements(not actor.is_admin, frozenset(given))
    params: dict[str, Any] = dict(given)
    if not actor.is_admin:
        params["actor_tenant_id"] = actor.tenant_id
    # Core statements on the session's connection: the ORM's execution layer is skipped.
    connection = session.connection()
    total = connection.scalar(count_stmt, params) or 0
    records: list[dict[str, Any]] = []
    for *columns, ip in connection.execute(page_stmt, {**params, "limit": limit, "offset": offset}):
        if not records or records[-1]["id"] != columns[0]:
            records.append({**dict(zip(PORT_COLUMNS, columns, strict=True)), "ips": []})
        if ip is not None:
            records[-1]["ips"].append(ip)
    return Page(records, total, limit, offset)


def _count_rows(session: Session, stmt: Select[Any]) -> int:
    # The same FROM and WHERE with count() as the only column: no subquery, so an
    # index holding the filtered columns answers it alone.
    counted = stmt.with_only_columns(func.count(), maintain_column_froms=True).order_by(None)
    return session.scalar(counted) or 0


def update(
    session: Session, resource: Resource[M], *, actor: Principal, id: str, changes: Changes
) -> M:
    if resource.admin_writes:
        check_admin(actor)
    obj = get(session, resource, actor=actor, id=id)
    _check_admin_fields(resource, actor, changes)
    if resource.unique_name and changes.get("name") is not None:
        _check_name_free(
            session, resource, changes["name"], tenant_id=resource.owner_of(obj), other_than=obj.id
        )
    resource.check_update(session, obj, changes)
    resource.apply(session, obj, changes, actor)
    session.flush()
    return obj


def _check_admin_fields(resource: Resource[Any], actor: Principal, fields: Iterable[str]) -> None:
    """Refuse a tenant token that sets (or clears) `fields` only admins may set."""
    given = sorted(resource.admin_fields.intersection(fields))
    if given and not actor.is_admin:
        raise Forbidden(f"only an admin token may set {' and '.join(given)} of a {resource.noun}")


def delete(session: Session, resource: Resource[M], *, actor: Principal, id: str) -> None:
    if resource.admin_writes:
        check_admin(actor)
    obj = get(session, resource, actor=actor, id=id)
    resource.check_delete(session, obj)
    resource.on_delete(session, obj)
    session.delete(obj)
    session.flush()


def _check_name_free(
    session: Session,
    resource: Resource[Any],
    name: str,
    *,
    tenant_id: str | None,
    other_than: str | None,
) -> None:
    model: Any = resource.model
    conditions = [model.name == name, model.id != (other_than or "")]
    if resource.scoped_names:
        conditions.append(resource.owner == tenant_id)
    if _exists(session, *conditions):
        if resource.scoped_names:
            raise Conflict(f"the tenant already has a {resource.noun} named {name!r}")
        raise Conflict(f"a {resource.noun} named {name!r} already exists")


def _add(session: Session, obj: M) -> M:
    session.add(obj)
    session.flush()
    return obj


# ---- hosts (admin only) -----------------------------------------------------------


def _check_tunnel_ip_free(session: Session, host: Host | None, changes: Changes) -> None:
    tunnel_ip = changes.get("tunnel_ip")
    if tunnel_ip is not None and _exists(
        session, Host.tunnel_ip == tunnel_ip, Host.id != (host.id if host else "")
    ):
        raise Conflict(f"tunnel_ip {tunnel_ip} is already used by another host")


def _check_host_unbound(session: Session, host: Host) -> None:
    bound = _count(session, Port.host_id == host.id)
    if bound:
        raise Conflict(f"host {host.name!r} still has {bound} bound port(s); unbind them first")


HOSTS = Resource(
    Host,
    "host",
    owner=None,
    check_update=_check_tunnel_ip_free,
    check_delete=_check_host_unbound,
)


def create_host(session: Session, *, actor: Principal, **fields: Any) -> Host:
    """A host from the fields of `HostCreate` (name, ovsdb_remote, libvirt_uri, ...)."""
    check_admin(actor)
    _check_name_free(session, HOSTS, fields["name"], tenant_id=None, other_than=None)
    _check_tunnel_ip_free(session, None, fields)
    return _add(session, Host(**fields))


# ---- tenants ----------------------------------------------------------------------


def _check_tenant_empty(session: Session, tenant: Tenant) -> None:
    networks = _count(session, Network.tenant_id == tenant.id)
    if networks:
        raise Conflict(f"tenant {tenant.name!r} still has {networks} network(s); delete them first")
    # its tokens go with it (ON DELETE CASCADE)


TENANTS = Resource(
    Tenant, "tenant", owner=Tenant.id, admin_writes=True, check_delete=_check_tenant_empty
)


def create_tenant(session: Session, *, actor: Principal, **fields: Any) -> Tenant:
    """A tenant from the fields of `TenantCreate` (name, description)."""
    check_admin(actor)
    _check_name_free(session, TENANTS, fields["name"], tenant_id=None, other_than=None)
    return _add(session, Tenant(**fields))


# ---- networks ---------------------------------------------------------------------


def _check_gateway_change(session: Session, network: Network, changes: Changes) -> None:
    gateway = changes.get("gateway")
    if gateway is not None and gateway != network.gateway:
        if network.cidr is None:
            raise Invalid("gateway", "the network has no cidr")
        _check_inside("gateway", gateway, network.cidr)
        _check_address_free(session, network, gateway, port_id=None)


def _check_network_empty(session: Session, network: Network) -> None:
    ports = _count(session, Port.network_id == network.id)
    lbs = _count(session, LoadBalancer.network_id == network.id)
    if ports or lbs:
        raise Conflict(
            f"network {network.name!r} still has {ports} port(s) and {lbs} load balancer(s)"
        )


def _apply_network_changes(
    session: Session, network: Network, changes: Changes, actor: Principal
) -> None:
    if "gateway" in changes and network.gateway and changes["gateway"] != network.gateway:
        addresses.release(session, network.id, [network.gateway])
    _set_fields(session, network, changes, actor)


NETWORKS = Resource(
    Network,
    "network",
    owner=Network.tenant_id,
    check_update=_check_gateway_change,
    apply=_apply_network_changes,
    check_delete=_check_network_empty,
)


VXLAN_OVERHEAD: Final = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8


def _network_mtu(type: str, mtu: int | None, underlay_mtu: int) -> int:
    """`mtu`, or the default for a network of `type`; refused above what the segment carries."""
    most = underlay_mtu - VXLAN_OVERHEAD if type == "vxlan" else underlay_mtu
    if mtu is None:
        return most if type == "vxlan" else min(1500, most)
    if mtu > most:
        carrier = "VXLAN over" if type == "vxlan" else "VLAN on"
        raise Invalid(
            "mtu", f"{mtu} exceeds what {carrier} the underlay MTU {underlay_mtu} carries ({most})"
        )
    return mtu


def create_network(
    session: Session,
    *,
    actor: Principal,
    pools: SegmentPools,
    name: str,
    type: str,
    tenant_id: str | None = None,
    segmentation_id: int | None = None,
    cidr: str | None = None,
    gateway: str | None = None,
    ipv6_cidr: str | None = None,
    mtu: int | None = None,
    dhcp_enabled: bool = True,
    dns_servers: Sequence[str] = (),
    underlay_mtu: int = 1500,
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
    _check_name_free(session, NETWORKS, name, tenant_id=tenant_id, other_than=None)
    mtu = _network_mtu(type, mtu, underlay_mtu)
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
            ipv6_cidr=ipv6_cidr,
            mtu=mtu,
            dhcp_enabled=dhcp_enabled,
            dns_servers=tuple(dns_servers),
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


# ---- addresses --------------------------------------------------------------------


def _check_inside(field: str, address: str, cidr: str) -> None:
    try:
        check_host_address(ipaddress.IPv4Address(address), ipaddress.IPv4Network(cidr))
    except ValueError as exc:
        raise Invalid(field, str(exc)) from None


def _address_holders(
    session: Session, network: Network, wanted: Sequence[str], *, port_id: str | None
) -> dict[str, str]:
    """Which of the `wanted` addresses of `network` are spoken for, and by whom
    (`port_id` excluded): looked up by address, not by reading every one in use."""
    holders: dict[str, str] = {}
    if network.gateway is not None and network.gateway in wanted:
        holders[network.gateway] = "the network's gateway"
    for ip, vip_lb in session.execute(
        select(LoadBalancer.vip, LoadBalancer.id).where(
            LoadBalancer.network_id == network.id, LoadBalancer.vip.in_(wanted)
        )
    ):
        holders.setdefault(ip, f"the VIP of load balancer {vip_lb}")
    for ip, holder in session.execute(
        select(PortIp.ip, PortIp.port_id).where(
            PortIp.network_id == network.id,
            PortIp.ip.in_(wanted),
            PortIp.port_id != (port_id or ""),
        )
    ):
        holders[ip] = f"port {holder}"
    return holders


def _check_address_free(
    session: Session, network: Network, address: str, *, port_id: str | None
) -> None:
    holder = _address_holders(session, network, [address], port_id=port_id).get(address)
    if holder is not None:
        raise Conflict(f"{address} is already used by {holder}")


def _resolve_port_ips(
    session: Session,
    network: Network,
    requested: Sequence[str] | None,
    *,
    port_id: str | None,
    own: Sequence[str] = (),
) -> list[str]:
    """The addresses a port gets: `requested` checked, or the lowest free one when None
    (the port's `own` addresses counting as free)."""
    if requested is None:
        if network.cidr is None:
            return []
        free = addresses.lowest_free(session, network, port_id=port_id, own=own)
        if free is None:
            raise Conflict(f"no free address left in {network.cidr}")
        return [free]
    if requested and network.cidr is None:
        raise Invalid("ips", f"network {network.id} has no cidr, so its ports cannot have IPs")
    repeated = duplicates(requested)
    if repeated:
        raise Invalid("ips", f"duplicate address {repeated[0]}")
    for address in requested:
        assert network.cidr is not None
        _check_inside("ips", address, network.cidr)
    holders = _address_holders(session, network, requested, port_id=port_id)
    for address in requested:
        if address in holders:
            raise Conflict(f"{address} is already used by {holders[address]}")
    return list(requested)


def _resolve_addresses(
    session: Session,
    network: Network,
    requested: Sequence[str] | None,
    *,
    port_id: str | None,
    own: Sequence[str] = (),
) -> list[str]:
    """A port's addresses, IPv4 (`_resolve_port_ips`) then IPv6 (`resolve_ipv6`): each
    family checked, or allocated when `requested` is None."""
    ipv4s, ipv6s = split_families(requested)
    own_ipv4s, _own_ipv6s = split_families(own)
    return [
        *_resolve_port_ips(session, network, ipv4s, port_id=port_id, own=own_ipv4s or ()),
        *resolve_ipv6(session, network, ipv6s, port_id=port_id),
    ]


# ---- ports ------------------------------------------------------------------------


def _network_of_body(session: Session, actor: Principal, network_id: str) -> Network:
    network = find(session, NETWORKS, actor=actor, id=network_id)
    if network is None:
        raise Invalid("network_id", f"network {network_id} does not exist")
    return network


def _port_named(session: Session, actor: Principal, holder: str) -> str:
    """How a conflict names the port `holder`: by id only to who may see it."""
    if find(session, PORTS, actor=actor, id=holder) is None:
        return "a port the token cannot see"
    return f"port {holder}"


def _check_binding(
    session: Session,
    *,
    actor: Principal,
    host_id: str | None,
    interface: str | None,
    port_id: str | None,
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
            raise Conflict(
                f"interface {interface!r} on host {host_id} is bound to "
                f"{_port_named(session, actor, holder)}"
            )


def _check_mac_free(session: Session, mac: str, *, actor: Principal, port_id: str | None) -> None:
    holder = session.scalar(select(Port.id).where(Port.mac == mac, Port.id != (port_id or "")))
    if holder is not None:
        raise Conflict(f"MAC {mac} is already used by {_port_named(session, actor, holder)}")


# A random MAC is checked by the UNIQUE index in the INSERT itself (ON CONFLICT (mac)
# DO NOTHING returns no row: draw again): one statement fewer than a lookup first.
_INSERT_PORT_UNLESS_MAC_USED: dict[str, Any] = {
    dialect: insert_of(Port).on_conflict_do_nothing(index_elements=[Port.mac]).returning(Port.id)
    for dialect, insert_of in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}


def _insert_port_with_new_mac(session: Session, record: dict[str, Any]) -> None:
    """Insert the port `record` with the first random MAC no port has (set in `record`)."""
    statement = _INSERT_PORT_UNLESS_MAC_USED[session.get_bind().dialect.name]
    connection = session.connection()
    for _attempt in range(16):
        record["mac"] = random_local_mac()
        if connection.execute(statement, record).first() is not None:
            return
    raise Conflict("could not allocate a unique MAC address; retry")


def _set_ips(port: Port, network_id: str, ips: Sequence[str]) -> None:
    existing = {address.ip: address for address in port.addresses}
    kept: list[PortIp] = []
    for position, ip in enumerate(ips):
        address = existing.get(ip) or PortIp(ip=ip, network_id=network_id)
        address.position = position
        kept.append(address)
    port.addresses = kept


def _check_backends_keep_ips(session: Session, port: Port, new_ips: Sequence[str]) -> None:
    for lb_id, ip in session.execute(
        select(LbBackend.load_balancer_id, LbBackend.ip).where(LbBackend.port_id == port.id)
    ):
        if ip not in new_ips:
            raise Conflict(f"{ip} is a backend of load balancer {lb_id}; update it first")


def _apply_port_changes(session: Session, port: Port, changes: Changes, actor: Principal) -> None:
    network = session.get_one(Network, port.network_id)
    if "mac" in changes:
        mac = normalize_mac(changes["mac"])
        _check_mac_free(session, mac, actor=actor, port_id=port.id)
        port.mac = mac
    if "ips" in changes:
        new_ips = _resolve_addresses(
            session, network, changes["ips"], port_id=port.id, own=port.ips
        )
        _check_backends_keep_ips(session, port, new_ips)
        addresses.release(
            session, network.id, [ip for ip in port.ips if ip not in new_ips and ":" not in ip]
        )
        _set_ips(port, network.id, new_ips)
    if "name" in changes:
        port.name = changes["name"]
    if "vm_id" in changes:
        port.vm_id = changes["vm_id"]
    if "host_id" in changes or "interface" in changes:
        host_id = changes.get("host_id", port.host_id)
        # Unbinding from the host drops the interface unless one is given.
        interface = changes.get("interface", port.interface if host_id is not None else None)
        _check_binding(session, actor=actor, host_id=host_id, interface=interface, port_id=port.id)
        if (host_id, interface) != (port.host_id, port.interface):
            port.host_id = host_id
            port.interface = interface
            port.bound_at = utcnow()
            port.status = "DOWN"
            port.status_at = port.bound_at
            port.activation_seconds = None


def _check_port_not_backend(session: Session, port: Port) -> None:
    lb_id = session.scalar(select(LbBackend.load_balancer_id).where(LbBackend.port_id == port.id))
    if lb_id is not None:
        raise Conflict(f"port {port.id} is a backend of load balancer {lb_id}; remove it first")


def _release_port_addresses(session: Session, port: Port) -> None:
    addresses.release(session, port.network_id, [ip for ip in port.ips if ":" not in ip])


PORTS = Resource(
    Port,
    "port",
    owner=Port.tenant_id,
    unique_name=False,
    # NOTE: binding a port to a host is the operator's (or its libvirt watcher's) act,
    # as binding:host_id is in Neutron: a tenant token could otherwise place
    # its ports on any host, and probe which host ids exist.
    admin_fields=frozenset({"host_id", "interface"}),
    apply=_apply_port_changes,
    check_delete=_check_port_not_backend,
    on_delete=_release_port_addresses,
)


_INSERT_PORT = insert(Port)
_INSERT_PORT_IP = insert(PortIp)


def add_port(
    session: Session,
    *,
    actor: Principal,
    network_id: str,
    name: str | None = None,
    mac: str | None = None,
    ips: Sequence[str] | None = None,
    host_id: str | None = None,
    interface: str | None = None,
    vm_id: str | None = None,
    origin: str = "api",
) -> dict[str, Any]:
    """A new port from the fields of `PortCreate`, returned as its record (as
    `port_records` reads it). Written with Core INSERTs and stamped here: the ORM's unit
    of work for a port and its address was a fifth of a create's CPU (rest_load)."""
    binding = {"host_id": host_id, "interface": interface}
    _check_admin_fields(
        PORTS, actor, [name for name, value in binding.items() if value is not None]
    )
    network = _network_of_body(session, actor, network_id)
    if mac is not None:
        mac = normalize_mac(mac)
        _check_mac_free(session, mac, actor=actor, port_id=None)
    resolved_ips = _resolve_addresses(session, network, ips, port_id=None)
    _check_binding(session, actor=actor, host_id=host_id, interface=interface, port_id=None)
    now = utcnow()
    record: dict[str, Any] = {
        "id": new_id(),
        "created_at": now,
        "updated_at": now,
        "revision": change_revision(session),
        "network_id": network.id,
        "tenant_id": network.tenant_id,
        "name": name,
        "mac": mac,
        "origin": origin,
        "host_id": host_id,
        "interface": interface,
        "vm_id": vm_id,
        "bound_at": now if host_id is not None else None,
        "status": "DOWN",
        "status_at": None,
        "activation_seconds": None,
    }
    connection = session.connection()
    if mac is None:
        _insert_port_with_new_mac(session, record)
    else:
        connection.execute(_INSERT_PORT, record)
    if resolved_ips:
        connection.execute(
            _INSERT_PORT_IP,
            [
                {"port_id": record["id"], "ip": ip, "network_id": network.id, "position": i}
                for i, ip in enumerate(resolved_ips)
            ],
        )
    return {**record, "ips": resolved_ips}


def create_port(session: Session, *, actor: Principal, **fields: Any) -> Port:
    """`add_port`, the new port read back as an ORM object (for in-process callers)."""
    return session.get_one(Port, add_port(session, actor=actor, **fields)["id"])


def find_port(session: Session, *, actor: Principal, port_id: str) -> Port | None:
    return find(session, PORTS, actor=actor, id=port_id)


def find_port_by_mac(session: Session, *, actor: Principal, mac: str) -> Port | None:
    try:
        normalized = normalize_mac(mac)
    except ValueError:
        return None
    found: Port | None = session.scalar(
        _visible(select(Port), PORTS, actor).where(Port.mac == normalized)
    )
    return found


def ports_of_vm(session: Session, *, actor: Principal, vm_id: str) -> list[Port]:
    stmt = _visible(select(Port), PORTS, actor).where(Port.vm_id == vm_id)
    return list(session.scalars(stmt.order_by(Port.created_at)))


def bind_port(
    session: Session,
    *,
    actor: Principal,
    port_id: str,
    host_id: str,
    interface: str | None,
    vm_id: str | None = None,
) -> Port:
    changes = {"host_id": host_id, "interface": interface, "vm_id": vm_id}
    return update(session, PORTS, actor=actor, id=port_id, changes=changes)


def unbind_port(session: Session, *, actor: Principal, port_id: str) -> Port:
    changes = {"host_id": None, "interface": None, "vm_id": None}
    return update(session, PORTS, actor=actor, id=port_id, changes=changes)


def delete_port(session: Session, *, actor: Principal, port_id: str) -> None:
    delete(session, PORTS, actor=actor, id=port_id)


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
            ipv4s = [address for address in member.ips if ":" not in address]
            if not ipv4s:  # load balancers are IPv4 only
                raise Invalid(f"{field}.port_id", f"port {port_id} has no IPv4 address")
            if ip is None:
                ip = ipv4s[0]
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


def _apply_load_balancer_changes(
    session: Session, lb: LoadBalancer, changes: Changes, _actor: Principal
) -> None:
    if changes.get("name") is not None:
        lb.name = changes["name"]
    if "health_check" in changes:
        _apply_health_check(lb, changes["health_check"])
    if "backends" in changes:
        network = session.get_one(Network, lb.network_id)
        _set_backends(lb, _resolve_backends(session, network, lb.vip, changes["backends"]))


def _release_vip(session: Session, lb: LoadBalancer) -> None:
    addresses.release(session, lb.network_id, [lb.vip])


LOAD_BALANCERS = Resource(
    LoadBalancer,
    "load balancer",
    owner=LoadBalancer.tenant_id,
    apply=_apply_load_balancer_changes,
    on_delete=_release_vip,
)


def create_load_balancer(
    session: Session,
    *,
    actor: Principal,
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
    _check_name_free(session, LOAD_BALANCERS, name, tenant_id=network.tenant_id, other_than=None)
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
    return _add(session, lb)


# ---- whole-fabric view ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topology:
    hosts: list[Host]
    tenants: list[Tenant]
    networks: list[Network]
    ports: list[Port]
    load_balancers: list[LoadBalancer]


def topology(session: Session, *, actor: Principal) -> Topology:
    """Everything the caller may see (hosts are admin-only: none for a tenant)."""

    def everything(resource: Resource[Any]) -> list[Any]:
        model = resource.model
        stmt = _visible(select(model), resource, actor)
        return list(session.scalars(stmt.order_by(model.created_at, model.id)))

    return Topology(
        hosts=everything(HOSTS) if actor.is_admin else [],
        tenants=everything(TENANTS),
        networks=everything(NETWORKS),
        ports=everything(PORTS),
        load_balancers=everything(LOAD_BALANCERS),
    )
