"""Frames the controller puts on the wire for load balancers, and the replies it reads.

Pure bytes in, bytes out: health probes sent from a VIP (TCP SYN, UDP datagram),
the RST that closes a probe's half-open connection, and the rejection of a
connection to a load balancer without a usable backend (TCP RST, or ICMP port
unreachable for UDP). Addresses are ints, as in `controller.core.flows`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from controller.core.flows import ETH_TYPE_IPV4, IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10

ICMP_DEST_UNREACHABLE: Final = 3
ICMP_PORT_UNREACHABLE: Final = 3

_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ICMP = struct.Struct("!BBHI")
_PSEUDO = struct.Struct("!4s4sBBH")
_TTL: Final = 64
_PROBE_PAYLOAD: Final = b"ovs-fabric health probe"


class FrameError(ValueError):
    """Bytes that are not a frame this module understands."""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(value: int) -> bytes:
    return value.to_bytes(6, "big")


def _ip(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _ipv4_packet(src_ip: int, dst_ip: int, proto: int, payload: bytes) -> bytes:
    header = _IPV4.pack(
        0x45, 0, 20 + len(payload), 0, 0x4000, _TTL, proto, 0, _ip(src_ip), _ip(dst_ip)
    )
    header = header[:10] + checksum(header).to_bytes(2, "big") + header[12:]
    return header + payload


def _frame(src_mac: int, dst_mac: int, packet: bytes) -> bytes:
    return _ETH.pack(_mac(dst_mac), _mac(src_mac), ETH_TYPE_IPV4) + packet


def _l4_checksum(src_ip: int, dst_ip: int, proto: int, segment: bytes) -> int:
    pseudo = _PSEUDO.pack(_ip(src_ip), _ip(dst_ip), 0, proto, len(segment))
    return checksum(pseudo + segment)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Both ends of a frame: MACs, IPv4 addresses and L4 ports, sender first."""

    src_mac: int
    dst_mac: int
    src_ip: int
    dst_ip: int
    src_port: int
    dst_port: int


def tcp_frame(ends: Endpoints, *, flags: int, seq: int, ack: int = 0) -> bytes:
    segment = _TCP.pack(ends.src_port, ends.dst_port, seq, ack, 5 << 4, flags, 65535, 0, 0)
    value = _l4_checksum(ends.src_ip, ends.dst_ip, IP_PROTO_TCP, segment)
    segment = segment[:16] + value.to_bytes(2, "big") + segment[18:]
    return _frame(ends.src_mac, ends.dst_mac, _ipv4_packet(ends.src_ip, ends.dst_ip, 6, segment))


def udp_frame(ends: Endpoints, payload: bytes) -> bytes:
    segment = _UDP.pack(ends.src_port, ends.dst_port, 8 + len(payload), 0) + payload
    value = _l4_checksum(ends.src_ip, ends.dst_ip, IP_PROTO_UDP, segment) or 0xFFFF
    segment = segment[:6] + value.to_bytes(2, "big") + segment[8:]
    packet = _ipv4_packet(ends.src_ip, ends.dst_ip, IP_PROTO_UDP, segment)
    return _frame(ends.src_mac, ends.dst_mac, packet)


def tcp_probe(ends: Endpoints, *, seq: int) -> bytes:
    """A SYN opening a health check's connection."""
    return tcp_frame(ends, flags=TCP_SYN, seq=seq)


def udp_probe(ends: Endpoints) -> bytes:
    return udp_frame(ends, _PROBE_PAYLOAD)


def icmp_port_unreachable(
    *, src_mac: int, dst_mac: int, src_ip: int, dst_ip: int, offending: bytes
) -> bytes:
    """ICMP port unreachable quoting the offending IP header and 8 bytes after it."""
    quoted = offending[: (offending[0] & 0x0F) * 4 + 8]
    body = _ICMP.pack(ICMP_DEST_UNREACHABLE, ICMP_PORT_UNREACHABLE, 0, 0) + quoted
    body = body[:2] + checksum(body).to_bytes(2, "big") + body[4:]
    return _frame(src_mac, dst_mac, _ipv4_packet(src_ip, dst_ip, IP_PROTO_ICMP, body))


# ---- parsing -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parsed:
    """The fields of an IPv4 frame the load balancer cares about."""

    ends: Endpoints  # ports are 0 for ICMP
    proto: int
    tcp_flags: int = 0
    seq: int = 0
    ack: int = 0
    payload_len: int = 0  # TCP/UDP payload bytes
    ip_packet: bytes = b""  # from the IPv4 header on
    quoted: Parsed | None = None  # ICMP errors: the packet they quote
    icmp_type: int = 0
    icmp_code: int = 0


