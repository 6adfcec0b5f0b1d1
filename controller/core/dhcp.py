"""DHCPv4 from the address plan: the answer to a VM's DHCP message, as bytes.

Pure: a client's frame (as the switch hands it to the controller) and the lease
its port holds in the desired state go in, the server's frame comes out. There
is no pool and no lease table: a port's address is the API's, so the same
question always gets the same answer (like OVN's native DHCP). Addresses are
ints, as in `controller.core.flows`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from controller.core.flows import ETH_TYPE_IPV4, IP_PROTO_UDP, mac_to_int
from controller.core.model import NetworkSpec, PortSpec, Snapshot
from controller.core.probes import Endpoints, FrameError, udp_frame

__all__ = [
    "ACK",
    "DHCP_CLIENT_PORT",
    "DHCP_SERVER_MAC",
    "DHCP_SERVER_PORT",
    "DISCOVER",
    "INFORM",
    "NAK",
    "OFFER",
    "REQUEST",
    "DhcpMessage",
    "Lease",
    "answer",
    "lease_for",
    "parse_dhcp",
]

DHCP_CLIENT_PORT: Final = 68
DHCP_SERVER_PORT: Final = 67
# The server's Ethernet source: locally administered, never a port's (ports get 02:...).
DHCP_SERVER_MAC: Final = 0x0A_00_00_00_DC_01
DEFAULT_LEASE_SECONDS: Final = 86400

# Message types (option 53)
DISCOVER: Final = 1
OFFER: Final = 2
REQUEST: Final = 3
DECLINE: Final = 4
ACK: Final = 5
NAK: Final = 6
RELEASE: Final = 7
INFORM: Final = 8

_OPT_PAD: Final = 0
_OPT_SUBNET_MASK: Final = 1
_OPT_ROUTER: Final = 3
_OPT_DNS: Final = 6
_OPT_MTU: Final = 26
_OPT_BROADCAST: Final = 28
_OPT_REQUESTED_IP: Final = 50
_OPT_LEASE_TIME: Final = 51
_OPT_MESSAGE_TYPE: Final = 53
_OPT_SERVER_ID: Final = 54
_OPT_RENEWAL: Final = 58
_OPT_REBINDING: Final = 59
_OPT_END: Final = 255

_BOOTREQUEST: Final = 1
_BOOTREPLY: Final = 2
_HTYPE_ETHERNET: Final = 1
_MAGIC: Final = b"\x63\x82\x53\x63"
_FLAG_BROADCAST: Final = 0x8000
# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr(16) sname(64) file(128)
_BOOTP: Final = struct.Struct("!BBBBIHHIIII16s64s128s")
_ETH_HEADER: Final = 14
_BROADCAST_IP: Final = 0xFFFFFFFF
_MIN_BOOTP_PAYLOAD: Final = 300  # some clients ignore shorter replies (RFC 951 size)


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """What a client's DHCP message says that the answer depends on."""

    message_type: int
    xid: int
    flags: int
    ciaddr: int
    chaddr: int  # the client's hardware address (a MAC, as an int)
    src_mac: int  # the frame's Ethernet source
    requested_ip: int | None = None  # option 50
    server_id: int | None = None  # option 54


@dataclass(frozen=True, slots=True)
class Lease:
    """What a port is told: its address and the network's settings."""

    mac: int
    ip: int
    prefix_len: int
    server_id: int  # the address the server answers from (the gateway, when there is one)
    router: int | None
    dns_servers: tuple[int, ...]
    mtu: int
    lease_seconds: int = DEFAULT_LEASE_SECONDS


