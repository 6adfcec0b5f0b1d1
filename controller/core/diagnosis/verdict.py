"""Why A cannot reach B: the intended path, and the first cause that breaks it. Pure.

Two steps, with the switches read in between by the I/O layer:

1. `plan_path` walks a synthetic packet from A through the flows the pipeline
   computes for each host (with the OpenFlow port numbers OVSDB reports), hop by
   hop: out of A's host by the uplink or a tunnel, into the next host, until it
   leaves by a VM port. Each hop's packet is what the I/O layer then traces with
   `ofproto/trace` on that host's real bridge.
2. `diagnose` checks the facts read from the hosts along the path in the order
   a frame meets them and names the first cause from `CAUSES` (with an
   explanation and a fix); the switch's own trace is compared with the
   evaluation of the same packet, and a disagreement is itself a finding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal, get_args

from controller.core import flows as flowlib
from controller.core.diagnosis.observed import (
    HostObservation,
    InterfaceRow,
)
from controller.core.flowsim import Emitted, FlowSimulator, SimulationError
from controller.core.model import (
    DatapathView,
    LoadBalancerSpec,
    NetworkSpec,
    PortSpec,
    Snapshot,
)
from controller.core.ofmsg import COOKIE_SERVICE_MASK, SERVICE_COOKIE_PREFIX, encode_flow
from controller.core.pipeline import DatapathConfig, PipelineError, compute_datapath
from controller.core.pipeline.context import tunnel_interface_name
from controller.core.pipeline.load_balancer import vip_mac
from controller.core.pipeline.tables import TABLES

Cause = Literal[
    "different_networks",  # 1: by design: tenants and networks are isolated
    "port_not_bound",  # 2: the port is bound to no host, or its interface is not on the bridge
    "vm_not_running",  # 3: libvirt says the domain does not run
    "source_address_mismatch",  # 4: the VM sends from a MAC/IP that is not its port's
    "switch_disconnected",  # 5: the switch is not connected to the controller
    "ovsdb_unreachable",  # 6: the host's OVSDB does not answer
    "flows_differ",  # 7: flows on the switch are not the computed ones (on the path)
    "bridge_settings_drifted",  # 8: fail_mode, protocols, datapath type or id changed
    "interface_down",  # 9: Interface.error, link down, a vanished tap
    "underlay_down",  # 10: no route to the VXLAN peer, trunk or underlay link down
    "no_healthy_backend",  # 11: a VIP whose backends are all down
    "foreign_flow_drop",  # 12: a flow the service did not install drops the frame
    "trace_disagrees",  # the switch forwards otherwise than computed, flows unchanged
]
CAUSES: Final[tuple[str, ...]] = get_args(Cause)
Proto = Literal["tcp", "udp", "icmp"]

_MAX_HOPS: Final = 4
_CLIENT_PORT: Final = 40000  # the synthetic packet's source port
_ICMP_ECHO_REQUEST: Final = 8
_PIPELINE_STATE: Final = ("metadata", "ct_state", "ct_zone", "ct_mark")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of the question, resolved from what the caller named."""

    label: str  # as the caller named it
    network: NetworkSpec
    ip: str | None  # the address the packet uses
    port: PortSpec | None = None  # a port (a VM's NIC)
    load_balancer: LoadBalancerSpec | None = None  # a VIP
    vm_state: str | None = None  # libvirt's state of the port's domain; None: not known
    vm_name: str | None = None  # that domain's name

    @property
    def is_vip(self) -> bool:
        return self.load_balancer is not None


@dataclass(frozen=True, slots=True)
class Expectations:
    """How the service sets up every host's integration bridge."""

    bridge: str = "br-int"
    datapath_type: str = "system"
    fail_mode: str = "secure"
    protocol: str = "OpenFlow13"


@dataclass(frozen=True, slots=True)
class HopStep:
    table: int
    table_name: str
    priority: int
    cookie: int


