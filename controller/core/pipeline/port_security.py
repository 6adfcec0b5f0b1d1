"""Table port_security: a local VM may only use its own MAC and IPs.

Ports with addresses may send only ARP and IPv4 from those addresses; anything
else, IPv6 included (not supported yet), falls to the table miss and is dropped. A
port without addresses sends anything. Whatever the port, its DHCP client messages
(UDP 68 -> 67, from any source address: 0.0.0.0 while it has none) go to the dhcp
table and nowhere else, and DHCP server messages (UDP 67 -> 68) from it are dropped:
a VM can neither hear another's DHCP nor answer it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from controller.core.flows import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    IP_PROTO_UDP,
    Flow,
    Match,
    MatchField,
    match,
)
from controller.core.pipeline.context import DatapathContext, LocalNetwork, ofport_of
from controller.core.pipeline.tables import (
    TABLE_ARP_RESPONDER,
    TABLE_DHCP,
    TABLE_PORT_SECURITY,
)

__all__ = ["port_security_flows", "port_security_network_flows"]

PRIORITY_DHCP: Final = 110  # DHCP guards, before any source address is allowed
PRIORITY_ADDRESS: Final = 100  # one allowed source address
PRIORITY_OPEN_PORT: Final = 50  # a port without IPs

_DHCP_CLIENT_PORT: Final = 68
_DHCP_SERVER_PORT: Final = 67

_ARP: Final = MatchField("eth_type", ETH_TYPE_ARP)
_IPV4: Final = MatchField("eth_type", ETH_TYPE_IPV4)
# What follows in_port in the DHCP guards' matches (name order).
_DHCP_CLIENT: Final = match(
    eth_type=ETH_TYPE_IPV4,
    ip_proto=IP_PROTO_UDP,
    udp_dst=_DHCP_SERVER_PORT,
    udp_src=_DHCP_CLIENT_PORT,
).fields[1:]
_DHCP_SERVER: Final = match(
    eth_type=ETH_TYPE_IPV4,
    ip_proto=IP_PROTO_UDP,
    udp_dst=_DHCP_CLIENT_PORT,
    udp_src=_DHCP_SERVER_PORT,
).fields[1:]


def port_security_flows(ctx: DatapathContext) -> Iterator[Flow]:
    for net in ctx.networks:
        yield from port_security_network_flows(net)


def port_security_network_flows(net: LocalNetwork) -> Iterator[Flow]:
    passed = TABLE_ARP_RESPONDER
    # Fields in name order, as `match()` gives them; shared where constant.
    for port in net.local_ports:
        in_port = MatchField("in_port", ofport_of(port))
        yield Flow(
            TABLE_PORT_SECURITY,
            PRIORITY_DHCP,
            Match((_IPV4, in_port, *_DHCP_CLIENT)),
            goto_table=TABLE_DHCP,
        )
        yield Flow(TABLE_PORT_SECURITY, PRIORITY_DHCP, Match((_IPV4, in_port, *_DHCP_SERVER)))
        if not port.restricted:
            yield Flow(
                TABLE_PORT_SECURITY, PRIORITY_OPEN_PORT, Match((in_port,)), goto_table=passed
            )
            continue
        sha = MatchField("arp_sha", port.mac)
        for ip in port.ipv4s:
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_ADDRESS,
                Match((sha, MatchField("arp_spa", ip), _ARP, in_port)),
                goto_table=passed,
            )
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_ADDRESS,
                Match((_IPV4, in_port, MatchField("ipv4_src", ip))),
                goto_table=passed,
            )
