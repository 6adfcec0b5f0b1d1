"""The integration bridge's tables and registers, declared as data, and the check every
flow must pass.

Each table says which fields its flows may match, which fields every non-default
flow must match (the network's metadata in the forwarding tables, so no flow can
carry a frame from one network into another), which fields its actions may write,
where its flows may continue and what happens to a frame no flow matches (its
table-miss flow is generated from that, as in Faucet's `valve_table.py`).
`check_flow` enforces the declaration, plus the OpenFlow match prerequisites a
switch would otherwise reject with OFPBMC_BAD_PREREQ, so a pipeline bug fails in a
unit test instead of on a switch.

Pipeline state carried between tables:
- metadata: the network's identity across the fabric (`context.network_metadata`);
  every forwarding flow matches it, so frames never cross networks.
- REG_ORIGIN: where the frame came from (ORIGIN_LOCAL: a VM port on this host,
  ORIGIN_REMOTE: the VLAN uplink or a VXLAN tunnel).
- LB_REGISTERS: left to the load balancer; no flow reads or writes them yet.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Final

from controller.core.flows import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ICMPV6_NEIGHBOR_ADVERTISEMENT,
    ICMPV6_NEIGHBOR_SOLICITATION,
    IP_PROTO_ICMP,
    IP_PROTO_ICMPV6,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    Ct,
    Flow,
    Group,
    GroupAction,
    MatchField,
    Multipath,
    Output,
    RegMove,
    Resubmit,
    SetField,
)

TABLE_CLASSIFY: Final = 0
TABLE_PORT_SECURITY: Final = 1
TABLE_ARP_RESPONDER: Final = 2
TABLE_LB: Final = 3
# Load-balancer stages (ids 4-7 were kept free for them, so l2_forward keeps its id):
TABLE_LB_CT: Final = 4  # after conntrack on the way to a VIP: pick a backend or continue
TABLE_LB_REWRITE: Final = 5  # a NATed packet toward a backend gets the backend's MAC
TABLE_LB_REPLY: Final = 6  # after conntrack on a backend's reply: the VIP's MAC as source
TABLE_L2_FORWARD: Final = 8
# Entered only by resubmit from arp_responder: the second half of a Neighbor Advertisement
# built from a Solicitation (its TLL option can only be written once the match says NA).
TABLE_ND_REPLY: Final = 9
# A VM's DHCP client messages, diverted by port_security: to the controller or dropped.
TABLE_DHCP: Final = 20

REG_ORIGIN: Final = "reg5"
ORIGIN_LOCAL: Final = 1
ORIGIN_REMOTE: Final = 2
LB_REGISTERS: Final = ("reg6", "reg7")

PRIORITY_TABLE_MISS: Final = 0


class PipelineError(ValueError):
    """The computed flows break the pipeline's own rules, or the snapshot is contradictory."""


@dataclass(frozen=True, slots=True)
class TableDecl:
    name: str
    id: int
    match_fields: frozenset[str]
    # Where a flow may continue: goto_table targets (which OpenFlow requires to be
    # later tables) and ct/resubmit targets (which may be any table, itself included).
    next_tables: frozenset[int] = frozenset()
    # Fields every flow except the table-miss (priority 0, empty match) must match.
    required_fields: frozenset[str] = frozenset()
    # Fields its actions (set_field, reg_move) may write.
    set_fields: frozenset[str] = frozenset()
    # A frame no flow matches continues here; None: it is dropped.
    miss_goto: int | None = None


_LB_FIELDS: Final = frozenset(
    {
        "metadata",
        REG_ORIGIN,
        *LB_REGISTERS,
        "eth_src",
        "eth_dst",
        "eth_type",
        "ip_proto",
        "ipv4_src",
        "ipv4_dst",
        "tcp_src",
        "tcp_dst",
        "udp_src",
        "udp_dst",
        "icmpv4_type",
        "ct_state",
        "ct_zone",
        "ct_mark",
    }
)