@dataclass(frozen=True, slots=True)
class Hop:
    """One switch on the path, as computed."""

    number: int
    host_id: str
    packet: Mapping[str, int]  # as it enters this switch (ofproto/trace it)
    in_interface: str | None
    steps: tuple[HopStep, ...]
    groups: tuple[int, ...]
    # what becomes of it: "port" (a VM's interface), "uplink", "tunnel", "controller", "drop"
    egress: str
    out_port: int | None = None
    out_interface: str | None = None
    next_host_id: str | None = None
    delivered_port_id: str | None = None  # egress "port": whose port
    segment: int | None = None  # VLAN id / VNI on the way out
    remote_ip: str | None = None  # tunnel: the peer's underlay address
    emitted: Emitted | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PathPlan:
    hops: tuple[Hop, ...]
    problem: str | None = None  # why the computed path stops short (None: it arrives)
    config_by_host: Mapping[str, DatapathConfig] = field(default_factory=dict, compare=False)
    problem_cause: Cause | None = None  # the cause `problem` is an instance of
    problem_host: str | None = None  # where

    @property
    def arrives(self) -> bool:
        return bool(self.hops) and self.hops[-1].egress == "port"


@dataclass(frozen=True, slots=True)
class Finding:
    cause: Cause
    explanation: str
    fix: str
    host_id: str | None = None
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    reachable: bool
    findings: tuple[Finding, ...]  # the first is the cause; later ones are also true
    plan: PathPlan
    switch_agrees: Mapping[int, bool | None]  # by hop: the switch's trace agrees; None: no trace

    @property
    def cause(self) -> Finding | None:
        return self.findings[0] if self.findings else None


# ---- the intended path ----------------------------------------------------------------------


def synthetic_packet(
    src: Endpoint, dst: Endpoint, proto: Proto, dst_port: int | None, in_port: int
) -> dict[str, int]:
    """The frame A sends to B: A's MAC and address, B's MAC (a VIP's virtual MAC)."""
    assert src.port is not None
    packet: dict[str, int] = {
        "in_port": in_port,
        "eth_src": flowlib.mac_to_int(src.port.mac),
        "eth_type": flowlib.ETH_TYPE_IPV4,
        "ipv4_src": flowlib.ip_to_int(src.ip or "0.0.0.0"),
        "ipv4_dst": flowlib.ip_to_int(dst.ip or "0.0.0.0"),
    }
    if dst.load_balancer is not None:
        packet["eth_dst"] = vip_mac(dst.network.id, dst.load_balancer.vip)
    else:
        assert dst.port is not None
        packet["eth_dst"] = flowlib.mac_to_int(dst.port.mac)
    if proto == "icmp":
        packet["ip_proto"] = flowlib.IP_PROTO_ICMP
        packet["icmpv4_type"] = _ICMP_ECHO_REQUEST
        packet["icmpv4_code"] = 0
    else:
        packet["ip_proto"] = flowlib.IP_PROTO_TCP if proto == "tcp" else flowlib.IP_PROTO_UDP
        packet[f"{proto}_src"] = _CLIENT_PORT
        packet[f"{proto}_dst"] = dst_port or 0
    return packet


def _ofports(rows: Mapping[str, InterfaceRow]) -> dict[str, int]:
    return {name: row.ofport for name, row in rows.items() if row.ofport is not None}


