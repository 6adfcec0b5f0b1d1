"""The libvirt domain of a port and its state now, read-only (for the connectivity diagnosis).

A port names its domain while it is bound (`vm_id`, the domain's UUID). When the VM
stops, the watcher unbinds the port and clears `vm_id`, so a stopped VM is found the
way the watcher matches NICs to ports: a NIC of a defined domain carrying the port's
id (`<parameters interfaceid=.../>`) or its MAC.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

import libvirt

from api.libvirt.domain_xml import DomainXmlError, parse_domain

__all__ = ["DomainState", "find_domain"]

_STATE_NAMES: Final = {
    libvirt.VIR_DOMAIN_NOSTATE: "in no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # blocked on a resource: it still runs
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


@dataclass(frozen=True, slots=True)
class DomainState:
    name: str
    uuid: str
    state: str  # "running", "shut off", ...


def _state(domain: Any) -> DomainState:
    state, _reason = domain.state()
    return DomainState(domain.name(), domain.UUIDString(), _STATE_NAMES.get(state, str(state)))


def find_domain(
    libvirt_uri: str, *, port_id: str, mac: str, vm_id: str | None
) -> DomainState | None:
    """The domain on that host that owns the port (by UUID, interfaceid or MAC), with its
    state; None when there is none or libvirt cannot be asked."""
    try:
        connection = libvirt.openReadOnly(libvirt_uri)
    except libvirt.libvirtError:
        return None
    try:
        if vm_id is not None and _is_uuid(vm_id):
            try:
                return _state(connection.lookupByUUIDString(vm_id))
            except libvirt.libvirtError:
                pass
        for domain in connection.listAllDomains(0):
            try:
                description = parse_domain(domain.XMLDesc(0))
            except (libvirt.libvirtError, DomainXmlError):
                continue
            for nic in description.interfaces:
                if nic.interface_id == port_id or nic.mac == mac.lower():
                    return _state(domain)
        return None
    except libvirt.libvirtError:
        return None
    finally:
        connection.close()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
