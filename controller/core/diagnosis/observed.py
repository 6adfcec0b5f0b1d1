"""What a switch reports about itself, as plain values, and the parsers of its tools' text.

The diagnosis reads each host on a path with the tools an operator would use
(`ovsdb-client` select, `ovs-ofctl dump-flows`, `ovs-appctl ofproto/trace`,
`dpctl/dump-flows`, `ovs/route/lookup`); the I/O layer (`controller.inspect`)
runs them, and the text or JSON they print is turned into these values here, so
the parsing is unit-tested without a switch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from controller.core import flows as flowlib

__all__ = [
    "BridgeRow",
    "ControllerRow",
    "DatapathDrop",
    "DumpedFlow",
    "HostObservation",
    "InterfaceRow",
    "OvsdbRows",
    "TraceResult",
    "TraceStep",
    "ovs_flow_text",
    "parse_datapath_drops",
    "parse_dump_flows",
    "parse_ovsdb_select",
    "parse_trace",
]


@dataclass(frozen=True, slots=True)
class InterfaceRow:
    name: str
    bridge: str
    ofport: int | None  # None: no OpenFlow port (not created, or failed: -1)
    link_state: str | None  # "up" | "down" | None (not reported)
    admin_state: str | None
    error: str | None
    type: str = ""
    remote_ip: str | None = None  # tunnels
    ifindex: int | None = None  # 0 for a system interface whose device is gone

    @property
    def device_gone(self) -> bool:
        """A plain (system) interface whose kernel device vanished: OVS keeps the row and
        its ofport but reports ifindex 0 (Interface.error follows only at reconfiguration)."""
        return self.type in ("", "system") and self.ifindex == 0


@dataclass(frozen=True, slots=True)
class BridgeRow:
    name: str
    fail_mode: str | None
    datapath_type: str
    protocols: tuple[str, ...]
    datapath_id: str | None  # other_config:datapath-id
    controller_targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ControllerRow:
    target: str
    is_connected: bool
    # seconds since the switch last lost / made this connection, as OVS counts them
    sec_since_disconnect: int | None
    sec_since_connect: int | None
    state: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class OvsdbRows:
    bridges: Mapping[str, BridgeRow]
    interfaces: Mapping[str, InterfaceRow]  # every interface of every bridge, by name
    controllers: Mapping[str, ControllerRow]  # by target

    def on_bridge(self, bridge: str) -> dict[str, InterfaceRow]:
        return {name: row for name, row in self.interfaces.items() if row.bridge == bridge}


@dataclass(frozen=True, slots=True)
class DumpedFlow:
    cookie: int
    table: int
    priority: int
    match: str  # as ovs-ofctl prints it
    actions: str
    n_packets: int


@dataclass(frozen=True, slots=True)
class TraceStep:
    table: int
    cookie: int | None  # None: OVS's own (hidden) flow
    priority: int
    match: str
    actions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TraceResult:
    """`ofproto/trace` of one packet on the integration bridge, recirculations included."""

    steps: tuple[TraceStep, ...]  # the integration bridge's steps only, in order
    outputs: tuple[int, ...]  # OpenFlow ports it was output to (groups' buckets included)
    groups: tuple[int, ...]
    errors: tuple[str, ...]  # the trace's ">>" lines: why OVS could not send it
    datapath_actions: str  # the last "Datapath actions:" line
    text: str = field(default="", compare=False)

    @property
    def ends_in_hash_selection(self) -> bool:
        """The userspace datapath picks a select group's bucket by a hash computed in the
        datapath, after a recirculation `ofproto/trace` does not follow: the trace stops
        at the group, and what comes after it cannot be compared."""
        return "hash(" in self.datapath_actions and "recirc(" in self.datapath_actions

    @property
    def dropped(self) -> bool:
        """Nothing leaves the switch (an output OVS could not carry out, e.g. into a tunnel
        without route, still ends in "drop")."""
        return self.datapath_actions in ("", "drop")


@dataclass(frozen=True, slots=True)
class DatapathDrop:
    """A datapath flow (what the switch really saw) dropping frames from a VM's interface."""

    interface: str
    eth_src: str | None
    ipv4_src: str | None
    arp_spa: str | None
    packets: int


