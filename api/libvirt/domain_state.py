"""A domain's state as libvirt reports it now, read-only (for the connectivity diagnosis)."""

from __future__ import annotations

import uuid
from typing import Final

import libvirt

__all__ = ["domain_state"]

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


def domain_state(libvirt_uri: str, vm_id: str) -> str | None:
    """ "running", "shut off", ..., "not defined" (no such domain on that host); None when
    `vm_id` is no domain UUID or libvirt cannot be asked."""
    try:
        uuid.UUID(vm_id)
    except ValueError:
        return None
    try:
        connection = libvirt.openReadOnly(libvirt_uri)
    except libvirt.libvirtError:
        return None
    try:
        try:
            domain = connection.lookupByUUIDString(vm_id)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return "not defined"
            return None
        state, _reason = domain.state()
        return _STATE_NAMES.get(state, f"in state {state}")
    finally:
        connection.close()
