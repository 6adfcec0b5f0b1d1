"""Connectivity diagnosis for the API: resolve A and B for the caller, read the hosts on the
path, and let the pure core judge (`controller.core.diagnosis`).

Reads only: one read transaction of SQL (desired state and the status the controller
recorded), read-only libvirt lookups, and the switch reads of `controller.inspect`.
Hosts are read in parallel, so the answer costs about one round of tool calls per hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from sqlalchemy import select

from api.config import Settings
from api.errors import Invalid, NotFound
from api.libvirt.domain_state import find_domain
from api.libvirt.watch import host_interface_reports
from api.store.db import Database
from api.store.models import Host, Port
from api.store.principals import Principal
from api.store.snapshot import SqlStateStore
from controller.core.diagnosis import (
    Endpoint,
    Expectations,
    HostObservation,
    PathPlan,
    Verdict,
    diagnose,
    plan_path,
)
from controller.core.diagnosis.verdict import Proto
from controller.core.model import LoadBalancerSpec, NetworkSpec, PortSpec, Snapshot
from controller.inspect import HostInspector, InspectError
from controller.tls import TlsFiles

__all__ = ["DiagnosisResult", "run_diagnosis"]

_T = TypeVar("_T")
_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="diagnose")


@dataclass(frozen=True, slots=True)
class DiagnosisResult:
    src: Endpoint
    dst: Endpoint
    verdict: Verdict
    snapshot: Snapshot
    host_names: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _HostStatus:
    openflow_connected: bool
    ovsdb_connected: bool
    status_at: datetime | None
    last_error: str | None


# ---- naming A and B ---------------------------------------------------------------------------


def _visible_networks(snapshot: Snapshot, actor: Principal) -> dict[str, NetworkSpec]:
    return {n.id: n for n in snapshot.networks if actor.is_admin or n.tenant_id == actor.tenant_id}


def _resolve(
    name: str,
    field: str,
    snapshot: Snapshot,
    networks: Mapping[str, NetworkSpec],
    port_names: Mapping[str, tuple[str | None, str | None]],
) -> Endpoint:
    """A port id, a VM (its name, or the name its port has), `IP` or `IP@NETWORK` (a port's
    address or a VIP), or a load balancer id. What the caller cannot see does not exist."""
    ports = {p.id: p for p in snapshot.ports if p.network_id in networks}
    lbs = {lb.id: lb for lb in snapshot.load_balancers if lb.network_id in networks}
    if name in ports:
        return _port_endpoint(name, ports[name], networks)
    if name in lbs:
        return _vip_endpoint(name, lbs[name], networks)
    address, _, network_name = name.partition("@")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return _by_vm_name(name, field, ports, networks, port_names)
    scope = [n for n in networks.values() if not network_name or network_name in (n.id, n.name)]
    if network_name and not scope:
        raise NotFound(f"{field}: no network {network_name!r}")
    found: list[Endpoint] = []
    for network in scope:
        found += [
            _port_endpoint(name, p, networks, ip=address)
            for p in ports.values()
            if p.network_id == network.id and address in p.ips
        ]
        found += [
            _vip_endpoint(name, lb, networks)
            for lb in lbs.values()
            if lb.network_id == network.id and lb.vip == address
        ]
    if not found:
        raise NotFound(f"{field}: no port or VIP has the address {address}")
    if len(found) > 1:
        where = ", ".join(sorted({e.network.name for e in found}))
        raise Invalid(
            field, f"{address} is in several networks ({where}): say which, as {address}@NETWORK"
        )
    return found[0]


def _by_vm_name(
    name: str,
    field: str,
    ports: Mapping[str, PortSpec],
    networks: Mapping[str, NetworkSpec],
    port_names: Mapping[str, tuple[str | None, str | None]],
) -> Endpoint:
    vm_ids = {name}
    for report in host_interface_reports() or ():
        vm_ids |= {i.vm_id for i in report.interfaces if i.vm_name == name}
    matches = [
        p
        for p in ports.values()
        if port_names.get(p.id, (None, None))[0] == name or p.vm_id in vm_ids
    ]
    if not matches:
        raise NotFound(f"{field}: no port, VM, address or load balancer named {name!r}")
    if len(matches) > 1:
        raise Invalid(field, f"{name!r} has {len(matches)} ports: name one by its id")
    return _port_endpoint(name, matches[0], networks)


def _port_endpoint(
    label: str, port: PortSpec, networks: Mapping[str, NetworkSpec], ip: str | None = None
) -> Endpoint:
    ipv4 = [a for a in port.ips if ":" not in a]
    return Endpoint(label, networks[port.network_id], ip or (ipv4[0] if ipv4 else None), port=port)


def _vip_endpoint(
    label: str, lb: LoadBalancerSpec, networks: Mapping[str, NetworkSpec]
) -> Endpoint:
    return Endpoint(label, networks[lb.network_id], lb.vip, load_balancer=lb)


# ---- reading the hosts -----------------------------------------------------------------------


def _parallel(calls: Iterable[Callable[[], _T]]) -> list[_T]:
    futures = [_POOL.submit(call) for call in calls]
    return [f.result() for f in futures]


def _observe_host(
    host_id: str,
    remote: str,
    status: _HostStatus,
    bridge: str,
    tls: TlsFiles | None,
    peers: tuple[str, ...],
) -> HostObservation:
    inspector = HostInspector(remote, tls=tls)
    seen = HostObservation(
        host_id,
        openflow_connected=status.openflow_connected,
        ovsdb_connected=status.ovsdb_connected,
        status_at=status.status_at,
        last_error=status.last_error,
    )
    try:
        seen = replace(seen, ovsdb=inspector.ovsdb_rows())
    except InspectError as exc:
        return replace(seen, ovsdb_error=str(exc))
    if not status.openflow_connected:
        # A switch the controller lost may be hung: asking it would only wait.
        return replace(seen, trace_error="the switch is not connected")
    try:
        seen = replace(seen, flows=inspector.flows(bridge))
    except InspectError as exc:
        seen = replace(seen, flows_error=str(exc))
    try:
        seen = replace(
            seen,
            drops=inspector.datapath_drops(),
            routes={peer: inspector.route_problem(peer) for peer in peers},
        )
    except InspectError as exc:
        seen = replace(seen, trace_error=str(exc))
    return seen


def _trace_hops(
    plan: PathPlan,
    observations: dict[str, HostObservation],
    remotes: Mapping[str, str],
    bridge: str,
    tls: TlsFiles | None,
) -> None:
    def trace(hop_number: int, host_id: str, packet: Mapping[str, int]) -> None:
        seen = observations[host_id]
        if seen.trace_error is not None or seen.ovsdb is None:
            return
        try:
            result = HostInspector(remotes[host_id], tls=tls).trace(bridge, packet)
        except InspectError as exc:
            observations[host_id] = replace(seen, trace_error=str(exc))
            return
        # Hops on one host (none today) would race here; each host has one hop.
        observations[host_id] = replace(seen, traces={**seen.traces, hop_number: result})

    _parallel(
        partial(trace, hop.number, hop.host_id, hop.packet)
        for hop in plan.hops
        if hop.host_id in observations
    )


def run_diagnosis(
    database: Database,
    settings: Settings,
    *,
    actor: Principal,
    src: str,
    dst: str,
    proto: Proto,
    port: int | None,
) -> DiagnosisResult:
    store = SqlStateStore(database)
    snapshot = store.load_snapshot()
    with database.read() as session:
        statuses = {
            row.id: _HostStatus(
                bool(row.openflow_connected),
                bool(row.ovsdb_connected),
                row.status_at,
                row.last_error,
            )
            for row in session.execute(
                select(
                    Host.id,
                    Host.openflow_connected,
                    Host.ovsdb_connected,
                    Host.status_at,
                    Host.last_error,
                )
            )
        }
        port_names = {
            row.id: (row.name, row.vm_id)
            for row in session.execute(select(Port.id, Port.name, Port.vm_id))
        }
    networks = _visible_networks(snapshot, actor)
    a = _resolve(src, "src", snapshot, networks, port_names)
    b = _resolve(dst, "dst", snapshot, networks, port_names)
    if a.port is None:
        raise Invalid("src", "a VIP cannot be a source: name a port or VM")
    if a.port is not None and b.port is not None and a.port.id == b.port.id:
        raise Invalid("dst", "the destination is the source itself")
    if b.load_balancer is not None:
        proto_lb = b.load_balancer.protocol
        if proto != proto_lb or port not in (None, b.load_balancer.port):
            raise Invalid(
                "port",
                f"the VIP listens on {proto_lb} port {b.load_balancer.port} only: ask with "
                f"proto {proto_lb} (and port {b.load_balancer.port})",
            )
        port = b.load_balancer.port
    if proto != "icmp" and port is None:
        raise Invalid("port", f"{proto} needs a destination port")
    # One after the other: each asks its hosts in parallel, and a pool task must never
    # wait for other pool tasks (concurrent diagnoses could then hold every worker).
    a, b = _with_vm_state(a, snapshot), _with_vm_state(b, snapshot)
    expect = Expectations(bridge=settings.integration_bridge, datapath_type=settings.datapath_type)
    tls = _tls(settings)
    involved = _involved_hosts(snapshot, a, b)
    remotes = {h.id: h.ovsdb_remote for h in snapshot.hosts}
    tunnel_ips = {h.id: h.tunnel_ip for h in snapshot.hosts}
    missing = _HostStatus(False, False, None, "not known to the controller")
    observed = _parallel(
        partial(
            _observe_host,
            host_id,
            remotes[host_id],
            statuses.get(host_id, missing),
            expect.bridge,
            tls,
            # The underlay addresses of the other hosts on the path, for a host with tunnels.
            tuple(
                ip
                for other, ip in tunnel_ips.items()
                if other != host_id and ip and other in involved
            )
            if tunnel_ips.get(host_id)
            else (),
        )
        for host_id in involved
    )
    observations = {seen.host_id: seen for seen in observed}
    plan = None
    src_port = a.port
    assert src_port is not None
    dst_bound = b.port is None or b.port.host_id is not None
    if a.network.id == b.network.id and dst_bound and src_port.host_id in observations:
        interfaces = {
            host_id: seen.ovsdb.on_bridge(expect.bridge)
            for host_id, seen in observations.items()
            if seen.ovsdb is not None
        }
        if src_port.host_id in interfaces and src_port.interface:
            plan = plan_path(snapshot, a, b, proto=proto, dst_port=port, interfaces=interfaces)
            _trace_hops(plan, observations, remotes, expect.bridge, tls)
    verdict = diagnose(
        snapshot, a, b, plan=plan, observations=observations, expect=expect, now=datetime.now(UTC)
    )
    return DiagnosisResult(a, b, verdict, snapshot, {h.id: h.name for h in snapshot.hosts})


def _involved_hosts(snapshot: Snapshot, a: Endpoint, b: Endpoint) -> list[str]:
    """The hosts a packet from A to B can cross: A's, B's (or the VIP's backends')."""
    hosts: list[str] = []
    ports = [a.port, b.port]
    if b.load_balancer is not None:
        by_ip = {ip: p for p in snapshot.ports if p.network_id == b.network.id for ip in p.ips}
        by_id = {p.id: p for p in snapshot.ports}
        for backend in b.load_balancer.backends:
            ports.append(by_id.get(backend.port_id or "") or by_ip.get(backend.ip))
    for port in ports:
        if port is not None and port.host_id is not None and port.host_id not in hosts:
            hosts.append(port.host_id)
    return hosts


def _with_vm_state(endpoint: Endpoint, snapshot: Snapshot) -> Endpoint:
    """The port's libvirt domain and its state, asked of its host's libvirt (of every
    libvirt host while the port is unbound: a stopped VM's port is)."""
    port = endpoint.port
    if port is None:
        return endpoint
    hosts = [h for h in snapshot.hosts if h.libvirt_uri]
    if port.host_id is not None:
        hosts = [h for h in hosts if h.id == port.host_id]
    found = [
        domain
        for domain in _parallel(
            partial(
                find_domain, h.libvirt_uri or "", port_id=port.id, mac=port.mac, vm_id=port.vm_id
            )
            for h in hosts
        )
        if domain is not None
    ]
    if not found:
        return endpoint
    # The domain runs somewhere (e.g. migrated): that is the state that counts.
    domain = next((d for d in found if d.state == "running"), found[0])
    return replace(endpoint, vm_state=domain.state, vm_name=domain.name)


def _tls(settings: Settings) -> TlsFiles | None:
    if settings.tls_private_key and settings.tls_certificate and settings.tls_ca_certificate:
        return TlsFiles(
            settings.tls_private_key, settings.tls_certificate, settings.tls_ca_certificate
        )
    return None
