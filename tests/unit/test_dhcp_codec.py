"""DHCPv4 answers from the address plan (controller.core.dhcp), byte for byte."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

import pytest

from controller.core import dhcp
from controller.core.model import NetworkSpec, PortSpec, Snapshot
from controller.core.probes import Endpoints, checksum, parse_frame, udp_frame

pytestmark = pytest.mark.unit

MAC = 0x020000000103
NET = NetworkSpec(
    "net", "t", "web", "vxlan", 7, "10.1.0.0/24", "10.1.0.1", 1450, True, ("10.1.0.53", "9.9.9.9")
)
PORT = PortSpec("p", "net", "02:00:00:00:01:03", ("10.1.0.5",), "host-a", "tap-a")
LEASE = dhcp.network_lease(NET, PORT)


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def client_frame(
    kind: int,
    *,
    mac: int = MAC,
    chaddr: int | None = None,
    ciaddr: int = 0,
    requested: int | None = None,
    server_id: int | None = None,
    broadcast: bool = False,
) -> bytes:
    chaddr = mac if chaddr is None else chaddr
    bootp = struct.pack(
        "!BBBBIHHIIII16s64s128s",
        1,
        1,
        6,
        0,
        0xC0FFEE,
        0,
        0x8000 if broadcast else 0,
        ciaddr,
        0,
        0,
        0,
        chaddr.to_bytes(6, "big"),
        b"",
        b"",
    )
    options = bytes((53, 1, kind))
    if requested is not None:
        options += bytes((50, 4)) + requested.to_bytes(4, "big")
    if server_id is not None:
        options += bytes((54, 4)) + server_id.to_bytes(4, "big")
    payload = bootp + b"\x63\x82\x53\x63" + options + b"\xff"
    ends = Endpoints(mac, 0xFFFFFFFFFFFF, ciaddr, 0xFFFFFFFF, 68, 67)
    return udp_frame(ends, payload)


def decode(frame: bytes) -> tuple[dict[str, int], dict[int, bytes]]:
    """The reply's addresses and options, after checking its IPv4 and UDP checksums."""
    parsed = parse_frame(frame)
    ip = parsed.ip_packet
    assert checksum(ip[:20]) == 0
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(ip) - 20)
    assert checksum(pseudo + ip[20:]) == 0
    bootp = ip[28:]
    assert bootp[0] == 2 and bootp[236:240] == b"\x63\x82\x53\x63"
    options: dict[int, bytes] = {}
    at = 240
    while bootp[at] != 255:
        options[bootp[at]] = bootp[at + 2 : at + 2 + bootp[at + 1]]
        at += 2 + bootp[at + 1]
    fields = {
        "dst_mac": parsed.ends.dst_mac,
        "src_ip": parsed.ends.src_ip,
        "dst_ip": parsed.ends.dst_ip,
        "src_port": parsed.ends.src_port,
        "dst_port": parsed.ends.dst_port,
        "xid": int.from_bytes(bootp[4:8], "big"),
        "yiaddr": int.from_bytes(bootp[16:20], "big"),
        "chaddr": int.from_bytes(bootp[28:34], "big"),
    }
    return fields, options


def test_discover_is_offered_the_ports_address_and_the_networks_settings() -> None:
    assert LEASE is not None
    reply = dhcp.answer(client_frame(dhcp.DISCOVER), LEASE)
    assert reply is not None
    fields, options = decode(reply)
    assert fields == {
        "dst_mac": MAC,
        "src_ip": _ip("10.1.0.1"),
        "dst_ip": _ip("10.1.0.5"),
        "src_port": 67,
        "dst_port": 68,
        "xid": 0xC0FFEE,
        "yiaddr": _ip("10.1.0.5"),
        "chaddr": MAC,
    }
    assert options[53] == bytes((dhcp.OFFER,))
    assert options[54] == ipaddress.IPv4Address("10.1.0.1").packed
    assert options[1] == ipaddress.IPv4Address("255.255.255.0").packed
    assert options[3] == ipaddress.IPv4Address("10.1.0.1").packed
    assert options[6] == b"\x0a\x01\x00\x35\x09\x09\x09\x09"
    assert options[26] == (1450).to_bytes(2, "big")
    assert int.from_bytes(options[51], "big") == dhcp.DEFAULT_LEASE_SECONDS


def test_request_for_the_ports_address_is_acked_and_for_another_naked() -> None:
    assert LEASE is not None
    ack = dhcp.answer(client_frame(dhcp.REQUEST, requested=_ip("10.1.0.5")), LEASE)
    assert ack is not None and decode(ack)[1][53] == bytes((dhcp.ACK,))
    nak = dhcp.answer(client_frame(dhcp.REQUEST, requested=_ip("10.1.0.9")), LEASE)
    assert nak is not None
    fields, options = decode(nak)
    assert options[53] == bytes((dhcp.NAK,)) and fields["yiaddr"] == 0
    assert fields["dst_ip"] == 0xFFFFFFFF and 26 not in options
    # A renewal comes from the address itself, unicast, and is answered unicast.
    renewal = client_frame(dhcp.REQUEST, ciaddr=_ip("10.1.0.5"))
    reply = dhcp.answer(renewal, LEASE)
    assert reply is not None and decode(reply)[0]["dst_ip"] == _ip("10.1.0.5")


def test_broadcast_flag_and_inform_and_silence() -> None:
    assert LEASE is not None
    reply = dhcp.answer(client_frame(dhcp.DISCOVER, broadcast=True), LEASE)
    assert reply is not None and decode(reply)[0]["dst_ip"] == 0xFFFFFFFF
    inform = dhcp.answer(client_frame(dhcp.INFORM, ciaddr=_ip("10.1.0.5")), LEASE)
    assert inform is not None
    fields, options = decode(inform)
    assert fields["yiaddr"] == 0 and 51 not in options and options[26] == b"\x05\xaa"
    # Another server's offer chosen, a release, another hardware address, garbage: silence.
    assert dhcp.answer(client_frame(dhcp.REQUEST, server_id=_ip("10.1.0.2")), LEASE) is None
    assert dhcp.answer(client_frame(dhcp.RELEASE), LEASE) is None
    assert dhcp.answer(client_frame(dhcp.DISCOVER, chaddr=0x020000000999), LEASE) is None
    assert dhcp.answer(client_frame(dhcp.DISCOVER)[:60], LEASE) is None
    assert dhcp.answer(b"\x00" * 10, LEASE) is None


def test_lease_follows_the_address_plan() -> None:
    snapshot = Snapshot(revision=1, networks=(NET,), ports=(PORT,))
    assert dhcp.lease_for(snapshot, "host-a", "tap-a") == LEASE
    assert dhcp.lease_for(snapshot, "host-b", "tap-a") is None
    assert dhcp.network_lease(dataclasses.replace(NET, dhcp_enabled=False), PORT) is None
    assert dhcp.network_lease(dataclasses.replace(NET, cidr=None, gateway=None), PORT) is None
    assert dhcp.network_lease(NET, dataclasses.replace(PORT, ips=())) is None
    no_gateway = dhcp.network_lease(dataclasses.replace(NET, gateway=None), PORT)
    assert no_gateway is not None and no_gateway.router is None
    assert no_gateway.server_id == _ip("10.1.0.254")