PIPELINE: Final[tuple[TableDecl, ...]] = (
    TableDecl(
        name="classify",
        id=TABLE_CLASSIFY,
        match_fields=frozenset({"in_port", "eth_src", "vlan_vid", "tunnel_id"}),
        # Remote frames pass the lb table too: replies from backends are un-NATed
        # on the client's host.
        next_tables=frozenset({TABLE_PORT_SECURITY, TABLE_LB, TABLE_L2_FORWARD}),
        required_fields=frozenset({"in_port"}),
        set_fields=frozenset({REG_ORIGIN}),
        # Anything unknown (port, VLAN, VNI) is dropped.
    ),
    TableDecl(
        name="port_security",
        id=TABLE_PORT_SECURITY,
        match_fields=frozenset(
            {
                "in_port",
                "eth_type",
                "arp_sha",
                "arp_spa",
                "arp_tpa",
                "ipv4_src",
                "ip_proto",
                "udp_src",
                "udp_dst",
                "ipv6_src",
                "icmpv6_type",
                "ipv6_nd_target",
                "ipv6_nd_sll",
                "ipv6_nd_tll",
            }
        ),
        next_tables=frozenset({TABLE_ARP_RESPONDER, TABLE_DHCP}),
        required_fields=frozenset({"in_port"}),
        # A spoofed source, a Router Advertisement, or a protocol other than
        # ARP/IPv4/IPv6 from a port with addresses, is dropped.
    ),
    TableDecl(
        name="arp_responder",
        id=TABLE_ARP_RESPONDER,
        # ARP requests and IPv6 Neighbor Solicitations (nd_responder) for known addresses.
        match_fields=frozenset(
            {
                "metadata",
                "eth_src",
                "eth_type",
                "arp_op",
                "arp_tpa",
                "ipv6_src",
                "ip_proto",
                "icmpv6_type",
                "ipv6_nd_target",
            }
        ),
        next_tables=frozenset({TABLE_LB, TABLE_ND_REPLY}),
        required_fields=frozenset({"metadata", "eth_type"}),
        # The request is turned into the reply in place.
        set_fields=frozenset(
            {
                "eth_src",
                "eth_dst",
                "arp_op",
                "arp_sha",
                "arp_tha",
                "arp_spa",
                "arp_tpa",
                "ipv6_src",
                "ipv6_dst",
                "icmpv6_type",
                "nd_reserved",
                "nd_options_type",
            }
        ),
        miss_goto=TABLE_LB,
    ),
    TableDecl(
        name="lb",
        id=TABLE_LB,
        match_fields=_LB_FIELDS,
        next_tables=frozenset({TABLE_LB, TABLE_LB_CT, TABLE_LB_REPLY, TABLE_L2_FORWARD}),
        required_fields=frozenset({"metadata"}),
        miss_goto=TABLE_L2_FORWARD,
    ),
    TableDecl(
        name="lb_ct",
        id=TABLE_LB_CT,
        match_fields=_LB_FIELDS,
        # ct(commit, nat, table=lb_rewrite) runs in the select group's buckets (or, for
        # UDP, in the flow of the link multipath picked, after a resubmit here).
        next_tables=frozenset({TABLE_LB_REWRITE}),
        set_fields=frozenset(LB_REGISTERS),
        required_fields=frozenset({"metadata", "ct_state"}),
        # Untracked or invalid on the way to a VIP: dropped.
    ),
    TableDecl(
        name="lb_rewrite",
        id=TABLE_LB_REWRITE,
        match_fields=_LB_FIELDS,
        next_tables=frozenset({TABLE_L2_FORWARD}),
        required_fields=frozenset({"metadata", "ipv4_dst"}),
        set_fields=frozenset({"eth_dst"}),
        # Toward a backend this host cannot address: dropped.
    ),
    TableDecl(
        name="lb_reply",
        id=TABLE_LB_REPLY,
        match_fields=_LB_FIELDS,
        next_tables=frozenset({TABLE_L2_FORWARD}),
        required_fields=frozenset({"metadata", "eth_type"}),
        set_fields=frozenset({"eth_src"}),
        # A reply nobody NATed (e.g. on the backend's own host): forwarded as it is.
        miss_goto=TABLE_L2_FORWARD,
    ),
    TableDecl(
        name="l2_forward",
        id=TABLE_L2_FORWARD,
        match_fields=frozenset({"metadata", REG_ORIGIN, "eth_dst"}),
        required_fields=frozenset({"metadata"}),
        # Toward the uplink (tagged) or a tunnel (with the VNI).
        set_fields=frozenset({"vlan_vid", "tunnel_id"}),
        # A frame of no local network: dropped.
    ),
    TableDecl(
        name="nd_reply",
        id=TABLE_ND_REPLY,
        match_fields=frozenset({"metadata", "eth_type", "ip_proto", "icmpv6_type"}),
        required_fields=frozenset({"metadata", "icmpv6_type"}),
        set_fields=frozenset({"ipv6_nd_tll"}),
    ),
    TableDecl(
        name="dhcp",
        id=TABLE_DHCP,
        match_fields=frozenset({"in_port"}),
        required_fields=frozenset({"in_port"}),
        # A port the service does not serve (no IPv4, DHCP off): its DHCP is dropped,
        # so a VM's DHCP never reaches another VM.
    ),
)