def _parse_ip(packet: bytes, src_mac: int, dst_mac: int, *, quoted: bool = False) -> Parsed:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise FrameError("not IPv4")
    header_len = (packet[0] & 0x0F) * 4
    total_len = int.from_bytes(packet[2:4], "big")
    proto = packet[9]
    src_ip = int.from_bytes(packet[12:16], "big")
    dst_ip = int.from_bytes(packet[16:20], "big")
    body = packet[header_len : total_len if not quoted else None]
    if proto == IP_PROTO_TCP and len(body) >= (8 if quoted else 20):
        src_port, dst_port, seq = struct.unpack_from("!HHI", body)
        ack, offset, flags = (0, 5, 0) if quoted else struct.unpack_from("!IBB", body, 8)
        return Parsed(
            Endpoints(src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port),
            proto,
            tcp_flags=flags,
            seq=seq,
            ack=ack,
            payload_len=max(0, len(body) - (offset >> 4) * 4) if not quoted else 0,
            ip_packet=packet[:total_len],
        )
    if proto == IP_PROTO_UDP and len(body) >= 8:
        src_port, dst_port, length = struct.unpack_from("!HHH", body)
        return Parsed(
            Endpoints(src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port),
            proto,
            payload_len=max(0, length - 8),
            ip_packet=packet[:total_len],
        )
    if proto == IP_PROTO_ICMP and len(body) >= 8 and not quoted:
        icmp_type, icmp_code = body[0], body[1]
        inner = None
        if icmp_type == ICMP_DEST_UNREACHABLE and len(body) >= 8 + 28:
            inner = _parse_ip(body[8:], 0, 0, quoted=True)
        return Parsed(
            Endpoints(src_mac, dst_mac, src_ip, dst_ip, 0, 0),
            proto,
            ip_packet=packet[:total_len],
            quoted=inner,
            icmp_type=icmp_type,
            icmp_code=icmp_code,
        )
    raise FrameError(f"IPv4 protocol {proto} not understood (or truncated)")


def parse_frame(frame: bytes) -> Parsed:
    """Parse an untagged Ethernet/IPv4 frame carrying TCP, UDP or ICMP."""
    if len(frame) < _ETH.size:
        raise FrameError("shorter than an Ethernet header")
    dst, src, eth_type = _ETH.unpack_from(frame)
    if eth_type != ETH_TYPE_IPV4:
        raise FrameError(f"ethertype {eth_type:#06x} is not IPv4")
    return _parse_ip(frame[_ETH.size :], int.from_bytes(src, "big"), int.from_bytes(dst, "big"))


def rejection(frame: bytes) -> bytes | None:
    """The answer refusing a new connection carried by `frame` (a client's packet to a
    VIP): a TCP RST from the VIP, or ICMP port unreachable for UDP. None for anything
    else (a RST is never answered, so two switches cannot ping-pong)."""
    try:
        parsed = parse_frame(frame)
    except FrameError:
        return None
    ends = parsed.ends
    back = Endpoints(
        ends.dst_mac, ends.src_mac, ends.dst_ip, ends.src_ip, ends.dst_port, ends.src_port
    )
    if parsed.proto == IP_PROTO_TCP:
        if parsed.tcp_flags & TCP_RST:
            return None
        if parsed.tcp_flags & TCP_ACK:
            # RFC 793: a segment with ACK is reset with seq = its ack number.
            return tcp_frame(back, flags=TCP_RST, seq=parsed.ack)
        consumed = parsed.payload_len + bool(parsed.tcp_flags & TCP_SYN)
        consumed += bool(parsed.tcp_flags & TCP_FIN)
        ack = (parsed.seq + consumed) & 0xFFFFFFFF
        return tcp_frame(back, flags=TCP_RST | TCP_ACK, seq=0, ack=ack)
    if parsed.proto == IP_PROTO_UDP:
        return icmp_port_unreachable(
            src_mac=back.src_mac,
            dst_mac=back.dst_mac,
            src_ip=back.src_ip,
            dst_ip=back.dst_ip,
            offending=parsed.ip_packet,
        )
    return None


__all__ = [
    "TCP_ACK",
    "TCP_RST",
    "TCP_SYN",
    "Endpoints",
    "FrameError",
    "Parsed",
    "checksum",
    "icmp_port_unreachable",
    "parse_frame",
    "rejection",
    "tcp_frame",
    "tcp_probe",
    "udp_frame",
    "udp_probe",
]