def plan_path(
    snapshot: Snapshot,
    src: Endpoint,
    dst: Endpoint,
    *,
    proto: Proto,
    dst_port: int | None,
    interfaces: Mapping[str, Mapping[str, InterfaceRow]],
) -> PathPlan:
    """The path the computed flows give A's packet; `interfaces` by host id: the
    integration bridge's interfaces as OVSDB reports them (hosts not read are absent)."""
    assert src.port is not None and src.port.host_id is not None and src.port.interface
    configs: dict[str, DatapathConfig] = {}
    hops: list[Hop] = []
    host_id = src.port.host_id

    def stopped(problem: str, cause: Cause) -> PathPlan:
        """The path so far, ending at `host_id` for `problem`."""
        return PathPlan(tuple(hops), problem, configs, cause, host_id)

    in_interface: str | None = src.port.interface
    rows = interfaces.get(host_id, {})
    src_row = rows.get(src.port.interface)
    src_ofport = src_row.ofport if src_row is not None else None
    if src_ofport is None:
        return stopped(f"interface {in_interface} has no OpenFlow port", "interface_down")
    packet = synthetic_packet(src, dst, proto, dst_port, src_ofport)
    targets = _target_ports(snapshot, dst)
    previous_host: str | None = None
    for number in range(1, _MAX_HOPS + 1):
        host_rows = interfaces.get(host_id)
        if host_rows is None:
            return stopped(f"host {host_id} could not be read", "ovsdb_unreachable")
        ofports = _ofports(host_rows)
        try:
            config = configs.get(host_id) or compute_datapath(
                snapshot, DatapathView(host_id, ofports)
            )
        except PipelineError as exc:
            return stopped(f"the service cannot compute its flows: {exc}", "flows_differ")
        configs[host_id] = config
        hop = _evaluate_hop(
            snapshot, config, number, host_id, packet, in_interface, ofports, targets
        )
        hops.append(hop)
        if hop.egress != "uplink" and hop.egress != "tunnel":
            break
        assert hop.emitted is not None and hop.next_host_id is not None
        previous_host, host_id = host_id, hop.next_host_id
        next_rows = interfaces.get(host_id)
        if next_rows is None:
            return stopped(f"host {host_id} could not be read", "ovsdb_unreachable")
        in_interface = _ingress_interface(snapshot, host_id, previous_host, hop.egress)
        if in_interface is None or in_interface not in next_rows:
            what = "uplink" if hop.egress == "uplink" else "tunnel"
            return stopped(f"the {what} {in_interface} is missing", "underlay_down")
        ingress = next_rows[in_interface].ofport
        if ingress is None:
            return stopped(f"interface {in_interface} has no OpenFlow port", "underlay_down")
        packet = {
            name: value
            for name, value in hop.emitted.headers.items()
            if name not in _PIPELINE_STATE and not name.startswith("reg")
        }
        packet["in_port"] = ingress
    last = hops[-1]
    if last.egress == "port":
        return PathPlan(tuple(hops), None, configs)
    # The computed flows do not take the frame to B: no way between the hosts (no uplink,
    # no tunnel: a host without tunnel_ip), or nothing for B here.
    dst_host = dst.port.host_id if dst.port is not None else None
    elsewhere = dst_host is not None and dst_host != last.host_id
    return PathPlan(
        tuple(hops),
        f"the computed flows {_fate(last)}"
        + (f", and compute no way to host {_host_name(snapshot, dst_host)}" if elsewhere else ""),
        configs,
        "underlay_down" if elsewhere else "flows_differ",
        last.host_id,
    )


def _fate(hop: Hop) -> str:
    return {
        "drop": "drop the packet",
        "controller": "send the packet to the controller",
    }.get(hop.egress, f"send the packet to {hop.egress}")


def _host_name(snapshot: Snapshot, host_id: str | None) -> str:
    host = snapshot.host(host_id) if host_id else None
    return host.name if host is not None else str(host_id)


def _target_ports(snapshot: Snapshot, dst: Endpoint) -> frozenset[str]:
    if dst.port is not None:
        return frozenset({dst.port.id})
    assert dst.load_balancer is not None
    by_ip = {
        ip: port.id
        for port in snapshot.ports
        if port.network_id == dst.network.id
        for ip in port.ips
    }
    return frozenset(b.port_id or by_ip.get(b.ip, "") for b in dst.load_balancer.backends) - {""}


def _ingress_interface(snapshot: Snapshot, host_id: str, from_host: str, egress: str) -> str | None:
    host = snapshot.host(host_id)
    if host is None:
        return None
    if egress == "uplink":
        return host.uplink
    return tunnel_interface_name(from_host)


def _evaluate_hop(
    snapshot: Snapshot,
    config: DatapathConfig,
    number: int,
    host_id: str,
    packet: Mapping[str, int],
    in_interface: str | None,
    ofports: Mapping[str, int],
    targets: frozenset[str],
) -> Hop:
    names = {no: name for name, no in ofports.items()}
    try:
        run = FlowSimulator(config.flows, config.groups).run(packet)
    except SimulationError as exc:
        return Hop(number, host_id, dict(packet), in_interface, (), (), f"drop ({exc})")
    steps = tuple(
        HopStep(
            f.table,
            TABLES[f.table].name if f.table in TABLES else str(f.table),
            f.priority,
            encode_flow(f).cookie,
        )
        for f in run.trace
    )
    groups = tuple(
        dict.fromkeys(
            a.group_id for f in run.trace for a in f.actions if isinstance(a, flowlib.GroupAction)
        )
    )
    host = snapshot.host(host_id)
    local_ports = {p.interface: p for p in snapshot.ports if p.host_id == host_id and p.interface}
    tunnels = {
        tunnel_interface_name(peer.id): peer for peer in snapshot.hosts if peer.id != host_id
    }
    best: Hop | None = None
    for copy in run.emitted:
        name = names.get(copy.port)
        hop = Hop(
            number,
            host_id,
            dict(packet),
            in_interface,
            steps,
            groups,
            "drop",
            out_port=copy.port,
            out_interface=name,
            emitted=copy,
        )
        if copy.port == flowlib.OFPP_CONTROLLER:
            hop = _replace(hop, egress="controller")
        elif name in local_ports:
            port = local_ports[name]
            hop = _replace(hop, egress="port", delivered_port_id=port.id)
            if port.id in targets:
                return hop
        elif host is not None and name == host.uplink:
            owner = _owner_host(snapshot, copy)
            hop = _replace(
                hop, egress="uplink", next_host_id=owner, segment=copy.get("vlan_vid") & 0xFFF
            )
        elif name in tunnels:
            peer = tunnels[name]
            hop = _replace(
                hop,
                egress="tunnel",
                next_host_id=peer.id,
                segment=copy.get("tunnel_id"),
                remote_ip=peer.tunnel_ip,
            )
        if best is None or _rank(hop, snapshot, targets) < _rank(best, snapshot, targets):
            best = hop
    if best is None:
        return Hop(number, host_id, dict(packet), in_interface, steps, groups, "drop")
    if best.egress == "uplink" and best.next_host_id is None:
        return _replace(best, egress="drop")
    return best


