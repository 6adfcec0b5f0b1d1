"""The binding operations the libvirt watcher performs on the SQL desired state.

Each reconcile is one write transaction: read the ports that matter, decide
with the pure `api.libvirt.domain_xml.plan_bindings`, apply through the same resource
services the REST API uses (so the same rules hold and the global revision is
bumped the same way). Deciding inside the transaction means an API request
cannot change a port between the decision and the write. One action that
fails (a MAC taken meanwhile, a network without free address) is rolled back
to its savepoint and reported; the others still apply.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.errors import Conflict, ProblemError
from api.libvirt.domain_xml import (
    BindingPlan,
    BindPort,
    CreatePort,
    InterfaceReport,
    NetworkRequest,
    NetworkResolution,
    ObservedDomain,
    PortRecord,
    ReleasePort,
    plan_bindings,
)
from api.store import resources
from api.store.db import Database
from api.store.models import Host, Network, Port, Tenant, columns_for
from api.store.principals import LIBVIRT_WATCHER

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WatchedHost:
    id: str
    name: str
    libvirt_uri: str


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    reports: tuple[InterfaceReport, ...]
    changes: tuple[str, ...]  # what was written, for the log


class VmPortStore:
    def __init__(self, database: Database, *, integration_bridge: str) -> None:
        self._database = database
        self._integration_bridge = integration_bridge

    def libvirt_hosts(self) -> list[WatchedHost]:
        with self._database.read() as session:
            rows = session.execute(
                select(Host.id, Host.name, Host.libvirt_uri)
                .where(Host.libvirt_uri.is_not(None))
                .order_by(Host.created_at, Host.id)
            ).all()
        return [WatchedHost(id=r.id, name=r.name, libvirt_uri=r.libvirt_uri) for r in rows]

    def reconcile(
        self,
        host_id: str,
        domains: Sequence[ObservedDomain],
        *,
        scope: frozenset[str] | None,
        keep_vm_ids: frozenset[str] = frozenset(),
    ) -> ReconcileOutcome:
        """Make the bindings on `host_id` match `domains` (see `plan_bindings`)."""
        with self._database.write() as session:
            ports = _relevant_ports(session, host_id, domains)
            requests = {r for d in domains for r in d.description.network_requests()}
            plan = plan_bindings(
                host_id=host_id,
                domains=domains,
                ports=ports,
                networks={request: _resolve(session, request) for request in requests},
                integration_bridge=self._integration_bridge,
                scope=scope,
                keep_vm_ids=keep_vm_ids,
            )
            return _apply(session, host_id, plan)


def _relevant_ports(
    session: Session, host_id: str, domains: Sequence[ObservedDomain]
) -> list[PortRecord]:
    interfaces = [i for d in domains for i in d.description.interfaces]
    ids = {i.interface_id for i in interfaces if i.interface_id}
    macs = {i.mac for i in interfaces}
    stmt = select(*columns_for(Port, PortRecord)).where(
        or_(Port.host_id == host_id, Port.id.in_(ids), Port.mac.in_(macs))
    )
    return [PortRecord(**row) for row in session.execute(stmt).mappings()]


def _resolve(session: Session, request: NetworkRequest) -> NetworkResolution:
    if request.network_id is not None:
        network = session.get(Network, request.network_id)
        if network is None:
            return NetworkResolution(
                error=f"metadata names {request.describe()}, which does not exist"
            )
        return NetworkResolution(network_id=network.id, tenant_id=network.tenant_id)
    stmt = select(Network.id, Network.tenant_id, Tenant.name)
    stmt = stmt.join(Tenant, Tenant.id == Network.tenant_id)
    stmt = stmt.where(Network.name == request.name)
    if request.tenant is not None:
        stmt = stmt.where(or_(Tenant.name == request.tenant, Tenant.id == request.tenant))
    found = session.execute(stmt.order_by(Tenant.name)).all()
    if not found:
        return NetworkResolution(error=f"metadata names {request.describe()}, which does not exist")
    if len(found) > 1:
        tenants = ", ".join(repr(row.name) for row in found)
        return NetworkResolution(
            error=f"metadata names {request.describe()}, which exists in tenants {tenants}: "
            "add tenant='...' to pick one"
        )
    return NetworkResolution(network_id=found[0].id, tenant_id=found[0].tenant_id)


def _apply(session: Session, host_id: str, plan: BindingPlan) -> ReconcileOutcome:
    changes: list[str] = []
    created: dict[str, str] = {}  # tap -> new port id
    failed: dict[str, str] = {}  # tap -> why
    for action in plan.actions:
        try:
            with session.begin_nested():
                changes.append(_apply_one(session, host_id, action, created))
        except (ProblemError, SQLAlchemyError) as exc:
            detail = exc.detail if isinstance(exc, ProblemError) else str(exc.__cause__ or exc)
            log.warning("host %s: %s failed: %s", host_id, _describe(action), detail)
            if not isinstance(action, ReleasePort):
                failed[action.interface] = detail
    return ReconcileOutcome(
        reports=tuple(_final_reports(plan.reports, created, failed)), changes=tuple(changes)
    )


def _apply_one(
    session: Session,
    host_id: str,
    action: ReleasePort | BindPort | CreatePort,
    created: dict[str, str],
) -> str:
    if isinstance(action, ReleasePort):
        if action.delete:
            try:
                resources.delete_port(session, actor=LIBVIRT_WATCHER, port_id=action.port_id)
                return f"deleted port {action.port_id} ({action.reason})"
            except Conflict as exc:
                # e.g. still a load balancer backend: unbinding is what we can do
                log.warning(
                    "port %s cannot be deleted (%s); unbinding it", action.port_id, exc.detail
                )
        resources.unbind_port(session, actor=LIBVIRT_WATCHER, port_id=action.port_id)
        return f"unbound port {action.port_id} ({action.reason})"
    if isinstance(action, BindPort):
        resources.bind_port(
            session,
            actor=LIBVIRT_WATCHER,
            port_id=action.port_id,
            host_id=host_id,
            interface=action.interface,
            vm_id=action.vm_id,
        )
        return f"bound port {action.port_id} to {action.interface} of VM {action.vm_id}"
    port = resources.create_port(
        session,
        actor=LIBVIRT_WATCHER,
        network_id=action.network_id,
        name=action.name,
        mac=action.mac,
        host_id=host_id,
        interface=action.interface,
        vm_id=action.vm_id,
        origin="libvirt",
    )
    created[action.interface] = port.id
    return (
        f"created port {port.id} on network {action.network_id} "
        f"for {action.interface} of VM {action.vm_id}"
    )


def _describe(action: ReleasePort | BindPort | CreatePort) -> str:
    if isinstance(action, ReleasePort):
        return f"releasing port {action.port_id}"
    if isinstance(action, BindPort):
        return f"binding port {action.port_id} to {action.interface}"
    return f"creating a port for {action.interface} on network {action.network_id}"


def _final_reports(
    reports: Iterable[InterfaceReport], created: dict[str, str], failed: dict[str, str]
) -> Iterable[InterfaceReport]:
    for report in reports:
        tap = report.interface
        if tap is not None and tap in failed and report.state == "bound":
            yield replace(report, state="unmatched", reason=f"binding failed: {failed[tap]}")
        elif tap is not None and tap in created and report.port_id is None:
            yield replace(report, port_id=created[tap])
        else:
            yield report
