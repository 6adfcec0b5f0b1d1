"""Table port_security: a local VM may only use its own MAC and IPs.

Ports with addresses may send only ARP and IPv4 from those addresses (and a DHCP
discovery from 0.0.0.0); anything else, IPv6 included (not supported yet), falls
to the table miss and is dropped. A port without addresses sends anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from controller.core.flows import ETH_TYPE_ARP, ETH_TYPE_IPV4, IP_PROTO_UDP, Flow, match
from controller.core.pipeline.context import DatapathContext, ofport_of
from controller.core.pipeline.tables import TABLE_ARP_RESPONDER, TABLE_PORT_SECURITY

__all__ = ["port_security_flows"]

PRIORITY_ADDRESS: Final = 100  # one allowed source address
PRIORITY_DHCP_DISCOVERY: Final = 90
PRIORITY_OPEN_PORT: Final = 50  # a port without IPs

_DHCP_CLIENT_PORT: Final = 68
_DHCP_SERVER_PORT: Final = 67


def port_security_flows(ctx: DatapathContext) -> Iterator[Flow]:
    passed = TABLE_ARP_RESPONDER
    for net in ctx.networks:
        for port in net.local_ports:
            in_port = ofport_of(port)
            if not port.restricted:
                yield Flow(
                    TABLE_PORT_SECURITY,
                    PRIORITY_OPEN_PORT,
                    match(in_port=in_port),
                    goto_table=passed,
                )
                continue
            for ip in port.ipv4s:
                yield Flow(
                    TABLE_PORT_SECURITY,
                    PRIORITY_ADDRESS,
                    match(in_port=in_port, eth_type=ETH_TYPE_ARP, arp_sha=port.mac, arp_spa=ip),
                    goto_table=passed,
                )
                yield Flow(
                    TABLE_PORT_SECURITY,
                    PRIORITY_ADDRESS,
                    match(in_port=in_port, eth_type=ETH_TYPE_IPV4, ipv4_src=ip),
                    goto_table=passed,
                )
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_DHCP_DISCOVERY,
                match(
                    in_port=in_port,
                    eth_type=ETH_TYPE_IPV4,
                    ipv4_src=0,
                    ip_proto=IP_PROTO_UDP,
                    udp_src=_DHCP_CLIENT_PORT,
                    udp_dst=_DHCP_SERVER_PORT,
                ),
                goto_table=passed,
            )