def _rank(hop: Hop, snapshot: Snapshot, targets: frozenset[str]) -> int:
    """Which emitted copy the path follows: toward a target's host first."""
    target_hosts = {p.host_id for p in snapshot.ports if p.id in targets}
    if hop.egress in ("uplink", "tunnel") and hop.next_host_id in target_hosts:
        return 0
    if hop.egress in ("uplink", "tunnel"):
        return 1
    if hop.egress == "port":
        return 2
    return 3


def _owner_host(snapshot: Snapshot, copy: Emitted) -> str | None:
    mac = flowlib.int_to_mac(copy.get("eth_dst"))
    for port in snapshot.ports:
        if port.mac == mac and port.host_id is not None:
            return port.host_id
    return None


def _replace(hop: Hop, **changes: object) -> Hop:
    return dataclasses.replace(hop, **changes)  # type: ignore[arg-type]


# ---- the verdict ------------------------------------------------------------------------------


def _ago(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "for an unknown time"
    seconds = max(0, int((now - then).total_seconds()))
    return f"since {then.strftime('%Y-%m-%d %H:%M:%S')} UTC ({seconds} s ago)"


class _Checks:
    """Collects findings in the order a frame meets the problems."""

    def __init__(
        self,
        snapshot: Snapshot,
        observations: Mapping[str, HostObservation],
        expect: Expectations,
        now: datetime,
    ) -> None:
        self.snapshot = snapshot
        self.observations = observations
        self.expect = expect
        self.now = now
        self.findings: list[Finding] = []

    def name(self, host_id: str | None) -> str:
        host = self.snapshot.host(host_id) if host_id else None
        return host.name if host is not None else str(host_id)

    def add(
        self,
        cause: Cause,
        explanation: str,
        fix: str,
        host_id: str | None = None,
        details: Iterable[str] = (),
    ) -> None:
        self.findings.append(Finding(cause, explanation, fix, host_id, tuple(details)))

    # -- per host --------------------------------------------------------------------------

    def host(self, host_id: str) -> bool:
        """The host's OVSDB, switch and bridge; False when nothing further can be read."""
        seen = self.observations.get(host_id)
        name = self.name(host_id)
        if seen is None or seen.ovsdb is None:
            error = seen.ovsdb_error if seen is not None else "not read"
            self.add(
                "ovsdb_unreachable",
                f"The OVSDB server of host {name} does not answer: {error}.",
                f"Start or unblock ovsdb-server on {name} and check the host's ovsdb_remote.",
                host_id,
            )
            return False
        if not seen.openflow_connected:
            since = _ago(self.now, seen.status_at)
            controller = next(iter(seen.ovsdb.controllers.values()), None)
            if controller is not None and controller.sec_since_disconnect is not None:
                since += f"; the switch counts {controller.sec_since_disconnect} s"
            self.add(
                "switch_disconnected",
                f"The switch of host {name} is not connected to the controller {since}"
                f"{': ' + seen.last_error if seen.last_error else ''}.",
                f"Check that ovs-vswitchd runs and answers on {name} and that it reaches "
                "the controller target (ovs-vsctl get-controller).",
                host_id,
            )
            return False
        bridge = seen.ovsdb.bridges.get(self.expect.bridge)
        if bridge is None:
            self.add(
                "bridge_settings_drifted",
                f"Host {name} has no bridge {self.expect.bridge}.",
                "Let the controller recreate it (its next pass does), or recreate it.",
                host_id,
            )
            return False
        drift = []
        if bridge.fail_mode != self.expect.fail_mode:
            drift.append(f"fail_mode={bridge.fail_mode or '[]'} (expected {self.expect.fail_mode})")
        if self.expect.protocol not in bridge.protocols:
            drift.append(
                f"protocols={','.join(bridge.protocols) or '[]'} (expected {self.expect.protocol})"
            )
        if bridge.datapath_type != self.expect.datapath_type:
            drift.append(
                f"datapath_type={bridge.datapath_type or '[]'} "
                f"(expected {self.expect.datapath_type})"
            )
        if not bridge.controller_targets:
            drift.append("no controller target")
        if drift:
            self.add(
                "bridge_settings_drifted",
                f"Bridge {bridge.name} on host {name} has drifted: {'; '.join(drift)}.",
                f"ovs-vsctl set bridge {bridge.name} fail_mode={self.expect.fail_mode} "
                f"protocols={self.expect.protocol} (or wait for the controller's next "
                "full pass).",
                host_id,
                drift,
            )
        return True

    # -- per endpoint ----------------------------------------------------------------------

    def port(self, endpoint: Endpoint, role: str) -> bool:
        """The port's binding, VM and interface; False when the path cannot start or end."""
        port = endpoint.port
        assert port is not None
        label = f"{role} {endpoint.label}"
        if endpoint.vm_state is not None and endpoint.vm_state != "running":
            vm = endpoint.vm_name or port.vm_id or "?"
            self.add(
                "vm_not_running",
                f"The VM {vm} of {label} is {endpoint.vm_state} (libvirt), so its interface "
                "sends and receives nothing.",
                f"Start the VM: virsh start {vm} (the service then binds and wires its port).",
                port.host_id,
            )
            return False
        if port.host_id is None or not port.interface:
            self.add(
                "port_not_bound",
                f"Port {port.id} of {label} is bound to no host, so no switch forwards "
                "to or from it.",
                "Bind it: PATCH /api/v1/ports/{id} with host_id and interface (or start "
                "its VM on a libvirt host).",
                None,
            )
            return False
        if not self.host(port.host_id):
            return False
        seen = self.observations[port.host_id]
        assert seen.ovsdb is not None
        name = self.name(port.host_id)
        row = seen.ovsdb.interfaces.get(port.interface)
        if row is None or row.bridge != self.expect.bridge:
            where = "is on no bridge" if row is None else f"is on bridge {row.bridge}"
            self.add(
                "port_not_bound",
                f"Interface {port.interface} of {label} {where} of host {name}, not on "
                f"{self.expect.bridge}.",
                f"ovs-vsctl add-port {self.expect.bridge} {port.interface} (or wait for "
                "the controller's next pass, which plugs it).",
                port.host_id,
            )
            return False
        return not self.interface(row, port.host_id, f"of {label}", "interface_down")

    def interface(self, row: InterfaceRow, host_id: str, whose: str, cause: Cause) -> bool:
        """A finding if the interface is in error or down; True when one was added."""
        name = self.name(host_id)
        if row.error or row.ofport is None or row.device_gone:
            vanished = row.device_gone or (row.error is not None and "No such device" in row.error)
            self.add(
                cause,
                f"Interface {row.name} {whose} on host {name} "
                f"{'vanished (its device is gone)' if vanished else 'is in error'}: "
                f"{row.error or ('ifindex 0' if row.device_gone else 'no OpenFlow port')}.",
                f"Recreate or repair the device {row.name} on {name} "
                "(ip link; ovs-vsctl list interface).",
                host_id,
            )
            return True
        if row.link_state == "down" or row.admin_state == "down":
            self.add(
                cause,
                f"Interface {row.name} {whose} on host {name} is down "
                f"(link_state={row.link_state}, admin_state={row.admin_state}).",
                f"ip link set {row.name} up on {name} (and its peer, if a veth or trunk).",
                host_id,
            )
            return True
        return False

    def load_balancer(self, endpoint: Endpoint) -> bool:
        lb = endpoint.load_balancer
        assert lb is not None
        healthy = [b for b in lb.backends if b.healthy]
        if healthy:
            return True
        reasons = [
            f"{b.ip}:{b.port} {'unknown: ' + b.health_unknown if b.health_unknown else 'down'}"
            for b in lb.backends
        ]
        self.add(
            "no_healthy_backend",
            f"Load balancer {lb.id} ({lb.vip}:{lb.port}) has no healthy backend "
            f"({', '.join(reasons) or 'no backends'}); new connections are rejected.",
            "Start the service on a backend (it must answer the health check) or add a "
            "healthy backend.",
            None,
            reasons,
        )
        return False

    # -- between hosts ---------------------------------------------------------------------

    def crossing(self, hop: Hop) -> bool:
        """The uplink or tunnel the hop leaves by, at both ends; False if it is down."""
        src_host, dst_host = hop.host_id, hop.next_host_id
        if dst_host is None:
            return True
        for host_id in (src_host, dst_host):
            if host_id != src_host and not self.host(host_id):
                return False
        if hop.egress == "uplink":
            for host_id in (src_host, dst_host):
                spec = self.snapshot.host(host_id)
                seen = self.observations[host_id]
                assert seen.ovsdb is not None and spec is not None
                row = seen.ovsdb.interfaces.get(spec.uplink or "")
                if row is None:
                    self.add(
                        "underlay_down",
                        f"The VLAN uplink {spec.uplink} of host {spec.name} is not on "
                        f"{self.expect.bridge}.",
                        f"ovs-vsctl add-port {self.expect.bridge} {spec.uplink}.",
                        host_id,
                    )
                    return False
                if self.interface(row, host_id, "(the VLAN trunk)", "underlay_down"):
                    return False
            return True
        # VXLAN: the tunnel port at both ends, and the underlay route to the peer.
        for here, there in ((src_host, dst_host), (dst_host, src_host)):
            seen = self.observations[here]
            assert seen.ovsdb is not None
            tunnel = tunnel_interface_name(there)
            row = seen.ovsdb.interfaces.get(tunnel)
            if row is None:
                self.add(
                    "underlay_down",
                    f"Host {self.name(here)} has no VXLAN tunnel {tunnel} toward host "
                    f"{self.name(there)}.",
                    "Give both hosts a tunnel_ip (the controller then creates it).",
                    here,
                )
                return False
            if self.interface(row, here, f"(VXLAN to {self.name(there)})", "underlay_down"):
                return False
            peer = self.snapshot.host(there)
            remote = peer.tunnel_ip if peer is not None else None
            problem = seen.routes.get(remote or "") if remote else None
            if remote and problem:
                self.add(
                    "underlay_down",
                    f"Host {self.name(here)} has no route to the VXLAN peer {remote} "
                    f"({self.name(there)}): {problem}.",
                    f"Restore the underlay address/route on {self.name(here)}'s br-phy "
                    f"(ovs-appctl ovs/route/show) and the underlay link.",
                    here,
                )
                return False
            for row in seen.ovsdb.interfaces.values():
                if (
                    row.bridge != self.expect.bridge
                    and row.type in ("", "system")
                    and (row.link_state == "down" and row.admin_state != "down")
                ):
                    self.add(
                        "underlay_down",
                        f"Underlay interface {row.name} (bridge {row.bridge}) on host "
                        f"{self.name(here)} has no link.",
                        f"Bring the underlay link {row.name} up on {self.name(here)}.",
                        here,
                    )
                    return False
        return True

    # -- what the switch does with the packet ------------------------------------------------

    def trace(self, hop: Hop, config: DatapathConfig | None) -> bool | None:
        """Compare the switch's trace of the hop's packet with the evaluation. True:
        agrees; False: a finding was added; None: no trace."""
        seen = self.observations.get(hop.host_id)
        trace = seen.traces.get(hop.number) if seen is not None else None
        if trace is None or config is None or seen is None:
            return None
        name = self.name(hop.host_id)
        computed = {encode_flow(f).cookie: f for f in config.flows}
        dumped = {f.cookie: f for f in seen.flows or ()}
        expected = [(s.table, s.cookie) for s in hop.steps]
        actual = [(s.table, s.cookie) for s in trace.steps]
        for index, step in enumerate(trace.steps):
            want = expected[index] if index < len(expected) else None
            if want == (step.table, step.cookie):
                continue
            if step.cookie is None or step.cookie not in computed:
                ours = step.cookie is not None and (
                    step.cookie & COOKIE_SERVICE_MASK == SERVICE_COOKIE_PREFIX << 48
                )
                flow = (
                    f"table {step.table}, priority {step.priority}, cookie "
                    f"{_hex(step.cookie)}, match {step.match or '(any)'}, actions "
                    f"{','.join(step.actions) or 'drop'}"
                )
                if ours or not trace.dropped:
                    self.add(
                        "flows_differ",
                        f"On host {name} the frame hits a flow the service did not compute "
                        f"({flow}).",
                        f"ovs-ofctl del-flows {self.expect.bridge} "
                        f"cookie={_hex(step.cookie)}/-1 (the controller's next full pass "
                        "removes it too).",
                        hop.host_id,
                        [flow],
                    )
                else:
                    self.add(
                        "foreign_flow_drop",
                        f"On host {name} the frame is dropped by a flow the service did not "
                        f"install ({flow}).",
                        f"Remove it: ovs-ofctl del-flows {self.expect.bridge} "
                        f"cookie={_hex(step.cookie)}/-1; find who added it.",
                        hop.host_id,
                        [flow],
                    )
                return False
            # A computed flow, but not the one expected here: the expected one is missing
            # or was changed.
            if want is not None and want[1] not in dumped:
                missing = computed[want[1]]
                self.add(
                    "flows_differ",
                    f"On host {name} the flow {_describe(missing, want[1])} is missing, so "
                    f"the frame takes cookie {_hex(step.cookie)} in table {step.table} "
                    "instead.",
                    "Let the controller restore it (its next full pass does), or restart "
                    "the controller's sync of this host.",
                    hop.host_id,
                    [_describe(missing, want[1])],
                )
            else:
                self.add(
                    "flows_differ",
                    f"On host {name} the frame takes {actual} where the computed flows "
                    f"take {expected}.",
                    "Compare ovs-ofctl dump-flows with the computed flows; the controller's "
                    "next full pass rewrites them.",
                    hop.host_id,
                )
            return False
        if trace.ends_in_hash_selection:
            return True  # agrees as far as the switch can say (see TraceResult)
        if len(actual) < len(expected) and (hop.egress != "port" or trace.dropped):
            missing_step = expected[len(actual)]
            skipped = computed.get(missing_step[1])
            gone = missing_step[1] not in dumped
            self.add(
                "flows_differ",
                f"On host {name} the frame stops before the flow "
                f"{_describe(skipped, missing_step[1])}"
                f"{' (missing on the switch)' if gone else ''}.",
                "Let the controller restore its flows (its next full pass does).",
                hop.host_id,
            )
            return False
        leaves = hop.out_port is not None and hop.egress in ("port", "uplink", "tunnel")
        if leaves and (hop.out_port not in trace.outputs or trace.dropped):
            last = trace.steps[-1] if trace.steps else None
            if last is not None and last.cookie in dumped and last.cookie in computed:
                shown = dumped[last.cookie]
                changed = computed[last.cookie]
                self.add(
                    "flows_differ",
                    f"On host {name} the flow with cookie {_hex(last.cookie)} (table "
                    f"{last.table}) was modified: it does {shown.actions or 'drop'} "
                    f"where the computed flow outputs to port {hop.out_port}.",
                    f"The controller's next full pass rewrites it; or "
                    f"ovs-ofctl del-flows {self.expect.bridge} "
                    f"cookie={_hex(last.cookie)}/-1 to have it re-added.",
                    hop.host_id,
                    [_describe(changed, last.cookie)],
                )
                return False
            if trace.errors:
                self.add(
                    "underlay_down",
                    f"On host {name} OVS cannot send the frame on: {'; '.join(trace.errors)}.",
                    "Restore the underlay (address and route on br-phy, the link).",
                    hop.host_id,
                    trace.errors,
                )
                return False
            self.add(
                "trace_disagrees",
                f"On host {name} the switch's trace ends in "
                f"'{trace.datapath_actions or 'drop'}' where the computed flows output "
                f"to port {hop.out_port}.",
                "Compare ovs-appctl ofproto/trace with the computed path; restart the "
                "controller's sync of this host.",
                hop.host_id,
            )
            return False
        return True

    def spoofing(self, endpoint: Endpoint) -> None:
        port = endpoint.port
        if port is None or port.host_id is None or not port.interface:
            return
        seen = self.observations.get(port.host_id)
        if seen is None or not seen.drops:
            return
        # Addresses of the other ports of the same network (never another tenant's): a
        # source that is one of them is a conflict, not an invention.
        owners = {
            address: other.id
            for other in self.snapshot.ports
            if other.network_id == port.network_id and other.id != port.id
            for address in (other.mac, *other.ips)
        }
        foreign = []
        for drop in seen.drops:
            if drop.interface != port.interface or drop.packets == 0:
                continue
            if drop.eth_src is not None and drop.eth_src != port.mac:
                what, address = "MAC", drop.eth_src
            elif port.ips and drop.ipv4_src is not None and drop.ipv4_src not in port.ips:
                what, address = "IP", drop.ipv4_src
            elif port.ips and drop.arp_spa is not None and drop.arp_spa not in port.ips:
                what, address = "ARP sender IP", drop.arp_spa
            else:
                continue
            owner = owners.get(address)
            conflict = f", port {owner}'s: a conflict" if owner else ""
            foreign.append(f"{what} {address} ({drop.packets} packets{conflict})")
        if foreign:
            allowed = ", ".join([port.mac, *port.ips])
            self.add(
                "source_address_mismatch",
                f"The VM of {endpoint.label} sends from {', '.join(foreign)}, which is not "
                f"its port's ({allowed}); the switch drops those frames (anti-spoofing).",
                f"Configure the VM's interface with {allowed} (or change the port's "
                "addresses to what the VM uses); look for a MAC conflict or an address set "
                "by hand in the VM.",
                port.host_id,
                foreign,
            )


def _hex(cookie: int | None) -> str:
    return "none" if cookie is None else f"0x{cookie:016x}"


def _describe(flow: flowlib.Flow | None, cookie: int) -> str:
    if flow is None:
        return f"cookie {_hex(cookie)}"
    fields = ",".join(f"{f.name}={f.value:#x}" for f in flow.match.fields) or "(any)"
    table = TABLES[flow.table].name if flow.table in TABLES else str(flow.table)
    return (
        f"table {flow.table} ({table}), priority {flow.priority}, {fields}, cookie {_hex(cookie)}"
    )


def diagnose(
    snapshot: Snapshot,
    src: Endpoint,
    dst: Endpoint,
    *,
    plan: PathPlan | None,
    observations: Mapping[str, HostObservation],
    expect: Expectations,
    now: datetime,
) -> Verdict:
    """The verdict for A -> B from the intended state and what was read from the hosts."""
    checks = _Checks(snapshot, observations, expect, now)
    empty = PathPlan(())
    agrees: dict[int, bool | None] = {}

    def verdict(reachable: bool) -> Verdict:
        return Verdict(reachable, tuple(checks.findings), plan or empty, agrees)

    if src.network.id != dst.network.id:
        same_tenant = src.network.tenant_id == dst.network.tenant_id
        checks.add(
            "different_networks",
            f"{src.label} (network {src.network.name}) and {dst.label} (network "
            f"{dst.network.name}{'' if same_tenant else ', of another tenant'}) are in "
            "different networks, which are isolated from each other by design.",
            "Put both in one network (a port in the other network), or route between "
            "the networks through a VM that has a port in each.",
        )
        return verdict(False)
    if src.port is None:
        raise ValueError("the source must be a port")
    if not checks.port(src, "source"):
        return verdict(False)
    if dst.port is not None and not checks.port(dst, "destination"):
        return verdict(False)
    if dst.load_balancer is not None and not checks.load_balancer(dst):
        return verdict(False)
    if plan is None:
        return verdict(False)
    for hop in plan.hops:
        if hop.number > 1 and not checks.host(hop.host_id):
            return verdict(False)
        if hop.egress in ("uplink", "tunnel") and not checks.crossing(hop):
            return verdict(False)
    if dst.load_balancer is not None and plan.arrives:
        backend = next((p for p in snapshot.ports if p.id == plan.hops[-1].delivered_port_id), None)
        if backend is not None:
            target = Endpoint(
                f"backend {backend.id}",
                dst.network,
                backend.ips[0] if backend.ips else None,
                port=backend,
            )
            if not checks.port(target, "backend"):
                return verdict(False)
    for hop in plan.hops:
        result = checks.trace(hop, plan.config_by_host.get(hop.host_id))
        agrees[hop.number] = result
        if result is False:
            return verdict(False)
    if not plan.arrives:
        host = plan.problem_host
        if not checks.findings and (host is None or checks.host(host)):
            checks.add(
                plan.problem_cause or "flows_differ",
                f"The path stops on host {checks.name(host)}: {plan.problem}.",
                "Check that hosts carrying this network share an uplink (VLAN) or have a "
                "tunnel_ip (VXLAN), and the host's interfaces (ovs-vsctl show).",
                host,
            )
        return verdict(False)
    checks.spoofing(src)
    if dst.port is not None:
        checks.spoofing(dst)
    # Any finding (bridge drift included) means the path is not what the service intends.
    return verdict(not checks.findings)