TABLES: Final[dict[int, TableDecl]] = {table.id: table for table in PIPELINE}

_Requirement = tuple[str, frozenset[int]]
_ARP_FRAME: Final[_Requirement] = ("eth_type", frozenset({ETH_TYPE_ARP}))
_IPV4_FRAME: Final[_Requirement] = ("eth_type", frozenset({ETH_TYPE_IPV4}))
_IPV6_FRAME: Final[_Requirement] = ("eth_type", frozenset({ETH_TYPE_IPV6}))

# field -> every (field it depends on, the exact values that field must be matched to)
_PREREQUISITES: Final[dict[str, tuple[_Requirement, ...]]] = {
    **{name: (_ARP_FRAME,) for name in ("arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha")},
    **{name: (_IPV4_FRAME,) for name in ("ipv4_src", "ipv4_dst")},
    **{name: (_IPV6_FRAME,) for name in ("ipv6_src", "ipv6_dst")},
    "ip_proto": (("eth_type", frozenset({ETH_TYPE_IPV4, ETH_TYPE_IPV6})),),
    **{
        name: (("ip_proto", frozenset({IP_PROTO_TCP})),)
        for name in ("tcp_src", "tcp_dst", "tcp_flags")
    },
    **{name: (("ip_proto", frozenset({IP_PROTO_UDP})),) for name in ("udp_src", "udp_dst")},
    **{
        name: (_IPV4_FRAME, ("ip_proto", frozenset({IP_PROTO_ICMP})))
        for name in ("icmpv4_type", "icmpv4_code")
    },
    **{
        name: (_IPV6_FRAME, ("ip_proto", frozenset({IP_PROTO_ICMPV6})))
        for name in ("icmpv6_type", "icmpv6_code")
    },
    "ipv6_nd_target": (
        (
            "icmpv6_type",
            frozenset({ICMPV6_NEIGHBOR_SOLICITATION, ICMPV6_NEIGHBOR_ADVERTISEMENT}),
        ),
    ),
    "ipv6_nd_sll": (("icmpv6_type", frozenset({ICMPV6_NEIGHBOR_SOLICITATION})),),
    "ipv6_nd_tll": (("icmpv6_type", frozenset({ICMPV6_NEIGHBOR_ADVERTISEMENT})),),
}


def table_miss_flows() -> tuple[Flow, ...]:
    """The lowest-priority flow of every table, as its declaration says."""
    return tuple(
        Flow(table.id, PRIORITY_TABLE_MISS, goto_table=table.miss_goto) for table in PIPELINE
    )


def _is_table_miss(flow: Flow) -> bool:
    return flow.priority == PRIORITY_TABLE_MISS and not flow.match.fields


def check_flow(flow: Flow) -> None:
    """Raise PipelineError if `flow` breaks its table's declaration or OpenFlow's prerequisites."""
    check_flows((flow,))


# A MatchField's name (a NamedTuple's first item: read in C).
_FIELD_NAME: Final = itemgetter(0)


def _no_values(fields: tuple[MatchField, ...]) -> tuple[()]:
    return ()


_ValuesOf = Callable[[tuple[MatchField, ...]], object]


@dataclass(slots=True)
class _Shape:
    """What `check_flows` knows of flows of one (table, goto_table, is a table miss,
    match field names...): they passed `_check_shape`."""

    table: TableDecl
    values_of: _ValuesOf  # picks the fields whose values prerequisites read
    good_values: set[object]  # values picked that passed the prerequisite check


_SHAPES: Final[dict[tuple[object, ...], _Shape]] = {}


