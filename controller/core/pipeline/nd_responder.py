"""IPv6 Neighbor Discovery in table arp_responder: Solicitations for known addresses are
answered by the switch itself, Advertisements from a VM must be about its own address.

Like the ARP responder, every bound port's IPv6 addresses (any host), and the link-local
address its MAC gives (`flows.link_local_ipv6`), are answered for within the asker's
network; ports without an IPv6 address have none (port_security drops their IPv6), and a
network none of whose ports has one gets no flow here.

The Solicitation is turned into the Advertisement in place in two steps, as OVS refuses
writing the target link-layer option while the match says "Solicitation": here the
addresses swap, the type becomes NA (flags Solicited + Override, the option's type TLL),
then a resubmit to table nd_reply writes the owner's MAC (now eth_src) into the TLL
option and sends the NA back out of the in_port.

Only local frames pass this table (remote ones enter at lb), and port_security has
already checked their source address and link-layer option; what it cannot check
without knowing the port, an Advertisement's target, is checked here by eth_src (which
classify tied to the in_port): a port with addresses may only advertise its own.
Duplicate Address Detection probes (Solicitations from ::) are never answered by the
switch: they go on to the network, so the owner of a duplicate defends its address and
the prober sees the conflict; a prober alone on its address hears nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from controller.core.flows import (
    ETH_TYPE_IPV6,
    ICMPV6_NEIGHBOR_ADVERTISEMENT,
    ICMPV6_NEIGHBOR_SOLICITATION,
    IP_PROTO_ICMPV6,
    OFPP_IN_PORT,
    Action,
    Flow,
    Output,
    RegMove,
    Resubmit,
    SetField,
    link_local_ipv6,
    match,
)
from controller.core.pipeline.context import BoundPort, DatapathContext, LocalNetwork
from controller.core.pipeline.tables import TABLE_ARP_RESPONDER, TABLE_LB, TABLE_ND_REPLY

__all__ = [
    "ND_ADVERT_FLAGS",
    "nd_addresses",
    "nd_advert_actions",
    "nd_responder_flows",
    "nd_responder_network_flows",
]

PRIORITY_DAD: Final = 210  # a Duplicate Address Detection probe: to the network
PRIORITY_OWN_ADVERT: Final = 205  # an Advertisement of the sender's own address
PRIORITY_FORGED_ADVERT: Final = 200  # any other Advertisement from a port with addresses
PRIORITY_ND_ANSWER: Final = 100
PRIORITY_ND_REPLY: Final = 100

# Neighbor Advertisement flags in the reserved word: Solicited | Override (RFC 4861 4.4).
ND_ADVERT_FLAGS: Final = 0x6000_0000
_ND_OPTION_TLL: Final = 2

_SWAP_ETH: Final = RegMove("eth_src", "eth_dst", 48)
_SWAP_IPV6: Final = RegMove("ipv6_src", "ipv6_dst", 128)
_ADVERT: Final = (
    SetField("icmpv6_type", ICMPV6_NEIGHBOR_ADVERTISEMENT),
    SetField("nd_reserved", ND_ADVERT_FLAGS),
    SetField("nd_options_type", _ND_OPTION_TLL),
    Resubmit(TABLE_ND_REPLY),
)
# In nd_reply: the owner's MAC, already the frame's source, into the TLL option.
_FILL_TLL: Final = (RegMove("eth_src", "ipv6_nd_tll", 48), Output(OFPP_IN_PORT))


def nd_addresses(port: BoundPort) -> tuple[int, ...]:
    """Every IPv6 address the port owns: its link-local one first, then its given ones;
    none for a port without IPv6 addresses."""
    return (link_local_ipv6(port.mac), *port.ipv6s) if port.ipv6s else ()


def nd_advert_actions(owner_mac: int, owner_ip: int) -> tuple[Action, ...]:
    """Turn a Neighbor Solicitation for `owner_ip` into its owner's Advertisement."""
    return (
        _SWAP_ETH,
        SetField("eth_src", owner_mac),
        _SWAP_IPV6,
        SetField("ipv6_src", owner_ip),
        *_ADVERT,
    )


def _icmpv6(metadata: int, icmpv6_type: int, **fields: int) -> dict[str, int]:
    return {
        "metadata": metadata,
        "eth_type": ETH_TYPE_IPV6,
        "ip_proto": IP_PROTO_ICMPV6,
        "icmpv6_type": icmpv6_type,
        **fields,
    }


def nd_responder_flows(ctx: DatapathContext) -> Iterator[Flow]:
    for net in ctx.networks:
        yield from nd_responder_network_flows(net)


def nd_responder_network_flows(net: LocalNetwork) -> Iterator[Flow]:
    metadata = net.metadata
    if not any(port.ipv6s for port in net.bound_ports):
        return
    yield Flow(
        TABLE_ARP_RESPONDER,
        PRIORITY_DAD,
        match(**_icmpv6(metadata, ICMPV6_NEIGHBOR_SOLICITATION, ipv6_src=0)),
        goto_table=TABLE_LB,
    )
    answered: set[int] = set()
    for owner in net.bound_ports:
        for ip in nd_addresses(owner):
            if ip in answered:
                continue  # an address claimed twice: the first owner (by MAC) answers
            answered.add(ip)
            yield Flow(
                TABLE_ARP_RESPONDER,
                PRIORITY_ND_ANSWER,
                match(**_icmpv6(metadata, ICMPV6_NEIGHBOR_SOLICITATION, ipv6_nd_target=ip)),
                actions=nd_advert_actions(owner.mac, ip),
            )
    if answered:
        yield Flow(
            TABLE_ND_REPLY,
            PRIORITY_ND_REPLY,
            match(**_icmpv6(metadata, ICMPV6_NEIGHBOR_ADVERTISEMENT)),
            actions=_FILL_TLL,
        )
    for port in net.local_ports:
        if not port.ipv6s:
            continue  # a restricted port without IPv6 sends none (port_security)
        for ip in nd_addresses(port):
            yield Flow(
                TABLE_ARP_RESPONDER,
                PRIORITY_OWN_ADVERT,
                match(
                    **_icmpv6(
                        metadata, ICMPV6_NEIGHBOR_ADVERTISEMENT, eth_src=port.mac, ipv6_nd_target=ip
                    )
                ),
                goto_table=TABLE_LB,
            )
        yield Flow(
            TABLE_ARP_RESPONDER,
            PRIORITY_FORGED_ADVERT,
            match(**_icmpv6(metadata, ICMPV6_NEIGHBOR_ADVERTISEMENT, eth_src=port.mac)),
        )
