"""/api/v1/diagnose: can A reach B, and if not, the first reason why.

A and B are each a port id, a VM (its name), an address (`IP` or `IP@NETWORK`) or a
load balancer (its id, or its VIP as an address). Tenant tokens name their own
objects only: another tenant's object answers exactly as one that does not exist.
The diagnosis reads SQL, libvirt and the switches on the path; it changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, get_args

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from api.diagnosis import DiagnosisResult, run_diagnosis
from api.rest.auth import CallerDep
from api.rest.deps import DatabaseDep, SettingsDep
from api.rest.responses import API_PROBLEMS
from api.rest.schemas import L4Port, RequestModel
from controller.core.diagnosis import CAUSES, Endpoint, Hop

router = APIRouter(tags=["diagnose"], responses=API_PROBLEMS)

CauseName = Literal[
    "different_networks",
    "port_not_bound",
    "vm_not_running",
    "source_address_mismatch",
    "switch_disconnected",
    "ovsdb_unreachable",
    "flows_differ",
    "bridge_settings_drifted",
    "interface_down",
    "underlay_down",
    "no_healthy_backend",
    "foreign_flow_drop",
    "trace_disagrees",
]
assert get_args(CauseName) == CAUSES, "the API's cause list is the core's"

Named = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class DiagnoseIn(RequestModel):
    src: Named = Field(description="A port id, a VM name, an address (IP or IP@NETWORK).")
    dst: Named = Field(
        description="A port id, a VM name, an address (IP or IP@NETWORK), a load balancer "
        "id or its VIP."
    )
    proto: Literal["tcp", "udp", "icmp"] = "icmp"
    port: L4Port | None = Field(default=None, description="Destination port (tcp/udp).")


class EndpointOut(BaseModel):
    asked: str = Field(description="As named in the request.")
    kind: Literal["port", "vip"]
    id: str = Field(description="The port's or the load balancer's id.")
    network_id: str
    network: str
    ip: str | None
    host: str | None = Field(description="The host the port is bound to (ports only).")
    interface: str | None
    vm_state: str | None = Field(description="libvirt's state of the VM, when it is one.")


class TableStepOut(BaseModel):
    table: int
    name: str
    priority: int
    cookie: str = Field(description="The flow's cookie (hex), as dump-flows shows it.")


class HopOut(BaseModel):
    hop: int
    host: str
    host_id: str
    bridge: str
    in_interface: str | None
    in_port: int
    tables: list[TableStepOut]
    groups: list[int]
    egress: str = Field(description="port | uplink | tunnel | controller | drop")
    out_interface: str | None
    out_port: int | None
    next_host: str | None = Field(description="The host the uplink or tunnel leads to.")
    segment: int | None = Field(description="VLAN id (uplink) or VNI (tunnel) on the way out.")
    remote_ip: str | None = Field(description="The VXLAN peer's underlay address.")
    port_id: str | None = Field(description="egress port: the port the frame is delivered to.")
    switch_trace: Literal["agrees", "disagrees", "unavailable"] = Field(
        description="Whether ofproto/trace of this packet on the host's bridge agrees."
    )


class FindingOut(BaseModel):
    cause: CauseName
    explanation: str
    fix: str
    host: str | None
    details: list[str]


class DiagnoseOut(BaseModel):
    reachable: bool
    src: EndpointOut
    dst: EndpointOut
    proto: str
    port: int | None
    path: list[HopOut] = Field(description="The intended path, hop by hop.")
    cause: CauseName | None = Field(description="The first cause; null when reachable.")
    explanation: str | None
    fix: str | None
    findings: list[FindingOut] = Field(description="Every cause found, the first one first.")


@router.post("/diagnose")
async def diagnose(
    body: DiagnoseIn, caller: CallerDep, db: DatabaseDep, settings: SettingsDep
) -> DiagnoseOut:
    """Say whether `src` reaches `dst` (a synthetic packet of `proto` to `port`), the path
    hop by hop, and when it does not, the first cause with an explanation and the fix."""
    result = await run_in_threadpool(
        run_diagnosis,
        db,
        settings,
        actor=caller,
        src=body.src,
        dst=body.dst,
        proto=body.proto,
        port=body.port,
    )
    return render(result, body.proto, settings.integration_bridge)


def render(result: DiagnosisResult, proto: str, bridge: str) -> DiagnoseOut:
    names = result.host_names
    verdict = result.verdict
    first = verdict.cause
    port = None
    if result.dst.load_balancer is not None:
        port = result.dst.load_balancer.port
    elif verdict.plan.hops:
        packet = verdict.plan.hops[0].packet
        port = packet.get(f"{proto}_dst") if proto != "icmp" else None
    return DiagnoseOut(
        reachable=verdict.reachable,
        src=_endpoint(result.src, names),
        dst=_endpoint(result.dst, names),
        proto=proto,
        port=port,
        path=[
            _hop(hop, names, bridge, verdict.switch_agrees.get(hop.number))
            for hop in verdict.plan.hops
        ],
        cause=first.cause if first else None,
        explanation=first.explanation if first else None,
        fix=first.fix if first else None,
        findings=[
            FindingOut(
                cause=f.cause,
                explanation=f.explanation,
                fix=f.fix,
                host=names.get(f.host_id) if f.host_id else None,
                details=list(f.details),
            )
            for f in verdict.findings
        ],
    )


def _endpoint(endpoint: Endpoint, names: Mapping[str, str]) -> EndpointOut:
    port, lb = endpoint.port, endpoint.load_balancer
    return EndpointOut(
        asked=endpoint.label,
        kind="port" if port is not None else "vip",
        id=port.id if port is not None else (lb.id if lb is not None else ""),
        network_id=endpoint.network.id,
        network=endpoint.network.name,
        ip=endpoint.ip,
        host=names.get(port.host_id) if port is not None and port.host_id else None,
        interface=port.interface if port is not None else None,
        vm_state=endpoint.vm_state,
    )


def _hop(hop: Hop, names: Mapping[str, str], bridge: str, agrees: bool | None) -> HopOut:
    return HopOut(
        hop=hop.number,
        host=names.get(hop.host_id, hop.host_id),
        host_id=hop.host_id,
        bridge=bridge,
        in_interface=hop.in_interface,
        in_port=hop.packet.get("in_port", 0),
        tables=[
            TableStepOut(
                table=s.table, name=s.table_name, priority=s.priority, cookie=f"0x{s.cookie:x}"
            )
            for s in hop.steps
        ],
        groups=list(hop.groups),
        egress=hop.egress,
        out_interface=hop.out_interface,
        out_port=hop.out_port,
        next_host=names.get(hop.next_host_id) if hop.next_host_id else None,
        segment=hop.segment,
        remote_ip=hop.remote_ip,
        port_id=hop.delivered_port_id,
        switch_trace="unavailable" if agrees is None else ("agrees" if agrees else "disagrees"),
    )
