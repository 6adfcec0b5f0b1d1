"""Probe, reset and ICMP frames: valid on the wire, and parsed back."""

from __future__ import annotations

import pytest

from controller.core import probes
from controller.core.flows import IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, ip_to_int
from controller.core.probes import TCP_ACK, TCP_RST, TCP_SYN, Endpoints

pytestmark = pytest.mark.unit

CLIENT_MAC, VIP_MAC = 0x020000000010, 0x0E0102030405
CLIENT_IP, VIP = ip_to_int("10.1.0.10"), ip_to_int("10.1.0.100")
CLIENT_TO_VIP = Endpoints(CLIENT_MAC, VIP_MAC, CLIENT_IP, VIP, 40000, 80)


def _pseudo_sum_ok(frame: bytes) -> bool:
    ip = frame[14:]
    header_len = (ip[0] & 0x0F) * 4
    segment = ip[header_len : int.from_bytes(ip[2:4], "big")]
    pseudo = ip[12:20] + bytes([0, ip[9]]) + len(segment).to_bytes(2, "big")
    return probes.checksum(pseudo + segment) == 0


def test_checksum_matches_rfc1071_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert probes.checksum(data) == (~0xDDF2 & 0xFFFF)


def test_tcp_probe_is_a_valid_syn() -> None:
    frame = probes.tcp_probe(CLIENT_TO_VIP, seq=1234)
    assert probes.checksum(frame[14:34]) == 0  # IPv4 header checksum
    assert _pseudo_sum_ok(frame)
    parsed = probes.parse_frame(frame)
    assert parsed.ends == CLIENT_TO_VIP
    assert (parsed.proto, parsed.tcp_flags, parsed.seq) == (IP_PROTO_TCP, TCP_SYN, 1234)


def test_udp_probe_is_valid() -> None:
    frame = probes.udp_probe(CLIENT_TO_VIP)
    assert _pseudo_sum_ok(frame)
    parsed = probes.parse_frame(frame)
    assert parsed.proto == IP_PROTO_UDP and parsed.payload_len > 0


def test_syn_to_vip_is_refused_with_rst_ack_from_the_vip() -> None:
    answer = probes.rejection(probes.tcp_probe(CLIENT_TO_VIP, seq=0xFFFFFFFF))
    assert answer is not None
    parsed = probes.parse_frame(answer)
    assert parsed.ends == Endpoints(VIP_MAC, CLIENT_MAC, VIP, CLIENT_IP, 80, 40000)
    assert parsed.tcp_flags == TCP_RST | TCP_ACK
    assert parsed.ack == 0  # seq + 1 wraps around
    assert _pseudo_sum_ok(answer)


def test_segment_with_ack_is_reset_with_its_ack_number() -> None:
    frame = probes.tcp_frame(CLIENT_TO_VIP, flags=TCP_ACK, seq=5, ack=777)
    answer = probes.rejection(frame)
    assert answer is not None
    parsed = probes.parse_frame(answer)
    assert (parsed.tcp_flags, parsed.seq) == (TCP_RST, 777)


def test_a_reset_is_never_answered() -> None:
    assert probes.rejection(probes.tcp_frame(CLIENT_TO_VIP, flags=TCP_RST, seq=1)) is None


def test_udp_to_vip_is_refused_with_icmp_port_unreachable_quoting_it() -> None:
    datagram = probes.udp_frame(CLIENT_TO_VIP, b"x" * 100)
    answer = probes.rejection(datagram)
    assert answer is not None
    parsed = probes.parse_frame(answer)
    assert parsed.proto == IP_PROTO_ICMP
    assert (parsed.icmp_type, parsed.icmp_code) == (3, 3)
    assert (parsed.ends.src_ip, parsed.ends.dst_ip) == (VIP, CLIENT_IP)
    assert parsed.quoted is not None
    assert (parsed.quoted.ends.src_port, parsed.quoted.ends.dst_port) == (40000, 80)
    icmp = parsed.ip_packet[20:]
    assert probes.checksum(icmp) == 0
    assert len(icmp) == 8 + 20 + 8  # header + quoted IP header + 8 bytes


def test_garbage_is_refused() -> None:
    with pytest.raises(probes.FrameError):
        probes.parse_frame(b"\x00" * 10)
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28
    with pytest.raises(probes.FrameError):
        probes.parse_frame(arp)
    assert probes.rejection(arp) is None