@dataclass(frozen=True, slots=True)
class HostObservation:
    """Everything read from one host for a diagnosis; a part that could not be read is None
    with its error said."""

    host_id: str
    ovsdb: OvsdbRows | None = None
    ovsdb_error: str | None = None
    flows: tuple[DumpedFlow, ...] | None = None
    flows_error: str | None = None
    # by hop number of the path: the trace of that hop's packet on this host
    traces: Mapping[int, TraceResult] = field(default_factory=dict)
    trace_error: str | None = None  # why no trace could be had on this host
    drops: tuple[DatapathDrop, ...] | None = None
    # underlay address -> None when OVS has a route to it, else what it said
    routes: Mapping[str, str | None] = field(default_factory=dict)
    # status the controller recorded (SQL)
    openflow_connected: bool = True
    ovsdb_connected: bool = True
    status_at: datetime | None = None
    last_error: str | None = None


# ---- OVSDB JSON -----------------------------------------------------------------------------


def _atom(value: Any) -> Any:
    """An OVSDB datum as Python: sets as lists, maps as dicts, uuids as strings."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind == "set":
            return [_atom(v) for v in body]
        if kind == "map":
            return {_atom(k): _atom(v) for k, v in body}
        if kind in ("uuid", "named-uuid"):
            return body
    return value


def _optional(value: Any) -> Any:
    """An OVSDB optional (a set of 0 or 1 atoms) as None or the atom."""
    value = _atom(value)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _as_list(value: Any) -> list[Any]:
    value = _atom(value)
    return value if isinstance(value, list) else [value]


def parse_ovsdb_select(reply: Sequence[Any]) -> OvsdbRows:
    """The reply of the four selects `controller.inspect` sends (Bridge, Controller, Port,
    Interface, in that order) as rows."""
    if len(reply) < 4 or any(not isinstance(r, dict) or "rows" not in r for r in reply[:4]):
        raise ValueError(f"unexpected OVSDB reply: {str(reply)[:200]}")
    bridges_raw, controllers_raw, ports_raw, interfaces_raw = (r["rows"] for r in reply[:4])
    controllers_by_uuid = {c["_uuid"][1]: c for c in controllers_raw}
    ports_by_uuid = {p["_uuid"][1]: p for p in ports_raw}
    bridge_of_interface: dict[str, str] = {}
    bridges: dict[str, BridgeRow] = {}
    for row in bridges_raw:
        other = _atom(row.get("other_config", ["map", []]))
        targets = tuple(
            str(controllers_by_uuid[u]["target"])
            for u in _as_list(row.get("controller", ["set", []]))
            if u in controllers_by_uuid
        )
        bridges[row["name"]] = BridgeRow(
            name=row["name"],
            fail_mode=_optional(row.get("fail_mode")),
            datapath_type=str(row.get("datapath_type", "")),
            protocols=tuple(str(p) for p in _as_list(row.get("protocols", ["set", []]))),
            datapath_id=other.get("datapath-id") if isinstance(other, dict) else None,
            controller_targets=targets,
        )
        for port_uuid in _as_list(row.get("ports", ["set", []])):
            port = ports_by_uuid.get(port_uuid)
            if port is None:
                continue
            for interface_uuid in _as_list(port.get("interfaces", ["set", []])):
                bridge_of_interface[interface_uuid] = row["name"]
    interfaces: dict[str, InterfaceRow] = {}
    for row in interfaces_raw:
        bridge = bridge_of_interface.get(row["_uuid"][1])
        if bridge is None:
            continue  # not on any bridge (being removed)
        ofport = _optional(row.get("ofport"))
        options = _atom(row.get("options", ["map", []]))
        interfaces[row["name"]] = InterfaceRow(
            name=row["name"],
            bridge=bridge,
            ofport=ofport if isinstance(ofport, int) and ofport > 0 else None,
            link_state=_optional(row.get("link_state")),
            admin_state=_optional(row.get("admin_state")),
            error=_optional(row.get("error")),
            type=str(row.get("type", "")),
            remote_ip=options.get("remote_ip") if isinstance(options, dict) else None,
            ifindex=_int_or_none(_optional(row.get("ifindex"))),
        )
    controllers: dict[str, ControllerRow] = {}
    for row in controllers_raw:
        status = _atom(row.get("status", ["map", []]))
        status = status if isinstance(status, dict) else {}
        controllers[row["target"]] = ControllerRow(
            target=row["target"],
            is_connected=bool(row.get("is_connected")),
            sec_since_disconnect=_int_or_none(status.get("sec_since_disconnect")),
            sec_since_connect=_int_or_none(status.get("sec_since_connect")),
            state=status.get("state"),
            last_error=status.get("last_error"),
        )
    return OvsdbRows(bridges=bridges, interfaces=interfaces, controllers=controllers)


def _int_or_none(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


# ---- ovs-ofctl dump-flows -------------------------------------------------------------------

_FLOW_FIELD_RE: Final = re.compile(r"(\w+)=([^,\s]+)")


def parse_dump_flows(text: str) -> tuple[DumpedFlow, ...]:
    """`ovs-ofctl -O OpenFlow13 dump-flows` lines as flows."""
    found: list[DumpedFlow] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("cookie="):
            continue
        head, _, actions = line.partition(" actions=")
        # "cookie=0x.., duration=.., table=0, n_packets=.., n_bytes=.., priority=100,in_port=1"
        parts = [p.strip() for p in head.split(", ")]
        values: dict[str, str] = {}
        match_text = ""
        for part in parts:
            if part.startswith("priority="):
                priority, _, rest = part.partition(",")
                values["priority"] = priority.removeprefix("priority=")
                match_text = rest
            else:
                key, _, value = part.partition("=")
                values[key] = value
        found.append(
            DumpedFlow(
                cookie=int(values.get("cookie", "0"), 16),
                table=int(values.get("table", "0")),
                priority=int(values.get("priority", "32768")),
                match=match_text,
                actions=actions,
                n_packets=int(values.get("n_packets", "0")),
            )
        )
    return tuple(found)


# ---- ofproto/trace --------------------------------------------------------------------------

_STEP_RE: Final = re.compile(
    r"^\s*(\d+)\.\s+(.*?),?\s*priority (\d+)(?:, cookie (0x[0-9a-f]+))?\s*$"
)
_BRIDGE_RE: Final = re.compile(r'^bridge\("([^"]+)"\)')
_OUTPUT_RE: Final = re.compile(r"^output:(\d+)$")
_GROUP_RE: Final = re.compile(r"^group:(\d+)$")


def parse_trace(text: str, bridge: str) -> TraceResult:
    """The steps of `bridge` in an `ofproto/trace` output, and what became of the packet."""
    steps: list[TraceStep] = []
    outputs: list[int] = []
    groups: list[int] = []
    errors: list[str] = []
    datapath_actions = ""
    in_bridge = False
    current: tuple[int, int | None, int, str] | None = None
    actions: list[str] = []

    def close_step() -> None:
        nonlocal current, actions
        if current is not None:
            steps.append(TraceStep(current[0], current[1], current[2], current[3], tuple(actions)))
        current, actions = None, []

    for raw in text.splitlines():
        line = raw.strip()
        bridge_header = _BRIDGE_RE.match(line)
        if bridge_header:
            close_step()
            in_bridge = bridge_header.group(1) == bridge
            continue
        if line.startswith("Datapath actions:"):
            close_step()
            datapath_actions = line.removeprefix("Datapath actions:").strip()
            continue
        if line.startswith(">>"):
            errors.append(line.removeprefix(">>").strip())
            continue
        if not in_bridge or not line:
            continue
        if line.startswith(("Final flow:", "Megaflow:", "Flow:", "=====")):
            close_step()
            in_bridge = False
            continue
        step = _STEP_RE.match(raw)
        if step:
            close_step()
            cookie = int(step.group(4), 16) if step.group(4) else None
            current = (int(step.group(1)), cookie, int(step.group(3)), step.group(2))
            continue
        if current is None or line.startswith("->"):
            continue
        actions.append(line)
        output = _OUTPUT_RE.match(line)
        if output:
            outputs.append(int(output.group(1)))
        group = _GROUP_RE.match(line)
        if group:
            groups.append(int(group.group(1)))
    close_step()
    return TraceResult(
        steps=tuple(steps),
        outputs=tuple(outputs),
        groups=tuple(groups),
        errors=tuple(errors),
        datapath_actions=datapath_actions,
        text=text,
    )


def ovs_flow_text(packet: Mapping[str, int]) -> str:
    """A packet of the simulator (OXM field names, ints) in `ofproto/trace` flow syntax."""
    parts: list[str] = []
    proto = packet.get("ip_proto")
    eth_type = packet.get("eth_type", flowlib.ETH_TYPE_IPV4)
    if eth_type == flowlib.ETH_TYPE_IPV4:
        parts.append(
            {
                flowlib.IP_PROTO_TCP: "tcp",
                flowlib.IP_PROTO_UDP: "udp",
                flowlib.IP_PROTO_ICMP: "icmp",
            }.get(proto or -1, "ip")
        )
    elif eth_type == flowlib.ETH_TYPE_ARP:
        parts.append("arp")
    else:
        parts.append(f"dl_type=0x{eth_type:04x}")
    for name, value in sorted(packet.items()):
        if name in ("eth_type", "ip_proto"):
            continue
        if name == "in_port":
            parts.append(f"in_port={value}")
        elif name in ("eth_src", "eth_dst"):
            parts.append(f"dl_{name[4:]}={flowlib.int_to_mac(value)}")
        elif name in ("ipv4_src", "ipv4_dst"):
            parts.append(f"nw_{name[5:]}={flowlib.int_to_ip(value)}")
        elif name in ("tcp_src", "tcp_dst", "udp_src", "udp_dst"):
            parts.append(f"tp_{name[4:]}={value}")
        elif name == "icmpv4_type":
            parts.append(f"icmp_type={value}")
        elif name == "icmpv4_code":
            parts.append(f"icmp_code={value}")
        elif name == "vlan_vid":
            if value & flowlib.VLAN_PRESENT:
                parts.append(f"dl_vlan={value & 0xFFF}")
        elif name == "tunnel_id":
            parts.append(f"tun_id=0x{value:x}")
        elif name == "metadata" or name.startswith("reg") or name.startswith("ct_"):
            continue  # pipeline state: a frame enters a switch without it
        else:
            raise ValueError(f"field {name} has no ofproto/trace spelling here")
    if packet.get("ip_proto") is not None:
        parts.append("nw_ttl=64")
    return ",".join(parts)


# ---- dpctl/dump-flows -m ----------------------------------------------------------------------

_DP_IN_PORT_RE: Final = re.compile(r"in_port\(([^)]+)\)")
_DP_ETH_SRC_RE: Final = re.compile(r"eth\(src=([0-9a-f:]{17})(?:/([0-9a-f:]{17}))?")
_DP_IPV4_SRC_RE: Final = re.compile(r"ipv4\(src=([0-9.]+)(?:/([0-9.]+))?")
_DP_ARP_SIP_RE: Final = re.compile(r"arp\(sip=([0-9.]+)(?:/([0-9.]+))?")
_DP_PACKETS_RE: Final = re.compile(r"packets:(\d+)")


def parse_datapath_drops(text: str) -> tuple[DatapathDrop, ...]:
    """The dropping datapath flows of `dpctl/dump-flows -m` (ports by name), with the
    source addresses they matched (a masked-out field counts as not matched)."""
    found: list[DatapathDrop] = []
    for line in text.splitlines():
        if not line.rstrip().endswith(("actions:drop", "actions:drop,")) and (
            "actions:drop" not in line
        ):
            continue
        in_port = _DP_IN_PORT_RE.search(line)
        if in_port is None:
            continue
        packets = _DP_PACKETS_RE.search(line)
        found.append(
            DatapathDrop(
                interface=in_port.group(1),
                eth_src=_exact(_DP_ETH_SRC_RE.search(line), "00:00:00:00:00:00"),
                ipv4_src=_exact(_DP_IPV4_SRC_RE.search(line), "0.0.0.0"),
                arp_spa=_exact(_DP_ARP_SIP_RE.search(line), "0.0.0.0"),
                packets=int(packets.group(1)) if packets else 0,
            )
        )
    return tuple(found)


def _exact(found: re.Match[str] | None, no_bits: str) -> str | None:
    """The matched value unless the datapath flow ignored the field (mask all zero)."""
    if found is None or found.group(2) == no_bits:
        return None
    return found.group(1)
