"""The OpenFlow 1.3 vocabulary shared by the pipeline, the encoder and the simulator.

Flows and groups are plain frozen values: the pipeline builds them, `ofmsg`
turns them into wire bytes, and the unit-test simulator evaluates packets
against them. Every value is an int (MACs and IPv4 addresses included) so
encoding and hashing stay cheap on the hot path.

`Flow`, `Match` and `MatchField` are NamedTuples, not frozen dataclasses: a full
compute builds one of each (and more fields) per flow, ~180k at 4,000 networks, and a
frozen dataclass pays one `object.__setattr__` per field (a Flow cost 0.84 µs to build,
a NamedTuple 0.3 µs), and its `__hash__` and `__eq__` run in Python where a tuple's run
in C (the pipeline's duplicate-match key is a flow's match). Their equality is a
tuple's: only values of the same class are ever compared. So are `Bucket` and the
actions built per flow or per port, `Output` and `SetField`: no other action is a
tuple, and an (int, int) never equals a (str, int). The other actions stay frozen
dataclasses: two actions of different classes must never be equal (a GroupAction and
a Resubmit of the same number would be, as tuples). A NamedTuple's repr is the
dataclass's, which group ids hash (`pipeline.groups`).

Field names follow os-ken's OXM spelling. `vlan_vid` follows OpenFlow 1.3:
`VLAN_PRESENT | vid` for a tagged frame, `0` (== `VLAN_NONE`) for an untagged one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeAlias

# Reserved port numbers (OpenFlow 1.3, ofp_port_no).
OFPP_IN_PORT: Final = 0xFFFFFFF8
OFPP_ALL: Final = 0xFFFFFFFC
OFPP_CONTROLLER: Final = 0xFFFFFFFD
OFPP_LOCAL: Final = 0xFFFFFFFE
OFPP_ANY: Final = 0xFFFFFFFF
OFPCML_NO_BUFFER: Final = 0xFFFF

VLAN_PRESENT: Final = 0x1000
VLAN_NONE: Final = 0x0000

ETH_TYPE_IPV4: Final = 0x0800
ETH_TYPE_ARP: Final = 0x0806
ETH_TYPE_VLAN: Final = 0x8100
ETH_TYPE_IPV6: Final = 0x86DD
IP_PROTO_ICMP: Final = 1
IP_PROTO_TCP: Final = 6
IP_PROTO_UDP: Final = 17
IP_PROTO_ICMPV6: Final = 58
ARP_REQUEST: Final = 1
ARP_REPLY: Final = 2
# ICMPv6 types of Neighbor Discovery (RFC 4861).
ICMPV6_ROUTER_SOLICITATION: Final = 133
ICMPV6_ROUTER_ADVERTISEMENT: Final = 134
ICMPV6_NEIGHBOR_SOLICITATION: Final = 135
ICMPV6_NEIGHBOR_ADVERTISEMENT: Final = 136
ICMPV6_REDIRECT: Final = 137

# ct_state bits (Nicira extension, as OVS defines them).
CT_NEW: Final = 0x01
CT_ESTABLISHED: Final = 0x02
CT_RELATED: Final = 0x04
CT_REPLY: Final = 0x08
CT_INVALID: Final = 0x10
CT_TRACKED: Final = 0x20

# Width in bits of every match field the service may use. A field missing here
# is a programming error that `match()` reports at once.
FIELD_BITS: Final[dict[str, int]] = {
    "in_port": 32,
    "metadata": 64,
    "eth_dst": 48,
    "eth_src": 48,
    "eth_type": 16,
    "vlan_vid": 13,
    "ip_proto": 8,
    "ipv4_src": 32,
    "ipv4_dst": 32,
    "tcp_src": 16,
    "tcp_dst": 16,
    "tcp_flags": 12,
    "udp_src": 16,
    "udp_dst": 16,
    "icmpv4_type": 8,
    "icmpv4_code": 8,
    "ipv6_src": 128,
    "ipv6_dst": 128,
    "icmpv6_type": 8,
    "icmpv6_code": 8,
    "ipv6_nd_target": 128,
    "ipv6_nd_sll": 48,
    "ipv6_nd_tll": 48,
    "arp_op": 16,
    "arp_spa": 32,
    "arp_tpa": 32,
    "arp_sha": 48,
    "arp_tha": 48,
    "tunnel_id": 64,
    # Nicira extensions (NXM/OXM experimenter) that OVS accepts on OpenFlow 1.3.
    "reg0": 32,
    "reg1": 32,
    "reg2": 32,
    "reg3": 32,
    "reg4": 32,
    "reg5": 32,
    "reg6": 32,
    "reg7": 32,
    "ct_state": 32,
    "ct_zone": 16,
    "ct_mark": 32,
    # ERICOXM_OF extensions (OVS 2.11+): writable, so a flow can turn a Neighbor
    # Solicitation into an Advertisement (flags, and the option's type SLL -> TLL).
    "nd_reserved": 32,
    "nd_options_type": 8,
}

MatchValue: TypeAlias = int | tuple[int, int]


class MatchField(NamedTuple):
    name: str
    value: int
    mask: int | None = None  # None: exact match


class Match(NamedTuple):
    """Match fields in canonical (sorted by name) order, so equal matches are equal values."""

    fields: tuple[MatchField, ...] = ()

    def get(self, name: str) -> MatchField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


_FIELD_LIMITS: Final = {name: 1 << bits for name, bits in FIELD_BITS.items()}


def match(**fields: MatchValue) -> Match:
    """Build a canonical Match: `match(in_port=3, eth_dst=(0x01 << 40, 0x01 << 40))`."""
    items: list[MatchField] = []
    for name in sorted(fields):
        limit = _FIELD_LIMITS.get(name)
        if limit is None:
            raise ValueError(f"unknown match field {name!r}")
        raw = fields[name]
        if isinstance(raw, tuple):
            value, mask = raw
            if not (0 <= value < limit and 0 <= mask < limit):
                raise ValueError(f"match field {name} out of range: {raw!r}")
            items.append(MatchField(name, value & mask, mask))
        else:
            if not 0 <= raw < limit:
                raise ValueError(f"match field {name} out of range: {raw!r}")
            items.append(MatchField(name, raw))
    return Match(tuple(items))


# ---- actions -------------------------------------------------------------------


class Output(NamedTuple):
    port: int
    max_len: int = OFPCML_NO_BUFFER  # only meaningful for OFPP_CONTROLLER


@dataclass(frozen=True, slots=True)
class GroupAction:
    group_id: int


@dataclass(frozen=True, slots=True)
class PushVlan:
    ethertype: int = ETH_TYPE_VLAN


@dataclass(frozen=True, slots=True)
class PopVlan:
    pass


class SetField(NamedTuple):
    """Set a field to a value. For `vlan_vid` the value includes VLAN_PRESENT."""

    field: str
    value: int


@dataclass(frozen=True, slots=True)
class RegMove:
    """Nicira NXAST_REG_MOVE: copy n_bits of src (from src_ofs) into dst (at dst_ofs)."""

    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0


@dataclass(frozen=True, slots=True)
class Nat:
    """Nicira NXAST_NAT inside ct(). No address: apply the connection's existing NAT.

    Destination NAT to `dst_ip` (and `dst_port`), or source NAT to `src_ip` with a source
    port from `src_ports` (first, last) that conntrack finds free."""

    dst_ip: int | None = None
    dst_port: int | None = None
    src_ip: int | None = None
    src_ports: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Ct:
    """Nicira NXAST_CT: send through conntrack, optionally commit, then recirculate to `table`."""

    zone: int = 0
    commit: bool = False
    table: int | None = None  # None: no recirculation
    nat: Nat | None = None


@dataclass(frozen=True, slots=True)
class Resubmit:
    """Nicira NXAST_RESUBMIT_TABLE: run `table` (with in_port unchanged) and come back."""

    table: int


@dataclass(frozen=True, slots=True)
class Multipath:
    """Nicira NXAST_MULTIPATH: hash the packet's addresses and ports (UDP's included, which
    OVS's select groups leave out) and write a link number, 0 to n_links - 1, into the
    low `n_bits` of `dst`."""

    dst: str
    n_links: int
    n_bits: int = 16
    basis: int = 0


Action: TypeAlias = (
    Output | GroupAction | PushVlan | PopVlan | SetField | RegMove | Ct | Resubmit | Multipath
)


class Flow(NamedTuple):
    """One flow entry. `actions` is the apply-actions instruction; an empty tuple with
    no `goto_table` is a drop."""

    table: int
    priority: int
    match: Match = Match()
    actions: tuple[Action, ...] = ()
    goto_table: int | None = None
    write_metadata: tuple[int, int] | None = None  # (value, mask)


class Bucket(NamedTuple):
    actions: tuple[Action, ...]
    weight: int = 0  # select groups only; OVS needs weight > 0 there
    watch_port: int = OFPP_ANY


@dataclass(frozen=True, slots=True)
class Group:
    group_id: int
    type: str  # "all" | "select" | "indirect"
    buckets: tuple[Bucket, ...]


# ---- value helpers ---------------------------------------------------------------


def mac_to_int(mac: str) -> int:
    if mac.count(":") != 5:  # six parts
        raise ValueError(f"not a MAC address: {mac!r}")
    return int(mac.replace(":", ""), 16)


def int_to_mac(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def ip_to_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def int_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def ipv6_to_int(ip: str) -> int:
    return int(ipaddress.IPv6Address(ip))


def int_to_ipv6(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


def link_local_ipv6(mac: int) -> int:
    """The modified EUI-64 link-local address (RFC 4291) a host forms from `mac`:
    fe80::, then the MAC with the universal/local bit flipped and ff:fe in its middle."""
    eui64 = ((mac >> 24) << 40) | (0xFFFE << 24) | (mac & 0xFFFFFF)
    return (0xFE80 << 112) | (eui64 ^ (0x02 << 56))


MULTICAST_BIT: Final = 0x010000000000
BROADCAST_MAC: Final = 0xFFFFFFFFFFFF
