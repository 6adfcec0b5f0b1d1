"""Table dhcp: a VM's DHCP client messages go to the controller, which answers them.

Port security sends every DHCP client message (UDP 68 -> 67) of a local port here
and nowhere else. A port the service serves (an IPv4 address inside its network's
cidr, DHCP on for that network: `controller.core.dhcp.network_lease`) has its
messages sent to the controller, as a packet-in on this switch; the answer goes
back by packet-out to that port only. Any other port's fall to the table miss and
are dropped, so no DHCP message of a VM ever reaches another VM.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Final

from controller.core.flows import OFPP_CONTROLLER, Flow, Match, MatchField, Output
from controller.core.pipeline.context import (
    BoundPort,
    DatapathContext,
    LocalNetwork,
    dotted_quad,
    ofport_of,
)
from controller.core.pipeline.tables import TABLE_DHCP

__all__ = ["dhcp_flows", "dhcp_network_flows", "served_by_dhcp"]

PRIORITY_SERVED_PORT: Final = 100

_TO_CONTROLLER: Final = (Output(OFPP_CONTROLLER),)


def served_by_dhcp(net: LocalNetwork, port: BoundPort) -> bool:
    """Whether the service answers the DHCP of `port` (the same rule as `network_lease`)."""
    bounds = _served_range(net)
    return bounds is not None and _in_range(port, *bounds)


def _served_range(net: LocalNetwork) -> tuple[int, int] | None:
    """The first and last address of the network's cidr when its DHCP is on, else None."""
    spec = net.spec
    if spec.cidr is None or not spec.dhcp_enabled:
        return None
    return _cidr_range(spec.cidr)


def _cidr_range(cidr: str) -> tuple[int, int]:
    # `ipaddress` takes ~6 µs a network; an "a.b.c.d/n" without host bits is read here
    # (as `ipaddress` would read it), anything else (and every error) is left to it.
    address, slash, prefix = cidr.partition("/")
    first = dotted_quad(address)
    if first is not None and slash and prefix.isascii() and prefix.isdigit():
        length = int(prefix)
        if length <= 32 and first % (1 << (32 - length)) == 0:
            return first, first + (1 << (32 - length)) - 1
    subnet = ipaddress.IPv4Network(cidr)
    return int(subnet.network_address), int(subnet.broadcast_address)


def _in_range(port: BoundPort, first: int, last: int) -> bool:
    return any(first <= ip <= last for ip in port.ipv4s)


def dhcp_flows(ctx: DatapathContext) -> Iterator[Flow]:
    for net in ctx.networks:
        yield from dhcp_network_flows(net)


def dhcp_network_flows(net: LocalNetwork) -> Iterator[Flow]:
    bounds = _served_range(net)  # parsed once per network, not per port
    if bounds is None:
        return
    for port in net.local_ports:
        if _in_range(port, *bounds):
            yield Flow(
                TABLE_DHCP,
                PRIORITY_SERVED_PORT,
                Match((MatchField("in_port", ofport_of(port)),)),
                _TO_CONTROLLER,
            )