def check_flows(flows: Iterable[Flow], group_ids: Container[int] | None = None) -> None:
    """`check_flow` of every flow, in a loop cheap enough for a full compute (~180k flows
    at 4,000 networks): what a match and goto may be depends only on the field names and
    the values of the few fields prerequisites read, so each such shape is checked once
    (a few dozen, whatever the number of flows); only the actions are read per flow.
    With `group_ids`, also that every group a flow points to is one of those."""
    shapes = _SHAPES
    for flow in flows:
        fields = flow.match.fields
        key = (
            flow.table,
            flow.goto_table,
            not fields and flow.priority == PRIORITY_TABLE_MISS,
            *map(_FIELD_NAME, fields),
        )
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = _check_shape(flow)
        if shape.values_of is not _no_values:
            values = shape.values_of(fields)
            if values not in shape.good_values:
                _check_prerequisites(flow)
                shape.good_values.add(values)
        if flow.actions:
            _check_actions(flow, shape.table, group_ids)


def _check_shape(flow: Flow) -> _Shape:
    """Check what depends on the field names only."""
    table = TABLES.get(flow.table)
    if table is None:
        raise PipelineError(f"flow for undeclared table {flow.table}: {flow!r}")
    names = [field.name for field in flow.match.fields]
    disallowed = set(names) - table.match_fields
    if disallowed:
        raise PipelineError(
            f"table {table.name} does not allow matching {sorted(disallowed)}: {flow!r}"
        )
    missing = table.required_fields - set(names)
    if missing and not _is_table_miss(flow):
        raise PipelineError(f"table {table.name} requires matching {sorted(missing)}: {flow!r}")
    if flow.goto_table is not None:
        if flow.goto_table not in table.next_tables:
            raise PipelineError(
                f"table {table.name} may not continue to table {flow.goto_table}: {flow!r}"
            )
        if flow.goto_table <= flow.table:
            raise PipelineError(f"goto_table must point to a later table: {flow!r}")
    _check_prerequisites(flow)
    read = {parent for name in names for parent, _values in _PREREQUISITES.get(name, ())}
    positions = [at for at, name in enumerate(names) if name in read]
    if not positions:
        return _Shape(table, _no_values, set())
    values_of = itemgetter(*positions)
    return _Shape(table, values_of, {values_of(flow.match.fields)})


def _check_prerequisites(flow: Flow) -> None:
    for field in flow.match.fields:
        for parent, values in _PREREQUISITES.get(field.name, ()):
            parent_field = flow.match.get(parent)
            if (
                parent_field is None
                or parent_field.mask is not None
                or parent_field.value not in values
            ):
                raise PipelineError(
                    f"matching {field.name} requires an exact {parent} in {sorted(values)}: "
                    f"{flow!r}"
                )


def _check_actions(flow: Flow, table: TableDecl, group_ids: Container[int] | None) -> None:
    # By exact class, as the encoder (ofmsg) dispatches, in order of frequency: an ARP
    # answer alone has 8 actions, and there are 40,000 at 4,000 networks.
    for action in flow.actions:
        if type(action) is SetField:
            written = action.field
        elif type(action) is RegMove:
            written = action.dst
        elif type(action) is Output:
            continue
        elif type(action) is GroupAction:
            if group_ids is not None and action.group_id not in group_ids:
                raise PipelineError(f"flow points to a group that does not exist: {flow!r}")
            continue
        elif type(action) is Multipath:
            written = action.dst
        elif isinstance(action, Ct | Resubmit):
            _check_target(flow, table, action.table)
            continue
        else:
            continue
        if written not in table.set_fields:
            raise PipelineError(f"table {table.name} does not allow writing {written}: {flow!r}")


def _check_target(flow: Flow, table: TableDecl, target: int | None) -> None:
    if target is not None and target not in table.next_tables and target != table.id:
        raise PipelineError(f"table {table.name} may not recirculate to table {target}: {flow!r}")


def check_group(group: Group) -> None:
    """Raise PipelineError for a group a switch would refuse or misbehave with."""
    if not 0 < group.group_id <= 0x7FFFFFFF:
        raise PipelineError(f"group id out of the 31-bit range: {group!r}")
    if group.type == "select":
        if any(bucket.weight <= 0 for bucket in group.buckets):
            raise PipelineError(f"every bucket of a select group needs a weight > 0: {group!r}")
    elif group.type in ("all", "indirect"):
        if any(bucket.weight != 0 for bucket in group.buckets):
            raise PipelineError(f"only select groups have bucket weights: {group!r}")
        if group.type == "indirect" and len(group.buckets) != 1:
            raise PipelineError(f"an indirect group has exactly one bucket: {group!r}")
    else:
        raise PipelineError(f"unknown group type {group.type!r}")
