"""Hand-made IPv6/ICMPv6 frames (echo, Neighbor Solicitation/Advertisement, Router
Advertisement) for raw injection from a VM: what a misbehaving guest could send."""

from __future__ import annotations

import ipaddress
import struct

from lab.hosts import build_ethernet_frame, mac_to_bytes

ETH_TYPE_IPV6 = 0x86DD
_ICMPV6 = 58
_HOP_LIMIT_ND = 255  # Neighbor Discovery messages must carry it (RFC 4861)
ALL_NODES = "ff02::1"


def multicast_mac(address: str) -> str:
    """The Ethernet address an IPv6 multicast address maps to (33:33 + its last 32 bits)."""
    tail = ipaddress.IPv6Address(address).packed[-4:]
    return "33:33:" + ":".join(f"{b:02x}" for b in tail)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmpv6_frame(
    *,
    src_mac: str,
    dst_mac: str,
    src: str,
    dst: str,
    icmp_type: int,
    body: bytes,
    code: int = 0,
    hop_limit: int = _HOP_LIMIT_ND,
) -> bytes:
    """An Ethernet/IPv6/ICMPv6 frame with a correct checksum; `body` follows the
    ICMPv6 type, code and checksum."""
    source, destination = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    length = 4 + len(body)
    pseudo = source + destination + struct.pack("!I3xB", length, _ICMPV6)
    message = struct.pack("!BBH", icmp_type, code, 0) + body
    checksum = _checksum(pseudo + message)
    message = message[:2] + struct.pack("!H", checksum) + message[4:]
    header = struct.pack("!IHBB", 6 << 28, length, _ICMPV6, hop_limit) + source + destination
    return build_ethernet_frame(
        dst=dst_mac, src=src_mac, ethertype=ETH_TYPE_IPV6, payload=header + message
    )


def echo_request(*, src_mac: str, dst_mac: str, src: str, dst: str, ident: int) -> bytes:
    body = struct.pack("!HH", ident, 1) + b"ovs-fabric"
    return icmpv6_frame(
        src_mac=src_mac,
        dst_mac=dst_mac,
        src=src,
        dst=dst,
        icmp_type=128,
        body=body,
        hop_limit=64,
    )


def neighbor_advertisement(*, src_mac: str, src: str, target: str, lladdr: str) -> bytes:
    """An unsolicited Override advertisement to all nodes: "`target` is at `lladdr`"."""
    body = (
        struct.pack("!I", 0x2000_0000)
        + ipaddress.IPv6Address(target).packed
        + bytes([2, 1])
        + mac_to_bytes(lladdr)
    )
    return _to_all_nodes(src_mac=src_mac, src=src, icmp_type=136, body=body)


def router_advertisement(*, src_mac: str, src: str, prefix: str) -> bytes:
    """A Router Advertisement to all nodes offering a default route and `prefix` (SLAAC)."""
    net = ipaddress.IPv6Network(prefix)
    header = struct.pack("!BBHII", 64, 0, 1800, 0, 0)  # hop limit, flags, lifetime, timers
    source_lladdr = bytes([1, 1]) + mac_to_bytes(src_mac)
    prefix_info = (
        struct.pack("!BBBBIII", 3, 4, net.prefixlen, 0xC0, 86400, 14400, 0)
        + net.network_address.packed
    )
    return _to_all_nodes(
        src_mac=src_mac, src=src, icmp_type=134, body=header + source_lladdr + prefix_info
    )


def _to_all_nodes(*, src_mac: str, src: str, icmp_type: int, body: bytes) -> bytes:
    """An ICMPv6 message to the all-nodes group (ff02::1) and its multicast MAC."""
    return icmpv6_frame(
        src_mac=src_mac,
        dst_mac=multicast_mac(ALL_NODES),
        src=src,
        dst=ALL_NODES,
        icmp_type=icmp_type,
        body=body,
    )
