"""Table port_security: a local VM may only use its own MAC and IPs.

Ports with addresses may send only ARP, IPv4 and IPv6 from those addresses (IPv6
only when they have an IPv6 address: a port with IPv4 addresses alone sends no IPv6,
link-local included, and costs no IPv6 flow); anything else falls to the table miss
and is dropped. A port without addresses sends anything. Address checks that need no
address of the port's own:
- ARP probes (RFC 5227: sender 0.0.0.0, asking for one of the port's own IPv4s).
- IPv6 from the port's link-local address, the modified EUI-64 one of its MAC
  (`flows.link_local_ipv6`), on top of its IPv6 addresses; a guest using another
  link-local scheme (stable-privacy, RFC 7217) must switch to eui64.
- Duplicate Address Detection: a Neighbor Solicitation from :: for one of those
  addresses, without a source link-layer option (RFC 4862), as the RFC sends it.
- Neighbor Solicitations and Advertisements may carry only the port's MAC in their
  link-layer option (or none); whose address an Advertisement announces is checked
  by nd_responder, which sees the port by its MAC.
- Router Advertisements and Redirects are dropped (RA guard: the network has no
  router among its VMs). Whatever the port, its DHCP client messages
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
    ETH_TYPE_IPV6,
    ICMPV6_NEIGHBOR_ADVERTISEMENT,
    ICMPV6_NEIGHBOR_SOLICITATION,
    ICMPV6_REDIRECT,
    ICMPV6_ROUTER_ADVERTISEMENT,
    IP_PROTO_ICMPV6,
    IP_PROTO_UDP,
    Flow,
    Match,
    MatchField,
    link_local_ipv6,
    match,
)
from controller.core.pipeline.context import BoundPort, DatapathContext, LocalNetwork, ofport_of
from controller.core.pipeline.tables import (
    TABLE_ARP_RESPONDER,
    TABLE_DHCP,
    TABLE_PORT_SECURITY,
)

__all__ = ["port_security_flows", "port_security_network_flows"]

PRIORITY_ROUTER_GUARD: Final = 120  # RA and Redirect from a VM: dropped
PRIORITY_NEIGHBOR_DISCOVERY: Final = 115  # NS/NA with the port's own link-layer address
PRIORITY_NEIGHBOR_GUARD: Final = 112  # any other NS/NA: dropped
PRIORITY_DHCP: Final = 110  # DHCP guards, before any source address is allowed
PRIORITY_ADDRESS: Final = 100  # one allowed source address
PRIORITY_OPEN_PORT: Final = 50  # a port without IPs

_DHCP_CLIENT_PORT: Final = 68
_DHCP_SERVER_PORT: Final = 67

_ARP: Final = MatchField("eth_type", ETH_TYPE_ARP)
_PROBE_SENDER: Final = MatchField("arp_spa", 0)  # an ARP probe's (RFC 5227)
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
    # Fields in name order, as `match()` gives them; shared where constant. Flows with
    # positional arguments (actions, goto_table): cheaper, and these are many.
    for port in net.local_ports:
        in_port = MatchField("in_port", ofport_of(port))
        yield Flow(
            TABLE_PORT_SECURITY,
            PRIORITY_DHCP,
            Match((_IPV4, in_port, *_DHCP_CLIENT)),
            (),
            TABLE_DHCP,
        )
        yield Flow(TABLE_PORT_SECURITY, PRIORITY_DHCP, Match((_IPV4, in_port, *_DHCP_SERVER)))
        if not port.restricted:
            yield Flow(TABLE_PORT_SECURITY, PRIORITY_OPEN_PORT, Match((in_port,)), (), passed)
            continue
        sha = MatchField("arp_sha", port.mac)
        if port.ipv6s:
            yield from _ipv6_flows(port, in_port)
        for ip in port.ipv4s:
            # An ARP probe for its own address (RFC 5227), before using it.
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_ADDRESS,
                Match((sha, _PROBE_SENDER, MatchField("arp_tpa", ip), _ARP, in_port)),
                (),
                passed,
            )
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_ADDRESS,
                Match((sha, MatchField("arp_spa", ip), _ARP, in_port)),
                (),
                passed,
            )
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_ADDRESS,
                Match((_IPV4, in_port, MatchField("ipv4_src", ip))),
                (),
                passed,
            )


def _icmpv6(in_port: int, icmpv6_type: int, **fields: int) -> Match:
    return match(
        in_port=in_port,
        eth_type=ETH_TYPE_IPV6,
        ip_proto=IP_PROTO_ICMPV6,
        icmpv6_type=icmpv6_type,
        **fields,
    )


def _ipv6_flows(port: BoundPort, in_port_field: MatchField) -> Iterator[Flow]:
    """What a port with IPv6 addresses may send over IPv6 (see the module's docstring)."""
    in_port = in_port_field.value
    passed = TABLE_ARP_RESPONDER
    for router_only in (ICMPV6_ROUTER_ADVERTISEMENT, ICMPV6_REDIRECT):
        yield Flow(TABLE_PORT_SECURITY, PRIORITY_ROUTER_GUARD, _icmpv6(in_port, router_only))
    for neighbor in (ICMPV6_NEIGHBOR_SOLICITATION, ICMPV6_NEIGHBOR_ADVERTISEMENT):
        yield Flow(TABLE_PORT_SECURITY, PRIORITY_NEIGHBOR_GUARD, _icmpv6(in_port, neighbor))
    sources = (link_local_ipv6(port.mac), *port.ipv6s)
    for source in sources:
        for lladdr in (port.mac, 0):  # 0: no link-layer option
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_NEIGHBOR_DISCOVERY,
                _icmpv6(in_port, ICMPV6_NEIGHBOR_SOLICITATION, ipv6_src=source, ipv6_nd_sll=lladdr),
                goto_table=passed,
            )
            yield Flow(
                TABLE_PORT_SECURITY,
                PRIORITY_NEIGHBOR_DISCOVERY,
                _icmpv6(
                    in_port, ICMPV6_NEIGHBOR_ADVERTISEMENT, ipv6_src=source, ipv6_nd_tll=lladdr
                ),
                goto_table=passed,
            )
        # Duplicate Address Detection of this address, from the unspecified address.
        yield Flow(
            TABLE_PORT_SECURITY,
            PRIORITY_NEIGHBOR_DISCOVERY,
            _icmpv6(
                in_port,
                ICMPV6_NEIGHBOR_SOLICITATION,
                ipv6_src=0,
                ipv6_nd_target=source,
                ipv6_nd_sll=0,
            ),
            goto_table=passed,
        )
        yield Flow(
            TABLE_PORT_SECURITY,
            PRIORITY_ADDRESS,
            match(in_port=in_port, eth_type=ETH_TYPE_IPV6, ipv6_src=source),
            goto_table=passed,
        )