def _options(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        code = data[at]
        if code == _OPT_END:
            break
        if code == _OPT_PAD:
            at += 1
            continue
        if at + 1 >= len(data) or at + 2 + data[at + 1] > len(data):
            raise FrameError("DHCP option runs past the end of the packet")
        length = data[at + 1]
        found.setdefault(code, data[at + 2 : at + 2 + length])
        at += 2 + length
    return found


def _address_option(options: dict[int, bytes], code: int) -> int | None:
    value = options.get(code)
    return int.from_bytes(value, "big") if value is not None and len(value) == 4 else None


def parse_dhcp(frame: bytes) -> DhcpMessage:
    """The client message in an untagged Ethernet/IPv4/UDP frame to port 67."""
    if len(frame) < _ETH_HEADER + 20 or int.from_bytes(frame[12:14], "big") != ETH_TYPE_IPV4:
        raise FrameError("not an untagged IPv4 frame")
    ip = frame[_ETH_HEADER:]
    header_len = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or header_len < 20 or ip[9] != IP_PROTO_UDP:
        raise FrameError("not IPv4/UDP")
    total_len = min(int.from_bytes(ip[2:4], "big"), len(ip))
    udp = ip[header_len:total_len]
    if len(udp) < 8:
        raise FrameError("truncated UDP header")
    src_port, dst_port = struct.unpack_from("!HH", udp)
    if (src_port, dst_port) != (DHCP_CLIENT_PORT, DHCP_SERVER_PORT):
        raise FrameError(f"UDP {src_port}->{dst_port} is not a DHCP client message")
    bootp = udp[8:]
    if len(bootp) < _BOOTP.size + len(_MAGIC) or bootp[_BOOTP.size : _BOOTP.size + 4] != _MAGIC:
        raise FrameError("not a DHCP message (no magic cookie)")
    op, htype, hlen, _hops, xid, _secs, flags, ciaddr, _yi, _si, _gi, chaddr, _sname, _file = (
        _BOOTP.unpack_from(bootp)
    )
    if op != _BOOTREQUEST or htype != _HTYPE_ETHERNET or hlen != 6:
        raise FrameError("not an Ethernet BOOTREQUEST")
    options = _options(bootp[_BOOTP.size + 4 :])
    kind = options.get(_OPT_MESSAGE_TYPE)
    if kind is None or len(kind) != 1:
        raise FrameError("no DHCP message type")
    return DhcpMessage(
        message_type=kind[0],
        xid=xid,
        flags=flags,
        ciaddr=ciaddr,
        chaddr=int.from_bytes(chaddr[:6], "big"),
        src_mac=int.from_bytes(frame[6:12], "big"),
        requested_ip=_address_option(options, _OPT_REQUESTED_IP),
        server_id=_address_option(options, _OPT_SERVER_ID),
    )


def _option(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


def _addr(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _reply(message: DhcpMessage, lease: Lease, kind: int) -> bytes:
    """The server's frame of type `kind` (OFFER, ACK or NAK) answering `message`."""
    informed = message.message_type == INFORM
    yiaddr = 0 if kind == NAK or informed else lease.ip
    bootp = _BOOTP.pack(
        _BOOTREPLY,
        _HTYPE_ETHERNET,
        6,
        0,
        message.xid,
        0,
        message.flags & _FLAG_BROADCAST,
        message.ciaddr if informed else 0,
        yiaddr,
        0,
        0,
        message.chaddr.to_bytes(6, "big"),
        b"",
        b"",
    )
    options = [
        _option(_OPT_MESSAGE_TYPE, bytes((kind,))),
        _option(_OPT_SERVER_ID, _addr(lease.server_id)),
    ]
    if kind != NAK:
        mask = (0xFFFFFFFF << (32 - lease.prefix_len)) & 0xFFFFFFFF
        options.append(_option(_OPT_SUBNET_MASK, _addr(mask)))
        options.append(_option(_OPT_BROADCAST, _addr(lease.ip | (~mask & 0xFFFFFFFF))))
        if lease.router is not None:
            options.append(_option(_OPT_ROUTER, _addr(lease.router)))
        if lease.dns_servers:
            options.append(_option(_OPT_DNS, b"".join(map(_addr, lease.dns_servers))))
        options.append(_option(_OPT_MTU, lease.mtu.to_bytes(2, "big")))
        if not informed:  # RFC 2131 4.3.5: no lease time in an answer to INFORM
            seconds = lease.lease_seconds
            options.append(_option(_OPT_LEASE_TIME, seconds.to_bytes(4, "big")))
            options.append(_option(_OPT_RENEWAL, (seconds // 2).to_bytes(4, "big")))
            options.append(_option(_OPT_REBINDING, (seconds * 7 // 8).to_bytes(4, "big")))
    payload = bootp + _MAGIC + b"".join(options) + bytes((_OPT_END,))
    payload = payload.ljust(_MIN_BOOTP_PAYLOAD, b"\0")
    # RFC 2131 4.1: to a client with an address (INFORM, renewal), unicast to it; a
    # client asking for broadcast, and every NAK, get broadcast; else unicast to yiaddr
    # (the frame goes to the client's port only either way).
    if message.ciaddr and kind != NAK:
        dst_ip = message.ciaddr
    elif kind == NAK or message.flags & _FLAG_BROADCAST:
        dst_ip = _BROADCAST_IP
    else:
        dst_ip = yiaddr
    ends = Endpoints(
        src_mac=DHCP_SERVER_MAC,
        dst_mac=message.chaddr,
        src_ip=lease.server_id,
        dst_ip=dst_ip,
        src_port=DHCP_SERVER_PORT,
        dst_port=DHCP_CLIENT_PORT,
    )
    return udp_frame(ends, payload)


def answer(frame: bytes, lease: Lease) -> bytes | None:
    """The server's reply to the client frame `frame` from the port holding `lease`:
    OFFER to DISCOVER; ACK to a REQUEST for the lease's address (NAK for another, or
    one addressed to another server: silence, RFC 2131 4.3.2); ACK without a lease to
    INFORM; nothing to DECLINE, RELEASE, anything malformed, or a message about a
    hardware address other than the port's."""
    try:
        message = parse_dhcp(frame)
    except FrameError:
        return None
    if message.chaddr != lease.mac or message.src_mac != lease.mac:
        return None
    if message.message_type == DISCOVER:
        return _reply(message, lease, OFFER)
    if message.message_type == INFORM:
        return _reply(message, lease, ACK)
    if message.message_type != REQUEST:
        return None
    if message.server_id is not None and message.server_id != lease.server_id:
        return None  # the client chose another server's offer
    wanted = message.requested_ip if message.requested_ip is not None else message.ciaddr
    return _reply(message, lease, ACK if wanted == lease.ip else NAK)


def _server_id(network: ipaddress.IPv4Network, gateway: str | None) -> int:
    if gateway is not None:
        return int(ipaddress.IPv4Address(gateway))
    # NOTE: clients unicast renewals to the server id; whatever it is, the switch
    # sends them to the controller, so any address of the subnet no port holds works.
    return int(network.broadcast_address) - 1


def network_lease(network: NetworkSpec, port: PortSpec) -> Lease | None:
    """The lease of `port` on `network`; None when DHCP does not serve it (no cidr,
    DHCP turned off, no IPv4 address inside the cidr)."""
    if network.cidr is None or not network.dhcp_enabled:
        return None
    subnet = ipaddress.IPv4Network(network.cidr)
    address = next(
        (
            ip
            for ip in (ipaddress.ip_address(text) for text in port.ips)
            if ip.version == 4 and ip in subnet
        ),
        None,
    )
    if address is None:
        return None
    return Lease(
        mac=mac_to_int(port.mac),
        ip=int(address),
        prefix_len=subnet.prefixlen,
        server_id=_server_id(subnet, network.gateway),
        router=None if network.gateway is None else int(ipaddress.IPv4Address(network.gateway)),
        dns_servers=tuple(int(ipaddress.IPv4Address(text)) for text in network.dns_servers),
        mtu=network.mtu,
    )


def lease_for(snapshot: Snapshot, host_id: str, interface: str) -> Lease | None:
    """The lease of the port bound to `interface` on `host_id`, if DHCP serves it."""
    port = next(
        (p for p in snapshot.ports if p.host_id == host_id and p.interface == interface), None
    )
    if port is None:
        return None
    network = next((n for n in snapshot.networks if n.id == port.network_id), None)
    return None if network is None else network_lease(network, port)
