"""/api/v1/vm-interfaces: every libvirt host's VM NICs as its watcher sees them (admin only).

Read-only and served from the watchers of this process: for each NIC of a
running domain, the port it is bound to (and by which rule), or why it is
left alone. Ports themselves, with their ACTIVE status, are under /ports.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from api.libvirt.watch import HostInterfaces, host_interface_reports
from api.rest.auth import require_admin
from api.rest.responses import API_PROBLEMS

router = APIRouter(
    prefix="/vm-interfaces",
    tags=["libvirt"],
    dependencies=[Depends(require_admin)],
    responses=API_PROBLEMS,
)

InterfaceState = Literal["bound", "pending", "unmatched"]


class VmInterfaceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    vm_id: str = Field(description="The domain's UUID.")
    vm_name: str
    mac: str
    interface: str | None = Field(description="The tap device on the host.")
    type: str = Field(
        validation_alias="kind", description="libvirt's interface type: ethernet, bridge, ..."
    )
    state: InterfaceState = Field(
        description="bound: the port below is bound to this tap; pending: it will be "
        "(e.g. once a migration completes); unmatched: left alone, see reason."
    )
    port_id: str | None
    match: Literal["interfaceid", "mac", "metadata"] | None = Field(
        description="The rule that matched the port."
    )
    reason: str | None


class HostVmInterfacesOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    host_id: str
    host_name: str
    libvirt_uri: str
    connected: bool = Field(description="The watcher's libvirt connection is up.")
    last_error: str | None
    updated_at: datetime | None = Field(description="The last comparison with libvirt.")
    interfaces: list[VmInterfaceOut]


class VmInterfacesOut(BaseModel):
    watching: bool = Field(
        description="False when this process runs no libvirt watcher "
        "(OVS_FABRIC_LIBVIRT_ENABLED=false, or the controller runs elsewhere)."
    )
    hosts: list[HostVmInterfacesOut]


@router.get("")
def list_vm_interfaces(
    host_id: Annotated[str | None, Query(description="Only this host.")] = None,
    state: Annotated[InterfaceState | None, Query(description="Only NICs in this state.")] = None,
) -> VmInterfacesOut:
    reports = host_interface_reports()
    if reports is None:
        return VmInterfacesOut(watching=False, hosts=[])
    return VmInterfacesOut(
        watching=True,
        hosts=[_host_out(r, state) for r in reports if host_id is None or r.host_id == host_id],
    )


def _host_out(report: HostInterfaces, state: InterfaceState | None) -> HostVmInterfacesOut:
    shown = [item for item in report.interfaces if state is None or item.state == state]
    return HostVmInterfacesOut.model_validate(replace(report, interfaces=tuple(shown)))
